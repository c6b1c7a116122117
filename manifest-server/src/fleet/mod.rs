//! The fleet summary (`GET /v1/fleet`, docs/REPORTS.md) and the HTML page
//! that shows the same numbers (`page`).
//!
//! `reports::store` runs the SQL (per-device latest attempts, counts,
//! first/last times, the newest-first walk for consecutive failures) and
//! hands the rows to `Fleet::assemble`, which is pure: it groups them per
//! cohort, decides which versions are targets, counts silent devices
//! against `now`, and orders everything. The definitions below are the
//! contract `manifest-builder rollout` decides on; docs/REPORTS.md states
//! them in the same words.
//!
//! For cohort C and version V, the *attempts* are the reports with cohort
//! C, `to_version` V and an outcome of `updated`, `rolled_back` or `failed`;
//! a device's *latest attempt* is its attempt with the greatest `at` (ties:
//! the one received last).
//! - `succeeded`: devices whose latest attempt is `updated`, plus devices
//!   whose latest report puts them in C running V (their `updated` may have
//!   been dropped from a full outbox, or they were installed with V).
//! - `rolled_back` / `failed`: the other devices whose latest attempt is
//!   `rolled_back` / `failed`.
//! - `tried` = succeeded + rolled_back + failed.
//! - `consecutive_failures`: walking the attempts newest first until the
//!   first `updated`, the number of distinct devices among the
//!   `rolled_back`/`failed` ones (a device failing on every run counts once).
//! - `first_report_at` / `last_report_at`: the oldest and newest attempt's
//!   `at` (null without attempts).
//! - `on_target`: devices whose latest report puts them in C running V.
//! - `in_progress` (DESIGN: pending): devices whose latest report puts them
//!   in C, about V (`to_version`), not running V yet, with an outcome that
//!   is not terminal for V (`Outcome::is_in_progress`: `deferred`, staged
//!   and waiting for the install window or the busy command).
//! - `from_versions`: devices by the `from_version` of their latest attempt
//!   at V (where they came from; `rollout rollback` reads it).
//!
//! Per device, `dropped_reports` is the total the device said it lost (a
//! full outbox, or a report the server refused); per cohort, the sum over
//! its devices.
//! - The targets of C: every V with an attempt in C, and every `to_version`
//!   of a device whose latest report is in C (so the version being rolled
//!   out appears, with zeros, as soon as devices see it), newest version
//!   first.

pub mod page;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use manifest::report::Outcome;
use manifest::{Timestamp, Version};
use serde::{Serialize, Serializer};

/// How many failures `recent_failures` (and the page) lists.
pub const RECENT_FAILURES: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    pub generated_at: Timestamp,
    pub silent_after_secs: u64,
    pub cohorts: Vec<CohortSummary>,
    pub devices: Vec<DeviceSummary>,
    pub recent_failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortSummary {
    pub cohort: String,
    /// Devices whose latest report names this cohort.
    pub devices: u64,
    /// Of those, how many run each version (newest first); devices that
    /// run nothing yet are in `devices` only.
    #[serde(serialize_with = "as_map")]
    pub versions: Vec<(String, u64)>,
    /// Of those, how many have not reported for `silent_after_secs`.
    pub silent: u64,
    /// Reports the cohort's devices said they lost (sum of theirs).
    pub dropped_reports: u64,
    pub targets: Vec<TargetSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetSummary {
    pub version: String,
    /// Devices of the cohort running this version now.
    pub on_target: u64,
    /// Devices of the cohort on their way to it (module docs).
    pub in_progress: u64,
    pub tried: u64,
    pub succeeded: u64,
    pub rolled_back: u64,
    pub failed: u64,
    pub consecutive_failures: u64,
    pub first_report_at: Option<Timestamp>,
    pub last_report_at: Option<Timestamp>,
    /// Where the devices that attempted it came from, most devices first.
    #[serde(serialize_with = "as_map")]
    pub from_versions: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSummary {
    pub device_id: String,
    pub cohort: String,
    pub running_version: Option<String>,
    pub last_outcome: String,
    pub last_reason: String,
    /// `at` of the device's latest report (the device's clock, or the
    /// receipt time when that clock was implausible).
    pub last_seen: Timestamp,
    pub silent: bool,
    /// Reports the device said it lost, in total.
    pub dropped_reports: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub device_id: String,
    pub cohort: String,
    pub at: Timestamp,
    pub to_version: Option<String>,
    pub outcome: String,
    pub stage: Option<String>,
    pub reason: String,
}

/// `versions` is a JSON object (`{"2.0.0": 150}`) whose keys keep our order.
fn as_map<S: Serializer>(versions: &[(String, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(versions.iter().map(|(v, n)| (v, n)))
}

/// One row of the `devices` table (the latest report of each device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub device_id: String,
    pub cohort: String,
    pub running_version: Option<String>,
    pub to_version: Option<String>,
    pub last_outcome: String,
    pub last_reason: String,
    pub last_seen: Timestamp,
    pub dropped_reports: u64,
}

/// Per (cohort, version, from_version): devices whose latest attempt at
/// the version came from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromRow {
    pub cohort: String,
    pub version: String,
    pub from: String,
    pub devices: u64,
}

/// Per (cohort, version): devices by their merged latest attempt (see the
/// module docs). Versions that are only run, never a target, come too and
/// are dropped by `assemble`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub cohort: String,
    pub version: String,
    pub succeeded: u64,
    pub rolled_back: u64,
    pub failed: u64,
}

/// Per (cohort, version) with at least one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub cohort: String,
    pub version: String,
    pub first: Timestamp,
    pub last: Timestamp,
    pub consecutive_failures: u64,
}

/// Everything `assemble` needs, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub devices: Vec<DeviceRow>,
    pub counts: Vec<CountRow>,
    pub attempts: Vec<AttemptRow>,
    pub failures: Vec<Failure>,
    pub from_versions: Vec<FromRow>,
}

/// Consecutive failures over one target's attempts, newest first: distinct
/// devices among the failures before the first success.
pub fn consecutive_failures<D: Ord, O: AsRef<str>>(newest_first: impl IntoIterator<Item = (D, O)>) -> u64 {
    let mut devices = BTreeSet::new();
    for (device, outcome) in newest_first {
        if outcome.as_ref() == "updated" {
            break;
        }
        devices.insert(device);
    }
    devices.len() as u64
}

/// Newest version first; strings that are not semver (never written by
/// this server) sort after all versions, by text.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => b.cmp(&a),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl Fleet {
    /// Group the rows into the summary (module docs); `now` is the server's
    /// clock, a device is silent when its `last_seen` is more than
    /// `silent_after` before it.
    pub fn assemble(rows: Rows, now: Timestamp, silent_after: Duration) -> Self {
        let silent_after_secs = silent_after.as_secs();
        let is_silent = |seen: Timestamp| now.unix().saturating_sub(seen.unix()) > silent_after_secs;

        #[derive(Default)]
        struct Acc {
            devices: u64,
            silent: u64,
            dropped_reports: u64,
            versions: HashMap<String, u64>,
            in_progress: HashMap<String, u64>,
            targets: BTreeSet<String>,
        }
        let mut cohorts: BTreeMap<String, Acc> = BTreeMap::new();
        let mut devices = Vec::with_capacity(rows.devices.len());
        for d in rows.devices {
            let acc = cohorts.entry(d.cohort.clone()).or_default();
            let silent = is_silent(d.last_seen);
            acc.devices += 1;
            acc.silent += u64::from(silent);
            acc.dropped_reports = acc.dropped_reports.saturating_add(d.dropped_reports);
            if let Some(v) = &d.running_version {
                *acc.versions.entry(v.clone()).or_default() += 1;
            }
            if let Some(v) = d.to_version {
                let pending = Outcome::parse(&d.last_outcome).is_some_and(Outcome::is_in_progress);
                if pending && d.running_version.as_ref() != Some(&v) {
                    *acc.in_progress.entry(v.clone()).or_default() += 1;
                }
                acc.targets.insert(v);
            }
            devices.push(DeviceSummary {
                device_id: d.device_id,
                cohort: d.cohort,
                running_version: d.running_version,
                last_outcome: d.last_outcome,
                last_reason: d.last_reason,
                last_seen: d.last_seen,
                silent,
                dropped_reports: d.dropped_reports,
            });
        }
        let mut from_versions: HashMap<(String, String), Vec<(String, u64)>> = HashMap::new();
        for f in rows.from_versions {
            from_versions
                .entry((f.cohort, f.version))
                .or_default()
                .push((f.from, f.devices));
        }
        let mut attempts = HashMap::new();
        for a in rows.attempts {
            cohorts
                .entry(a.cohort.clone())
                .or_default()
                .targets
                .insert(a.version.clone());
            attempts.insert((a.cohort.clone(), a.version.clone()), a);
        }
        let counts: HashMap<(String, String), CountRow> = rows
            .counts
            .into_iter()
            .map(|c| ((c.cohort.clone(), c.version.clone()), c))
            .collect();

        let cohorts = cohorts
            .into_iter()
            .map(|(cohort, acc)| {
                let mut versions: Vec<(String, u64)> =
                    acc.versions.iter().map(|(v, n)| (v.clone(), *n)).collect();
                versions.sort_by(|a, b| version_order(&a.0, &b.0));
                let mut targets: Vec<TargetSummary> = acc
                    .targets
                    .into_iter()
                    .map(|version| {
                        let key = (cohort.clone(), version);
                        let mut t = TargetSummary {
                            version: key.1.clone(),
                            ..TargetSummary::default()
                        };
                        if let Some(c) = counts.get(&key) {
                            t.succeeded = c.succeeded;
                            t.rolled_back = c.rolled_back;
                            t.failed = c.failed;
                            t.tried = c.succeeded + c.rolled_back + c.failed;
                        }
                        if let Some(a) = attempts.get(&key) {
                            t.consecutive_failures = a.consecutive_failures;
                            t.first_report_at = Some(a.first);
                            t.last_report_at = Some(a.last);
                        }
                        t.on_target = acc.versions.get(&key.1).copied().unwrap_or(0);
                        t.in_progress = acc.in_progress.get(&key.1).copied().unwrap_or(0);
                        if let Some(mut from) = from_versions.remove(&key) {
                            // Most devices first; ties newest version first.
                            from.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| version_order(&a.0, &b.0)));
                            t.from_versions = from;
                        }
                        t
                    })
                    .collect();
                targets.sort_by(|a, b| version_order(&a.version, &b.version));
                CohortSummary {
                    cohort,
                    devices: acc.devices,
                    versions,
                    silent: acc.silent,
                    dropped_reports: acc.dropped_reports,
                    targets,
                }
            })
            .collect();
        devices.sort_by(|a, b| (&a.cohort, &a.device_id).cmp(&(&b.cohort, &b.device_id)));
        Self {
            generated_at: now,
            silent_after_secs,
            cohorts,
            devices,
            recent_failures: rows.failures,
        }
    }

    pub fn cohort(&self, name: &str) -> Option<&CohortSummary> {
        self.cohorts.iter().find(|c| c.cohort == name)
    }
}

impl CohortSummary {
    pub fn target(&self, version: &str) -> Option<&TargetSummary> {
        self.targets.iter().find(|t| t.version == version)
    }
}

impl TargetSummary {
    /// Succeeded among tried, in percent (`None` before anyone tried).
    pub fn success_percent(&self) -> Option<f64> {
        (self.tried > 0).then(|| self.succeeded as f64 * 100.0 / self.tried as f64)
    }
}

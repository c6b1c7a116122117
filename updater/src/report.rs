//! Outcome reports (docs/REPORTS.md): every run's outcome goes to the
//! outbox first (durable, bounded), then is sent to `report.url`, oldest
//! first, when the network allows. Reports written while offline arrive
//! later, each exactly once per id (the server is idempotent by id).
//!
//! Event outcomes (updated, rolled back, failed, refused, deferred) get a
//! file each; routine ones are a single heartbeat that is overwritten, so a
//! device offline for weeks does not queue thousands of "up to date".

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use manifest::{Timestamp, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ReportConfig};
use crate::durable::write_atomic;
use crate::paths::Paths;
use crate::state::Outcome;

pub const SCHEMA: u32 = 1;
const HEARTBEAT: &str = "heartbeat.json";
const DROPPED: &str = "dropped";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub schema: u32,
    pub id: String,
    pub device_id: String,
    pub product: String,
    pub cohort: String,
    pub at: Timestamp,
    pub outcome: Outcome,
    pub from_version: Option<Version>,
    pub to_version: Option<Version>,
    pub running_version: Option<Version>,
    pub stage: Option<String>,
    pub reason: String,
    pub duration_secs: Option<u64>,
    #[serde(default)]
    pub dropped_reports: u64,
}

impl DeviceReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        at: Timestamp,
        outcome: Outcome,
        from: Option<Version>,
        to: Option<Version>,
        running: Option<Version>,
        stage: Option<&str>,
        reason: &str,
        duration_secs: Option<u64>,
    ) -> Self {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        Self {
            schema: SCHEMA,
            id: hex::encode(id),
            device_id: config.device_id.clone(),
            product: config.product.to_string(),
            cohort: config.cohort.to_string(),
            at,
            outcome,
            from_version: from,
            to_version: to,
            running_version: running,
            stage: stage.map(String::from),
            reason: reason.to_string(),
            duration_secs,
            dropped_reports: 0,
        }
    }
}

/// Write a report to the outbox and enforce its bounds.
pub fn enqueue(paths: &Paths, cfg: &ReportConfig, report: &DeviceReport) -> io::Result<()> {
    let dir = paths.outbox();
    fs::create_dir_all(&dir)?;
    let bytes = serde_json::to_vec(report).expect("reports serialize");
    if !report.outcome.is_routine() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        write_atomic(&dir.join(format!("{nanos:020}-{}.json", report.id)), &bytes)?;
    } else {
        write_atomic(&dir.join(HEARTBEAT), &bytes)?;
    }
    enforce_bounds(&dir, cfg)
}

/// Event files, oldest first.
fn events(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && name != HEARTBEAT && !name.starts_with('.') {
            files.push((entry.path(), entry.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

fn dropped(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(DROPPED))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn enforce_bounds(dir: &Path, cfg: &ReportConfig) -> io::Result<()> {
    let files = events(dir)?;
    let mut total: u64 = files.iter().map(|(_, n)| n).sum();
    let mut count = files.len();
    let mut dropped_now = 0;
    for (path, len) in &files {
        if count <= cfg.max_reports && total <= cfg.max_bytes {
            break;
        }
        fs::remove_file(path)?;
        count -= 1;
        total -= len;
        dropped_now += 1;
    }
    if dropped_now > 0 {
        log::warn!("report outbox full: dropped the {dropped_now} oldest report(s)");
        write_atomic(
            &dir.join(DROPPED),
            (dropped(dir) + dropped_now).to_string().as_bytes(),
        )?;
    }
    Ok(())
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub left: usize,
}

/// Send the outbox, oldest first; stop at the first failure (the next run
/// tries again). Never fails the run: reports are feedback, not function.
pub async fn flush(paths: &Paths, cfg: &ReportConfig) -> Flushed {
    let dir = paths.outbox();
    let mut queue = events(&dir)
        .map(|f| f.into_iter().map(|(p, _)| p).collect::<Vec<_>>())
        .unwrap_or_default();
    if dir.join(HEARTBEAT).exists() {
        queue.push(dir.join(HEARTBEAT));
    }
    let mut flushed = Flushed {
        sent: 0,
        left: queue.len(),
    };
    if queue.is_empty() {
        return flushed;
    }
    let client = match reqwest::Client::builder().timeout(cfg.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("reports: cannot set up HTTP: {e}");
            return flushed;
        }
    };
    for path in queue {
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(mut report) = serde_json::from_slice::<DeviceReport>(&bytes) else {
            log::warn!("reports: {} is unreadable; dropping it", path.display());
            let _ = fs::remove_file(&path);
            continue;
        };
        let lost = dropped(&dir);
        report.dropped_reports = lost;
        let mut req = client
            .post(&cfg.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&report).expect("reports serialize"));
        if let Some(token) = &cfg.token {
            req = req.bearer_auth(token);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 409 => {
                let _ = fs::remove_file(&path);
                if lost > 0 {
                    let _ = fs::remove_file(dir.join(DROPPED));
                }
                flushed.sent += 1;
                flushed.left -= 1;
            }
            Ok(resp) if matches!(resp.status().as_u16(), 400 | 413 | 422) => {
                // The server will never take this one: do not let it block the queue.
                log::warn!(
                    "reports: {} refused {} ({}); dropping it",
                    cfg.url,
                    path.display(),
                    resp.status()
                );
                let _ = fs::remove_file(&path);
                flushed.left -= 1;
            }
            Ok(resp) => {
                log::warn!(
                    "reports: {} answered {}; {} report(s) wait for the next run",
                    cfg.url,
                    resp.status(),
                    flushed.left
                );
                break;
            }
            Err(e) => {
                log::info!(
                    "reports: {} unreachable ({e}); {} report(s) wait in the outbox",
                    cfg.url,
                    flushed.left
                );
                break;
            }
        }
    }
    flushed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_reports: usize) -> ReportConfig {
        ReportConfig {
            url: "http://127.0.0.1:9/".into(),
            token: None,
            max_reports,
            max_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    fn report(outcome: Outcome) -> DeviceReport {
        DeviceReport {
            schema: SCHEMA,
            id: format!("{:032x}", rand::random::<u128>()),
            device_id: "d".into(),
            product: "p".into(),
            cohort: "c".into(),
            at: Timestamp::from_unix(1),
            outcome,
            from_version: None,
            to_version: None,
            running_version: None,
            stage: None,
            reason: "r".into(),
            duration_secs: None,
            dropped_reports: 0,
        }
    }

    #[test]
    fn outbox_is_bounded_and_heartbeats_coalesce() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        for _ in 0..5 {
            enqueue(&paths, &cfg(3), &report(Outcome::Updated)).unwrap();
            enqueue(&paths, &cfg(3), &report(Outcome::UpToDate)).unwrap();
        }
        assert_eq!(events(&paths.outbox()).unwrap().len(), 3);
        assert_eq!(dropped(&paths.outbox()), 2);
        assert!(paths.outbox().join(HEARTBEAT).exists());
    }
}

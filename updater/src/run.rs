//! One convergence run, `updater check` (DESIGN: One run, State machine).
//!
//! 1. lock; finish or undo what an interrupted run left (`recover`);
//! 2. fetch the cohort manifest (`If-None-Match`), verify it, check identity,
//!    replay and expiry against the persisted time floor;
//! 3. decide (up to date, blocked, not in rollout, refused downgrade, install);
//! 4. fetch the release manifest pinned by hash, verify it and its board;
//! 5. stage into the inactive slot (reuse, resumable download, safe unpack);
//! 6. wait for the install window and the busy command;
//! 7. switch, restart, health-check: commit, or roll back and block.
//!
//! Every transition is persisted before its side effect, so a kill at any
//! point leaves `current` on a complete slot and the next run converges.
//!
//! `updater install BUNDLE` is the same run with one difference: the store
//! is the unpacked bundle (`file://`) instead of the configured servers.

use std::path::Path;
use std::time::Instant;

use manifest::store::{cohort_path, release_path, signature_path};
use manifest::{keys_history_path, KeysError, KEYS_PATH};
use manifest::{
    Anchor, CohortManifest, Health, KeyRing, ReleaseManifest, Sha256Hex, Timestamp, Verified, Version,
};
use manifest::{MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES};

use crate::bundle::BundleError;
use crate::clock::Clock;
use crate::config::Config;
use crate::durable::{flip_symlink, write_atomic};
use crate::fetch::{FetchError, Small, Transport};
use crate::health::Checks;
use crate::history::{self, Event};
use crate::lock::{self, LockError, RunLock};
use crate::paths::Paths;
use crate::policy::{self, Decision};
use crate::process::{self, RunResult};
use crate::report::DeviceReport;
use crate::stage::{StageError, Stager};
use crate::state::{
    exit_code, Accepted, InFlight, Installed, LastCheck, Outcome, Owed, Phase, Slot, SlotInfo, State,
    StateError, MAX_HOOK_FAILURES,
};
use crate::trust::{self, ActiveKeys, TrustConfig};
use crate::window;

/// What a run concluded, for the exit code, the log line and `status`.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub version: Option<Version>,
    pub reason: String,
    /// Where in the run a failure happened: fetch, verify, download,
    /// stage, switch or health (for reports).
    pub stage: Option<&'static str>,
    /// From the start of the install to its verdict (updates and rollbacks).
    pub duration_secs: Option<u64>,
    /// `check --dry-run` found a release it would install.
    pub would_install: bool,
    /// An install or rollback verdict: its report goes out through
    /// `State::owed`, not as a run's ordinary outcome.
    owed: bool,
}

/// Exit code 17: `check --dry-run` found a release it would install.
pub const EXIT_WOULD_INSTALL: u8 = 17;

impl Report {
    fn new(outcome: Outcome, version: Option<&Version>, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            version: version.cloned(),
            reason: reason.into(),
            stage: None,
            duration_secs: None,
            would_install: false,
            owed: false,
        }
    }

    /// The process exit code for this outcome (docs/UPDATER.md).
    pub fn exit_code(&self) -> u8 {
        if self.would_install {
            EXIT_WOULD_INSTALL
        } else {
            exit_code(self.outcome)
        }
    }

    fn at(mut self, stage: &'static str) -> Self {
        self.stage = Some(stage);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Io(String),
}

enum CohortError {
    Offline(String),
    Refused(String),
    Failed(String),
}

pub struct Agent {
    pub config: Config,
    pub paths: Paths,
    pub clock: Box<dyn Clock>,
}

impl Agent {
    pub fn new(config: Config, clock: Box<dyn Clock>) -> Self {
        let paths = Paths::new(&config.state_dir);
        Self { config, paths, clock }
    }

    /// Create the state dir and take the run lock; `Err(report)` when
    /// another run holds it (nothing to do, not an error).
    fn lock(&self) -> Result<Result<RunLock, Report>, RunError> {
        self.paths
            .ensure()
            .map_err(|e| RunError::Io(format!("{}: {e}", self.paths.root.display())))?;
        match lock::acquire(&self.paths.lock()) {
            Ok(l) => Ok(Ok(l)),
            Err(LockError::Held) => Ok(Err(Report::new(
                Outcome::Locked,
                None,
                "another updater run holds the lock; nothing done",
            ))),
            Err(LockError::Io(e)) => Err(RunError::Io(format!("{}: {e}", self.paths.lock().display()))),
        }
    }

    /// An orderly shutdown (SIGTERM: a planned reboot, `systemctl stop`)
    /// stopped a run, whose future is dropped (and its lock released). A
    /// trial it interrupted is not the release's fault (TUF-style "false
    /// rollback"): give the attempt back and count the shutdown apart, so a
    /// release that keeps rebooting the device is still rolled back after
    /// `max_trial_shutdowns`. A SIGKILL never gets here: it counts as a
    /// failed attempt, as a crash must.
    pub fn note_shutdown(&self) {
        let Ok(_lock) = lock::acquire(&self.paths.lock()) else {
            return;
        };
        let Ok(mut state) = State::load(&self.paths) else {
            return;
        };
        if state.phase != Phase::Trial {
            return;
        }
        let before = state.clone();
        state.trial_attempts = state.trial_attempts.saturating_sub(1);
        state.trial_shutdowns += 1;
        match state.save_changes(&self.paths, &before) {
            Ok(()) => log::info!(
                "the trial of {} was stopped by a shutdown ({} so far): not counted as a failed attempt",
                state
                    .target
                    .as_ref()
                    .map_or("?".into(), |t| t.version.to_string()),
                state.trial_shutdowns
            ),
            Err(e) => log::warn!("cannot record the shutdown during the trial: {e}"),
        }
    }

    /// `updater check`.
    pub async fn check(&self, dry_run: bool) -> Result<Report, RunError> {
        let lock = match self.lock()? {
            Ok(l) => l,
            Err(report) => return Ok(report),
        };
        self.run(&lock, dry_run, &self.config.servers).await
    }

    /// `updater install BUNDLE`: the same run as `check`, under the same
    /// lock, with the unpacked bundle as the only store (`file://`). Every
    /// rule that applies to a server applies to the bundle, because the
    /// code that applies them is the same.
    pub async fn install(&self, bundle: &Path) -> Result<Report, RunError> {
        let lock = match self.lock()? {
            Ok(l) => l,
            Err(report) => return Ok(report),
        };
        let dir = self.paths.bundle_dir();
        let clear = || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RunError::Io(format!("{}: {e}", dir.display())))
            }
            _ => Ok(()),
        };
        // A bundle left by an interrupted install is stale: start clean.
        clear()?;
        let unpacked = crate::bundle::unpack(bundle, &dir);
        let report = match unpacked {
            Ok(cohorts) if cohorts.contains(&self.config.cohort) => {
                let source = format!("file://{}", dir.display());
                log::info!("installing from bundle {}", bundle.display());
                self.run(&lock, false, &[source]).await
            }
            Ok(cohorts) => {
                let held: Vec<String> = cohorts.iter().map(ToString::to_string).collect();
                self.record_only(Report::new(
                    Outcome::Failed,
                    None,
                    format!(
                        "{}: a bundle for cohort {}, not for this device's cohort {}",
                        bundle.display(),
                        held.join(", "),
                        self.config.cohort
                    ),
                ))
                .await
            }
            Err(e @ BundleError::Invalid { .. }) => {
                self.record_only(Report::new(Outcome::Refused, None, e.to_string()).at("verify"))
                    .await
            }
            Err(e) => {
                self.record_only(Report::new(Outcome::Failed, None, e.to_string()))
                    .await
            }
        };
        if let Err(e) = clear() {
            log::warn!("{e}; removed at the next install");
        }
        report
    }

    /// Record an outcome reached before any convergence (a bundle that could
    /// not be used), so `status` shows it like any other.
    async fn record_only(&self, report: Report) -> Result<Report, RunError> {
        let mut state = State::load(&self.paths)?;
        let loaded = state.clone();
        let running = state.active_version().cloned();
        self.finish(&mut state, &loaded, &report, running).await?;
        Ok(report)
    }

    /// One run against `servers`, under the run lock.
    async fn run(&self, _lock: &RunLock, dry_run: bool, servers: &[String]) -> Result<Report, RunError> {
        let mut state = State::load(&self.paths)?;
        if !dry_run {
            // Before this run can reach a verdict of its own.
            self.deliver_owed(&mut state);
        }
        let loaded = state.clone();
        self.adopt_running_slot(&mut state);
        let running_before = state.active_version().cloned();
        // The time floor only moves forward: a Pi without RTC booting at
        // 1970 neither bricks (expired) nor reopens old manifests.
        state.time_floor = state.time_floor.max(self.clock.now());

        let report = if dry_run {
            self.converge(&mut state, true, servers).await
        } else {
            match self.recover(&mut state).await {
                Ok(Some(report)) => Ok(report),
                Ok(None) => self.converge(&mut state, false, servers).await,
                Err(e) => Err(e),
            }
        };
        let report = match report {
            Ok(report) => report,
            Err(e) if !dry_run => {
                // An error that ends the run (the disk, the state file) is
                // still an outcome the fleet must see.
                let at = state.time_floor.max(self.clock.now());
                let report = Report::new(
                    Outcome::Failed,
                    None,
                    format!("{e}; the device stays on its current slot"),
                );
                self.send_report(&report, at, running_before.clone(), running_before)
                    .await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !dry_run {
            self.finish(&mut state, &loaded, &report, running_before).await?;
        }
        Ok(report)
    }

    /// With no record of an active release (a fresh device, or a state file
    /// an operator moved away), a complete slot that `current` points at is
    /// what runs: adopt it, so staging never overwrites the running slot and
    /// a failed install has something to roll back to.
    fn adopt_running_slot(&self, state: &mut State) {
        if state.active.is_some() || state.phase != Phase::Idle {
            return;
        }
        let Some(slot) = self.paths.current_slot() else {
            return;
        };
        if let Some(info) = SlotInfo::load(&self.paths.slot(slot)) {
            log::warn!(
                "no record of the running release: adopting {} in slot {}",
                info.version,
                slot.name()
            );
            state.active = Some(Installed {
                slot,
                version: info.version,
            });
        }
    }

    /// Save what the run changed, record its outcome for `status`, report it.
    async fn finish(
        &self,
        state: &mut State,
        loaded: &State,
        report: &Report,
        running_before: Option<Version>,
    ) -> Result<(), RunError> {
        // A Pi without RTC boots at 1970 until NTP answers: date reports
        // like manifests, never before the time floor.
        let at = state.time_floor.max(self.clock.now());
        self.deliver_owed(state);
        state.save_changes(&self.paths, loaded)?;
        LastCheck {
            at: self.clock.now(),
            outcome: report.outcome,
            version: report.version.clone(),
            reason: report.reason.clone(),
        }
        .store(&self.paths)?;
        if report.owed {
            // Its report went out with the owed record.
            if let Some(cfg) = &self.config.report {
                crate::report::flush_with(&self.paths, cfg, self.clock.as_ref()).await;
            }
        } else {
            self.send_report(report, at, running_before, state.active_version().cloned())
                .await;
        }
        Ok(())
    }

    /// Put the outcome in the outbox and try to send what waits there.
    async fn send_report(
        &self,
        report: &Report,
        at: Timestamp,
        before: Option<Version>,
        after: Option<Version>,
    ) {
        let Some(cfg) = &self.config.report else { return };
        let device_report = DeviceReport::new(
            &self.config,
            at,
            report.outcome,
            before,
            report.version.clone(),
            after,
            report.stage,
            &report.reason,
            report.duration_secs,
        );
        if let Err(e) = crate::report::enqueue(&self.paths, cfg, &device_report) {
            log::warn!("reports: cannot write to {}: {e}", self.paths.outbox().display());
        }
        crate::report::flush_with(&self.paths, cfg, self.clock.as_ref()).await;
    }

    /// Finish or undo what an interrupted run left behind.
    async fn recover(&self, state: &mut State) -> Result<Option<Report>, RunError> {
        match state.phase {
            Phase::Idle => Ok(None),
            // Nothing switched yet: the normal flow resumes downloads and
            // reuses a complete staged slot.
            Phase::Downloading | Phase::Staged | Phase::Committed => {
                log::info!("resuming after an interrupted run (was {})", state.phase.as_str());
                Ok(None)
            }
            Phase::Switching => {
                let Some(target) = state.target.clone() else {
                    state.persist(&self.paths, Phase::Idle)?;
                    return Ok(None);
                };
                if self.paths.current_slot() == Some(target.slot) {
                    log::warn!(
                        "interrupted right after switching to {}: resuming its trial",
                        target.version
                    );
                    state.trial_attempts += 1;
                    state.persist(&self.paths, Phase::Trial)?;
                    Ok(Some(self.trial(state).await?))
                } else {
                    log::warn!(
                        "interrupted before switching to {}: switching again",
                        target.version
                    );
                    state.persist(&self.paths, Phase::Staged)?;
                    Ok(None)
                }
            }
            Phase::Trial => {
                state.trial_attempts += 1;
                state.persist(&self.paths, Phase::Trial)?;
                let max = self.config.health.max_trial_attempts;
                let max_shutdowns = self.config.health.max_trial_shutdowns;
                if state.trial_shutdowns > max_shutdowns {
                    let reason = format!(
                        "the trial was stopped by {} shutdowns (reboots) without ever finishing",
                        state.trial_shutdowns
                    );
                    return Ok(Some(self.rollback(state, reason).await?));
                }
                if state.trial_attempts > max {
                    let reason = format!(
                        "the trial was interrupted {} times (crash or reboot during the health check)",
                        state.trial_attempts - 1
                    );
                    return Ok(Some(self.rollback(state, reason).await?));
                }
                log::warn!(
                    "resuming an interrupted trial (attempt {} of {max})",
                    state.trial_attempts
                );
                Ok(Some(self.trial(state).await?))
            }
            Phase::RollingBack => {
                let reason = state
                    .rollback_reason
                    .clone()
                    .unwrap_or_else(|| "interrupted rollback".into());
                Ok(Some(self.rollback(state, reason).await?))
            }
        }
    }

    async fn converge(
        &self,
        state: &mut State,
        dry_run: bool,
        servers: &[String],
    ) -> Result<Report, RunError> {
        let (cohort, transport, keys) = match self.fetch_cohort(state, dry_run, servers).await {
            Ok(v) => v,
            Err(CohortError::Offline(r)) => return Ok(Report::new(Outcome::Offline, None, r).at("fetch")),
            Err(CohortError::Refused(r)) => return Ok(Report::new(Outcome::Refused, None, r).at("verify")),
            Err(CohortError::Failed(r)) => return Ok(Report::new(Outcome::Failed, None, r).at("fetch")),
        };
        let target = cohort.target.version.clone();
        let name = &self.config.cohort;
        let decision = policy::decide(
            &cohort,
            state.active_version(),
            &state.blocked,
            &self.config.device_id,
        );
        if !dry_run && !matches!(decision, Decision::Install(_)) {
            self.abandon_in_flight(state)?;
        }
        match decision {
            Decision::UpToDate => {
                return Ok(Report::new(
                    Outcome::UpToDate,
                    Some(&target),
                    format!("running {target}, the target of cohort {name} (sequence {})", cohort.sequence),
                ))
            }
            Decision::Blocked(why) => {
                return Ok(Report::new(
                    Outcome::Blocked,
                    Some(&target),
                    format!("target {target} failed on this device before and is blocked ({why}); publish a fixed version"),
                ))
            }
            Decision::NotInRollout { bucket, percent } => {
                return Ok(Report::new(
                    Outcome::NotInRollout,
                    Some(&target),
                    format!(
                        "not selected for {target} yet: device bucket {:.2} is not below the rollout's {percent}%",
                        f64::from(bucket) / 100.0
                    ),
                ))
            }
            Decision::RefusedDowngrade { current } => {
                return Ok(Report::new(
                    Outcome::Refused,
                    Some(&target),
                    format!(
                        "target {target} is lower than the running {current} and the cohort manifest does not allow a downgrade"
                    ),
                ))
            }
            Decision::Install(_) if dry_run => {
                let mut report =
                    Report::new(Outcome::UpToDate, Some(&target), format!("dry run: would install {target}"));
                report.would_install = true;
                return Ok(report);
            }
            Decision::Install(_) => {}
        }

        let release = match self
            .fetch_release(&transport, &cohort, &keys, state.time_floor)
            .await
        {
            Ok(r) => r,
            Err(CohortError::Offline(r)) => {
                return Ok(Report::new(Outcome::Offline, Some(&target), r).at("fetch"))
            }
            Err(CohortError::Refused(r)) => {
                return Ok(Report::new(Outcome::Refused, Some(&target), r).at("verify"))
            }
            Err(CohortError::Failed(r)) => {
                return Ok(Report::new(Outcome::Failed, Some(&target), r).at("fetch"))
            }
        };

        // Stage into the inactive slot unless it already holds this release.
        let active_slot = state.active.as_ref().map(|a| a.slot);
        let slot = active_slot.map_or(Slot::A, Slot::other);
        let staged =
            SlotInfo::load(&self.paths.slot(slot)).is_some_and(|i| i.release_sha256 == cohort.target.sha256);
        state.target = Some(InFlight {
            version: target.clone(),
            release_sha256: cohort.target.sha256,
            slot,
            previous: state.active.clone(),
            started_at: Some(self.clock.now()),
        });
        if !staged {
            state.persist(&self.paths, Phase::Downloading)?;
            let started = Instant::now();
            let stager = Stager {
                config: &self.config,
                paths: &self.paths,
                transport: &transport,
            };
            match stager
                .stage(&release, cohort.target.sha256, slot, active_slot)
                .await
            {
                Ok(stats) => {
                    state.hook_failures = None;
                    log::info!(
                        "staged {target} in slot {} in {:.1} s ({} bytes downloaded, {} bytes reused)",
                        slot.name(),
                        started.elapsed().as_secs_f64(),
                        stats.downloaded,
                        stats.reused
                    )
                }
                Err(e) => {
                    state.target = None;
                    let mut blocked = String::new();
                    if matches!(e, StageError::Hook { .. }) && state.hook_failed(&target) {
                        let why =
                            format!("its post_stage hook failed {MAX_HOOK_FAILURES} runs in a row: {e}");
                        blocked =
                            format!("; {target} is now blocked on this device (publish a fixed version)");
                        state.blocked.insert(target.to_string(), why);
                    }
                    state.persist(&self.paths, Phase::Idle)?;
                    let outcome = match &e {
                        StageError::Network(f) if f.is_transient() => Outcome::Offline,
                        StageError::Refused(_) => Outcome::Refused,
                        _ => Outcome::Failed,
                    };
                    let stage = match &e {
                        StageError::Network(_) | StageError::Restart(_) => "download",
                        _ => "stage",
                    };
                    return Ok(Report::new(
                        outcome,
                        Some(&target),
                        format!("staging {target} failed: {e}{blocked}"),
                    )
                    .at(stage));
                }
            }
        }
        state.persist(&self.paths, Phase::Staged)?;

        let minute = self.clock.local_minute_of_day();
        if !window::is_open(&self.config.install.windows, minute) {
            let windows: Vec<String> = self
                .config
                .install
                .windows
                .iter()
                .map(ToString::to_string)
                .collect();
            return Ok(Report::new(
                Outcome::Deferred,
                Some(&target),
                format!(
                    "{target} is staged in slot {}; switching waits for the install window {}",
                    slot.name(),
                    windows.join(", ")
                ),
            ));
        }
        if let Some(why) = self.busy().await {
            return Ok(Report::new(
                Outcome::Deferred,
                Some(&target),
                format!(
                    "{target} is staged in slot {}; switching waits: {why}",
                    slot.name()
                ),
            )
            .at("switch"));
        }

        self.switch(state).await
    }

    /// A staged or half-downloaded release the cohort no longer asks for
    /// (ops re-targeted, halted or rolled back the cohort meanwhile) must
    /// neither be switched to later nor keep `updater rollback` waiting for
    /// it: drop the in-flight install. The slot keeps what was staged (a
    /// complete slot is reused if that target comes back; partial downloads
    /// of abandoned targets are cleaned by the next staging).
    fn abandon_in_flight(&self, state: &mut State) -> Result<(), RunError> {
        if !matches!(state.phase, Phase::Downloading | Phase::Staged) {
            return Ok(());
        }
        if let Some(t) = state.target.take() {
            log::info!(
                "{} is no longer this device's target: its pending install is abandoned",
                t.version
            );
        }
        state.persist(&self.paths, Phase::Idle)?;
        Ok(())
    }

    /// Why the switch must wait, if the busy command says so. A busy command
    /// that cannot run, is killed or does not answer within `busy_timeout`
    /// counts as busy: interrupting a match is worse than a late update, and
    /// the deferral's reason (in `status` and the fleet's reports) names the
    /// broken command so someone fixes it.
    async fn busy(&self) -> Option<String> {
        let argv = &self.config.install.busy_command;
        if argv.is_empty() {
            return None;
        }
        let shown = process::show(argv, &[]);
        match process::run(argv, &[], None, &[], self.config.install.busy_timeout).await {
            Ok(r) if r.success() => Some(format!("the device is busy ({shown} exited 0)")),
            Ok(RunResult::Exited(_)) => None,
            Ok(r) => {
                log::warn!(
                    "busy command {shown} {}: taken as busy; fix it or remove busy_command",
                    r.describe()
                );
                Some(format!(
                    "busy command {shown} {}; fix it or remove busy_command",
                    r.describe()
                ))
            }
            Err(e) => {
                log::warn!("{e}: taken as busy; fix busy_command or remove it");
                Some(format!("{e}; fix busy_command or remove it"))
            }
        }
    }

    async fn fetch_cohort(
        &self,
        state: &mut State,
        dry_run: bool,
        servers: &[String],
    ) -> Result<(Verified<CohortManifest>, Transport, ActiveKeys), CohortError> {
        let cohort = &self.config.cohort;
        let rel = cohort_path(cohort);
        let cached = (
            self.paths.cached_cohort(cohort),
            self.paths.cached_cohort_signature(cohort),
            self.paths.cached_cohort_etag(cohort),
        );
        let cached_pair = match (std::fs::read(&cached.0), std::fs::read(&cached.1)) {
            (Ok(b), Ok(s)) => Some((b, s)),
            _ => None,
        };
        let etag = cached_pair
            .as_ref()
            .and_then(|_| std::fs::read_to_string(&cached.2).ok());
        let mut last_error = String::from("no server configured");
        for server in servers {
            let transport = Transport::new(server, &self.config.network).map_err(CohortError::Failed)?;
            let keys = match self.refresh_keys(&transport, state.time_floor, dry_run).await {
                Err(CohortError::Offline(e)) => {
                    last_error = e;
                    continue;
                }
                other => other?,
            };
            let fetched = self.fetch_pair(&transport, &rel, etag.as_deref()).await;
            let (bytes, sig, new_etag) = match fetched {
                Ok(Some((b, s, e))) => (b, s, e),
                Ok(None) => match cached_pair.clone() {
                    Some((b, s)) => (b, s, None),
                    // We sent no ETag: a 304 here is a broken server or cache.
                    None => {
                        return Err(CohortError::Failed(format!(
                            "{}: answered 304 Not Modified to an unconditional request",
                            transport.url(&rel)
                        )))
                    }
                },
                Err(e) if e.is_transient() => {
                    last_error = e.to_string();
                    continue;
                }
                Err(FetchError::NotFound { url }) => {
                    return Err(CohortError::Failed(format!(
                        "{url} does not exist: check `cohort` in {} and that the cohort was promoted",
                        self.config.source.display()
                    )))
                }
                // Endless data (TUF): a verdict on the content, like a bad signature.
                Err(e @ FetchError::TooLarge { .. }) => return Err(CohortError::Refused(e.to_string())),
                Err(e) => return Err(CohortError::Failed(e.to_string())),
            };
            forget_fast_forwarded_floor(state, cohort, &keys);
            let verified = keys
                .ops(state.time_floor)
                .map_err(|e| CohortError::Refused(e.to_string()))?
                .verify_cohort(&rel, &bytes, &sig)
                .map_err(|e| CohortError::Refused(refusal(e, &bytes, &sig)))?;
            let sha = verified.sha256();
            policy::check_cohort(
                &verified,
                sha,
                &self.config.product,
                cohort,
                state.accepted_for(cohort),
                state.time_floor,
            )
            .map_err(|r| CohortError::Refused(format!("{rel}: {r}")))?;
            if !dry_run {
                state.accepted.insert(
                    cohort.to_string(),
                    Accepted {
                        sequence: verified.sequence,
                        sha256: sha,
                        signers: verified.signers().iter().map(ToString::to_string).collect(),
                    },
                );
                state.time_floor = state.time_floor.max(verified.issued_at);
                if let Some(etag) = new_etag {
                    // Best effort: a failed cache write costs one full fetch next time.
                    let _ = write_atomic(&cached.0, &bytes)
                        .and_then(|_| write_atomic(&cached.1, &sig))
                        .and_then(|_| write_atomic(&cached.2, etag.as_bytes()));
                }
            }
            return Ok((verified, transport, keys));
        }
        Err(CohortError::Offline(format!(
            "cannot reach any server: {last_error}"
        )))
    }

    /// The keys in force for this run. With pinned root keys, ask the store
    /// for `keys.json` (conditionally: a 304 when nothing changed), verify a
    /// new one against what this device trusts now, and keep it.
    async fn refresh_keys(
        &self,
        transport: &Transport,
        floor: Timestamp,
        dry_run: bool,
    ) -> Result<ActiveKeys, CohortError> {
        let roots = match &self.config.trust {
            TrustConfig::Static(keys) => return Ok(ActiveKeys::Static(keys.clone())),
            TrustConfig::Root(roots) => roots,
        };
        let trusted = trust::load(&self.paths).map_err(CohortError::Failed)?;
        let etag = trusted.as_ref().and_then(|t| t.etag.as_deref());
        let (bytes, sig, etag) = match self.fetch_pair(transport, KEYS_PATH, etag).await {
            Ok(Some(pair)) => pair,
            // Unchanged, or a store (an old bundle, a mirror) without it:
            // what this device accepted before stays in force.
            Ok(None) | Err(FetchError::NotFound { .. }) if trusted.is_some() => {
                return Ok(ActiveKeys::Ring(trusted.expect("checked").ring))
            }
            Ok(None) => {
                return Err(CohortError::Failed(format!(
                    "{}: answered 304 Not Modified to an unconditional request",
                    transport.url(KEYS_PATH)
                )))
            }
            Err(FetchError::NotFound { url }) => {
                return Err(CohortError::Failed(format!(
                    "{url} does not exist: this device pins root keys (root_keys_dir in {}) and needs the store's keys.json; create it with `manifest-builder keys init`",
                    self.config.source.display()
                )))
            }
            Err(e) if e.is_transient() => return Err(CohortError::Offline(e.to_string())),
            Err(e @ FetchError::TooLarge { .. }) => return Err(CohortError::Refused(e.to_string())),
            Err(e) => return Err(CohortError::Failed(e.to_string())),
        };
        let anchor = match &trusted {
            Some(t) => Anchor::Ring(&t.ring),
            None => Anchor::Pinned(roots),
        };
        let ring = match KeyRing::verify(anchor, &bytes, &sig) {
            Ok(ring) => ring,
            // Not signed by the roots this device trusts: it may have
            // missed root rotations; step through the store's history.
            Err(e @ KeysError::Verify(_)) => self
                .walk_keys_history(transport, anchor, &bytes, &sig)
                .await
                .map_err(|walk| CohortError::Refused(format!("{}; {walk}", refusal(e, &bytes, &sig))))?,
            Err(e) => return Err(CohortError::Refused(refusal(e, &bytes, &sig))),
        };
        ring.check_expiry(floor)
            .map_err(|e| CohortError::Refused(e.to_string()))?;
        let previous = trusted.as_ref().map(|t| (t.ring.sha256(), t.etag.clone()));
        if !dry_run && previous != Some((ring.sha256(), etag.clone())) {
            trust::store(&self.paths, &bytes, &sig, etag.as_deref()).map_err(CohortError::Failed)?;
            if previous.is_none_or(|(sha, _)| sha != ring.sha256()) {
                log::info!(
                    "keys.json version {} accepted (expires {}, {} revoked key(s))",
                    ring.version(),
                    ring.expires_at(),
                    ring.revoked().len()
                );
            }
        }
        Ok(ActiveKeys::Ring(ring))
    }

    /// From `start`, verify `keys/<v>.json` for v = start + 1, start + 2, …
    /// each against the one before, until the current `keys.json` verifies
    /// against the last (TUF's root chain). Bounded, so a store cannot keep
    /// a device walking.
    async fn walk_keys_history(
        &self,
        transport: &Transport,
        start: Anchor<'_>,
        bytes: &[u8],
        sig: &[u8],
    ) -> Result<KeyRing, String> {
        const MAX_STEPS: u64 = 64;
        let mut current: Option<KeyRing> = None;
        loop {
            let anchor = current.as_ref().map_or(start, Anchor::Ring);
            if let Ok(ring) = KeyRing::verify(anchor, bytes, sig) {
                return Ok(ring);
            }
            let next = anchor.version() + 1;
            if next > start.version() + MAX_STEPS {
                return Err(format!(
                    "no chain within {MAX_STEPS} versions of keys/ reaches it"
                ));
            }
            let rel = keys_history_path(next);
            let (b, s) = match self.fetch_pair(transport, &rel, None).await {
                Ok(Some((b, s, _))) => (b, s),
                Ok(None) => return Err(format!("{rel}: answered 304 to an unconditional request")),
                Err(FetchError::NotFound { .. }) => {
                    return Err(format!(
                    "and {rel} does not exist to step from version {} (publish the store's keys/ history)",
                    anchor.version()
                ))
                }
                Err(e) => return Err(e.to_string()),
            };
            let ring = KeyRing::verify(anchor, &b, &s).map_err(|e| format!("{rel}: {e}"))?;
            log::info!(
                "keys/: stepped to version {} of the root of trust",
                ring.version()
            );
            current = Some(ring);
        }
    }

    /// Fetch a manifest and its signature as a pair: the signature is
    /// requested with `If-Match` on the manifest's ETag, and the pair is
    /// refetched when it changed in between. `None`: not modified.
    async fn fetch_pair(
        &self,
        transport: &Transport,
        rel: &str,
        etag: Option<&str>,
    ) -> Result<Option<(Vec<u8>, Vec<u8>, Option<String>)>, FetchError> {
        let sig_rel = signature_path(rel);
        let mut tries = 0;
        loop {
            let (bytes, new_etag) = match transport.get_small(rel, etag, None, MAX_MANIFEST_BYTES).await? {
                Small::NotModified => return Ok(None),
                Small::Body { bytes, etag } => (bytes, etag),
            };
            match transport
                .get_small(&sig_rel, None, new_etag.as_deref(), MAX_SIGNATURE_BYTES)
                .await
            {
                Ok(Small::Body { bytes: sig, .. }) => return Ok(Some((bytes, sig, new_etag))),
                Ok(Small::NotModified) => unreachable!("no If-None-Match sent"),
                Err(FetchError::Changed { .. }) if tries < 3 => {
                    tries += 1;
                    // manifest-server gives a manifest and its signature one
                    // ETag; a static host (nginx, S3, a CDN) gives each file
                    // its own, so `If-Match` fails there even though nothing
                    // changed. Tell the two apart by asking whether the
                    // manifest is still the one we have: if so, the
                    // signature is fetched without the condition.
                    if let Some(tag) = new_etag.as_deref() {
                        if let Small::NotModified = transport
                            .get_small(rel, Some(tag), None, MAX_MANIFEST_BYTES)
                            .await?
                        {
                            if let Small::Body { bytes: sig, .. } = transport
                                .get_small(&sig_rel, None, None, MAX_SIGNATURE_BYTES)
                                .await?
                            {
                                return Ok(Some((bytes, sig, new_etag)));
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn fetch_release(
        &self,
        transport: &Transport,
        cohort: &CohortManifest,
        keys: &ActiveKeys,
        floor: Timestamp,
    ) -> Result<ReleaseManifest, CohortError> {
        let target = &cohort.target;
        let rel = release_path(&target.version);
        let classify = |e: FetchError| {
            if e.is_transient() {
                CohortError::Offline(e.to_string())
            } else if matches!(e, FetchError::TooLarge { .. }) {
                CohortError::Refused(e.to_string())
            } else {
                CohortError::Failed(e.to_string())
            }
        };
        let bytes = match transport
            .get_small(&rel, None, None, MAX_MANIFEST_BYTES)
            .await
            .map_err(classify)?
        {
            Small::Body { bytes, .. } => bytes,
            Small::NotModified => unreachable!("no If-None-Match sent"),
        };
        let sha = Sha256Hex::digest(&bytes);
        if sha != target.sha256 || bytes.len() as u64 != target.size {
            return Err(CohortError::Refused(format!(
                "{rel}: {} bytes with sha256 {sha}, but the cohort manifest pins {} bytes with sha256 {}",
                bytes.len(),
                target.size,
                target.sha256
            )));
        }
        let sig = match transport
            .get_small(&signature_path(&rel), None, None, MAX_SIGNATURE_BYTES)
            .await
            .map_err(classify)?
        {
            Small::Body { bytes, .. } => bytes,
            Small::NotModified => unreachable!("no If-None-Match sent"),
        };
        let release = keys
            .release(floor)
            .map_err(|e| CohortError::Refused(e.to_string()))?
            .verify_release(&rel, &bytes, &sig)
            .map_err(|e| CohortError::Refused(refusal(e, &bytes, &sig)))?;
        policy::check_release(
            &release,
            &self.config.product,
            &target.version,
            &self.config.compatible,
        )
        .map_err(|r| CohortError::Refused(format!("{rel}: {r}")))?;
        Ok(release.into_inner())
    }

    /// Flip `current` to the staged slot and run the trial.
    async fn switch(&self, state: &mut State) -> Result<Report, RunError> {
        let target = state.target.clone().expect("switch needs a staged target");
        state.persist(&self.paths, Phase::Switching)?;
        flip_symlink(&self.paths.current(), &Paths::slot_link_target(target.slot))
            .map_err(|e| RunError::Io(format!("{}: {e}", self.paths.current().display())))?;
        log::info!(
            "switched to {} (slot {}); health checks start",
            target.version,
            target.slot.name()
        );
        state.trial_attempts = 1;
        state.trial_shutdowns = 0;
        state.persist(&self.paths, Phase::Trial)?;
        self.trial(state).await
    }

    /// Restart the units and judge the health of the slot on trial.
    async fn trial(&self, state: &mut State) -> Result<Report, RunError> {
        let target = state.target.clone().expect("a trial has a target");
        let slot_dir = self.paths.slot(target.slot);
        let health: Option<Health> = SlotInfo::load(&slot_dir).and_then(|i| i.health);
        if let Err(reason) = self.restart_units().await {
            return self.rollback(state, reason).await;
        }
        let checks = Checks {
            config: &self.config.health,
            release: health.as_ref(),
            slot_dir: &slot_dir,
        };
        match checks.wait_healthy().await {
            Ok(took) => {
                let previous = target.previous.as_ref().map(|p| p.version.clone());
                state.active = Some(Installed {
                    slot: target.slot,
                    version: target.version.clone(),
                });
                state.target = None;
                state.trial_attempts = 0;
                state.trial_shutdowns = 0;
                let duration = target.started_at.map(|s| s.until(self.clock.now()).as_secs());
                let from = previous
                    .as_ref()
                    .map(|v| format!(" from {v}"))
                    .unwrap_or_default();
                let report = self.owe(
                    state,
                    Event {
                        id: None,
                        at: self.clock.now(),
                        outcome: Outcome::Updated,
                        from: previous.clone(),
                        to: Some(target.version.clone()),
                        reason: format!("healthy after {:.1} s", took.as_secs_f64()),
                        duration_secs: duration,
                    },
                    Report::new(
                        Outcome::Updated,
                        Some(&target.version),
                        format!(
                            "updated{from} to {}: healthy after {:.1} s, committed",
                            target.version,
                            took.as_secs_f64()
                        ),
                    ),
                    previous,
                );
                state.persist(&self.paths, Phase::Committed)?;
                Ok(report)
            }
            Err(reason) => self.rollback(state, reason).await,
        }
    }

    async fn restart_units(&self) -> Result<(), String> {
        let r = &self.config.restart;
        if r.units.is_empty() {
            return Ok(());
        }
        let units: Vec<&str> = r.units.iter().map(String::as_str).collect();
        let result = process::run(&r.command, &units, None, &[], r.timeout).await?;
        if result.success() {
            Ok(())
        } else {
            Err(format!(
                "restart command `{}` {}",
                process::show(&r.command, &units),
                result.describe()
            ))
        }
    }

    /// Flip back to what ran before, restart it, confirm it is healthy, and
    /// block the version that failed.
    async fn rollback(&self, state: &mut State, reason: String) -> Result<Report, RunError> {
        let target = state.target.clone().expect("a rollback has a target");
        let before = state.active_version().cloned();
        state.rollback_reason = Some(reason.clone());
        state.persist(&self.paths, Phase::RollingBack)?;
        log::warn!("{} failed: {reason}; rolling back", target.version);
        let mut note = String::new();
        match &target.previous {
            Some(prev) => {
                flip_symlink(&self.paths.current(), &Paths::slot_link_target(prev.slot))
                    .map_err(|e| RunError::Io(format!("{}: {e}", self.paths.current().display())))?;
                let prev_dir = self.paths.slot(prev.slot);
                let health = SlotInfo::load(&prev_dir).and_then(|i| i.health);
                let healthy = match self.restart_units().await {
                    Err(e) => Err(e),
                    Ok(()) => Checks {
                        config: &self.config.health,
                        release: health.as_ref(),
                        slot_dir: &prev_dir,
                    }
                    .wait_healthy()
                    .await
                    .map(drop),
                };
                if let Err(e) = healthy {
                    log::error!(
                        "after rolling back, the previous version {} is not healthy either: {e}; the device needs a person",
                        prev.version
                    );
                    note = format!("; WARNING: {} is not healthy either: {e}", prev.version);
                }
                state.active = Some(prev.clone());
            }
            None => {
                // A first install that failed: nothing to go back to.
                let _ = std::fs::remove_file(self.paths.current());
                let _ = crate::durable::sync_dir(&self.paths.root);
                state.active = None;
            }
        }
        state.blocked.insert(target.version.to_string(), reason.clone());
        state.target = None;
        state.trial_attempts = 0;
        state.trial_shutdowns = 0;
        state.rollback_reason = None;
        let back_to = target.previous.as_ref().map(|p| p.version.to_string());
        let duration = target.started_at.map(|s| s.until(self.clock.now()).as_secs());
        let report = self.owe(
            state,
            Event {
                id: None,
                at: self.clock.now(),
                outcome: Outcome::RolledBack,
                from: Some(target.version.clone()),
                to: target.previous.as_ref().map(|p| p.version.clone()),
                reason: reason.clone(),
                duration_secs: duration,
            },
            Report::new(
                Outcome::RolledBack,
                Some(&target.version),
                format!(
                    "{} failed ({reason}); rolled back to {}; {} is blocked on this device{note}",
                    target.version,
                    back_to.as_deref().unwrap_or("nothing (first install)"),
                    target.version
                ),
            )
            .at("health"),
            before,
        );
        state.persist(&self.paths, Phase::Idle)?;
        Ok(report)
    }

    /// Make a verdict's history line and report owed in `state` (see
    /// `State::owed`): the caller's next persist, the one that records the
    /// verdict, saves them with it, and `finish` writes them. An older owed
    /// record was delivered when the run began (`run`, `manual_rollback`).
    fn owe(
        &self,
        state: &mut State,
        mut event: Event,
        mut report: Report,
        before: Option<Version>,
    ) -> Report {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
        event.id = Some(hex::encode(id));
        report.duration_secs = event.duration_secs;
        report.owed = true;
        state.owed = Some(Owed {
            event,
            version: report.version.clone(),
            reason: report.reason.clone(),
            stage: report.stage.map(String::from),
            before,
        });
        report
    }

    /// Write what `state.owed` holds: the history line (once, by its id)
    /// and the report (the server drops a second copy by its id), then
    /// clear it and save that; a crash before the save makes the next run
    /// deliver it again, harmlessly. The save is its own write (not left to
    /// `finish`'s), so the clearing never takes other changes with it.
    fn deliver_owed(&self, state: &mut State) {
        let Some(owed) = state.owed.clone() else { return };
        let at = state.time_floor.max(self.clock.now());
        if let Err(e) = history::append_once(&self.paths, &owed.event) {
            log::warn!(
                "{}: cannot append to history: {e}; retried next run",
                self.paths.history().display()
            );
            return;
        }
        if let Some(cfg) = &self.config.report {
            let mut report = DeviceReport::new(
                &self.config,
                at,
                owed.event.outcome,
                owed.before.clone(),
                owed.version.clone(),
                state.active_version().cloned(),
                owed.stage.as_deref(),
                &owed.reason,
                owed.event.duration_secs,
            );
            report.id = owed.event.id.clone().expect("owed events have an id");
            if let Err(e) = crate::report::enqueue(&self.paths, cfg, &report) {
                log::warn!(
                    "reports: cannot write to {}: {e}; retried next run",
                    self.paths.outbox().display()
                );
                return;
            }
        }
        state.owed = None;
        if let Err(e) = state.save(&self.paths) {
            log::warn!("{e}; the history line and report are delivered again next run (once each)");
        }
    }

    /// `updater rollback [--to VERSION]`: go back to the other slot's release
    /// by hand, and block the version left behind.
    pub async fn manual_rollback(&self, to: Option<&Version>) -> Result<Report, RunError> {
        let _lock = match self.lock()? {
            Ok(l) => l,
            Err(report) => return Ok(report),
        };
        let mut state = State::load(&self.paths)?;
        self.deliver_owed(&mut state);
        let loaded = state.clone();
        if state.phase != Phase::Idle {
            return Ok(Report::new(
                Outcome::Failed,
                None,
                format!(
                    "an update is in progress ({}); run `updater check` to finish it first",
                    state.phase.as_str()
                ),
            ));
        }
        let Some(active) = state.active.clone() else {
            return Ok(Report::new(
                Outcome::Failed,
                None,
                "nothing is installed: nothing to roll back",
            ));
        };
        let other = active.slot.other();
        let Some(info) = SlotInfo::load(&self.paths.slot(other)) else {
            return Ok(Report::new(
                Outcome::Failed,
                None,
                "the other slot holds no complete release to go back to",
            ));
        };
        if info.version > active.version {
            // What a staged install left there (the cohort took that target
            // back, or the switch is still waiting): never run here, so not
            // something to go back to.
            return Ok(Report::new(
                Outcome::Failed,
                None,
                format!(
                    "the other slot holds {}, newer than the running {}: that is not a rollback; \
                     the cohort's target decides upgrades",
                    info.version, active.version
                ),
            ));
        }
        if let Some(want) = to {
            if &info.version != want {
                return Ok(Report::new(
                    Outcome::Failed,
                    None,
                    format!(
                        "the other slot holds {}, not {want}; only the previous release can be restored",
                        info.version
                    ),
                ));
            }
        }
        state.target = Some(InFlight {
            version: active.version.clone(),
            release_sha256: SlotInfo::load(&self.paths.slot(active.slot))
                .map(|i| i.release_sha256)
                .unwrap_or_else(|| Sha256Hex::digest(b"")),
            slot: active.slot,
            previous: Some(Installed {
                slot: other,
                version: info.version.clone(),
            }),
            started_at: Some(self.clock.now()),
        });
        let running_before = state.active_version().cloned();
        let report = self
            .rollback(&mut state, "manual rollback by an operator".into())
            .await?;
        self.finish(&mut state, &loaded, &report, running_before).await?;
        Ok(report)
    }
}

/// The text of a verification refusal, with a hint when the server sent a
/// web page: captive portals and misconfigured proxies answer 200 with HTML.
fn refusal(e: impl std::fmt::Display, bytes: &[u8], sig: &[u8]) -> String {
    // Neither JSON nor minisign text ever starts with '<'.
    let html = |b: &[u8]| b.trim_ascii_start().starts_with(b"<");
    if html(bytes) || html(sig) {
        format!(
            "{e} (the server sent an HTML page, not a manifest: a captive portal or a misconfigured proxy?)"
        )
    } else {
        e.to_string()
    }
}

/// TUF's fast-forward recovery: a key later revoked or rotated out may
/// have signed a cohort manifest with a huge sequence, which would make
/// the device refuse every legitimate manifest after it. A sequence floor
/// set only by keys that no longer sign cohorts is dropped; expiry still
/// bounds what an older manifest signed by current keys can do.
fn forget_fast_forwarded_floor(state: &mut State, cohort: &manifest::CohortName, keys: &ActiveKeys) {
    let Some(accepted) = state.accepted.get(cohort.as_str()) else {
        return;
    };
    // Unknown signers (a state written before they were recorded): keep.
    if accepted.signers.is_empty() {
        return;
    }
    let trusted = keys.ops_key_ids();
    if accepted.signers.iter().all(|id| !trusted.contains(id)) {
        log::warn!(
            "cohort {cohort}: forgetting sequence {} (signed by {}, no longer trusted): fast-forward recovery",
            accepted.sequence,
            accepted.signers.join(", ")
        );
        state.accepted.remove(cohort.as_str());
    }
}

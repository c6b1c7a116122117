//! Health checks after a switch (DESIGN: One run, 7): the device's own
//! checks plus the release's. After a grace period, every check must pass
//! `required_passes` times in a row within the window; a failure resets the
//! count. The last failure is the reason recorded when the window runs out.
//!
//! The verdict is [`Tally`], a pure function of each round's result and the
//! time since the window opened, so the counting and the window are unit
//! tested without sleeping; `wait_healthy` only sleeps and reads the clock.

use std::path::Path;
use std::time::{Duration, Instant};

use manifest::{Health, HealthCheck};

use crate::config::HealthConfig;
use crate::process;

pub struct Checks<'a> {
    pub config: &'a HealthConfig,
    pub release: Option<&'a Health>,
    /// The slot the checks run against (relative command paths resolve here).
    pub slot_dir: &'a Path,
}

impl Checks<'_> {
    fn window(&self) -> Duration {
        let release_min = self
            .release
            .and_then(|h| h.min_window_secs)
            .map(Duration::from_secs);
        self.config.window.max(release_min.unwrap_or_default())
    }

    /// Wait for the checks to pass; `Err(reason)` when they do not in time.
    pub async fn wait_healthy(&self) -> Result<Duration, String> {
        let started = Instant::now();
        tokio::time::sleep(self.config.grace).await;
        let window_opened = Instant::now();
        let mut tally = Tally::new(self.config.required_passes, self.window());
        let client = reqwest::Client::builder()
            .timeout(self.config.interval.max(Duration::from_secs(2)))
            // The app answers on the device itself: an HTTP(S)_PROXY in the
            // updater's environment (there to reach the store) must not
            // send `http://127.0.0.1/health` to a proxy, which would fail
            // every release's checks.
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            let result = self.check_once(&client).await;
            match tally.record(result, window_opened.elapsed()) {
                Verdict::Healthy => return Ok(started.elapsed()),
                Verdict::Unhealthy(reason) => return Err(reason),
                Verdict::Pending => tokio::time::sleep(self.config.interval).await,
            }
        }
    }

    async fn check_once(&self, client: &reqwest::Client) -> Result<(), String> {
        for c in &self.config.http {
            http(client, &c.url, c.status).await?;
        }
        for unit in &self.config.units {
            self.unit(unit).await?;
        }
        for argv in &self.config.commands {
            self.command(argv, self.config.command_timeout).await?;
        }
        for check in self.release.map(|h| h.checks.as_slice()).unwrap_or_default() {
            match check {
                HealthCheck::Http { url, status } => http(client, url, status.unwrap_or(200)).await?,
                HealthCheck::Unit { unit } => self.unit(unit).await?,
                HealthCheck::Command { argv, timeout_secs } => {
                    let timeout = timeout_secs
                        .map(Duration::from_secs)
                        .unwrap_or(self.config.command_timeout);
                    let mut argv = argv.clone();
                    // Relative programs live in the new slot (`app/bin/selftest`).
                    if !argv[0].starts_with('/') && argv[0].contains('/') {
                        argv[0] = self.slot_dir.join(&argv[0]).display().to_string();
                    }
                    self.command(&argv, timeout).await?;
                }
            }
        }
        Ok(())
    }

    async fn unit(&self, unit: &str) -> Result<(), String> {
        let r = process::run(
            &self.config.unit_command,
            &[unit],
            None,
            &[],
            self.config.command_timeout,
        )
        .await?;
        if r.success() {
            Ok(())
        } else {
            Err(format!(
                "unit {unit} is not active ({} {})",
                process::show(&self.config.unit_command, &[unit]),
                describe(&r, self.config.command_timeout)
            ))
        }
    }

    async fn command(&self, argv: &[String], timeout: Duration) -> Result<(), String> {
        let r = process::run(argv, &[], Some(self.slot_dir), &[], timeout).await?;
        if r.success() {
            Ok(())
        } else {
            Err(format!(
                "check `{}` {}",
                process::show(argv, &[]),
                describe(&r, timeout)
            ))
        }
    }
}

/// How a check's program ended, naming the limit it ran into.
fn describe(r: &process::RunResult, timeout: Duration) -> String {
    match r {
        process::RunResult::TimedOut => format!(
            "did not finish within {} and was killed, with every process it started",
            humantime::format_duration(timeout)
        ),
        other => other.describe(),
    }
}

/// What one round of checks means for the trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `required_passes` rounds in a row passed: commit.
    Healthy,
    /// The window ran out first: roll back, for this reason.
    Unhealthy(String),
    /// Check again after the interval.
    Pending,
}

/// Counts consecutive passing rounds against the window: `record` is fed
/// each round's result and the time since the window opened (after the
/// grace period). A round that fails resets the count; a round that ends
/// at or past the window's end without completing the count is the last.
/// A round that started in time and completes the count still counts.
#[derive(Debug)]
pub struct Tally {
    required: u32,
    window: Duration,
    passes: u32,
    last_failure: Option<String>,
}

impl Tally {
    pub fn new(required: u32, window: Duration) -> Self {
        Self {
            required: required.max(1),
            window,
            passes: 0,
            last_failure: None,
        }
    }

    pub fn record(&mut self, result: Result<(), String>, since_window_opened: Duration) -> Verdict {
        match result {
            Ok(()) => {
                self.passes += 1;
                if self.passes >= self.required {
                    return Verdict::Healthy;
                }
            }
            Err(reason) => {
                self.passes = 0;
                self.last_failure = Some(reason);
            }
        }
        if since_window_opened < self.window {
            return Verdict::Pending;
        }
        let why = match &self.last_failure {
            Some(reason) => reason.clone(),
            // Every round passed, just not enough of them in time (an
            // interval too long for the window).
            None => format!(
                "every round passed, but only {} in a row before the window closed (interval too long?)",
                self.passes
            ),
        };
        Verdict::Unhealthy(format!(
            "health checks did not pass {} times in a row within {}: {why}",
            self.required,
            humantime::format_duration(self.window)
        ))
    }
}

async fn http(client: &reqwest::Client, url: &str, want: u16) -> Result<(), String> {
    match client.get(url).send().await {
        Ok(resp) if resp.status().as_u16() == want => Ok(()),
        Ok(resp) => Err(format!(
            "GET {url} returned {}, expected {want}",
            resp.status().as_u16()
        )),
        Err(e) => {
            let mut source: &dyn std::error::Error = &e;
            while let Some(next) = source.source() {
                source = next;
            }
            Err(format!("GET {url} failed: {source}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn fail(why: &str) -> Result<(), String> {
        Err(why.to_string())
    }

    #[test]
    fn commits_on_the_nth_consecutive_pass() {
        let mut t = Tally::new(3, MS(1000));
        assert_eq!(t.record(Ok(()), MS(0)), Verdict::Pending);
        assert_eq!(t.record(Ok(()), MS(100)), Verdict::Pending);
        assert_eq!(t.record(Ok(()), MS(200)), Verdict::Healthy);
    }

    #[test]
    fn a_failure_resets_the_count() {
        let mut t = Tally::new(3, MS(10_000));
        assert_eq!(t.record(Ok(()), MS(0)), Verdict::Pending);
        assert_eq!(t.record(Ok(()), MS(100)), Verdict::Pending);
        assert_eq!(
            t.record(fail("GET /health returned 500"), MS(200)),
            Verdict::Pending
        );
        assert_eq!(t.record(Ok(()), MS(300)), Verdict::Pending);
        assert_eq!(
            t.record(Ok(()), MS(400)),
            Verdict::Pending,
            "2 in a row, not 4 in all"
        );
        assert_eq!(t.record(Ok(()), MS(500)), Verdict::Healthy);
    }

    #[test]
    fn a_flapping_check_never_commits_and_the_last_failure_is_the_reason() {
        let mut t = Tally::new(2, MS(1000));
        let mut at = 0;
        let verdict = loop {
            let result = if at % 200 == 0 {
                Ok(())
            } else {
                fail(&format!("flap at {at}"))
            };
            match t.record(result, MS(at)) {
                Verdict::Pending => at += 100,
                other => break other,
            }
        };
        assert_eq!(at, 1000, "decided when the window closed, not before");
        assert_eq!(
            verdict,
            Verdict::Unhealthy("health checks did not pass 2 times in a row within 1s: flap at 900".into())
        );
    }

    #[test]
    fn the_window_closes_at_its_end_but_a_round_that_completes_the_count_counts() {
        // A failure just before the end: one more round.
        let mut t = Tally::new(2, MS(1000));
        assert_eq!(t.record(fail("x"), MS(999)), Verdict::Pending);
        // At the end exactly, a failure is final.
        assert!(matches!(t.record(fail("y"), MS(1000)), Verdict::Unhealthy(r) if r.ends_with(": y")));

        // A pass at the end that does not complete the count is final too.
        let mut t = Tally::new(2, MS(1000));
        assert!(matches!(t.record(fail("z"), MS(500)), Verdict::Pending));
        assert!(matches!(t.record(Ok(()), MS(1000)), Verdict::Unhealthy(r) if r.ends_with(": z")));

        // The round that started in time and completes the count, late.
        let mut t = Tally::new(2, MS(1000));
        assert_eq!(t.record(Ok(()), MS(900)), Verdict::Pending);
        assert_eq!(t.record(Ok(()), MS(1300)), Verdict::Healthy);
    }

    #[test]
    fn passing_rounds_too_slow_for_the_window_say_so() {
        let mut t = Tally::new(3, MS(100));
        assert_eq!(t.record(Ok(()), MS(0)), Verdict::Pending);
        let Verdict::Unhealthy(reason) = t.record(Ok(()), MS(150)) else {
            panic!("the window is over")
        };
        assert!(reason.contains("only 2 in a row"), "{reason}");
    }

    fn config(grace: u64, window: u64, passes: u32, commands: Vec<Vec<String>>) -> HealthConfig {
        HealthConfig {
            grace: MS(grace),
            interval: MS(10),
            window: MS(window),
            required_passes: passes,
            commands,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn a_release_may_extend_the_window_but_not_shorten_it() {
        let cfg = config(0, 5000, 1, vec![]);
        let slot = Path::new("/");
        let window = |min: Option<u64>| {
            let release = min.map(|m| Health {
                checks: vec![],
                min_window_secs: Some(m),
            });
            Checks {
                config: &cfg,
                release: release.as_ref(),
                slot_dir: slot,
            }
            .window()
        };
        assert_eq!(window(None), MS(5000));
        assert_eq!(window(Some(60)), Duration::from_secs(60));
        assert_eq!(window(Some(1)), MS(5000));
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    /// `wait_healthy` against real command checks, with short times: the
    /// grace period is waited first, then the count is kept across rounds.
    #[tokio::test]
    async fn wait_healthy_runs_the_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        // Passes from the 3rd round on; needs 2 in a row.
        let script = format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{c}'; [ $n -ge 3 ]",
            c = count.display()
        );
        let cfg = config(150, 5000, 2, vec![sh(&script)]);
        let checks = Checks {
            config: &cfg,
            release: None,
            slot_dir: dir.path(),
        };
        let took = checks.wait_healthy().await.unwrap();
        assert!(took >= MS(150), "the grace period comes first: {took:?}");
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "4");

        // Flapping: passes on even rounds only, so never 2 in a row.
        std::fs::remove_file(&count).unwrap();
        let flap = format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{c}'; [ $((n % 2)) -eq 0 ]",
            c = count.display()
        );
        let cfg = config(0, 300, 2, vec![sh(&flap)]);
        let checks = Checks {
            config: &cfg,
            release: None,
            slot_dir: dir.path(),
        };
        let err = checks.wait_healthy().await.unwrap_err();
        assert!(
            err.contains("did not pass 2 times in a row within 300ms"),
            "{err}"
        );
        assert!(err.contains("exited with status 1"), "{err}");
    }

    /// The grace period is not part of the window: checks that pass from
    /// the start commit even when the grace is longer than the window.
    #[tokio::test]
    async fn the_window_opens_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(1500, 1000, 2, vec![sh("exit 0")]);
        let checks = Checks {
            config: &cfg,
            release: None,
            slot_dir: dir.path(),
        };
        let took = checks.wait_healthy().await.unwrap();
        assert!(took >= MS(1500), "{took:?}");
    }

    #[tokio::test]
    async fn a_check_that_hangs_is_killed_at_its_timeout_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(0, 100, 1, vec![sh("sleep 30")]);
        cfg.command_timeout = MS(200);
        let checks = Checks {
            config: &cfg,
            release: None,
            slot_dir: dir.path(),
        };
        let started = Instant::now();
        let err = checks.wait_healthy().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.contains("`sh -c sleep 30` did not finish within 200ms"),
            "{err}"
        );
    }
}

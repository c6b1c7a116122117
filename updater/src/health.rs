//! Health checks after a switch (DESIGN: One run, 7): the device's own
//! checks plus the release's. After a grace period, every check must pass
//! `required_passes` times in a row within the window; a failure resets the
//! count. The last failure is the reason recorded when the window runs out.

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
        let deadline = Instant::now() + self.window();
        let client = reqwest::Client::builder()
            .timeout(self.config.interval.max(Duration::from_secs(2)))
            .build()
            .map_err(|e| e.to_string())?;
        let mut passes = 0;
        let mut last_failure = String::from("no check ran");
        loop {
            match self.check_once(&client).await {
                Ok(()) => {
                    passes += 1;
                    if passes >= self.config.required_passes {
                        return Ok(started.elapsed());
                    }
                }
                Err(reason) => {
                    passes = 0;
                    last_failure = reason;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "health checks did not pass {} times in a row within {}: {last_failure}",
                    self.config.required_passes,
                    humantime::format_duration(self.window())
                ));
            }
            tokio::time::sleep(self.config.interval).await;
        }
    }

    async fn check_once(&self, client: &reqwest::Client) -> Result<(), String> {
        for c in &self.config.http {
            http(client, &c.url, c.status).await?;
        }
        for unit in &self.config.units {
            self.unit(unit)?;
        }
        for argv in &self.config.commands {
            self.command(argv, self.config.command_timeout)?;
        }
        for check in self.release.map(|h| h.checks.as_slice()).unwrap_or_default() {
            match check {
                HealthCheck::Http { url, status } => http(client, url, status.unwrap_or(200)).await?,
                HealthCheck::Unit { unit } => self.unit(unit)?,
                HealthCheck::Command { argv, timeout_secs } => {
                    let timeout = timeout_secs
                        .map(Duration::from_secs)
                        .unwrap_or(self.config.command_timeout);
                    let mut argv = argv.clone();
                    // Relative programs live in the new slot (`app/bin/selftest`).
                    if !argv[0].starts_with('/') && argv[0].contains('/') {
                        argv[0] = self.slot_dir.join(&argv[0]).display().to_string();
                    }
                    self.command(&argv, timeout)?;
                }
            }
        }
        Ok(())
    }

    fn unit(&self, unit: &str) -> Result<(), String> {
        let r = process::run(
            &self.config.unit_command,
            &[unit],
            None,
            &[],
            self.config.command_timeout,
        )?;
        if r.success() {
            Ok(())
        } else {
            Err(format!(
                "unit {unit} is not active ({} {})",
                process::show(&self.config.unit_command, &[unit]),
                r.describe()
            ))
        }
    }

    fn command(&self, argv: &[String], timeout: Duration) -> Result<(), String> {
        let r = process::run(argv, &[], Some(self.slot_dir), &[], timeout)?;
        if r.success() {
            Ok(())
        } else {
            Err(format!("check `{}` {}", process::show(argv, &[]), r.describe()))
        }
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

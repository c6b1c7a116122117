//! Outcome reports (docs/REPORTS.md): every run's outcome goes to the
//! outbox first (durable, bounded), then is sent to `report.url`, oldest
//! first, when the network allows. Reports written while offline arrive
//! later, each exactly once per id (the server is idempotent by id).
//!
//! Event outcomes (updated, rolled back, failed, refused, deferred) get a
//! file each; routine ones are a single heartbeat that is overwritten, so a
//! device offline for weeks does not queue thousands of "up to date".
//!
//! Every report lost on the device (the oldest dropped from a full outbox,
//! or one the server refused with a 4xx it will always give) is counted in
//! `outbox/dropped` and carried in the next report delivered
//! (`dropped_reports`). A failed flush backs off (`Backoff`, persisted in
//! `outbox/backoff`): 1 min doubling to 1 h, with jitter, longer when
//! the server says `Retry-After`, reset by a delivery; runs in between
//! still write their reports, they only do not send.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use std::time::Duration;

use manifest::{Timestamp, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ReportConfig};
use crate::durable::write_atomic;
use crate::paths::Paths;
use crate::state::Outcome;

pub const SCHEMA: u32 = 1;
const HEARTBEAT: &str = "heartbeat.json";
const DROPPED: &str = "dropped";
const BACKOFF: &str = "backoff";

/// The first wait after a failed flush; it doubles with each further one.
pub const BACKOFF_MIN: Duration = Duration::from_secs(60);
/// The longest wait, and the most of a `Retry-After` that is honoured (a
/// server cannot park its devices for a day by mistake).
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

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

/// Add `n` to the count of reports lost on this device.
fn count_dropped(dir: &Path, n: u64) -> io::Result<()> {
    write_atomic(&dir.join(DROPPED), (dropped(dir) + n).to_string().as_bytes())
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
        count_dropped(dir, dropped_now)?;
    }
    Ok(())
}

/// When the next flush may send, after failures (`outbox/backoff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Failed flushes in a row.
    pub failures: u32,
    /// Unix seconds before which nothing is sent.
    pub not_before: u64,
    /// The report URL the failures were against: a new one starts afresh.
    pub url: String,
}

impl Backoff {
    /// The wait after `failures` failed flushes in a row:
    /// `BACKOFF_MIN * 2^(failures-1)`, at most `BACKOFF_MAX`, shortened by
    /// up to a quarter by `jitter` (0..1) so that a fleet that failed
    /// together does not come back together. A `Retry-After` is a floor
    /// (capped at `BACKOFF_MAX`).
    pub fn delay(failures: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        let base = BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX);
        let jittered = base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(r) => jittered.max(r.min(BACKOFF_MAX)),
            None => jittered,
        }
    }

    /// The state after one more failed flush at `now`.
    pub fn after_failure(
        previous: Option<&Backoff>,
        url: &str,
        now: Timestamp,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Backoff {
        let failures = previous
            .filter(|b| b.url == url)
            .map_or(0, |b| b.failures)
            .saturating_add(1);
        let wait = Self::delay(failures, retry_after, jitter);
        Backoff {
            failures,
            not_before: now.unix().saturating_add(wait.as_secs()),
            url: url.to_string(),
        }
    }

    /// May a flush send at `now`? Yes once `not_before` has passed, for
    /// another URL, and when `not_before` is further away than any wait
    /// this code sets: the clock stepped back (a Pi without RTC booting
    /// at 1970), and waiting for it to catch up could take years.
    pub fn allows(&self, url: &str, now: Timestamp) -> bool {
        self.url != url
            || now.unix() >= self.not_before
            || self.not_before - now.unix() > BACKOFF_MAX.as_secs()
    }

    fn load(dir: &Path) -> Option<Backoff> {
        serde_json::from_slice(&fs::read(dir.join(BACKOFF)).ok()?).ok()
    }
}

/// `Retry-After` in seconds (the form manifest-server sends); an HTTP date
/// is not worth a date parser here: the doubling applies instead.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub left: usize,
}

/// Send the outbox, oldest first, with the system clock; see [`flush_with`].
pub async fn flush(paths: &Paths, cfg: &ReportConfig) -> Flushed {
    flush_with(paths, cfg, &SystemClock).await
}

/// Send the outbox, oldest first, unless a backoff holds (see [`Backoff`]);
/// stop at the first failure and back off. Never fails the run: reports
/// are feedback, not function.
///
/// Per answer: 2xx (201 stored, 200 already stored) or 409 delivers the
/// report; 400, 413 or 422 drops it (the server will never take it: it
/// must not block the queue), counted in `dropped_reports` and logged;
/// anything else, or no answer, stops the flush and backs off, honouring
/// `Retry-After` (sent with 429 and 503).
pub async fn flush_with(paths: &Paths, cfg: &ReportConfig, clock: &dyn Clock) -> Flushed {
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
    let now = clock.now();
    let backoff = Backoff::load(&dir);
    if let Some(b) = backoff.as_ref().filter(|b| !b.allows(&cfg.url, now)) {
        log::info!(
            "reports: backing off after {} failed attempt(s) until {}; {} report(s) wait in the outbox",
            b.failures,
            Timestamp::from_unix(b.not_before),
            flushed.left
        );
        return flushed;
    }
    let client = match reqwest::Client::builder().timeout(cfg.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("reports: cannot set up HTTP: {e}");
            return flushed;
        }
    };
    // `Some(retry_after)` when the flush stopped on a failure.
    let mut failed: Option<Option<Duration>> = None;
    for path in queue {
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(mut report) = serde_json::from_slice::<DeviceReport>(&bytes) else {
            log::warn!("reports: {} is unreadable; dropping it", path.display());
            let _ = fs::remove_file(&path);
            let _ = count_dropped(&dir, 1);
            flushed.left -= 1;
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
                    // Only what this report carried: a drop counted
                    // meanwhile stays for the next one.
                    let _ = write_atomic(
                        &dir.join(DROPPED),
                        dropped(&dir).saturating_sub(lost).to_string().as_bytes(),
                    );
                }
                flushed.sent += 1;
                flushed.left -= 1;
            }
            Ok(resp) if matches!(resp.status().as_u16(), 400 | 413 | 422) => {
                // The server will never take this one: do not let it block
                // the queue, and say it is missing.
                log::warn!(
                    "reports: {} refused the {} report {} ({}): dropped, and counted in dropped_reports",
                    cfg.url,
                    report.outcome.as_str(),
                    report.id,
                    resp.status()
                );
                let _ = fs::remove_file(&path);
                let _ = count_dropped(&dir, 1);
                flushed.left -= 1;
            }
            Ok(resp) => {
                log::warn!(
                    "reports: {} answered {}; {} report(s) wait in the outbox",
                    cfg.url,
                    resp.status(),
                    flushed.left
                );
                failed = Some(retry_after(&resp));
                break;
            }
            Err(e) => {
                log::info!(
                    "reports: {} unreachable ({e}); {} report(s) wait in the outbox",
                    cfg.url,
                    flushed.left
                );
                failed = Some(None);
                break;
            }
        }
    }
    match failed {
        None => {
            if backoff.is_some() {
                let _ = fs::remove_file(dir.join(BACKOFF));
            }
        }
        Some(retry_after) => {
            // A delivery in this flush resets the count.
            let previous = if flushed.sent > 0 { None } else { backoff.as_ref() };
            let next = Backoff::after_failure(previous, &cfg.url, now, retry_after, rand::random());
            log::info!(
                "reports: next attempt after {} ({} failed attempt(s) in a row)",
                Timestamp::from_unix(next.not_before),
                next.failures
            );
            let _ = write_atomic(
                &dir.join(BACKOFF),
                &serde_json::to_vec(&next).expect("backoff serializes"),
            );
        }
    }
    flushed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    fn cfg(max_reports: usize) -> ReportConfig {
        ReportConfig {
            url: "http://127.0.0.1:9/".into(),
            token: None,
            max_reports,
            max_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(5),
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

    struct FakeClock(AtomicU64);

    impl FakeClock {
        fn at(secs: u64) -> Self {
            Self(AtomicU64::new(secs))
        }
        fn set(&self, secs: u64) {
            self.0.store(secs, Ordering::SeqCst)
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix(self.0.load(Ordering::SeqCst))
        }
        fn local_minute_of_day(&self) -> u16 {
            0
        }
    }

    /// A report server that answers each request with the next scripted
    /// status line and headers (then 201) and keeps the bodies it got.
    struct Scripted {
        url: String,
        bodies: Arc<Mutex<Vec<DeviceReport>>>,
    }

    fn scripted(answers: &[&'static str]) -> Scripted {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/reports", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let answers: Arc<Mutex<Vec<&'static str>>> =
            Arc::new(Mutex::new(answers.iter().rev().copied().collect()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                let answer = answers.lock().unwrap().pop().unwrap_or("201 Created");
                let _ = write!(
                    conn,
                    "HTTP/1.1 {answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Scripted { url, bodies }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
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

    #[test]
    fn the_byte_bound_drops_the_oldest_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let one = serde_json::to_vec(&report(Outcome::Updated)).unwrap().len() as u64;
        // Room for three reports by size, far more by count.
        let cfg = ReportConfig {
            max_bytes: one * 3 + one / 2,
            ..cfg(100)
        };
        let mut ids = Vec::new();
        for _ in 0..5 {
            let r = report(Outcome::Failed);
            ids.push(r.id.clone());
            enqueue(&paths, &cfg, &r).unwrap();
        }
        let left = events(&paths.outbox()).unwrap();
        let bytes: u64 = left.iter().map(|(_, n)| n).sum();
        assert!(bytes <= cfg.max_bytes, "{bytes} > {}", cfg.max_bytes);
        assert_eq!(left.len(), 3);
        assert_eq!(dropped(&paths.outbox()), 2);
        // The newest three stay, oldest first.
        let kept: Vec<String> = left
            .iter()
            .map(|(p, _)| {
                serde_json::from_slice::<DeviceReport>(&fs::read(p).unwrap())
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(kept, ids[2..]);
    }

    #[test]
    fn the_backoff_doubles_from_a_minute_to_an_hour_with_jitter() {
        let d = |n, jitter| Backoff::delay(n, None, jitter).as_secs();
        assert_eq!([d(1, 0.0), d(2, 0.0), d(3, 0.0), d(6, 0.0)], [60, 120, 240, 1920]);
        assert_eq!([d(7, 0.0), d(30, 0.0), d(u32::MAX, 0.0)], [3600; 3]);
        // Jitter shortens by up to a quarter, never lengthens.
        assert_eq!([d(1, 1.0), d(7, 1.0), d(1, 0.5)], [45, 2700, 52]);
        // Retry-After is a floor, capped at an hour.
        let r = |secs| Some(Duration::from_secs(secs));
        assert_eq!(Backoff::delay(1, r(600), 0.0).as_secs(), 600);
        assert_eq!(Backoff::delay(7, r(5), 0.0).as_secs(), 3600);
        assert_eq!(Backoff::delay(1, r(86_400), 0.0).as_secs(), 3600);
        // State: counts per URL; a clock stepped back does not freeze it.
        let b = Backoff::after_failure(None, "u", Timestamp::from_unix(1000), None, 0.0);
        assert_eq!((b.failures, b.not_before), (1, 1060));
        let b = Backoff::after_failure(Some(&b), "u", Timestamp::from_unix(1060), None, 0.0);
        assert_eq!((b.failures, b.not_before), (2, 1180));
        assert!(!b.allows("u", Timestamp::from_unix(1179)));
        assert!(b.allows("u", Timestamp::from_unix(1180)));
        assert!(b.allows("other-url", Timestamp::from_unix(1100)));
        let late = Backoff::after_failure(None, "u", Timestamp::from_unix(1_800_000_000), None, 0.0);
        assert!(
            late.allows("u", Timestamp::from_unix(5)),
            "a clock back at 1970 retries"
        );
        let b = Backoff::after_failure(Some(&b), "other", Timestamp::from_unix(2000), None, 0.0);
        assert_eq!(b.failures, 1, "a new URL starts afresh");
    }

    #[test]
    fn a_failed_flush_backs_off_honours_retry_after_and_a_delivery_resets_it() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let server = scripted(&[
            "503 Service Unavailable\r\nRetry-After: 600",
            "500 Internal Server Error",
        ]);
        let cfg = ReportConfig {
            url: server.url.clone(),
            ..cfg(10)
        };
        for _ in 0..2 {
            enqueue(&paths, &cfg, &report(Outcome::Updated)).unwrap();
        }
        let t0 = 1_800_000_000;
        let clock = FakeClock::at(t0);
        let sent = |n| server.bodies.lock().unwrap().len() == n;

        // 503 + Retry-After: 600 s, more than the first minute.
        assert_eq!(
            block_on(flush_with(&paths, &cfg, &clock)),
            Flushed { sent: 0, left: 2 }
        );
        assert!(sent(1));
        let b = Backoff::load(&paths.outbox()).unwrap();
        assert_eq!((b.failures, b.not_before), (1, t0 + 600));
        // Within it: not even tried.
        clock.set(t0 + 599);
        assert_eq!(
            block_on(flush_with(&paths, &cfg, &clock)),
            Flushed { sent: 0, left: 2 }
        );
        assert!(sent(1), "nothing sent during the backoff");
        // After it: a 500, and the wait doubles (2 min, less jitter).
        clock.set(t0 + 600);
        block_on(flush_with(&paths, &cfg, &clock));
        assert!(sent(2));
        let b = Backoff::load(&paths.outbox()).unwrap();
        assert_eq!(b.failures, 2);
        assert!((t0 + 600 + 90..=t0 + 600 + 120).contains(&b.not_before), "{b:?}");
        // Then both delivered, oldest first, and the backoff is gone.
        clock.set(t0 + 600 + 120);
        assert_eq!(
            block_on(flush_with(&paths, &cfg, &clock)),
            Flushed { sent: 2, left: 0 }
        );
        assert!(sent(4));
        assert!(Backoff::load(&paths.outbox()).is_none());

        // Unreachable backs off too.
        let gone = ReportConfig {
            url: "http://127.0.0.1:9/v1/reports".into(),
            ..cfg.clone()
        };
        enqueue(&paths, &gone, &report(Outcome::Failed)).unwrap();
        block_on(flush_with(&paths, &gone, &clock));
        assert_eq!(Backoff::load(&paths.outbox()).unwrap().failures, 1);
    }

    #[test]
    fn a_report_refused_or_overflowed_is_counted_and_the_server_hears_of_it() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let server = scripted(&["400 Bad Request", "201 Created", "201 Created"]);
        let cfg = ReportConfig {
            url: server.url.clone(),
            ..cfg(2)
        };
        // Four events into room for two: the two oldest are dropped.
        for _ in 0..4 {
            enqueue(&paths, &cfg, &report(Outcome::Failed)).unwrap();
        }
        enqueue(&paths, &cfg, &report(Outcome::UpToDate)).unwrap();
        assert_eq!(dropped(&paths.outbox()), 2);
        let clock = FakeClock::at(1_800_000_000);
        // The first is refused (400): dropped and counted; the next carries
        // 2 + 1; the heartbeat after it, nothing.
        let flushed = block_on(flush_with(&paths, &cfg, &clock));
        assert_eq!(flushed, Flushed { sent: 2, left: 0 });
        let carried: Vec<u64> = server
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.dropped_reports)
            .collect();
        assert_eq!(carried, [2, 3, 0]);
        assert_eq!(dropped(&paths.outbox()), 0);
    }
}

//! Counters for `/metrics`, rendered by hand in the Prometheus text format.
//!
//! Every counter is a relaxed atomic in a fixed-size table indexed by path
//! class and status, so the hot path (a hundred thousand 304 polls a second)
//! never takes a lock or allocates: one `fetch_add` per request, plus one per
//! streamed chunk for the byte count. The tables are sharded per thread
//! (each shard on its own cache lines), so threads answering polls do not
//! fight over one counter's cache line; `/metrics` sums the shards. Gauges
//! about the manifest snapshot are written by the reloader only. Device
//! reports (`--reports-db`) have their own counters by result.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// What kind of store path a request was for: the label of every request series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathClass {
    Cohort,
    Release,
    Signature,
    Artifact,
    /// `POST /v1/reports` (with `--reports-db`).
    Report,
    /// `GET /v1/fleet` and the fleet page `GET /` (with `--reports-db`).
    Fleet,
    Other,
}

impl PathClass {
    const ALL: [PathClass; 7] = [
        PathClass::Cohort,
        PathClass::Release,
        PathClass::Signature,
        PathClass::Artifact,
        PathClass::Report,
        PathClass::Fleet,
        PathClass::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            PathClass::Cohort => "cohort",
            PathClass::Release => "release",
            PathClass::Signature => "signature",
            PathClass::Artifact => "artifact",
            PathClass::Report => "report",
            PathClass::Fleet => "fleet",
            PathClass::Other => "other",
        }
    }
}

/// The statuses this server produces; anything else lands in "other".
const STATUSES: [u16; 15] = [
    200, 201, 206, 304, 400, 401, 404, 405, 408, 412, 413, 416, 429, 500, 503,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len())
}

const SHARDS: usize = 16;

/// The per-request counters of one shard; 128-byte aligned so that no two
/// shards share a cache line (or an adjacent-line prefetch pair).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; STATUS_SLOTS]; PathClass::ALL.len()],
    bytes_sent: AtomicU64,
}

/// This thread's shard, assigned round robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        if i.get() == usize::MAX {
            i.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
        }
        i.get()
    })
}

/// What became of a `POST /v1/reports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportResult {
    /// Stored for the first time (201).
    Accepted,
    /// Its id was already stored (200).
    Duplicate,
    /// Invalid, too large or too slow (400, 413, 408).
    Rejected,
    /// No or wrong token (401).
    Unauthorized,
    /// Over the device's allowance (429).
    RateLimited,
    /// The database queue was full or failed (503, 500).
    Unavailable,
}

impl ReportResult {
    const ALL: [ReportResult; 6] = [
        ReportResult::Accepted,
        ReportResult::Duplicate,
        ReportResult::Rejected,
        ReportResult::Unauthorized,
        ReportResult::RateLimited,
        ReportResult::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            ReportResult::Accepted => "accepted",
            ReportResult::Duplicate => "duplicate",
            ReportResult::Rejected => "rejected",
            ReportResult::Unauthorized => "unauthorized",
            ReportResult::RateLimited => "rate_limited",
            ReportResult::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
    /// Present only with `--reports-db`; reports are off the hot path, so
    /// one unsharded counter per result is enough.
    reports: [AtomicU64; ReportResult::ALL.len()],
    rejected: AtomicU64,
    last_reload_unix: AtomicU64,
    snapshot_manifests: AtomicU64,
    snapshot_bytes: AtomicU64,
}

impl Metrics {
    pub fn request(&self, class: PathClass, status: u16) {
        self.shards[shard_index()].requests[class as usize][status_slot(status)].fetch_add(1, Relaxed);
    }

    pub fn bytes_sent(&self, n: u64) {
        if n > 0 {
            self.shards[shard_index()].bytes_sent.fetch_add(n, Relaxed);
        }
    }

    fn requests(&self, class: PathClass, slot: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.requests[class as usize][slot].load(Relaxed))
            .sum()
    }

    pub fn report(&self, result: ReportResult) {
        self.reports[result as usize].fetch_add(1, Relaxed);
    }

    pub fn manifest_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    pub fn snapshot_loaded(&self, unix_time: u64, manifests: usize, bytes: usize) {
        self.last_reload_unix.store(unix_time, Relaxed);
        self.snapshot_manifests.store(manifests as u64, Relaxed);
        self.snapshot_bytes.store(bytes as u64, Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    /// `reports`: whether `--reports-db` is on (its series are shown only then).
    pub fn render(&self, verifying: bool, reports: bool) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP manifest_server_requests_total HTTP requests by store path class and status.\n\
             # TYPE manifest_server_requests_total counter\n",
        );
        let mut not_modified = 0;
        for class in PathClass::ALL {
            for slot in 0..STATUS_SLOTS {
                let status = STATUSES
                    .get(slot)
                    .map_or_else(|| "other".to_string(), u16::to_string);
                let count = self.requests(class, slot);
                if status == "304" {
                    not_modified += count;
                }
                let _ = writeln!(
                    out,
                    "manifest_server_requests_total{{class=\"{}\",status=\"{status}\"}} {count}",
                    class.label(),
                );
            }
        }
        let bytes_sent: u64 = self.shards.iter().map(|s| s.bytes_sent.load(Relaxed)).sum();
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        one(
            "manifest_server_not_modified_total",
            "counter",
            "Conditional requests answered 304 Not Modified.",
            not_modified,
        );
        one(
            "manifest_server_sent_bytes_total",
            "counter",
            "Response body bytes handed to the network.",
            bytes_sent,
        );
        one(
            "manifest_server_manifests_rejected_total",
            "counter",
            "Manifest edits refused (bad or missing signature, invalid document, lower sequence).",
            self.rejected.load(Relaxed),
        );
        one(
            "manifest_server_snapshot_last_reload_timestamp_seconds",
            "gauge",
            "Unix time of the last manifest snapshot (re)load.",
            self.last_reload_unix.load(Relaxed),
        );
        one(
            "manifest_server_snapshot_manifests",
            "gauge",
            "Manifests currently served (each with its signature).",
            self.snapshot_manifests.load(Relaxed),
        );
        one(
            "manifest_server_snapshot_bytes",
            "gauge",
            "Bytes of manifests and signatures held in memory.",
            self.snapshot_bytes.load(Relaxed),
        );
        one(
            "manifest_server_signature_verification_enabled",
            "gauge",
            "1 when --keys is set and unverified manifests are never served.",
            u64::from(verifying),
        );
        if reports {
            out.push_str(
                "# HELP manifest_server_reports_total Device reports posted, by result.\n\
                 # TYPE manifest_server_reports_total counter\n",
            );
            for result in ReportResult::ALL {
                let _ = writeln!(
                    out,
                    "manifest_server_reports_total{{result=\"{}\"}} {}",
                    result.label(),
                    self.reports[result as usize].load(Relaxed)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_class_and_status() {
        let m = Metrics::default();
        m.request(PathClass::Cohort, 304);
        m.request(PathClass::Cohort, 304);
        m.request(PathClass::Artifact, 206);
        m.request(PathClass::Other, 418);
        m.manifest_rejected();
        m.bytes_sent(10);
        m.report(ReportResult::Accepted);
        m.report(ReportResult::Accepted);
        m.report(ReportResult::RateLimited);
        assert!(!m.render(true, false).contains("manifest_server_reports_total"));
        let text = m.render(true, true);
        assert!(text.contains("manifest_server_reports_total{result=\"accepted\"} 2\n"));
        assert!(text.contains("manifest_server_reports_total{result=\"rate_limited\"} 1\n"));
        assert!(text.contains("manifest_server_reports_total{result=\"duplicate\"} 0\n"));
        assert!(text.contains("manifest_server_requests_total{class=\"cohort\",status=\"304\"} 2\n"));
        assert!(text.contains("manifest_server_requests_total{class=\"artifact\",status=\"206\"} 1\n"));
        assert!(text.contains("manifest_server_requests_total{class=\"other\",status=\"other\"} 1\n"));
        assert!(text.contains("manifest_server_not_modified_total 2\n"));
        assert!(text.contains("manifest_server_manifests_rejected_total 1\n"));
        assert!(text.contains("manifest_server_sent_bytes_total 10\n"));
        assert!(text.contains("manifest_server_signature_verification_enabled 1\n"));
    }
}

//! Crash injection for the recovery tests (tests/tests/crash.rs, faults.rs),
//! exactly like a power cut at a chosen instant:
//!
//! - `UPDATER_TEST_FAILPOINT=<phase>` SIGKILLs the process right after it
//!   persisted the transition into `<phase>`;
//! - `UPDATER_TEST_FAILPOINT=sync:<N>` SIGKILLs it immediately *before* its
//!   N-th durable sync (1-based, counted per process). Every fsync,
//!   fdatasync, directory fsync and syncfs goes through `crate::durable`,
//!   which calls [`before_sync`], so this is the one place that counts;
//! - `UPDATER_TEST_SYNC_LOG=<file>` appends one line `<N> <label>` per sync
//!   point (before the kill, so a killed run logs where it died).
//!
//! Cost in production: the environment is read once per process (one
//! lookup of each variable, cached in a `OnceLock`), not once per sync:
//! sync points sit on the write path of every state change, and a getenv
//! there would be a lock and a scan of the environment each time. With
//! neither variable set, a sync point is one load of the cached `None`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::state::Phase;

pub const ENV: &str = "UPDATER_TEST_FAILPOINT";
pub const SYNC_LOG_ENV: &str = "UPDATER_TEST_SYNC_LOG";
const SYNC_PREFIX: &str = "sync:";

#[derive(Debug, Default, PartialEq, Eq)]
struct Seams {
    /// Kill after persisting this phase.
    phase: Option<String>,
    /// Kill before the N-th sync.
    sync: Option<u64>,
    /// Log every sync point here.
    log: Option<PathBuf>,
}

impl Seams {
    fn parse(failpoint: Option<String>, log: Option<PathBuf>) -> Option<Seams> {
        let mut seams = Seams {
            log,
            ..Seams::default()
        };
        if let Some(v) = failpoint {
            match v.strip_prefix(SYNC_PREFIX) {
                Some(n) => match n.parse::<u64>() {
                    Ok(n) if n > 0 => seams.sync = Some(n),
                    _ => eprintln!("{ENV}={v}: expected sync:<N> with N >= 1; ignored"),
                },
                None => seams.phase = Some(v),
            }
        }
        (seams != Seams::default()).then_some(seams)
    }
}

fn seams() -> Option<&'static Seams> {
    static SEAMS: OnceLock<Option<Seams>> = OnceLock::new();
    SEAMS
        .get_or_init(|| {
            Seams::parse(
                std::env::var(ENV).ok(),
                std::env::var_os(SYNC_LOG_ENV).map(PathBuf::from),
            )
        })
        .as_ref()
}

/// Durable syncs done by this process so far (only counted under a seam).
static SYNCS: AtomicU64 = AtomicU64::new(0);

fn kill_myself(why: &str) {
    eprintln!("failpoint {why}: killing myself");
    // SAFETY: sending a signal to our own pid.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Called right after the transition into `phase` was persisted.
pub fn hit(phase: Phase) {
    if seams().and_then(|s| s.phase.as_deref()) == Some(phase.as_str()) {
        kill_myself(phase.as_str());
    }
}

/// Called by `crate::durable` immediately before every durable sync;
/// `label` names the point (built only when a seam is set).
pub fn before_sync(label: impl FnOnce() -> String) {
    let Some(seams) = seams() else { return };
    let n = SYNCS.fetch_add(1, Ordering::SeqCst) + 1;
    if seams.log.is_none() && seams.sync != Some(n) {
        return;
    }
    let label = label();
    if let Some(log) = &seams.log {
        // One write of one short line to an O_APPEND file: lines from
        // successive runs never interleave.
        let line = format!("{n} {label}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("{SYNC_LOG_ENV}={}: {e}", log.display());
        }
    }
    if seams.sync == Some(n) {
        kill_myself(&format!("sync:{n} ({label})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_phases_sync_points_and_nothing() {
        assert_eq!(Seams::parse(None, None), None);
        let s = Seams::parse(Some("trial".into()), None).unwrap();
        assert_eq!(s.phase.as_deref(), Some("trial"));
        assert_eq!(s.sync, None);
        let s = Seams::parse(Some("sync:7".into()), None).unwrap();
        assert_eq!((s.phase, s.sync), (None, Some(7)));
        assert_eq!(Seams::parse(Some("sync:0".into()), None), None);
        assert_eq!(Seams::parse(Some("sync:x".into()), None), None);
        let s = Seams::parse(None, Some("/tmp/log".into())).unwrap();
        assert_eq!(s.log.as_deref(), Some(std::path::Path::new("/tmp/log")));
    }
}

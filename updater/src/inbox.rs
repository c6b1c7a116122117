//! The daemon's inbox (DESIGN: The device, `inbox/`): a `*.bundle` file that
//! appears in `<state_dir>/inbox/` is installed exactly like
//! `updater install FILE`, then moved to `inbox/done/` or `inbox/failed/`
//! and the outcome logged.
//!
//! notify (inotify) reports a file copied or renamed into the directory at
//! once; the daemon then waits until the directory has been quiet for a
//! moment, so a file still being copied is not read half-written. inotify
//! does not see a file system *mounted* on the directory (a USB stick), nor
//! files written on some FUSE and NFS mounts, so the daemon also rescans the
//! inbox every `[daemon] inbox_rescan` (default 10 s, `config::Daemon`). A
//! bundle that cannot be moved (a read-only stick) is remembered by name,
//! size and mtime and not installed again until the next poll.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::paths::Paths;
use crate::run::Agent;
use crate::state::Outcome;

/// Quiet time after the last event before the inbox is read.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A bundle already handled, until it changes or the next poll.
pub type Seen = HashSet<(PathBuf, u64, Option<SystemTime>)>;

/// Watch `inbox/` (created if missing); every event sends a unit on `tx`.
/// `None` (logged) when the watch cannot be set up: rescans, every
/// `rescan`, still work.
pub fn watch(
    paths: &Paths,
    rescan: Duration,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let inbox = paths.inbox();
    if let Err(e) = std::fs::create_dir_all(&inbox) {
        log::warn!("inbox: cannot create {}: {e}", inbox.display());
        return None;
    }
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            log::warn!(
                "inbox: cannot watch {}: {e}; rescanning every {}",
                inbox.display(),
                humantime::format_duration(rescan)
            );
            return None;
        }
    };
    if let Err(e) = watcher.watch(&inbox, notify::RecursiveMode::NonRecursive) {
        log::warn!(
            "inbox: cannot watch {}: {e}; rescanning every {}",
            inbox.display(),
            humantime::format_duration(rescan)
        );
        return None;
    }
    Some(watcher)
}

/// The `*.bundle` files waiting in the inbox, oldest name first.
fn pending(inbox: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(inbox) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == crate::bundle::EXTENSION))
        .collect();
    files.sort();
    files
}

/// Install every pending bundle once and file it by outcome.
pub async fn process(agent: &Agent, seen: &mut Seen) {
    let paths = &agent.paths;
    let cohort = agent.config.cohort.to_string();
    for path in pending(&paths.inbox()) {
        let meta = std::fs::metadata(&path).ok();
        let key = (
            path.clone(),
            meta.as_ref().map_or(0, |m| m.len()),
            meta.and_then(|m| m.modified().ok()),
        );
        if seen.contains(&key) {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        log::info!("inbox: installing {name}");
        let outcome = match agent.install(&path).await {
            Ok(report) => {
                crate::logging::report(&report, &cohort);
                Some(report.outcome)
            }
            Err(e) => {
                log::error!("inbox: {name}: {e}; the device stays on its current slot");
                None
            }
        };
        let dest = match outcome {
            Some(Outcome::Updated | Outcome::UpToDate | Outcome::NotInRollout | Outcome::Blocked) => {
                paths.inbox_done()
            }
            Some(Outcome::Refused | Outcome::Failed | Outcome::RolledBack) => paths.inbox_failed(),
            // Another run holds the lock: try again at the next scan.
            Some(Outcome::Locked) => continue,
            // Staged and waiting for the install window (or an I/O error):
            // keep it, and try again at the next poll.
            Some(Outcome::Deferred | Outcome::Offline) | None => {
                seen.insert(key);
                continue;
            }
        };
        match file_away(&path, &dest) {
            Ok(to) => log::info!("inbox: {name} -> {}", to.display()),
            Err(e) => {
                log::warn!("inbox: cannot move {name} to {}: {e}; leaving it", dest.display());
                seen.insert(key);
            }
        }
    }
}

/// Move `path` into `dir`, keeping its name unless one is already there.
fn file_away(path: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut to = dir.join(&name);
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &to)?;
    Ok(to)
}

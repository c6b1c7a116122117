//! Watches `cohorts/` and `releases/` and drives the snapshot `Loader`.
//!
//! Steps: `notify` (inotify on Linux) reports a change; the reload thread
//! waits a short debounce so the burst of events one edit makes (create,
//! write, rename, a second rename for the signature) becomes one rescan; then
//! it calls `Loader::reload`. The debounce is a fixed delay after the first
//! event, not a quiet period, so a store that changes continuously is still
//! rescanned at least every `DEBOUNCE` plus the scan time. Events arriving
//! during a reload stay queued and cause the next one, so no change is missed.
//!
//! `artifacts/` is not watched: artifacts are immutable and opened per
//! request. A periodic rescan (`PERIODIC`) covers what inotify can miss: a
//! queue overflow, or a watched directory replaced wholesale.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use manifest::store::{COHORTS_DIR, RELEASES_DIR};
use manifest::KEYS_HISTORY_DIR;
use notify::event::{AccessKind, EventKind};
use notify::{RecursiveMode, Watcher as _};

use crate::snapshot::Loader;

/// How long after the first event of a burst the store is rescanned.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// Rescan even without events, in case inotify dropped some.
pub const PERIODIC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start watching the store (inotify): {0}")]
    Start(#[source] notify::Error),
    #[error("cannot watch {dir}/ in the store: {source}")]
    Dir {
        dir: &'static str,
        #[source]
        source: notify::Error,
    },
}

/// Keeps the watch and the reload thread alive; dropping it stops both.
pub struct StoreWatcher {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
    stop: Arc<AtomicBool>,
    wake: SyncSender<()>,
}

impl StoreWatcher {
    /// Start watching, then run the first reload on the calling thread, so
    /// the snapshot is complete before the server answers any request, and
    /// no change made during that first load is missed.
    pub fn start(mut loader: Loader, root: &std::path::Path) -> Result<Self, WatchError> {
        // Capacity 1 + try_send: one pending wake-up is as good as many.
        let (wake, events) = mpsc::sync_channel::<()>(1);
        let notify_wake = wake.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                // Our own reads open the files: never let them trigger a rescan.
                Ok(ev) if matches!(ev.kind, EventKind::Access(AccessKind::Open(_) | AccessKind::Read)) => {}
                Ok(_) => {
                    let _ = notify_wake.try_send(());
                }
                Err(e) => {
                    log::warn!("store watch: {e}; rescanning");
                    let _ = notify_wake.try_send(());
                }
            }
        })
        .map_err(WatchError::Start)?;
        // The store's top level holds keys.json (the root of trust).
        for dir in [".", COHORTS_DIR, RELEASES_DIR] {
            watcher
                .watch(&root.join(dir), RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Dir { dir, source })?;
        }
        // keys/ (the root of trust's history) may appear after start
        // (`keys init`): the top-level watch sees it created, and the
        // reload thread then watches it too.
        let keys_dir = root.join(KEYS_HISTORY_DIR);
        let watcher = Arc::new(Mutex::new(watcher));
        let keys_watch = KeysWatch {
            watcher: watcher.clone(),
            dir: keys_dir,
            watching: false,
        };
        loader.reload();

        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        thread::Builder::new()
            .name("store-reload".into())
            .spawn(move || reload_loop(loader, keys_watch, events, &thread_stop))
            .expect("spawning a thread only fails when the system is out of resources");
        Ok(Self {
            _watcher: watcher,
            stop,
            wake,
        })
    }
}

impl Drop for StoreWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
    }
}

/// The watch on `keys/`, added once the directory exists.
struct KeysWatch {
    watcher: Arc<Mutex<notify::RecommendedWatcher>>,
    dir: std::path::PathBuf,
    watching: bool,
}

impl KeysWatch {
    fn ensure(&mut self) {
        // Not through a link: nothing outside the store is watched (nor
        // loaded: see `snapshot`).
        let real_dir = self.dir.symlink_metadata().is_ok_and(|m| m.is_dir());
        if !self.watching && real_dir {
            let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            self.watching = w.watch(&self.dir, RecursiveMode::NonRecursive).is_ok();
        }
    }
}

fn reload_loop(mut loader: Loader, mut keys: KeysWatch, events: mpsc::Receiver<()>, stop: &AtomicBool) {
    keys.ensure();
    loop {
        match events.recv_timeout(PERIODIC) {
            Ok(()) => {
                // Debounce: absorb the rest of the burst, up to DEBOUNCE
                // after its first event.
                let deadline = Instant::now() + DEBOUNCE;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match events.recv_timeout(left) {
                        Ok(()) if !left.is_zero() => continue,
                        Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        keys.ensure();
        loader.reload();
    }
}

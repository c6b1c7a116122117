//! The threads that own the SQLite connections. SQLite calls block, and the
//! async workers also serve artifacts: nothing of the database may run on
//! them, and a burst of reports must not fill tokio's blocking pool either
//! (artifact reads fall back to it). So each connection lives on its own
//! thread, jobs reach it through a bounded queue, and a full queue is
//! answered at once (503, the device retries on its next run) instead of
//! piling up.
//!
//! The writer thread also deletes old heartbeats (`Store::prune_routine`)
//! every `PRUNE_EVERY`, between jobs.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use manifest::Timestamp;
use tokio::sync::oneshot;

use crate::reports::store::{Store, ROUTINE_RETENTION};

/// Jobs waiting for one connection before new ones are refused.
pub const QUEUE: usize = 1024;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per pruning pass: well above a pass's share of 10 000
/// devices' heartbeats, small enough not to hold the writer long.
const PRUNE_LIMIT: usize = 50_000;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("the reports database is busy")]
    Busy,
    #[error("the reports database thread stopped")]
    Gone,
}

/// A connection on its own thread; dropping the last handle ends it.
#[derive(Clone)]
pub struct Worker {
    tx: SyncSender<Job>,
}

impl Worker {
    /// Start the thread. `prune`: delete old heartbeats between jobs (the
    /// writer only).
    pub fn spawn(name: &str, mut store: Store, prune: bool) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // First pass soon after start, then every PRUNE_EVERY.
                let mut next_prune = Instant::now() + Duration::from_secs(5);
                loop {
                    let wait = if prune {
                        next_prune.saturating_duration_since(Instant::now())
                    } else {
                        Duration::from_secs(3600)
                    };
                    match rx.recv_timeout(wait) {
                        Ok(job) => {
                            // A bug in one job must not take the database away
                            // from every later request.
                            let run = std::panic::AssertUnwindSafe(|| job(&mut store));
                            if std::panic::catch_unwind(run).is_err() {
                                log::error!("reports: a database job panicked; continuing");
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if prune && Instant::now() >= next_prune {
                        next_prune = Instant::now() + PRUNE_EVERY;
                        let before = Timestamp::from_system_time(SystemTime::now() - ROUTINE_RETENTION);
                        match store.prune_routine(before, PRUNE_LIMIT) {
                            Ok(0) => {}
                            Ok(n) => log::info!("reports: deleted {n} heartbeat report(s) older than 7 days"),
                            Err(e) => log::error!("reports: deleting old heartbeats failed: {e}"),
                        }
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Run `f` on the connection's thread and wait for its result, without
    /// blocking the caller's async worker.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => WorkerError::Busy,
            TrySendError::Disconnected(_) => WorkerError::Gone,
        })?;
        answer.await.map_err(|_| WorkerError::Gone)
    }
}

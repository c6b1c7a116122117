//! One exclusive lock for the whole run (STYLE: one lock; functions that
//! need it take the guard). `flock` is released by the kernel when the
//! process dies, so a SIGKILLed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

pub struct RunLock {
    _file: File,
}

pub enum LockError {
    Held,
    Io(io::Error),
}

pub fn acquire(path: &Path) -> Result<RunLock, LockError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(LockError::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held),
        Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
    }
}

//! Crash injection for the recovery tests: `UPDATER_TEST_FAILPOINT=<phase>`
//! makes the process SIGKILL itself right after it persisted the transition
//! into `<phase>`, exactly like a power cut at that instant. Reading one
//! environment variable per transition costs nothing in production.

use crate::state::Phase;

pub const ENV: &str = "UPDATER_TEST_FAILPOINT";

pub fn hit(phase: Phase) {
    if std::env::var(ENV).is_ok_and(|p| p == phase.as_str()) {
        eprintln!("failpoint {}: killing myself", phase.as_str());
        // SAFETY: sending a signal to our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

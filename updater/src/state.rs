//! The persisted state machine (DESIGN: State machine):
//! `idle -> downloading -> staged -> switching -> trial -> committed | rolling_back -> idle`.
//!
//! `State::persist` writes `state.json` atomically before every side effect,
//! so a run killed at any instant finds enough on disk to finish or undo
//! what it was doing. Each slot carries its own `slot.json`, written last
//! after its files are synced: a slot without one is incomplete, whatever
//! `state.json` says.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use manifest::{CohortName, ComponentName, Sha256Hex, Timestamp, Version};
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::paths::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Idle,
    Downloading,
    Staged,
    Switching,
    Trial,
    /// Only ever seen by the failpoint: committed is persisted as `Idle`
    /// with the new active slot.
    Committed,
    RollingBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Downloading => "downloading",
            Phase::Staged => "staged",
            Phase::Switching => "switching",
            Phase::Trial => "trial",
            Phase::Committed => "committed",
            Phase::RollingBack => "rolling_back",
        }
    }
}

/// A release installed in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub slot: Slot,
    pub version: Version,
}

/// The install in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub version: Version,
    pub release_sha256: Sha256Hex,
    pub slot: Slot,
    /// What ran before the switch (where a rollback returns to).
    #[serde(default)]
    pub previous: Option<Installed>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub sequence: u64,
    /// Hash of the accepted bytes: the same sequence with other bytes is refused.
    pub sha256: Sha256Hex,
    /// Key ids that signed it. A floor set only by keys no longer trusted
    /// is dropped (fast-forward recovery, see `run`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
}

pub use manifest::report::Outcome;

/// Exit code of a run with this outcome (documented in docs/UPDATER.md).
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::UpToDate | Outcome::NotInRollout | Outcome::Blocked => 0,
        Outcome::Updated => 10,
        Outcome::RolledBack => 11,
        Outcome::Deferred => 12,
        Outcome::Offline => 13,
        Outcome::Refused => 14,
        Outcome::Locked => 15,
        Outcome::Failed => 1,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCheck {
    pub at: Timestamp,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    pub reason: String,
}

impl LastCheck {
    /// `last_check.json`: what the latest run did and why, for `status`.
    /// Apart from `state.json`, which only changes when the device does.
    pub fn load(paths: &Paths) -> Option<LastCheck> {
        serde_json::from_slice(&fs::read(paths.last_check()).ok()?).ok()
    }

    pub fn store(&self, paths: &Paths) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("serializes");
        write_atomic(&paths.last_check(), &bytes).map_err(|source| StateError::Io {
            path: paths.last_check().display().to_string(),
            source,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub phase: Phase,
    pub active: Option<Installed>,
    pub target: Option<InFlight>,
    #[serde(default)]
    pub trial_attempts: u32,
    /// Orderly shutdowns (SIGTERM) during this trial: not failed attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trial_shutdowns: u32,
    #[serde(default)]
    pub rollback_reason: Option<String>,
    /// Highest accepted cohort manifest per cohort (replay protection).
    #[serde(default)]
    pub accepted: BTreeMap<String, Accepted>,
    /// max(clock, latest time seen, issued_at of accepted manifests). Kept
    /// in its own file (`time_floor`), not in `state.json`: the clock moves
    /// on every run, and a run that changes nothing else (an idle poll, a
    /// refusal) must leave `state.json` byte-identical.
    #[serde(skip)]
    pub time_floor: Timestamp,
    /// Versions that failed here, with why: never retried.
    #[serde(default)]
    pub blocked: BTreeMap<String, String>,
    /// The history line and report an install or rollback owes, saved by
    /// the same write that records its verdict (a crash between that write
    /// and the history append must lose neither) and cleared once both are
    /// written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed: Option<Owed>,
    /// Consecutive runs in which the target's `post_stage` hook failed: a
    /// hook that always fails is blocked after `MAX_HOOK_FAILURES`, instead
    /// of the release being downloaded and staged again on every poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_failures: Option<HookFailures>,
}

/// A target's `post_stage` hook failed this many runs in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailures {
    pub version: Version,
    pub count: u32,
}

/// Runs in a row whose `post_stage` hook failed before the target is
/// blocked (a transient failure, e.g. a busy disk, gets two more chances).
pub const MAX_HOOK_FAILURES: u32 = 3;

/// What an install or rollback must still record: its `history.jsonl` line
/// and its report, both marked with one id so neither is written twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owed {
    pub event: crate::history::Event,
    /// The report's version (the release installed or rolled back).
    pub version: Option<Version>,
    /// The report's reason (more detailed than the history line's).
    pub reason: String,
    pub stage: Option<String>,
    /// What ran before the install or rollback began.
    pub before: Option<Version>,
}

/// How often the clock alone may rewrite the time floor file: often
/// enough to bound a freeze after a reboot at 1970, rarely enough to spare
/// an SD card.
const TIME_FLOOR_STEP: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt ({source}); move it away to start over (slots are kept)")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl State {
    pub fn load(paths: &Paths) -> Result<Self, StateError> {
        let path = paths.state();
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io {
                path: path.display().to_string(),
                source,
            }),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.display().to_string(),
                source,
            }),
        }
        .map(|mut state: State| {
            // An unreadable floor is only a weaker floor: the accepted
            // manifests' own times still bound it.
            state.time_floor = fs::read_to_string(paths.time_floor())
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_default();
            state
        })
    }

    /// Write the state durably, then honour the test failpoint for `phase`.
    pub fn persist(&mut self, paths: &Paths, phase: Phase) -> Result<(), StateError> {
        self.phase = if phase == Phase::Committed {
            Phase::Idle
        } else {
            phase
        };
        self.save(paths)?;
        crate::failpoint::hit(phase);
        Ok(())
    }

    /// Write `state.json` as it is, without a transition.
    pub fn save(&self, paths: &Paths) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomic(&paths.state(), &bytes).map_err(|source| StateError::Io {
            path: paths.state().display().to_string(),
            source,
        })
    }

    /// Save what a run changed: `state.json` only if its bytes would
    /// differ from the file's, the time floor only if `state.json` changed
    /// or the clock moved the floor on by an hour since `before` (the state
    /// as the run loaded it).
    pub fn save_changes(&self, paths: &Paths, before: &State) -> Result<(), StateError> {
        let io_err = |path: std::path::PathBuf| {
            move |source| StateError::Io {
                path: path.display().to_string(),
                source,
            }
        };
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        let changed = fs::read(paths.state()).ok().as_deref() != Some(&bytes[..]);
        if changed {
            write_atomic(&paths.state(), &bytes).map_err(io_err(paths.state()))?;
        }
        let floor_moved = self.time_floor > before.time_floor.saturating_add(TIME_FLOOR_STEP);
        if floor_moved || (changed && self.time_floor > before.time_floor) {
            write_atomic(&paths.time_floor(), format!("{}\n", self.time_floor).as_bytes())
                .map_err(io_err(paths.time_floor()))?;
        }
        Ok(())
    }

    /// Count one more failed `post_stage` hook of `version`; true when
    /// that makes `MAX_HOOK_FAILURES` in a row (the count then restarts).
    pub fn hook_failed(&mut self, version: &Version) -> bool {
        let count = match &self.hook_failures {
            Some(f) if &f.version == version => f.count + 1,
            _ => 1,
        };
        if count >= MAX_HOOK_FAILURES {
            self.hook_failures = None;
            return true;
        }
        self.hook_failures = Some(HookFailures {
            version: version.clone(),
            count,
        });
        false
    }

    pub fn accepted_for(&self, cohort: &CohortName) -> Option<&Accepted> {
        self.accepted.get(cohort.as_str())
    }

    pub fn active_version(&self) -> Option<&Version> {
        self.active.as_ref().map(|a| &a.version)
    }
}

/// `slot.json`: what a complete slot holds. Written last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub version: Version,
    pub release_sha256: Sha256Hex,
    pub components: BTreeMap<ComponentName, Sha256Hex>,
    /// The release's own health checks, so a trial resumed after a crash
    /// or reboot checks exactly what the first attempt did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<manifest::Health>,
}

pub const SLOT_INFO: &str = "slot.json";

impl SlotInfo {
    pub fn load(slot_dir: &Path) -> Option<SlotInfo> {
        let bytes = fs::read(slot_dir.join(SLOT_INFO)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn store(&self, slot_dir: &Path) -> io::Result<()> {
        write_atomic(
            &slot_dir.join(SLOT_INFO),
            &serde_json::to_vec_pretty(self).expect("serializes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_failures_count_per_version_and_trip_at_the_limit() {
        let v2 = Version::new(2, 0, 0);
        let v3 = Version::new(3, 0, 0);
        let mut state = State::default();
        assert!(!state.hook_failed(&v2));
        assert!(!state.hook_failed(&v2));
        // Another target starts its own count.
        assert!(!state.hook_failed(&v3));
        assert!(!state.hook_failed(&v2));
        assert!(!state.hook_failed(&v2));
        assert!(state.hook_failed(&v2), "the third in a row trips");
        assert_eq!(state.hook_failures, None, "and the count restarts");
    }
}

//! The words devices report in: the outcome of a run and the stage where a
//! failure happened (docs/UPDATER.md, docs/REPORTS.md). Shared by the
//! updater (which writes them), the server (which validates and counts
//! them) and the builder (which decides rollouts on them), so the three can
//! never disagree on the vocabulary.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    UpToDate,
    Updated,
    RolledBack,
    Deferred,
    Offline,
    Refused,
    NotInRollout,
    Blocked,
    Failed,
    Locked,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::UpToDate,
        Outcome::Updated,
        Outcome::RolledBack,
        Outcome::Deferred,
        Outcome::Offline,
        Outcome::Refused,
        Outcome::NotInRollout,
        Outcome::Blocked,
        Outcome::Failed,
        Outcome::Locked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up_to_date",
            Outcome::Updated => "updated",
            Outcome::RolledBack => "rolled_back",
            Outcome::Deferred => "deferred",
            Outcome::Offline => "offline",
            Outcome::Refused => "refused",
            Outcome::NotInRollout => "not_in_rollout",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Locked => "locked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Routine outcomes are a device's heartbeat: they say where it is, not
    /// that something happened (the outbox keeps only the latest one).
    pub fn is_routine(self) -> bool {
        matches!(
            self,
            Outcome::UpToDate | Outcome::NotInRollout | Outcome::Blocked | Outcome::Offline | Outcome::Locked
        )
    }

    /// Non-terminal for the version the report is about: the device has
    /// the target and goes on by itself at a later run, nobody needs to act.
    /// `deferred` is the only one (staged, waiting for the install window
    /// or the busy command). Everything else is terminal for that version
    /// until something changes: `updated` and `rolled_back` are verdicts,
    /// `failed` and `refused` are counted as failures, `blocked` and
    /// `not_in_rollout` wait for a new manifest, and `offline` and `locked`
    /// carry no target. The fleet view's "in progress" (DESIGN: pending)
    /// counts devices whose latest report is one of these.
    pub fn is_in_progress(self) -> bool {
        matches!(self, Outcome::Deferred)
    }
}

/// Where in a run a failure happened.
pub const STAGES: [&str; 6] = ["fetch", "verify", "download", "stage", "switch", "health"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_serde_and_parse() {
        for o in Outcome::ALL {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.as_str()));
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("exploded"), None);
    }

    #[test]
    fn only_deferred_is_in_progress() {
        let pending: Vec<_> = Outcome::ALL.into_iter().filter(|o| o.is_in_progress()).collect();
        assert_eq!(pending, [Outcome::Deferred]);
    }
}

//! The rollout decision as one pure function (STYLE: decisions are pure
//! functions that take `now`): from the cohort manifest, the fleet's numbers
//! for its target, the policy and the time, what `rollout advance` should
//! do. Only the CLI reads the clock and the network; every branch here is a
//! unit test.
//!
//! The rules, in the order they are checked:
//! 1. percent 0: the rollout is halted; it stays so until someone promotes
//!    again (an automatic resume would undo a person's decision).
//! 2. `consecutive_failures >= max_consecutive_failures`: fail the rollout
//!    (even during the stability period: three devices in a row failing is
//!    enough evidence).
//! 3. time in step (`now - issued_at`) below the stability period: wait.
//! 4. fewer than `min_reports` devices tried the target: wait.
//! 5. success rate (succeeded / tried) below the threshold: fail.
//! 6. at (or past) the last step: done.
//! 7. otherwise: advance to the next step above the current percent.
//!
//! "Fail" is `on_failure`: halt or rollback. A cohort that already allows
//! a downgrade is itself a rollback; it is halted rather than rolled back
//! again to an even older release without a person deciding so.

use std::time::Duration;

use manifest::{CohortManifest, Percent, Timestamp};

use super::policy::{OnFailure, Policy};
use crate::fleet::TargetStats;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Re-sign the cohort at the next step.
    Advance { to_percent: Percent, why: String },
    /// Nothing to do yet; ask again later.
    Wait { why: String },
    /// Set the percent to 0: no new installs.
    Halt { why: String },
    /// Point the cohort at the previous release with `allow_downgrade`.
    Rollback { why: String },
    /// The last step is reached and it held.
    Done { why: String },
}

impl Decision {
    pub fn why(&self) -> &str {
        match self {
            Decision::Advance { why, .. }
            | Decision::Wait { why }
            | Decision::Halt { why }
            | Decision::Rollback { why }
            | Decision::Done { why } => why,
        }
    }

    /// The word used in `rollout status` and `--json`.
    pub fn verb(&self) -> &'static str {
        match self {
            Decision::Advance { .. } => "advance",
            Decision::Wait { .. } => "wait",
            Decision::Halt { .. } => "halt",
            Decision::Rollback { .. } => "rollback",
            Decision::Done { .. } => "done",
        }
    }
}

/// The numbers a decision is made from, also shown by `rollout status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub percent: Percent,
    /// 1-based index among the policy's steps, `None` for a hand-set percent.
    pub step: Option<usize>,
    pub time_in_step: Duration,
    pub tried: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub rolled_back: u64,
    pub consecutive_failures: u64,
}

impl Progress {
    pub fn of(cohort: &CohortManifest, stats: Option<&TargetStats>, policy: &Policy, now: Timestamp) -> Self {
        let zero = TargetStats::default();
        let s = stats.unwrap_or(&zero);
        Self {
            percent: cohort.rollout.percent,
            step: policy.step_index(cohort.rollout.percent),
            // Re-signing refreshes `issued_at`, so it restarts this clock:
            // conservative, a step is never shortened by an edit.
            time_in_step: cohort.issued_at.until(now),
            tried: s.tried,
            succeeded: s.succeeded,
            failed: s.failed,
            rolled_back: s.rolled_back,
            consecutive_failures: s.consecutive_failures,
        }
    }

    /// `succeeded / tried` in percent, `None` before anyone tried.
    pub fn success_rate(&self) -> Option<f64> {
        (self.tried > 0).then(|| self.succeeded as f64 * 100.0 / self.tried as f64)
    }

    /// Exact comparison in integers: `succeeded / tried >= threshold`.
    fn meets(&self, threshold: Percent) -> bool {
        u128::from(self.succeeded) * 10_000 >= u128::from(threshold.basis_points()) * u128::from(self.tried)
    }

    fn rate_text(&self) -> String {
        match self.success_rate() {
            Some(r) => format!("{} of {} succeeded ({})", self.succeeded, self.tried, fmt_rate(r)),
            None => "nobody tried it yet".into(),
        }
    }
}

/// `97.5 %`, `100 %`: one decimal, none when whole.
pub fn fmt_rate(r: f64) -> String {
    let tenth = (r * 10.0).floor() / 10.0;
    if tenth.fract() == 0.0 {
        format!("{tenth:.0} %")
    } else {
        format!("{tenth:.1} %")
    }
}

/// Whole seconds, humantime style (`30m`, `1h 2m 3s`).
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

pub fn decide(
    cohort: &CohortManifest,
    stats: Option<&TargetStats>,
    policy: &Policy,
    now: Timestamp,
) -> Decision {
    let p = Progress::of(cohort, stats, policy, now);
    let version = &cohort.target.version;
    let fail = |why: String| {
        if policy.on_failure == OnFailure::Rollback && cohort.allow_downgrade {
            Decision::Halt {
                why: format!(
                    "{why}; the cohort already targets a rollback (allow_downgrade), so it is halted rather than rolled back further"
                ),
            }
        } else if policy.on_failure == OnFailure::Rollback {
            Decision::Rollback { why }
        } else {
            Decision::Halt { why }
        }
    };

    if p.percent.basis_points() == 0 {
        return Decision::Halt {
            why: format!(
                "the rollout of {version} is halted (0 %); resume with `manifest-builder promote --percent N`"
            ),
        };
    }
    if p.consecutive_failures >= policy.max_consecutive_failures {
        return fail(format!(
            "{} consecutive failures of {version} (limit {})",
            p.consecutive_failures, policy.max_consecutive_failures
        ));
    }
    if p.time_in_step < policy.stability {
        return Decision::Wait {
            why: format!(
                "{} of the {} stability period at {} % so far; {}",
                fmt_duration(p.time_in_step),
                fmt_duration(policy.stability),
                p.percent,
                p.rate_text()
            ),
        };
    }
    if p.tried < policy.min_reports {
        return Decision::Wait {
            why: format!(
                "{} device(s) tried {version}, {} needed before judging its success rate",
                p.tried, policy.min_reports
            ),
        };
    }
    if !p.meets(policy.threshold) {
        return fail(format!(
            "{} is below the {} % threshold after the stability period",
            p.rate_text(),
            policy.threshold
        ));
    }
    match policy.next_step(p.percent) {
        None => Decision::Done {
            why: format!(
                "{version} is at {} %, the last step, and {}",
                p.percent,
                p.rate_text()
            ),
        },
        Some(to_percent) => Decision::Advance {
            to_percent,
            why: format!(
                "{}, threshold {} %, {} at {} %",
                p.rate_text(),
                policy.threshold,
                fmt_duration(p.time_in_step),
                p.percent
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifest::{CohortName, ProductName, Rollout, Sha256Hex, Target, Version, SCHEMA};

    const T0: u64 = 1_795_255_200; // 2026-11-21T10:00:00Z

    fn cohort(percent: &str, allow_downgrade: bool) -> CohortManifest {
        CohortManifest {
            schema: SCHEMA,
            kind: "cohort".into(),
            product: ProductName::new("neopro").unwrap(),
            cohort: CohortName::new("stable").unwrap(),
            sequence: 7,
            issued_at: Timestamp::from_unix(T0),
            expires_at: Timestamp::from_unix(T0 + 30 * 86400),
            target: Target {
                version: Version::parse("2.0.0").unwrap(),
                sha256: Sha256Hex::digest(b"release"),
                size: 812,
            },
            rollout: Rollout {
                percent: percent.parse().unwrap(),
            },
            allow_downgrade,
        }
    }

    fn stats(tried: u64, succeeded: u64, consecutive_failures: u64) -> TargetStats {
        TargetStats {
            version: "2.0.0".into(),
            tried,
            succeeded,
            failed: tried - succeeded,
            rolled_back: 0,
            consecutive_failures,
            ..Default::default()
        }
    }

    fn after(mins: u64) -> Timestamp {
        Timestamp::from_unix(T0 + mins * 60)
    }

    fn rollback_policy() -> Policy {
        Policy {
            on_failure: OnFailure::Rollback,
            ..Policy::default()
        }
    }

    /// `--on-failure halt` (the default is rollback).
    fn halt_policy() -> Policy {
        Policy {
            on_failure: OnFailure::Halt,
            ..Policy::default()
        }
    }

    fn pct(s: &str) -> Percent {
        s.parse().unwrap()
    }

    #[test]
    fn advances_to_the_next_step_after_the_stability_period() {
        let d = decide(
            &cohort("10", false),
            Some(&stats(10, 10, 0)),
            &halt_policy(),
            after(30),
        );
        match d {
            Decision::Advance { to_percent, why } => {
                assert_eq!(to_percent, pct("25"));
                assert!(why.contains("10 of 10 succeeded (100 %)"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Exactly at the threshold is enough: 19 of 20 = 95 %.
        let d = decide(
            &cohort("50", false),
            Some(&stats(20, 19, 1)),
            &halt_policy(),
            after(31),
        );
        assert!(
            matches!(d, Decision::Advance { to_percent, .. } if to_percent == pct("75")),
            "{d:?}"
        );
    }

    #[test]
    fn a_hand_set_percent_advances_to_the_next_step_above_it() {
        let d = decide(
            &cohort("12.5", false),
            Some(&stats(5, 5, 0)),
            &halt_policy(),
            after(40),
        );
        assert!(
            matches!(d, Decision::Advance { to_percent, .. } if to_percent == pct("25")),
            "{d:?}"
        );
    }

    #[test]
    fn waits_during_the_stability_period_even_with_perfect_numbers() {
        let d = decide(
            &cohort("10", false),
            Some(&stats(50, 50, 0)),
            &halt_policy(),
            after(29),
        );
        match d {
            Decision::Wait { why } => assert!(why.contains("29m of the 30m stability period"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A clock behind `issued_at` counts as no time at all.
        let d = decide(
            &cohort("10", false),
            Some(&stats(50, 50, 0)),
            &halt_policy(),
            Timestamp::from_unix(T0 - 100),
        );
        assert!(matches!(d, Decision::Wait { .. }), "{d:?}");
    }

    #[test]
    fn waits_for_enough_reports() {
        let d = decide(
            &cohort("10", false),
            Some(&stats(2, 2, 0)),
            &halt_policy(),
            after(60),
        );
        match d {
            Decision::Wait { why } => assert!(why.contains("2 device(s) tried 2.0.0, 3 needed"), "{why}"),
            other => panic!("{other:?}"),
        }
        // No report at all about the target: the same.
        let d = decide(&cohort("10", false), None, &halt_policy(), after(60));
        assert!(
            matches!(&d, Decision::Wait { why } if why.contains("0 device(s)")),
            "{d:?}"
        );
        // A low rate is not judged on too few reports either.
        let d = decide(
            &cohort("10", false),
            Some(&stats(2, 0, 0)),
            &halt_policy(),
            after(60),
        );
        assert!(matches!(d, Decision::Wait { .. }), "{d:?}");
    }

    #[test]
    fn halts_on_consecutive_failures_even_during_the_stability_period() {
        let d = decide(
            &cohort("10", false),
            Some(&stats(3, 0, 3)),
            &halt_policy(),
            after(1),
        );
        match d {
            Decision::Halt { why } => {
                assert!(why.contains("3 consecutive failures of 2.0.0 (limit 3)"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // One below the limit: still waiting.
        let d = decide(
            &cohort("10", false),
            Some(&stats(3, 1, 2)),
            &halt_policy(),
            after(1),
        );
        assert!(matches!(d, Decision::Wait { .. }), "{d:?}");
    }

    #[test]
    fn rolls_back_on_consecutive_failures_when_the_policy_says_so() {
        let d = decide(
            &cohort("25", false),
            Some(&stats(10, 7, 3)),
            &rollback_policy(),
            after(5),
        );
        assert!(
            matches!(&d, Decision::Rollback { why } if why.contains("consecutive")),
            "{d:?}"
        );
        // The default policy is the procedure: stop and roll back.
        let d = decide(
            &cohort("25", false),
            Some(&stats(10, 7, 3)),
            &Policy::default(),
            after(5),
        );
        assert!(matches!(&d, Decision::Rollback { .. }), "{d:?}");
    }

    #[test]
    fn a_low_success_rate_after_the_stability_period_fails_the_rollout() {
        let low = stats(20, 18, 0); // 90 %
        let d = decide(&cohort("10", false), Some(&low), &halt_policy(), after(30));
        match d {
            Decision::Halt { why } => {
                assert!(why.contains("18 of 20 succeeded (90 %)"), "{why}");
                assert!(why.contains("below the 95 % threshold"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let d = decide(&cohort("10", false), Some(&low), &rollback_policy(), after(30));
        assert!(matches!(d, Decision::Rollback { .. }), "{d:?}");
        // Just below: 94.99 % is not 95 % (integer comparison, no float fuzz).
        let d = decide(
            &cohort("10", false),
            Some(&stats(10_000, 9_499, 0)),
            &halt_policy(),
            after(30),
        );
        assert!(matches!(d, Decision::Halt { .. }), "{d:?}");
    }

    #[test]
    fn a_rollback_cohort_is_halted_not_rolled_back_again() {
        let d = decide(
            &cohort("100", true),
            Some(&stats(10, 5, 0)),
            &rollback_policy(),
            after(60),
        );
        assert!(
            matches!(&d, Decision::Halt { why } if why.contains("already targets a rollback")),
            "{d:?}"
        );
        // With on_failure = halt it is a plain halt.
        let d = decide(
            &cohort("100", true),
            Some(&stats(10, 5, 0)),
            &halt_policy(),
            after(60),
        );
        assert!(
            matches!(&d, Decision::Halt { why } if !why.contains("rollback")),
            "{d:?}"
        );
    }

    #[test]
    fn a_halted_cohort_stays_halted() {
        let d = decide(
            &cohort("0", false),
            Some(&stats(10, 10, 0)),
            &halt_policy(),
            after(600),
        );
        assert!(
            matches!(&d, Decision::Halt { why } if why.contains("is halted (0 %)")),
            "{d:?}"
        );
    }

    #[test]
    fn done_once_the_last_step_held() {
        let d = decide(
            &cohort("100", false),
            Some(&stats(100, 99, 0)),
            &halt_policy(),
            after(30),
        );
        assert!(
            matches!(&d, Decision::Done { why } if why.contains("the last step")),
            "{d:?}"
        );
        // The last step is gated like the others: first the stability period…
        let d = decide(
            &cohort("100", false),
            Some(&stats(100, 99, 0)),
            &halt_policy(),
            after(10),
        );
        assert!(matches!(d, Decision::Wait { .. }), "{d:?}");
        // …then the rate.
        let d = decide(
            &cohort("100", false),
            Some(&stats(100, 80, 0)),
            &halt_policy(),
            after(30),
        );
        assert!(matches!(d, Decision::Halt { .. }), "{d:?}");
        // Past the last step of a shorter policy is done too.
        let short = Policy {
            steps: vec![pct("10"), pct("50")],
            ..Policy::default()
        };
        let d = decide(&cohort("75", false), Some(&stats(10, 10, 0)), &short, after(30));
        assert!(matches!(d, Decision::Done { .. }), "{d:?}");
    }

    #[test]
    fn progress_reports_the_step_and_the_rate() {
        let p = Progress::of(
            &cohort("25", false),
            Some(&stats(40, 39, 0)),
            &halt_policy(),
            after(12),
        );
        assert_eq!(p.step, Some(2));
        assert_eq!(p.time_in_step, Duration::from_secs(720));
        assert_eq!(fmt_rate(p.success_rate().unwrap()), "97.5 %");
        assert_eq!(
            Progress::of(&cohort("25", false), None, &halt_policy(), after(0)).success_rate(),
            None
        );
        assert_eq!(
            fmt_rate(200.0 / 3.0),
            "66.6 %",
            "rates are rounded down, never flattered"
        );
    }
}

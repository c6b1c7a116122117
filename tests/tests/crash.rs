//! Crash safety (issue 4, "Judged by"; DESIGN: State machine): the real
//! `updater` is SIGKILLed right after it persists each transition in turn
//! (`UPDATER_TEST_FAILPOINT=<phase>`). After every kill `current` (if it
//! exists) points at a complete slot, and the next plain `check` converges:
//! on the good release for a healthy upgrade, back on the good one for a
//! broken upgrade. A trial interrupted `max_trial_attempts` times is rolled
//! back even though the release is healthy.
//!
//! One test per phase and scenario, each with its own store, server and
//! device, so they run in parallel and a failure names the phase.

use e2e_tests::{outcome, App, Device, Fleet};

/// A fleet with 1.0.0 (good), 2.0.0 (`second`) and a device running 1.0.0;
/// returns the device and v1's slot.
fn device_on_v1(fleet: &Fleet, second: App) -> (Device, String) {
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", second);
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let slot = device.current().unwrap();
    (device, slot)
}

/// v1 -> healthy v2, killed at `phase`, then converge on v2.
fn good_upgrade_killed_at(phase: &str) {
    let fleet = Fleet::new();
    let (device, slot_v1) = device_on_v1(&fleet, App::Good);
    fleet.promote("stable", "2.0.0");

    let run = device.check_with_failpoint(phase);
    if phase == "rolling_back" {
        // A healthy upgrade never rolls back: that failpoint never fires.
        run.expect_code(10);
    } else {
        run.expect_killed(phase);
    }
    device.assert_current_complete(&format!("after a kill at {phase}"));

    let run = device.check();
    assert!(
        matches!(run.code, Some(10) | Some(0)),
        "after a kill at {phase}, the next run should converge (10 or 0), it exited {}\n{}",
        run.describe(),
        run.output()
    );
    device.assert_current_complete(&format!("after recovering from {phase}"));
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "after {phase}: {status:#}");
    assert_eq!(status["phase"], "idle", "after {phase}: {status:#}");
    assert!(
        status["blocked"].get("2.0.0").is_none(),
        "after {phase}: {status:#}"
    );
    assert_ne!(device.current().as_deref(), Some(slot_v1.as_str()));
    assert_eq!(
        device.history_count("updated", "to", "2.0.0"),
        1,
        "after {phase}, the install is in the history once:\n{}",
        device.history()
    );
    device.wait_app_version("2.0.0");
    // Converged: the next run has nothing to do.
    device.check().expect_code(0);
}

/// v1 -> broken v2, killed at `phase`, then end rolled back on v1.
fn broken_upgrade_killed_at(phase: &str) {
    let fleet = Fleet::new();
    let (device, slot_v1) = device_on_v1(&fleet, App::Broken);
    fleet.promote("stable", "2.0.0");

    let run = device.check_with_failpoint(phase);
    if phase == "committed" {
        // A broken release is never committed: that failpoint never fires.
        run.expect_code(11);
    } else {
        run.expect_killed(phase);
    }
    device.assert_current_complete(&format!("after a kill at {phase}"));

    let run = device.check();
    let ok = match phase {
        // The rollback may have been finished by the recovery itself.
        "trial" | "rolling_back" => matches!(run.code, Some(11) | Some(0)),
        "committed" => run.code == Some(0),
        _ => run.code == Some(11),
    };
    assert!(
        ok,
        "after a kill at {phase} of a broken upgrade, the next run exited {}\n{}",
        run.describe(),
        run.output()
    );
    device.assert_current_complete(&format!("after recovering from {phase}"));
    assert_eq!(
        device.current().as_deref(),
        Some(slot_v1.as_str()),
        "back on v1's slot"
    );
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "after {phase}: {status:#}");
    assert_eq!(status["phase"], "idle", "after {phase}: {status:#}");
    assert!(
        status["blocked"].get("2.0.0").is_some(),
        "after {phase}: {status:#}"
    );
    assert_eq!(
        device.history_count("rolled_back", "from", "2.0.0"),
        1,
        "after {phase}, the rollback is in the history once:\n{}",
        device.history()
    );
    device.wait_app_version("1.0.0");
    // And the broken release is not tried again.
    fleet.proxy.clear_log();
    device.check().expect_code(0);
    assert!(
        !fleet.proxy.requested("/artifacts/"),
        "a blocked release was downloaded again"
    );
}

/// The history line a killed run still owed (killed right after committing
/// v2) is written even when the next run reaches a verdict of its own (v3):
/// one line each, none overwritten.
#[test]
fn an_owed_history_line_survives_the_next_install() {
    let fleet = Fleet::new();
    let (device, _) = device_on_v1(&fleet, App::Good);
    fleet.store.publish("3.0.0", App::Good);
    fleet.promote("stable", "2.0.0");
    device
        .check_with_failpoint("committed")
        .expect_killed("committed");
    fleet.promote("stable", "3.0.0");
    device.check().expect_code(10);
    device.wait_app_version("3.0.0");
    for version in ["2.0.0", "3.0.0"] {
        assert_eq!(
            device.history_count("updated", "to", version),
            1,
            "{version}:\n{}",
            device.history()
        );
    }
}

macro_rules! phase_tests {
    ($($good:ident, $broken:ident => $phase:literal;)*) => {$(
        #[test]
        fn $good() {
            good_upgrade_killed_at($phase);
        }
        #[test]
        fn $broken() {
            broken_upgrade_killed_at($phase);
        }
    )*};
}

phase_tests! {
    good_upgrade_killed_at_downloading, broken_upgrade_killed_at_downloading => "downloading";
    good_upgrade_killed_at_staged, broken_upgrade_killed_at_staged => "staged";
    good_upgrade_killed_at_switching, broken_upgrade_killed_at_switching => "switching";
    good_upgrade_killed_at_trial, broken_upgrade_killed_at_trial => "trial";
    good_upgrade_killed_at_rolling_back, broken_upgrade_killed_at_rolling_back => "rolling_back";
    good_upgrade_killed_at_committed, broken_upgrade_killed_at_committed => "committed";
}

#[test]
fn every_documented_phase_has_a_test() {
    // PHASES is the list in docs/UPDATER.md; the macro above covers each.
    assert_eq!(
        e2e_tests::PHASES,
        [
            "downloading",
            "staged",
            "switching",
            "trial",
            "rolling_back",
            "committed"
        ]
    );
}

#[test]
fn a_trial_interrupted_max_trial_attempts_times_is_rolled_back() {
    let fleet = Fleet::new();
    // v2 is healthy: only the interruptions can cause this rollback.
    let (device, slot_v1) = device_on_v1(&fleet, App::Good);
    fleet.promote("stable", "2.0.0");
    let attempts = device.cfg.max_trial_attempts;
    for attempt in 1..=attempts {
        let run = device.check_with_failpoint("trial");
        run.expect_killed(&format!("trial (attempt {attempt})"));
        device.assert_current_complete(&format!("after interrupted trial {attempt}"));
    }
    device.check().expect_code(11);
    assert_eq!(
        device.current().as_deref(),
        Some(slot_v1.as_str()),
        "back on v1's slot"
    );
    device.wait_app_version("1.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert!(status["blocked"].get("2.0.0").is_some(), "{status:#}");
    assert_eq!(outcome(&status), "rolled_back", "{status:#}");
}

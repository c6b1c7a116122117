//! A shutdown (SIGTERM) in the middle of a trial: the run stops at once with
//! exit 16, not as a failure, and the next run finishes the trial.

use e2e_tests::{App, Fleet, Release};

#[test]
fn sigterm_mid_trial_exits_16_and_the_next_run_finishes_the_trial() {
    let fleet = Fleet::new();
    fleet.publish_v1_and(&Release::new("2.0.0", App::Broken));
    let device = fleet.device();
    fleet.install_v1_then_promote_v2(&device);

    let status = device.check_terminated_in("trial");
    assert_eq!(status.code(), Some(16), "{status:?}");
    assert_eq!(device.status_json()["phase"], "trial");

    // The next run resumes the trial of the broken release and rolls back.
    device.check().expect_code(11);
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    device.wait_app_version("1.0.0");
}

/// v1 installed, a healthy v2 promoted.
fn healthy_upgrade_pending() -> (Fleet, e2e_tests::Device) {
    let fleet = Fleet::new();
    fleet.publish_v1_and(&Release::new("2.0.0", App::Good));
    let device = fleet.device();
    fleet.install_v1_then_promote_v2(&device);
    (fleet, device)
}

/// Shut the run down (SIGTERM, a planned reboot) `times` times during the
/// trial, each time in a new run. Each shutdown is recorded as such, not
/// as a failed attempt: the attempt counter stays at 1.
fn shut_down_during_trials(device: &e2e_tests::Device, times: u32) {
    for n in 1..=times {
        // attempts is 1 only once this run has (re)started the trial: after
        // a shutdown it is 0 until the next run resumes.
        let status = device.check_terminated_when(&format!("the trial after {} shutdown(s)", n - 1), |s| {
            s["phase"] == "trial"
                && s["trial_attempts"] == 1
                && s["trial_shutdowns"].as_u64().unwrap_or(0) == u64::from(n - 1)
        });
        assert_eq!(
            status.code(),
            Some(16),
            "shutdown {n} during the trial: {status:?}"
        );
        device.assert_current_complete(&format!("after shutdown {n} during the trial"));
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(device.state_dir.join("state.json")).unwrap()).unwrap();
        assert_eq!(state["phase"], "trial", "{state:#}");
        assert_eq!(state["trial_shutdowns"], n, "{state:#}");
        assert_eq!(
            state["trial_attempts"], 0,
            "the shutdown was counted as a failed attempt: {state:#}"
        );
    }
}

/// False rollbacks (SECURITY.md): planned reboots during the trial of a
/// healthy release, more of them than `max_trial_attempts`, do not cost
/// the release: the trial that finally runs to the end commits it.
#[test]
fn planned_reboots_during_a_healthy_trial_are_not_failures() {
    let (_fleet, device) = healthy_upgrade_pending();
    shut_down_during_trials(&device, device.cfg.max_trial_attempts + 1);
    device.check().expect_code(10);
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert!(status["blocked"].get("2.0.0").is_none(), "{status:#}");
    device.wait_app_version("2.0.0");
}

/// A release that keeps the device rebooting cleanly is still rolled back,
/// after `max_trial_shutdowns` (crashes are bounded by `max_trial_attempts`
/// in crash.rs).
#[test]
fn a_trial_shut_down_more_than_max_trial_shutdowns_times_is_rolled_back() {
    let fleet = Fleet::new();
    fleet.publish_v1_and(&Release::new("2.0.0", App::Good));
    let device = fleet.device_with(|c| c.max_trial_shutdowns = 2);
    fleet.install_v1_then_promote_v2(&device);
    let slot_v1 = device.current();
    shut_down_during_trials(&device, 3);
    device.check().expect_code(11);
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    let why = e2e_tests::device::reason(&status);
    assert!(why.contains("3 shutdowns"), "{why}");
    assert!(status["blocked"].get("2.0.0").is_some(), "{status:#}");
    assert_eq!(device.current(), slot_v1, "back on v1's slot");
    device.wait_app_version("1.0.0");
}

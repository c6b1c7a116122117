//! A shutdown (SIGTERM) in the middle of a trial: the run stops at once with
//! exit 16, not as a failure, and the next run finishes the trial.

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{bins, wait_for, App, Fleet};

#[test]
fn sigterm_mid_trial_exits_16_and_the_next_run_finishes_the_trial() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Broken);
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    fleet.promote("stable", "2.0.0");

    let mut run = Command::new(bins::updater())
        .args(["--config", &device.config_path.display().to_string(), "check"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = device.state_dir.join("state.json");
    wait_for("the run to enter its trial", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&state).ok()?;
        text.contains("\"phase\": \"trial\"").then_some(())
    });
    // SAFETY: signalling our own, still running child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let status = wait_for("the run to stop", Duration::from_secs(30), || {
        run.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(16), "{status:?}");
    assert_eq!(device.status_json()["phase"], "trial");

    // The next run resumes the trial of the broken release and rolls back.
    device.check().expect_code(11);
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    device.wait_app_version("1.0.0");
}

//! `updater daemon`: polls with jitter, converges by itself when a new
//! release is promoted, and stops cleanly on SIGTERM between runs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e_tests::{bins, wait_for, App, Fleet};

/// Kills the daemon if the test fails before it is stopped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_daemon_converges_on_each_promotion_and_stops_on_sigterm() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    fleet.promote("stable", "1.0.0");
    let device = fleet.device_with(|c| {
        c.extra_toml = "\n[daemon]\npoll_interval = \"200ms\"\npoll_jitter = \"100ms\"\n".into();
    });

    let mut daemon = Daemon(
        Command::new(bins::updater())
            .args(["--config", &device.config_path.display().to_string(), "daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    device.wait_app_version("1.0.0");
    fleet.promote("stable", "2.0.0");
    device.wait_app_version("2.0.0");
    // The app answers as soon as it restarts; the commit follows the health checks.
    wait_for("2.0.0 to be committed", Duration::from_secs(60), || {
        (device.status_json()["active_version"] == "2.0.0").then_some(())
    });

    // SAFETY: signalling our own, still running child.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let status = wait_for(
        "the daemon to exit after SIGTERM",
        Duration::from_secs(60),
        || daemon.0.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(0), "{status:?}");
}

//! A device whose state file was lost or moved away (the documented way to
//! "start over") must not overwrite the slot it runs from: it adopts the
//! complete slot `current` points at, upgrades into the other one, and can
//! roll back to the adopted release.

use e2e_tests::{App, Fleet};

#[test]
fn a_lost_state_file_adopts_the_running_slot() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Broken);
    fleet.store.publish("3.0.0", App::Good);
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let running = device.current().expect("installed");
    let digest = device.active_slot_digest();

    std::fs::rename(
        device.state_dir.join("state.json"),
        device.root().join("state.json.moved"),
    )
    .unwrap();

    // A broken release: staged into the other slot, fails, and goes back to
    // the adopted 1.0.0, whose slot was never touched.
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(11);
    assert_eq!(device.current(), Some(running.clone()));
    assert_eq!(
        device.active_slot_digest(),
        digest,
        "the running slot is byte-identical"
    );
    device.wait_app_version("1.0.0");
    assert_eq!(device.status_json()["active_version"], "1.0.0");

    fleet.promote("stable", "3.0.0");
    device.check().expect_code(10);
    device.wait_app_version("3.0.0");
    assert_ne!(device.current(), Some(running));
}

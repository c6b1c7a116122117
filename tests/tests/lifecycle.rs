//! The device's life with a healthy network (issue 4, "Judged by"): install,
//! upgrade, automatic rollback of a broken release that is then never
//! retried; the offline case; install windows. Real `manifest-builder`,
//! `manifest-server`, `updater` and sample-app processes throughout.

use chrono::{Duration as ChronoDuration, Local};
use e2e_tests::{outcome, App, Device, Fleet, Server, TestStore};

#[test]
fn install_upgrade_and_roll_back_a_broken_release_that_is_then_never_retried() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    fleet.store.publish("3.0.0", App::Broken);
    let device = fleet.device();

    // A fresh device installs v1.
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    device.assert_current_complete("after installing 1.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert_eq!(outcome(&status), "updated", "{status:#}");
    let slot_v1 = device.current().expect("current exists after an install");
    assert_eq!(status["current"], slot_v1.as_str(), "{status:#}");

    // Promote v2: upgrade into the other slot.
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let slot_v2 = device.current().unwrap();
    assert_ne!(slot_v1, slot_v2, "an upgrade goes to the inactive slot");
    let status = device.status_json();
    assert_eq!(
        (status["active_version"].as_str(), status["phase"].as_str()),
        (Some("2.0.0"), Some("idle")),
        "{status:#}"
    );
    let v2_digest = device.active_slot_digest().unwrap();

    // Promote a broken v3: it fails its health checks and is rolled back.
    fleet.promote("stable", "3.0.0");
    let run = device.check();
    run.expect_code(11);
    assert_eq!(
        device.current().as_deref(),
        Some(slot_v2.as_str()),
        "current points back at v2's slot"
    );
    device.wait_app_version("2.0.0");
    assert_eq!(
        device.active_slot_digest().unwrap(),
        v2_digest,
        "v2's slot is untouched"
    );
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert!(
        status["blocked"].get("3.0.0").is_some(),
        "3.0.0 is blocked: {status:#}"
    );
    assert_eq!(outcome(&status), "rolled_back", "{status:#}");
    assert_eq!(status["last_check"]["version"], "3.0.0", "{status:#}");

    // The next run does not retry v3 (the cohort manifest is unchanged: 304).
    fleet.proxy.clear_log();
    device.check().expect_code(0);
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new(), "no v3 download");
    assert_eq!(device.current().as_deref(), Some(slot_v2.as_str()));

    // Nor after the cohort is re-signed (new sequence, same target): the
    // decision itself must say "blocked", not just the 304.
    fleet.store.sign(&fleet.store.cohort_file("stable"));
    fleet.wait_cohort("stable");
    fleet.proxy.clear_log();
    device.check().expect_code(0);
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new(), "no v3 download");
    let status = device.status_json();
    assert_eq!(outcome(&status), "blocked", "{status:#}");
    assert!(status["blocked"].get("3.0.0").is_some(), "{status:#}");
    assert_eq!(device.current().as_deref(), Some(slot_v2.as_str()));
    device.wait_app_version("2.0.0");
}

#[test]
fn offline_run_changes_nothing_and_the_device_then_goes_straight_to_the_latest() {
    // The device talks to the server directly: "down" is a refused connection.
    let store = TestStore::new();
    let mut server = Server::start(&store.store, std::slice::from_ref(&store.public_key));
    store.publish("1.0.0", App::Good);
    store.promote_ok("stable", "1.0.0");
    server.wait_serving("cohorts/stable.json");
    let device = Device::simple(&server.url(), &store.public_key);
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");

    let status_before = device.durable_status();
    let slots_before = device.slots_digest();
    let current_before = device.current();
    server.stop();
    device.check().expect_code(13);
    assert_eq!(
        device.durable_status(),
        status_before,
        "status changed by an offline run"
    );
    assert_eq!(
        device.slots_digest(),
        slots_before,
        "slots changed by an offline run"
    );
    assert_eq!(device.current(), current_before);
    let status = device.status_json();
    assert_eq!(outcome(&status), "offline", "{status:#}");
    device.wait_app_version("1.0.0");

    // While it is offline, ops publish and promote v2, v3, then v4.
    for v in ["2.0.0", "3.0.0", "4.0.0"] {
        store.publish(v, App::Good);
        store.promote_ok("stable", v);
    }
    server.restart();
    server.wait_serving("cohorts/stable.json");
    device.check().expect_code(10);
    device.wait_app_version("4.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "4.0.0", "{status:#}");
    let log = server.log();
    for skipped in ["2.0.0", "3.0.0"] {
        assert!(
            !log.contains(&format!("/releases/{skipped}.json")),
            "the device fetched intermediate release {skipped}:\n{log}"
        );
    }
    let history = device.history();
    for skipped in ["2.0.0", "3.0.0"] {
        assert!(
            !history.contains(skipped),
            "history mentions {skipped}:\n{history}"
        );
    }
}

/// `HH:MM-HH:MM` from `start` hours from now, lasting `hours` hours, local
/// time (the updater's windows are local; they may wrap midnight).
fn window(start: i64, hours: i64) -> String {
    let from = Local::now() + ChronoDuration::hours(start);
    let to = from + ChronoDuration::hours(hours);
    format!("{}-{}", from.format("%H:%M"), to.format("%H:%M"))
}

/// `updater rollback [--to VERSION]` on a device: back to the release in the
/// other slot, health-checked, the left version blocked (the next poll does
/// not reinstall it) and recorded in the history.
#[test]
fn a_manual_rollback_returns_to_the_other_slot_and_blocks_the_version_left() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    let slot_v1 = device.current().unwrap();
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");

    let wrong = device.updater(&["rollback", "--to", "3.0.0"], &[]);
    wrong.expect_code(1);
    assert!(
        wrong.output().contains("holds 1.0.0, not 3.0.0"),
        "{}",
        wrong.output()
    );
    assert_eq!(device.status_json()["active_version"], "2.0.0");

    device
        .updater(&["rollback", "--to", "1.0.0"], &[])
        .expect_code(11);
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));
    device.wait_app_version("1.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert!(
        status["blocked"]["2.0.0"]
            .as_str()
            .is_some_and(|r| r.contains("manual rollback")),
        "{status:#}"
    );
    assert_eq!(
        device.history_count("rolled_back", "from", "2.0.0"),
        1,
        "{}",
        device.history()
    );

    // The cohort still targets 2.0.0: blocked here, not downloaded again.
    fleet.proxy.clear_log();
    device.check().expect_code(0);
    assert_eq!(outcome(&device.status_json()), "blocked");
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new());
    device.wait_app_version("1.0.0");
}

/// `check --dry-run` says what a run would do and changes nothing: exit 17
/// when it would install, 0 when up to date; no download, no state change.
#[test]
fn a_dry_run_says_it_would_install_and_changes_nothing() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    fleet.promote("stable", "2.0.0");
    let before = device.durable_status();
    fleet.proxy.clear_log();
    let run = device.updater(&["check", "--dry-run"], &[]);
    run.expect_code(17);
    assert!(run.output().contains("would install 2.0.0"), "{}", run.output());
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new());
    assert_eq!(device.durable_status(), before);
    device.check().expect_code(10);
    device.updater(&["check", "--dry-run"], &[]).expect_code(0);
}

/// Ops take back a target while devices hold it staged for the install
/// window: the staged install is abandoned (not switched to when the window
/// opens, not left as a phase that blocks `updater rollback`).
#[test]
fn a_staged_release_the_cohort_no_longer_targets_is_abandoned() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    let mut device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    let slot_v1 = device.current().unwrap();

    device.reconfigure(|c| c.windows = vec![window(2, 1)]);
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(12);
    assert_eq!(device.status_json()["phase"], "staged");

    // The cohort goes back to what the device runs (a remote rollback).
    fleet
        .promote_with("stable", "1.0.0", None, &["--allow-downgrade"])
        .expect_code(0);
    device.check().expect_code(0);
    let status = device.status_json();
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert!(status["staged"].is_null(), "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");

    // The window opens: nothing is switched to 2.0.0.
    device.reconfigure(|c| c.windows = vec![window(-1, 2)]);
    device.check().expect_code(0);
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));
    device.wait_app_version("1.0.0");

    // Nor by hand: a release staged but never run is not a rollback target.
    let run = device.updater(&["rollback"], &[]);
    run.expect_code(1);
    assert!(run.output().contains("not a rollback"), "{}", run.output());
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));
}

#[test]
fn closed_install_window_stages_without_switching_and_an_open_one_switches() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    let mut device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let slot_v1 = device.current().unwrap();
    let v1_digest = device.active_slot_digest().unwrap();

    // Closed: starts in two hours.
    device.reconfigure(|c| c.windows = vec![window(2, 1)]);
    fleet.promote("stable", "2.0.0");
    fleet.proxy.clear_log();
    device.check().expect_code(12);
    assert!(
        !fleet.artifact_requests().is_empty(),
        "downloads do not wait for the window"
    );
    let status = device.status_json();
    assert_eq!(status["staged"]["version"], "2.0.0", "{status:#}");
    let staged_slot = status["staged"]["slot"].as_str().unwrap_or_default().to_string();
    assert!(
        !staged_slot.is_empty() && !slot_v1.ends_with(&staged_slot),
        "staged into the inactive slot, not {slot_v1}: {status:#}"
    );
    assert_eq!(outcome(&status), "deferred", "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert_eq!(
        device.current().as_deref(),
        Some(slot_v1.as_str()),
        "not switched"
    );
    assert_eq!(device.active_slot_digest().unwrap(), v1_digest);
    device.wait_app_version("1.0.0");

    // Still closed: deferred again, and nothing downloaded twice.
    fleet.proxy.clear_log();
    device.check().expect_code(12);
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new());

    // Open: started an hour ago, ends in an hour. The staged slot switches.
    device.reconfigure(|c| c.windows = vec![window(-1, 2)]);
    fleet.proxy.clear_log();
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    assert_eq!(
        fleet.artifact_requests(),
        Vec::<String>::new(),
        "the staged slot is used as is"
    );
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert!(status["staged"].is_null(), "{status:#}");
    assert_ne!(device.current().as_deref(), Some(slot_v1.as_str()));
}

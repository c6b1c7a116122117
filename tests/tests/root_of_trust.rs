//! Root of trust with rotation (issue 6; DESIGN: Root of trust): a device
//! pins two root keys (threshold 2); the store's keys.json delegates cohort
//! manifests to an `ops` key and release manifests to a `release` key.
//! Rotations made with `manifest-builder keys` are in force on the device's
//! next poll; a revoked key's signatures are refused; an old keys.json
//! cannot be replayed. The server serves whatever is on disk, as a
//! compromised mirror would: the device is the one that must refuse.

use std::fs;
use std::path::Path;

use e2e_tests::device::reason;
use e2e_tests::trust::{keys_cmd, RootKeys};
use e2e_tests::{outcome, App, Device, Fleet};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A device pinning the two root keys.
fn device(fleet: &Fleet, keys: &RootKeys) -> Device {
    let roots = keys.pinned_dir(&fleet.store);
    fleet.device_with(|c| c.root_keys = Some((roots, 2)))
}

fn publish(fleet: &mut Fleet, version: &str, release_key: &Path) {
    fleet.store.key = release_key.to_path_buf();
    fleet.store.publish(version, App::Good);
}

fn promote(fleet: &mut Fleet, version: &str, ops_key: &Path) {
    fleet.store.key = ops_key.to_path_buf();
    fleet.promote("stable", version);
}

/// What a refusal must leave untouched.
fn snapshot(device: &Device) -> (Option<String>, Vec<u8>, Vec<u8>) {
    (
        device.current(),
        fs::read(device.state_dir.join("state.json")).unwrap(),
        fs::read(device.state_dir.join("trust.json")).unwrap(),
    )
}

fn assert_refused(device: &Device, before: &(Option<String>, Vec<u8>, Vec<u8>), words: &[&str]) {
    let run = device.check();
    run.expect_code(14);
    let status = device.status_json();
    assert_eq!(outcome(&status), "refused", "{status:#}");
    let why = reason(&status);
    assert!(
        words.iter().all(|w| why.contains(&w.to_lowercase())),
        "the reason {why:?} does not mention all of {words:?}"
    );
    assert_eq!(&snapshot(device), before, "a refused run changed the device");
}

#[test]
fn rotation_is_picked_up_on_the_next_poll_and_revoked_keys_are_refused() {
    let mut fleet = Fleet::unverified();
    let keys = RootKeys::init(&fleet.store);
    publish(&mut fleet, "1.0.0", &keys.release.0);
    promote(&mut fleet, "1.0.0", &keys.ops.0);
    fleet.server.wait_serving("keys.json");
    let device = device(&fleet, &keys);

    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let trust: serde_json::Value =
        serde_json::from_slice(&fs::read(device.state_dir.join("trust.json")).unwrap()).unwrap();
    assert!(
        trust["keys_json"].as_str().unwrap().contains("\"version\": 1"),
        "{trust:#}"
    );
    let keys_status = &device.status_json()["keys"];
    assert_eq!(keys_status["version"], 1, "{keys_status:#}");
    let text = device.updater(&["status"], &[]);
    assert!(
        text.stdout.contains("keys.json:  version 1, expires"),
        "{}",
        text.stdout
    );
    // Idle: keys.json and the cohort manifest both answer 304.
    device.check().expect_code(0);

    // The release key may not sign cohort manifests (roles are separate),
    // and root keys sign only keys.json.
    let keys_v1 = (
        fs::read(fleet.store.store.join("keys.json")).unwrap(),
        fs::read(fleet.store.store.join("keys.json.minisig")).unwrap(),
    );
    publish(&mut fleet, "2.0.0", &keys.release.0);
    promote(&mut fleet, "2.0.0", &keys.release.0);
    let before = snapshot(&device);
    assert_refused(&device, &before, &["cohorts/stable.json", "untrusted key"]);
    promote(&mut fleet, "2.0.0", &keys.root[0].0);
    assert_refused(&device, &before, &["untrusted key"]);

    // Rotation: ops1 -> ops2. One root signature is not enough, and the
    // builder writes nothing then.
    let ops2 = fleet.store.keygen("keys/ops2");
    let ops1_id = fs::read_to_string(&keys.ops.1).unwrap();
    let ops1_id = ops1_id.split_whitespace().nth(5).unwrap().to_string();
    let rotate = |signers: &[&Path]| {
        keys_cmd(
            &fleet.store,
            &[
                "keys",
                "rotate",
                "--add-ops",
                &s(&ops2.1),
                "--remove-ops",
                &ops1_id,
            ],
            signers,
        )
    };
    let run = rotate(&[&keys.root[0].0]);
    run.expect_code(1);
    assert!(run.stderr.contains("1 of 2 required"), "{}", run.stderr);
    assert_eq!(fs::read(fleet.store.store.join("keys.json")).unwrap(), keys_v1.0);
    rotate(&keys.root_signers()).expect_code(0);
    fleet.server.wait_serving("keys.json");
    promote(&mut fleet, "2.0.0", &ops2.0);
    // The next poll takes keys.json version 2 and installs 2.0.0.
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");

    // ops1 is no longer delegated: its cohort manifests are refused now.
    publish(&mut fleet, "3.0.0", &keys.release.0);
    promote(&mut fleet, "3.0.0", &keys.ops.0);
    let before = snapshot(&device);
    assert_refused(&device, &before, &["untrusted key", &ops1_id]);

    // ops2 is compromised: revoke it, delegate to ops3.
    let ops3 = fleet.store.keygen("keys/ops3");
    keys_cmd(
        &fleet.store,
        &["keys", "revoke", "--key", &s(&ops2.1), "--add-ops", &s(&ops3.1)],
        &keys.root_signers(),
    )
    .expect_code(0);
    fleet.server.wait_serving("keys.json");
    // The attacker's manifest, signed with the revoked key, is refused...
    promote(&mut fleet, "3.0.0", &ops2.0);
    let before_revocation = snapshot(&device);
    let run = device.check();
    run.expect_code(14);
    let why = reason(&device.status_json());
    assert!(why.contains("untrusted key"), "{why}");
    let trust: serde_json::Value =
        serde_json::from_slice(&fs::read(device.state_dir.join("trust.json")).unwrap()).unwrap();
    assert!(
        trust["keys_json"].as_str().unwrap().contains("\"version\": 3"),
        "{trust:#}"
    );
    assert_eq!(device.current(), before_revocation.0);
    // The only change: the sequence floor that ops2 signed is forgotten
    // (fast-forward recovery, see the test below).
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    let (mut was, mut now) = (
        json(&before_revocation.1),
        json(&fs::read(device.state_dir.join("state.json")).unwrap()),
    );
    assert!(was["accepted"]["stable"].is_object(), "{was:#}");
    assert!(now["accepted"].get("stable").is_none(), "{now:#}");
    was["accepted"].take();
    now["accepted"].take();
    assert_eq!(was, now);

    // ...and so is the old keys.json that still delegated to ops1 (replay).
    fs::write(fleet.store.store.join("keys.json"), &keys_v1.0).unwrap();
    fs::write(fleet.store.store.join("keys.json.minisig"), &keys_v1.1).unwrap();
    fleet.server.wait_serving("keys.json");
    promote(&mut fleet, "3.0.0", &keys.ops.0);
    let before = snapshot(&device);
    assert_refused(&device, &before, &["keys.json"]);
    device.wait_app_version("2.0.0");

    // The real keys.json back and ops3 signing: the device moves on.
    keys_cmd(&fleet.store, &["keys", "show"], &[]).expect_code(0);
    let out = keys_cmd(
        &fleet.store,
        &["keys", "rotate", "--expires", "30d"],
        &keys.root_signers(),
    );
    // The store holds version 1 again (the replay above), so a rotation
    // from it is version 2: the device, at version 3, refuses it too.
    out.expect_code(0);
    fleet.server.wait_serving("keys.json");
    let before = snapshot(&device);
    assert_refused(&device, &before, &["keys.json", "not newer"]);
}

#[test]
fn a_device_pinning_roots_refuses_a_store_without_keys_json() {
    let fleet = Fleet::unverified();
    let st = &fleet.store;
    let roots = st.root().join("device-root-keys");
    fs::create_dir_all(&roots).unwrap();
    fs::copy(&st.public_key, roots.join("root.pub")).unwrap();
    st.publish("1.0.0", App::Good);
    fleet.promote("stable", "1.0.0");
    // The dev key signed the manifests; as a pinned root it still signs
    // nothing but keys.json, and there is none.
    let device = fleet.device_with(|c| c.root_keys = Some((roots, 1)));
    let run = device.check();
    run.expect_code(1);
    let why = reason(&device.status_json());
    assert!(why.contains("keys.json does not exist"), "{why}");
    assert!(why.contains("keys init"), "{why}");
    assert_eq!(device.current(), None);
}

/// The roots themselves rotate twice (r1 r2 -> r2 r3 -> r3 r4) while a
/// device pinning r1 r2 is still in its box. At its first poll it steps
/// through `keys/1.json`, `keys/2.json`, `keys/3.json`; without the history
/// it is refused, and says what is missing.
#[test]
fn a_device_that_missed_root_rotations_walks_the_keys_history() {
    let mut fleet = Fleet::unverified();
    let keys = RootKeys::init(&fleet.store);
    let r3 = fleet.store.keygen("keys/root3");
    let r4 = fleet.store.keygen("keys/root4");
    let r1_id = fs::read_to_string(&keys.root[0].1).unwrap();
    let r1_id = r1_id.split_whitespace().nth(5).unwrap().to_string();
    let r2_id = fs::read_to_string(&keys.root[1].1).unwrap();
    let r2_id = r2_id.split_whitespace().nth(5).unwrap().to_string();
    keys_cmd(
        &fleet.store,
        &["keys", "rotate", "--add-root", &s(&r3.1), "--remove-root", &r1_id],
        &[&keys.root[0].0, &keys.root[1].0, &r3.0],
    )
    .expect_code(0);
    keys_cmd(
        &fleet.store,
        &["keys", "rotate", "--add-root", &s(&r4.1), "--remove-root", &r2_id],
        &[&keys.root[1].0, &r3.0, &r4.0],
    )
    .expect_code(0);
    for v in 1..=3 {
        assert!(fleet.store.store.join(format!("keys/{v}.json")).is_file());
    }
    publish(&mut fleet, "1.0.0", &keys.release.0);
    promote(&mut fleet, "1.0.0", &keys.ops.0);
    fleet.server.wait_serving("keys.json");
    fleet.server.wait_serving("keys/3.json");

    // Without keys/2.json the chain is broken: refused, nothing installed.
    let two = fleet.store.store.join("keys/2.json");
    let saved = fs::read(&two).unwrap();
    fs::remove_file(&two).unwrap();
    e2e_tests::wait_for("keys/2.json unserved", std::time::Duration::from_secs(20), || {
        (fleet.server.get("keys/2.json")?.0 == 404).then_some(())
    });
    let device = device(&fleet, &keys);
    let run = device.check();
    run.expect_code(14);
    let why = reason(&device.status_json());
    assert!(why.contains("keys/2.json does not exist"), "{why}");
    assert_eq!(device.current(), None);
    assert!(!device.state_dir.join("trust.json").exists());

    fs::write(&two, saved).unwrap();
    fleet.server.wait_serving("keys/2.json");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let trust = fs::read_to_string(device.state_dir.join("trust.json")).unwrap();
    assert!(trust.contains(r#"\"version\": 3"#), "{trust}");
}

/// Fast-forward (TUF): a stolen ops key signs a cohort manifest with a huge
/// sequence, which devices accept (it is validly signed) and which would
/// make them refuse every legitimate manifest after it. Once ops revoke
/// that key, the floor it set is forgotten and the device follows the
/// legitimate manifests again.
#[test]
fn a_fast_forwarded_sequence_is_forgotten_when_its_key_is_revoked() {
    let mut fleet = Fleet::unverified();
    let keys = RootKeys::init(&fleet.store);
    publish(&mut fleet, "1.0.0", &keys.release.0);
    publish(&mut fleet, "2.0.0", &keys.release.0);
    promote(&mut fleet, "1.0.0", &keys.ops.0);
    fleet.server.wait_serving("keys.json");
    let device = device(&fleet, &keys);
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");

    // The attacker's manifest: same target, sequence 1 000 000.
    let cohort = fleet.store.cohort_file("stable");
    let legit = (
        fs::read(&cohort).unwrap(),
        fs::read(cohort.with_extension("json.minisig")).unwrap(),
    );
    let text = String::from_utf8(legit.0.clone()).unwrap();
    let forged = text.replace("\"sequence\": 1,", "\"sequence\": 999999,");
    assert_ne!(forged, text);
    fs::write(&cohort, forged).unwrap();
    fleet.store.key = keys.ops.0.clone();
    fleet.store.sign(&cohort);
    fleet.wait_cohort("stable");
    device.check().expect_code(0);
    assert_eq!(device.status_json()["cohort_sequence"], 1_000_000);

    // Ops take the store back, revoke the stolen key and promote 2.0.0
    // with a new one (sequence 2).
    fs::write(&cohort, &legit.0).unwrap();
    fs::write(cohort.with_extension("json.minisig"), &legit.1).unwrap();
    let ops2 = fleet.store.keygen("keys/ops2");
    keys_cmd(
        &fleet.store,
        &[
            "keys",
            "revoke",
            "--key",
            &s(&keys.ops.1),
            "--add-ops",
            &s(&ops2.1),
        ],
        &keys.root_signers(),
    )
    .expect_code(0);
    fleet.server.wait_serving("keys.json");
    promote(&mut fleet, "2.0.0", &ops2.0);
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    assert_eq!(device.status_json()["cohort_sequence"], 2);
}

//! Verification refusals (issue 4, "Judged by"): a tampered artifact, an
//! artifact of the wrong size, a cohort manifest signed by an unknown key, a
//! replayed older cohort manifest, a downgrade without permission and a
//! release for other hardware. Each run exits 14 (refused), leaves the
//! active slot byte-identical, `current` and `state.json` as they were and
//! the app running, and `status --json` says why (`last_check.outcome ==
//! "refused"`, a reason naming the cause). The helpers are shared with the
//! adversarial suite (`e2e_tests::adversary`, issue #6).

use std::fs;
use std::io::Write as _;

use e2e_tests::adversary::{
    assert_no_downloads, assert_refused, before, before_manifest_refusal, device_offered_v2, device_on_v1,
};
use e2e_tests::{App, Fleet, Release};

#[test]
fn a_tampered_artifact_is_refused() {
    let fleet = Fleet::new();
    let (device, b) = device_offered_v2(&fleet);
    // Change the gzip header's MTIME: the archive still unpacks to the same
    // files, so only the hash can catch it. Same length.
    let artifact = fleet.store.artifact("2.0.0", "app");
    let mut bytes = fs::read(&artifact).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip artifact");
    bytes[4..8].copy_from_slice(&0x5eed_1234u32.to_le_bytes());
    fs::write(&artifact, &bytes).unwrap();
    let run = device.check();
    assert_refused(
        &device,
        &run,
        &b,
        &["sha256", "hash", "digest", "checksum", "mismatch"],
    );
    // Bytes that failed their hash are not kept for a resume.
    assert_no_downloads(&device);
}

#[test]
fn an_artifact_of_the_wrong_size_is_refused() {
    let fleet = Fleet::new();
    let (device, b) = device_offered_v2(&fleet);
    // The manifest's bytes, then more: a download must stop at `size`.
    let artifact = fleet.store.artifact("2.0.0", "app");
    fs::OpenOptions::new()
        .append(true)
        .open(&artifact)
        .unwrap()
        .write_all(&[0u8; 4096])
        .unwrap();
    let run = device.check();
    assert_refused(
        &device,
        &run,
        &b,
        &["size", "larger", "longer", "exceed", "bytes", "length"],
    );
}

#[test]
fn a_cohort_manifest_signed_by_an_unknown_key_is_refused() {
    // A verifying server would not serve it: the device must refuse it alone.
    let fleet = Fleet::unverified();
    let device = device_on_v1(&fleet);
    let b = before_manifest_refusal(&device, "1.0.0");
    let (stranger, _) = fleet.store.keygen("keys/stranger");
    // Signed by the stranger alone (the release it pins is ours: --trust).
    let (store, trusted) = (fleet.store.store.display(), fleet.store.public_key.display());
    let (store, trusted, stranger) = (
        store.to_string(),
        trusted.to_string(),
        stranger.display().to_string(),
    );
    fleet.store.builder_ok(&[
        "promote",
        "--store",
        &store,
        "--cohort",
        "stable",
        "--version",
        "2.0.0",
        "--key",
        &stranger,
        "--trust",
        &trusted,
    ]);
    let sig = fs::read_to_string(fleet.store.cohort_file("stable").with_extension("json.minisig")).unwrap();
    assert_eq!(
        sig.matches("untrusted comment").count(),
        1,
        "one signature only:\n{sig}"
    );
    fleet.wait_cohort("stable");
    let run = device.check();
    assert_refused(&device, &run, &b, &["signature", "key", "trusted", "signed"]);
}

#[test]
fn a_replayed_older_cohort_manifest_is_refused() {
    let fleet = Fleet::unverified();
    let device = device_on_v1(&fleet);
    // Keep sequence 1, then re-sign the same target as sequence 2.
    let cohort = fleet.store.cohort_file("stable");
    let sig = cohort.with_extension("json.minisig");
    let (old, old_sig) = (fs::read(&cohort).unwrap(), fs::read(&sig).unwrap());
    fleet.store.sign(&cohort);
    fleet.wait_cohort("stable");
    device.check().expect_code(0);
    let status = device.status_json();
    assert_eq!(status["cohort_sequence"], 2, "{status:#}");
    let b = before_manifest_refusal(&device, "1.0.0");

    // The attacker (or a stale mirror) serves sequence 1 again.
    fs::write(&cohort, &old).unwrap();
    fs::write(&sig, &old_sig).unwrap();
    fleet.wait_cohort("stable");
    let run = device.check();
    assert_refused(&device, &run, &b, &["sequence", "replay", "older", "lower"]);
}

#[test]
fn a_downgrade_without_permission_is_refused() {
    let fleet = Fleet::new();
    let device = device_on_v1(&fleet);
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let b = before(&device, "2.0.0");

    // `promote` refuses this without --allow-downgrade, so hand-edit the
    // cohort to target 1.0.0 with allow_downgrade false and re-sign it.
    let cohort = fleet.store.cohort_file("stable");
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&cohort).unwrap()).unwrap();
    let release = fs::read(fleet.store.store.join("releases/1.0.0.json")).unwrap();
    doc["target"]["version"] = "1.0.0".into();
    doc["target"]["sha256"] = manifest::Sha256Hex::digest(&release).to_hex().into();
    doc["target"]["size"] = release.len().into();
    doc["allow_downgrade"] = false.into();
    fs::write(&cohort, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    fleet.store.sign(&cohort);
    fleet.wait_cohort("stable");
    // Validly signed: its sequence is recorded though its target is refused.
    let b = b.accepting(&fleet.store, "stable");
    let run = device.check();
    assert_refused(&device, &run, &b, &["downgrade", "lower", "older"]);
}

#[test]
fn a_release_for_other_hardware_is_refused() {
    let fleet = Fleet::new();
    const ARMV7: &str = "raspberrypi-armv7";
    // v1 is built for both boards; v2 only for arm64.
    fleet
        .store
        .publish_release(&Release::new("1.0.0", App::Good).compatible(&["raspberrypi-arm64", ARMV7]));
    fleet.store.publish("2.0.0", App::Good);
    let device = fleet.device_with(|c| c.compatible = ARMV7.into());
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let b = before(&device, "1.0.0");
    fleet.promote("stable", "2.0.0");
    let b = b.accepting(&fleet.store, "stable");
    fleet.proxy.clear_log();
    let run = device.check();
    assert_refused(&device, &run, &b, &["compatible", "armv7", "hardware"]);
    assert!(
        !fleet.proxy.requested("/artifacts/"),
        "nothing is downloaded for a release this device cannot run"
    );
}

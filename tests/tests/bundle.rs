//! Offline bundles (issue 7, "Judged by"): a device whose server is
//! unreachable is updated from a bundle written by `manifest-builder bundle`,
//! through `updater install` and through the daemon's `inbox/`; a tampered
//! bundle (a flipped byte in a manifest or an artifact), a replayed older
//! bundle and a downgrade without `allow_downgrade` are refused with the
//! usual reason, the active slot untouched. The inbox test gives the daemon
//! no rescan and no poll during the test, so only its notify watch passes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e_tests::device::reason;
use e2e_tests::util::free_port;
use e2e_tests::{bins, outcome, wait_for, App, Device, DeviceConfig, TestStore};

/// A store without any server, and a device pointed at a port nobody
/// listens on: the only way in is a bundle.
fn offline_site() -> (TestStore, Device) {
    let store = TestStore::new();
    store.publish("1.0.0", App::Good);
    store.publish("2.0.0", App::Good);
    let cfg = DeviceConfig::new(&format!("http://127.0.0.1:{}", free_port()));
    let device = Device::new(cfg, &[store.public_key.as_path()]);
    (store, device)
}

/// Promote `version` in `stable` and bundle it as `<root>/<version>.bundle`.
fn bundle_of(store: &TestStore, version: &str) -> PathBuf {
    store.promote_ok("stable", version);
    let out = store.root().join(format!("{version}.bundle"));
    store.bundle("stable", &out);
    out
}

/// A copy of `bundle` with one byte flipped inside the first occurrence of
/// `needle` (which must be in it).
fn tampered(bundle: &Path, needle: &[u8], out: &Path) -> PathBuf {
    let mut bytes = fs::read(bundle).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the needle is in the bundle");
    bytes[at + needle.len() / 2] ^= 0x01;
    fs::write(out, &bytes).unwrap();
    out.to_path_buf()
}

/// Exit 14, `current` and the active slot unchanged, still on `version`,
/// and a reason mentioning one of `words`.
fn assert_refused(device: &Device, run: &e2e_tests::Run, version: &str, words: &[&str]) {
    let current = device.current();
    let digest = device.active_slot_digest();
    run.expect_code(14);
    let status = device.status_json();
    assert_eq!(outcome(&status), "refused", "{status:#}");
    let why = reason(&status);
    assert!(
        words.iter().any(|w| why.contains(w)),
        "{why:?} mentions none of {words:?}"
    );
    assert_eq!(status["active_version"], version, "{status:#}");
    assert_eq!(device.current(), current);
    assert_eq!(device.active_slot_digest(), digest);
    device.wait_app_version(version);
}

#[test]
fn an_offline_device_is_installed_and_upgraded_from_bundles() {
    let (store, device) = offline_site();
    device.check().expect_code(13);

    let v1 = bundle_of(&store, "1.0.0");
    device.install(&v1).expect_code(10);
    device.wait_app_version("1.0.0");
    // Installing the same bundle again changes nothing.
    device.install(&v1).expect_code(0);

    let v2 = bundle_of(&store, "2.0.0");
    device.install(&v2).expect_code(10);
    device.wait_app_version("2.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert_eq!(status["cohort_sequence"], 2, "{status:#}");
    // The unpacked bundle does not stay behind.
    assert!(!device.state_dir.join("bundle").exists());
}

#[test]
fn a_bundle_with_a_broken_release_rolls_back() {
    let (store, device) = offline_site();
    store.publish("3.0.0", App::Broken);
    device.install(&bundle_of(&store, "1.0.0")).expect_code(10);
    device.install(&bundle_of(&store, "3.0.0")).expect_code(11);
    device.wait_app_version("1.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert!(status["blocked"]["3.0.0"].is_string(), "{status:#}");
}

#[test]
fn a_tampered_bundle_is_refused() {
    let (store, device) = offline_site();
    device.install(&bundle_of(&store, "1.0.0")).expect_code(10);
    let v2 = bundle_of(&store, "2.0.0");

    // A flipped byte in the cohort manifest: its signature no longer verifies.
    let cohort = fs::read(store.cohort_file("stable")).unwrap();
    let bad = tampered(&v2, &cohort, &store.root().join("bad-cohort.bundle"));
    let run = device.install(&bad);
    assert_refused(&device, &run, "1.0.0", &["signature", "verif"]);

    // A flipped byte in the release manifest: its hash is pinned.
    let release = fs::read(store.store.join("releases/2.0.0.json")).unwrap();
    let bad = tampered(&v2, &release, &store.root().join("bad-release.bundle"));
    let run = device.install(&bad);
    assert_refused(&device, &run, "1.0.0", &["sha256", "pins", "signature"]);

    // A flipped byte in an artifact: the streaming hash catches it.
    let artifact = fs::read(store.artifact("2.0.0", "app")).unwrap();
    let bad = tampered(&v2, &artifact, &store.root().join("bad-artifact.bundle"));
    let run = device.install(&bad);
    assert_refused(&device, &run, "1.0.0", &["sha256", "hash", "mismatch"]);

    // A damaged tar (a path changed in a header): refused before any run.
    let stray = store.root().join("stray.bundle");
    let mut bytes = fs::read(&v2).unwrap();
    let name = b"cohorts/stable.json.minisig";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at..at + 8].copy_from_slice(b"../etc/x");
    fs::write(&stray, &bytes).unwrap();
    let run = device.install(&stray);
    assert_refused(&device, &run, "1.0.0", &["bundle"]);

    // The intact bundle still installs.
    device.install(&v2).expect_code(10);
    device.wait_app_version("2.0.0");
}

#[test]
fn an_older_bundle_is_refused_as_a_replay() {
    let (store, device) = offline_site();
    let v1 = bundle_of(&store, "1.0.0");
    let v2 = bundle_of(&store, "2.0.0");
    device.install(&v2).expect_code(10);
    device.wait_app_version("2.0.0");
    let run = device.install(&v1);
    assert_refused(&device, &run, "2.0.0", &["replay", "sequence"]);
    assert_eq!(device.status_json()["cohort_sequence"], 2);
}

/// Re-sign the cohort manifest `cohort` with `allow_downgrade` set to
/// `allow` (the sequence goes up by one) and bundle it as `<root>/<name>`.
fn bundle_with_downgrade(store: &TestStore, cohort: &str, allow: bool, name: &str) -> PathBuf {
    let file = store.cohort_file(cohort);
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    doc["allow_downgrade"] = allow.into();
    fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    store.sign(&file);
    let out = store.root().join(name);
    store.bundle(cohort, &out);
    out
}

/// The network's downgrade rule (tests/tests/refusals.rs) holds for bundles:
/// a cohort manifest that targets a lower version than the device runs is
/// refused without `allow_downgrade` and installed with it.
#[test]
fn a_bundle_downgrades_only_with_allow_downgrade() {
    let (store, device) = offline_site();
    device.install(&bundle_of(&store, "2.0.0")).expect_code(10);
    device.wait_app_version("2.0.0");

    // `promote` needs --allow-downgrade to point the cohort back at 1.0.0
    // (sequence 2); then the flag is cleared and the manifest re-signed
    // (sequence 3): a validly signed downgrade without permission.
    store
        .promote("stable", "1.0.0", None, &["--allow-downgrade"])
        .expect_code(0);
    let refused = bundle_with_downgrade(&store, "stable", false, "down-refused.bundle");
    let run = device.install(&refused);
    assert_refused(&device, &run, "2.0.0", &["downgrade", "lower"]);
    // Validly signed: its sequence is recorded though its target is refused.
    assert_eq!(device.status_json()["cohort_sequence"], 3);

    // The same target with permission (sequence 4) is installed.
    let allowed = bundle_with_downgrade(&store, "stable", true, "down-allowed.bundle");
    device.install(&allowed).expect_code(10);
    device.wait_app_version("1.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert_eq!(status["cohort_sequence"], 4, "{status:#}");
}

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

/// Copy `bundle` into the inbox the way a person should: under another
/// name first, then renamed, so the daemon never sees half a file.
fn drop_in(device: &Device, bundle: &Path, name: &str) {
    let inbox = device.inbox();
    fs::create_dir_all(&inbox).unwrap();
    let part = inbox.join(format!("{name}.part"));
    fs::copy(bundle, &part).unwrap();
    fs::rename(&part, inbox.join(name)).unwrap();
}

#[test]
fn the_daemon_installs_bundles_dropped_in_its_inbox() {
    let (store, mut device) = offline_site();
    // A poll and a rescan that never come during the test: only the notify
    // watch can make the daemon look at its inbox, so a broken watch fails
    // the 10-second pick-up below.
    device.reconfigure(|c| {
        c.extra_toml =
            "\n[daemon]\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\ninbox_rescan = \"1h\"\n".into()
    });
    let v1 = bundle_of(&store, "1.0.0");
    let v2 = bundle_of(&store, "2.0.0");
    let artifact = fs::read(store.artifact("2.0.0", "app")).unwrap();
    let bad = tampered(&v2, &artifact, &store.root().join("bad.bundle"));

    let log_path = device.root().join("daemon.log");
    let log = fs::File::create(&log_path).unwrap();
    let _daemon = Daemon(
        Command::new(bins::updater())
            .args(["--config", &device.config_path.display().to_string(), "daemon"])
            // Log to the file, not to a journal the test runner may have.
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The daemon starts with a poll (offline here) and reads the inbox right
    // after it: wait for that poll, so the first bundle too arrives while the
    // daemon sleeps.
    wait_for("the daemon's first poll", Duration::from_secs(30), || {
        device.state_dir.join("last_check.json").is_file().then_some(())
    });
    let picked_up = |name: &str, nth: usize| {
        let line = format!("inbox: installing {name}");
        wait_for(
            &format!("the daemon to pick up {name}"),
            Duration::from_secs(10),
            || {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                (log.matches(&line).count() >= nth).then_some(())
            },
        )
    };
    let filed = |dir: &str, name: &str| {
        let path = device.inbox().join(dir).join(name);
        wait_for(&format!("inbox/{dir}/{name}"), Duration::from_secs(60), || {
            path.is_file().then_some(())
        })
    };

    drop_in(&device, &v1, "site-v1.bundle");
    picked_up("site-v1.bundle", 1);
    filed("done", "site-v1.bundle");
    device.wait_app_version("1.0.0");
    assert_eq!(device.status_json()["active_version"], "1.0.0");

    drop_in(&device, &bad, "site-v2.bundle");
    picked_up("site-v2.bundle", 1);
    filed("failed", "site-v2.bundle");
    let status = device.status_json();
    assert_eq!(outcome(&status), "refused", "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");

    drop_in(&device, &v2, "site-v2.bundle");
    picked_up("site-v2.bundle", 2);
    filed("done", "site-v2.bundle");
    device.wait_app_version("2.0.0");
    assert_eq!(device.status_json()["active_version"], "2.0.0");
    assert!(!device.inbox().join("site-v2.bundle").exists());
}

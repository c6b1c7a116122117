//! The adversarial suite (issue #6): a hostile or broken network and store
//! against the real updater. Every case starts from a device running 1.0.0
//! and offers it something it must not take; each would install (exit 10)
//! if the check it aims at were missing. Each asserts the exit code, that
//! `last_check.reason` names the cause, and that `current`, the active
//! slot's tree, the bytes of `state.json` and the running app are exactly as
//! before (`e2e_tests::adversary::assert_refused`).
//!
//! Manifest attacks are written by hand and signed with the store's own key
//! through the `manifest` library (`manifest-builder` refuses to make them),
//! and served by an unverified `manifest-server`, which serves whatever is
//! on disk: the device must refuse on its own. Network attacks come from the
//! proxy (trickle, captive portal, redirect). A refused *artifact* comes
//! with a validly signed cohort manifest the device rightly records, so
//! those cases let it take the manifest first (`accept_cohort_only`) and
//! then require the refused run to leave `state.json` byte-identical.
//!
//! Cases covered in `refusals.rs`: unknown key, replayed older sequence,
//! other `compatible`, artifact longer than signed, hash mismatch (with no
//! partial download left behind).

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::adversary::{
    accept_cohort_only, assert_no_downloads, assert_refused, assert_unchanged, before,
    before_manifest_refusal, device_offered_v2, device_on, device_on_v1, files_under, gzip, hand_cohort,
    hand_promote, next_cohort, now, tar, tar_gz, write_with_signatures, Entry, Signer,
};
use e2e_tests::{App, Device, Fault, Fleet, Release, Rule};
use manifest::document::to_pretty_bytes;
use manifest::{CohortManifest, CohortName, SignatureBlock, Timestamp, MAX_MANIFEST_BYTES};
use rand::{RngCore as _, SeedableRng as _};
use tar::EntryType as T;

const COHORT: &str = "cohorts/stable.json";

/// An unverified server (the device is the only judge) and a device on
/// 1.0.0, with 2.0.0 published but not promoted.
fn on_v1() -> (Fleet, Device) {
    let fleet = Fleet::unverified();
    let device = device_on_v1(&fleet);
    (fleet, device)
}

/// The cohort manifest an attacker wants taken: sequence bumped, target 2.0.0.
fn next(fleet: &Fleet) -> CohortManifest {
    next_cohort(&fleet.store, "stable", "2.0.0")
}

/// Serve `bytes` as the stable cohort manifest with these signature blocks.
fn serve(fleet: &Fleet, bytes: &[u8], blocks: &[SignatureBlock]) {
    write_with_signatures(&fleet.store, COHORT, bytes, blocks);
    fleet.wait_cohort("stable");
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

fn ago(d: Duration) -> Timestamp {
    Timestamp::from_unix(now().unix() - d.as_secs())
}

// ------------------------------------------------------------ signatures

/// The next cohort manifest (target 2.0.0), validly signed by the store's
/// key, then `tamper`ed with (its bytes, its signature block) and served:
/// refused, naming one of `words`. Untouched, it would be installed.
fn refuses_tampered(tamper: impl FnOnce(&mut Vec<u8>, &mut SignatureBlock), words: &[&str]) {
    let (fleet, device) = on_v1();
    let b = before_manifest_refusal(&device, "1.0.0");
    let mut bytes = to_pretty_bytes(&next(&fleet));
    let mut block = Signer::of(&fleet.store).block(&bytes, "stable.json");
    tamper(&mut bytes, &mut block);
    serve(&fleet, &bytes, &[block]);
    let run = device.check();
    assert_refused(&device, &run, &b, words);
}

#[test]
fn a_signature_with_a_trusted_key_id_made_by_another_key_is_refused() {
    refuses_tampered(
        |bytes, block| {
            // The stranger's signature, labelled with the trusted key's id.
            let forged = Signer::stranger().block(bytes, "stable.json");
            *block = SignatureBlock {
                key_id: block.key_id,
                ..forged
            };
        },
        &["does not match the signed bytes"],
    );
}

#[test]
fn one_byte_flipped_in_the_cohort_manifest_is_refused() {
    refuses_tampered(
        |bytes, _| {
            // Raise the sequence by one after signing (2 -> 3): one byte.
            let text = String::from_utf8(bytes.clone()).unwrap();
            let at = text.find("\"sequence\": ").unwrap() + "\"sequence\": ".len();
            assert_eq!(bytes[at], b'2', "{text}");
            bytes[at] = b'3';
        },
        &["does not match the signed bytes"],
    );
}

#[test]
fn one_byte_flipped_in_the_signature_is_refused() {
    refuses_tampered(
        |_, block| block.signature[17] ^= 0x01,
        &["does not match the signed bytes"],
    );
}

#[test]
fn one_byte_flipped_in_the_trusted_comment_is_refused() {
    refuses_tampered(
        |_, block| {
            // `timestamp:1…` -> `timestamp:0…`: the comment is covered by
            // the global signature only.
            let at = "timestamp:".len();
            assert_eq!(&block.trusted_comment[..at], "timestamp:");
            let mut comment = std::mem::take(&mut block.trusted_comment).into_bytes();
            comment[at] ^= 0x01;
            block.trusted_comment = String::from_utf8(comment).unwrap();
        },
        &["trusted comment"],
    );
}

#[test]
fn two_copies_of_one_keys_signature_do_not_meet_a_threshold_of_two() {
    let (fleet, mut device) = on_v1();
    // A second release key: the device now trusts both and needs both.
    let (second_key, second_pub) = fleet.store.keygen("keys/second");
    fs::copy(&second_pub, device.keys_dir.join("second.pub")).unwrap();
    device.reconfigure(|c| c.threshold = 2);
    // 2.0.0 itself is co-signed, so only the cohort signature can stop it.
    let release = fleet.store.store.join("releases/2.0.0.json");
    fleet.store.builder_ok(&[
        "sign",
        "--append",
        "--key",
        &second_key.display().to_string(),
        &release.display().to_string(),
    ]);
    fleet.server.wait_serving("releases/2.0.0.json");
    let b = before_manifest_refusal(&device, "1.0.0");

    let bytes = to_pretty_bytes(&next(&fleet));
    let dev = Signer::of(&fleet.store).block(&bytes, "stable.json");
    serve(&fleet, &bytes, &[dev.clone(), dev.clone()]);
    let run = device.check();
    assert_refused(&device, &run, &b, &["1 of 2"]);
    let status = device.status_json();
    assert!(
        e2e_tests::device::reason(&status).contains("stable.json"),
        "the cohort manifest is the one refused: {status:#}"
    );

    // The same bytes with the second key's own signature are taken: the
    // refusal was about the duplicate, not about this manifest.
    let second = Signer::from_file(&second_key).block(&bytes, "stable.json");
    serve(&fleet, &bytes, &[dev, second]);
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
}

// ------------------------------------------------------------ manifest content

#[test]
fn a_validly_signed_cohort_manifest_over_the_size_cap_is_refused() {
    let (fleet, device) = on_v1();
    let b = before_manifest_refusal(&device, "1.0.0");
    // Valid JSON, validly signed, padded with whitespace past 1 MiB.
    let mut bytes = to_pretty_bytes(&next(&fleet));
    bytes.resize(MAX_MANIFEST_BYTES + 4096, b' ');
    bytes.push(b'\n');
    let sig = Signer::of(&fleet.store).block(&bytes, "stable.json");
    // manifest-server will not serve a manifest over the cap: the proxy does.
    let sig_text = manifest::minisign::signatures_to_text(&[sig]);
    fleet.proxy.set_rule(
        Rule::new(Fault::answer("application/octet-stream", sig_text.into_bytes()))
            .on_prefix(format!("/{COHORT}.minisig")),
    );
    fleet
        .proxy
        .add_rule(Rule::new(Fault::answer("application/json", bytes)).on_prefix(format!("/{COHORT}")));
    let run = device.check();
    assert_refused(&device, &run, &b, &[&MAX_MANIFEST_BYTES.to_string(), "1 mib"]);
}

#[test]
fn the_same_sequence_with_other_bytes_is_refused() {
    let (fleet, device) = on_v1();
    let b = before_manifest_refusal(&device, "1.0.0");
    let mut doc = next(&fleet);
    doc.sequence -= 1;
    assert_eq!(Some(doc.sequence), b.sequence.as_ref().and_then(|s| s.as_u64()));
    hand_cohort(&fleet.store, "stable", &doc);
    fleet.wait_cohort("stable");
    let run = device.check();
    assert_refused(&device, &run, &b, &["already accepted with other content"]);
}

/// 2.0.0 promoted by a validly signed manifest that expired yesterday.
fn serve_expired(fleet: &Fleet) {
    let mut doc = next(fleet);
    doc.issued_at = ago(days(2));
    doc.expires_at = ago(days(1));
    hand_cohort(&fleet.store, "stable", &doc);
    fleet.wait_cohort("stable");
}

#[test]
fn an_expired_cohort_manifest_is_refused() {
    let (fleet, device) = on_v1();
    let b = before_manifest_refusal(&device, "1.0.0");
    serve_expired(&fleet);
    let run = device.check();
    assert_refused(&device, &run, &b, &["expired"]);
}

/// Whether Debian's `faketime` runs here; when it does not, fail under CI
/// (`.ci/run` installs it) and skip loudly elsewhere.
fn have_faketime() -> bool {
    let ok = Command::new("faketime")
        .args(["1970-01-01 00:00:00", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "faketime is missing under CI: .ci/run must `apt-get install faketime`"
        );
        eprintln!(
            "\n!!!!! SKIPPED: `faketime` is not installed (apt-get install faketime); the clock-at-1970 case did not run !!!!!\n"
        );
    }
    ok
}

#[test]
fn a_clock_back_at_1970_does_not_reopen_an_expired_manifest() {
    if !have_faketime() {
        return;
    }
    let (fleet, device) = on_v1();
    let b = before_manifest_refusal(&device, "1.0.0");
    serve_expired(&fleet);
    // A Pi without RTC right after boot: the wall clock says 1970, when the
    // manifest is far from expired. Only the persisted time floor says no.
    let run = device.updater_via(
        &["faketime", "1970-01-01 00:00:00"],
        &["check"],
        &[("FAKETIME_DONT_FAKE_MONOTONIC", "1")],
    );
    assert_refused(&device, &run, &b, &["expired"]);
    let status = device.status_json();
    let at = status["last_check"]["at"].as_str().unwrap_or("");
    assert!(
        at.starts_with("1970-"),
        "the run did not see 1970 (faketime not applied?): {status:#}"
    );
    let floor = status["time_floor"].as_str().unwrap_or("");
    assert!(
        !floor.starts_with("1970-"),
        "the time floor went back: {status:#}"
    );
}

#[test]
fn another_cohorts_validly_signed_manifest_at_this_cohorts_path_is_refused() {
    let (fleet, device) = on_v1();
    let b = before_manifest_refusal(&device, "1.0.0");
    // beta's manifest, with a sequence above anything stable has seen, is
    // served as cohorts/stable.json.
    let mut doc = next(&fleet);
    doc.cohort = CohortName::new("beta").unwrap();
    doc.sequence += 10;
    hand_cohort(&fleet.store, "stable", &doc);
    fleet.wait_cohort("stable");
    let run = device.check();
    assert_refused(&device, &run, &b, &["for cohort beta"]);
}

// ------------------------------------------------------------ artifacts

#[test]
fn an_artifact_shorter_than_signed_is_refused() {
    let fleet = Fleet::new();
    let (device, b) = device_offered_v2(&fleet);
    let artifact = fleet.store.artifact("2.0.0", "app");
    let len = fs::metadata(&artifact).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&artifact)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let run = device.check();
    assert_refused(&device, &run, &b, &["wrong size"]);
    assert_no_downloads(&device);
}

/// The slot being staged (the one `current` does not point at).
fn staging_slot(device: &Device) -> PathBuf {
    let current = device.current().unwrap();
    let other = if current.ends_with('a') {
        "slots/b"
    } else {
        "slots/a"
    };
    device.state_dir.join(other)
}

/// After a refused stage: the staging slot is not marked complete and holds
/// no trace of `component`, no partial download is left, and no file whose
/// name contains `escaped` exists under the device's temp dir.
fn assert_staging_removed(device: &Device, component: &str) {
    let slot = staging_slot(device);
    assert!(
        !slot.join("slot.json").exists(),
        "{} marked complete",
        slot.display()
    );
    assert!(
        !slot.join(component).exists(),
        "{component} left in {}: {:?}",
        slot.display(),
        files_under(&slot.join(component))
    );
    assert_no_downloads(device);
    let escaped: Vec<String> = files_under(device.root())
        .into_iter()
        .filter(|p| p.contains("escaped"))
        .collect();
    assert!(escaped.is_empty(), "written by the archive: {escaped:?}");
}

#[test]
fn a_gzip_bomb_past_unpacked_size_is_refused_and_staging_removed() {
    let fleet = Fleet::unverified();
    let device = device_on(&fleet, &["1.0.0"]);
    // 256 MiB of zeros in a few hundred KiB, declared to unpack to 1 MiB.
    let bomb = gzip(&tar(&[Entry::file("escaped-bomb", &vec![0u8; 256 << 20])]));
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    hand_promote(&fleet, "1.0.0", "2.0.0", "config", &bomb, 1 << 20);
    accept_cohort_only(&fleet, &device);
    let b = before(&device, "1.0.0");
    let run = device.check();
    assert_refused(&device, &run, &b, &["more than the declared 1048576 bytes"]);
    assert_staging_removed(&device, "config");
}

#[test]
fn a_pax_size_past_a_header_saying_zero_is_refused_and_staging_removed() {
    let fleet = Fleet::unverified();
    let device = device_on(&fleet, &["1.0.0"]);
    // 16 MiB that the tar reader takes from the PAX record, behind a header
    // that says 0 bytes, declared to unpack to 1 MiB. Counted by the header,
    // it fitted and was written in full.
    let data = vec![0u8; 16 << 20];
    let smuggled = tar_gz(&[
        Entry::pax("size", &data.len().to_string()),
        Entry::file("escaped-pax-size", &data).header_size(0),
    ]);
    hand_promote(&fleet, "1.0.0", "2.0.0", "config", &smuggled, 1 << 20);
    accept_cohort_only(&fleet, &device);
    let b = before(&device, "1.0.0");
    let run = device.check();
    assert_refused(
        &device,
        &run,
        &b,
        &["pax size (16777216 bytes) differs from its header size (0 bytes)"],
    );
    assert_staging_removed(&device, "config");
}

/// A PAX extended header of 256 MiB (256 KiB compressed): the tar reader
/// holds such an entry in memory whole, and unpacking runs while the
/// artifact downloads, before its hash can be checked, so a hostile mirror
/// could exhaust a Pi's RAM with it. Refused at its header instead.
#[test]
fn a_huge_pax_header_is_refused_before_it_is_held_in_memory() {
    let fleet = Fleet::unverified();
    let device = device_on(&fleet, &["1.0.0"]);
    let hostile = tar_gz(&[
        Entry::new("PaxHeader", tar::EntryType::XHeader, &vec![b'a'; 256 << 20]),
        Entry::file("f", b"x"),
    ]);
    hand_promote(&fleet, "1.0.0", "2.0.0", "config", &hostile, 1 << 20);
    accept_cohort_only(&fleet, &device);
    let b = before(&device, "1.0.0");
    let run = device.check();
    assert_refused(&device, &run, &b, &["metadata entry", "268435456 bytes"]);
    assert_staging_removed(&device, "config");
}

// ------------------------------------------------------------ tar variants

/// 2.0.0 is 1.0.0 with its `config` component replaced by the signed
/// archive `entries(device)`; the real updater must refuse it, naming one of
/// `words`, and leave nothing behind (see [`assert_staging_removed`]).
fn refuses_archive(entries: &[Entry], words: &[&str]) {
    refuses_archive_with(|_| entries.to_vec(), words);
}

/// [`refuses_archive`] with entries that depend on the device's paths.
fn refuses_archive_with(entries: impl FnOnce(&Device) -> Vec<Entry>, words: &[&str]) -> Device {
    let fleet = Fleet::unverified();
    let device = device_on(&fleet, &["1.0.0"]);
    let artifact = tar_gz(&entries(&device));
    hand_promote(&fleet, "1.0.0", "2.0.0", "config", &artifact, 1 << 20);
    accept_cohort_only(&fleet, &device);
    let b = before(&device, "1.0.0");
    let run = device.check();
    assert_refused(&device, &run, &b, words);
    let status = device.status_json();
    assert!(
        e2e_tests::device::reason(&status).contains("unsafe to unpack"),
        "{status:#}"
    );
    assert_staging_removed(&device, "config");
    device
}

/// `<device>/outside/`: a directory an archive must not reach.
fn outside(device: &Device) -> PathBuf {
    let dir = device.root().join("outside");
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn tar_with_a_dotdot_path_is_refused() {
    // From slots/b/config, four levels up is the device's temp dir.
    refuses_archive(&[Entry::file("../../../../escaped-dotdot", b"x")], &["'..'"]);
}

#[test]
fn tar_with_an_absolute_path_is_refused() {
    let target = format!("/etc/escaped-e2e-{}", std::process::id());
    refuses_archive(&[Entry::file(&target, b"x")], &["absolute"]);
    let written = Path::new(&target).exists();
    let _ = fs::remove_file(&target);
    assert!(!written, "{target} was written");
}

#[test]
fn tar_with_a_pax_path_traversal_is_refused() {
    let pax = Entry::pax("path", "../../../../escaped-pax");
    refuses_archive(&[pax, Entry::file("harmless", b"x")], &["'..'"]);
}

#[test]
fn tar_with_a_gnu_long_name_traversal_is_refused() {
    let long = Entry::gnu_long_name("../../../../escaped-gnu");
    refuses_archive(&[long, Entry::file("harmless", b"x")], &["'..'"]);
}

#[test]
fn tar_writing_through_a_symlink_is_refused() {
    let mut dir = PathBuf::new();
    let _device = refuses_archive_with(
        |d| {
            dir = outside(d);
            let link = Entry::symlink("l", &dir.display().to_string());
            vec![link, Entry::file("l/escaped-through-symlink", b"x")]
        },
        &["absolute"],
    );
    assert!(files_under(&dir).is_empty(), "{:?}", files_under(&dir));
}

#[test]
fn tar_with_a_symlink_then_a_directory_of_the_same_name_is_refused() {
    let (link, dir) = (Entry::symlink("d", "sub"), Entry::dir("d"));
    refuses_archive(
        &[link, dir, Entry::file("d/escaped-through-dir", b"x")],
        &["duplicate"],
    );
}

#[test]
fn tar_with_a_hard_link_to_outside_is_refused() {
    let mut secret = PathBuf::new();
    let _device = refuses_archive_with(
        |d| {
            secret = outside(d).join("secret");
            fs::write(&secret, "secret\n").unwrap();
            let link = Entry::hard_link("escaped-hardlink", &secret.display().to_string());
            vec![link, Entry::file("settings.conf", b"release=2.0.0\n")]
        },
        &["absolute"],
    );
    assert_eq!(
        fs::metadata(&secret).unwrap().nlink(),
        1,
        "{} gained a link",
        secret.display()
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "secret\n");
}

#[test]
fn tar_with_a_character_device_is_refused() {
    // /dev/null's numbers; the tests run as root, so mknod would succeed.
    let null = Entry::new("escaped-null", T::Char, b"").device(1, 3);
    refuses_archive(&[null], &["unsupported entry type"]);
}

#[test]
fn tar_with_a_fifo_is_refused() {
    refuses_archive(
        &[Entry::new("escaped-fifo", T::Fifo, b"")],
        &["unsupported entry type"],
    );
}

#[test]
fn tar_with_a_setuid_file_is_refused() {
    let suid = Entry::file("escaped-suid", b"#!/bin/sh\nid\n").mode(0o4755);
    refuses_archive(&[suid], &["setuid"]);
}

#[test]
fn tar_with_duplicate_paths_is_refused() {
    let first = Entry::file("settings.conf", b"release=2.0.0\n");
    refuses_archive(
        &[first, Entry::file("settings.conf", b"escaped=1\n")],
        &["duplicate"],
    );
}

// ------------------------------------------------------------ network

/// `[network]` for the slow-retrieval cases: a 12 s window that must move
/// at least 1 KiB, no retries.
fn slow_guard(c: &mut e2e_tests::DeviceConfig) {
    c.stall_timeout = "12s".into();
    c.retries = 0;
    c.extra_toml.push_str("stall_min_bytes = 1024\n");
}

/// 2.0.0 promoted, and every response under `prefix` trickled at one byte
/// per 10 s: each byte comes well within the 12 s window, so only the pace
/// rule (at least 1 KiB per window) can end the run, offline, well within
/// 40 s. Artifacts: the cohort manifest is taken first, see
/// `accept_cohort_only`.
fn abandons_a_trickle_on(prefix: &str) {
    let (fleet, mut device) = on_v1();
    device.reconfigure(slow_guard);
    fleet.promote("stable", "2.0.0");
    let b = if prefix.starts_with("/artifacts/") {
        accept_cohort_only(&fleet, &device);
        before(&device, "1.0.0")
    } else {
        before_manifest_refusal(&device, "1.0.0")
    };
    fleet
        .proxy
        .set_rule(Rule::new(Fault::Trickle(Duration::from_secs(10))).on_prefix(prefix));
    let run = device.check();
    assert!(run.elapsed < Duration::from_secs(40), "took {:?}", run.elapsed);
    assert_unchanged(&device, &run, &b, 13, "offline", &["stalled", "too slow"]);
}

#[test]
fn a_cohort_manifest_trickling_one_byte_per_10_s_is_abandoned() {
    abandons_a_trickle_on("/cohorts/");
}

#[test]
fn an_artifact_trickling_one_byte_per_10_s_is_abandoned() {
    abandons_a_trickle_on("/artifacts/");
}

#[test]
fn a_captive_portal_page_instead_of_the_manifest_is_refused_naming_html() {
    let (fleet, device) = on_v1();
    fleet.promote("stable", "2.0.0");
    let b = before_manifest_refusal(&device, "1.0.0");
    fleet
        .proxy
        .set_rule(Rule::new(Fault::captive_portal()).on_prefix("/cohorts/"));
    let run = device.check();
    assert_refused(&device, &run, &b, &["html"]);
}

#[test]
fn a_redirect_to_another_host_is_not_followed() {
    let (fleet, device) = on_v1();
    fleet.promote("stable", "2.0.0");
    // The attacker's host: a whole store of its own, signed by its own key.
    let attacker = Fleet::unverified();
    attacker.store.publish("9.0.0", App::Good);
    attacker.promote("stable", "9.0.0");
    attacker.proxy.clear_log();
    let b = before_manifest_refusal(&device, "1.0.0");
    fleet
        .proxy
        .set_rule(Rule::new(Fault::RedirectTo(attacker.proxy.url())).on_prefix("/cohorts/"));
    let run = device.check();
    assert_unchanged(&device, &run, &b, 13, "offline", &["redirect"]);
    let asked = attacker.proxy.requests();
    assert!(asked.is_empty(), "the device followed the redirect: {asked:?}");
}

// ------------------------------------------------------------ verify-then-use

#[test]
fn a_partial_download_replaced_between_runs_is_refused_then_fetched_again() {
    let fleet = Fleet::new();
    let device = device_on(&fleet, &["1.0.0"]);
    fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).videos_mib(2));

    // 1. The download is cut half-way: the partial file stays for a resume.
    fleet.promote("stable", "2.0.0");
    let videos = fleet.store.artifact("2.0.0", "videos");
    let url = fleet.store.artifact_url_path("2.0.0", "videos");
    let size = fs::metadata(&videos).unwrap().len();
    let cut = size / 2;
    fleet
        .proxy
        .set_rule(Rule::new(Fault::CutAfter(cut)).on_prefix(url.clone()).first(1));
    let run = device.check();
    assert!(matches!(run.code, Some(13) | Some(1)), "{}", run.output());
    let sha = videos.file_name().unwrap().to_string_lossy().into_owned();
    let partial = device.state_dir.join(format!("downloads/{sha}.partial"));
    assert_eq!(fs::metadata(&partial).unwrap().len(), cut);

    // 2. Someone with write access to the data partition swaps it for the
    // start of another, valid archive of the same length.
    let mut noise = vec![0u8; size as usize];
    rand::rngs::StdRng::seed_from_u64(6).fill_bytes(&mut noise);
    let mut evil = tar_gz(&[Entry::file("escaped-evil.mp4", &noise)]);
    assert!(evil.len() as u64 > cut);
    evil.truncate(cut as usize);
    fs::write(&partial, &evil).unwrap();

    let b = before(&device, "1.0.0");
    fleet.proxy.clear_log();
    let run = device.check();
    assert_refused(&device, &run, &b, &["sha256"]);
    let resumed: Vec<_> = fleet
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path == url)
        .collect();
    assert_eq!(
        resumed.first().and_then(|r| r.range.clone()),
        Some(format!("bytes={cut}-")),
        "the run resumed from the swapped partial: {resumed:?}"
    );
    assert_staging_removed(&device, "videos");

    // 3. The next run fetches it whole and installs exactly what was signed.
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let installed = fs::read(device.state_dir.join("current/videos/intro.mp4")).unwrap();
    let published = fs::read(fleet.store.root().join("src/videos-2/intro.mp4")).unwrap();
    assert!(
        installed == published,
        "the installed videos differ from the signed ones"
    );
}

// ---------------------------------------------------------- mix-and-match

/// TUF's mix-and-match: a current cohort manifest combined with another,
/// validly signed release manifest (1.0.0's bytes served as 2.0.0's). The
/// cohort manifest pins the release by hash and size: refused before any
/// artifact is fetched.
#[test]
fn a_validly_signed_release_manifest_swapped_for_another_is_refused() {
    let (fleet, device) = on_v1();
    let b = before(&device, "1.0.0");
    let releases = fleet.store.store.join("releases");
    fleet.promote("stable", "2.0.0");
    let b = b.accepting(&fleet.store, "stable");
    for suffix in ["json", "json.minisig"] {
        fs::copy(
            releases.join(format!("1.0.0.{suffix}")),
            releases.join(format!("2.0.0.{suffix}")),
        )
        .unwrap();
    }
    fleet.server.wait_serving("releases/2.0.0.json");
    fleet.proxy.clear_log();
    let run = device.check();
    assert_refused(&device, &run, &b, &["pins"]);
    assert!(
        !fleet.proxy.requested("/artifacts/"),
        "nothing is downloaded for a release manifest that is not the pinned one"
    );
}

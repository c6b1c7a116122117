//! The attacker's side of the refusal suites (`tests/tests/refusals.rs`,
//! `tests/tests/adversarial.rs`, issue #6):
//!
//! - [`Before`] / [`assert_refused`]: what a refused run must leave exactly
//!   as it was (the active slot's tree, where `current` points, the bytes of
//!   `state.json`, the running app) and the verdict it must give;
//! - [`Signer`] and the `hand_*` functions: a store written by hand, for
//!   what `manifest-builder` refuses to make (expired or replayed cohort
//!   manifests, archives with `..` or device nodes, decompression bombs),
//!   signed with the store's own key through the `manifest` library, so only
//!   the device's own checks stand between it and the attack;
//! - [`tar_gz`]: archives built from raw tar headers (`tar::Builder` would
//!   refuse to write most of them).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use manifest::document::to_pretty_bytes;
use manifest::minisign::{signatures_to_text, SignatureBlock};
use manifest::store::{cohort_path, release_path, signature_path};
use manifest::{ArchiveFormat, CohortManifest, CohortName, ComponentName, ReleaseManifest};
use manifest::{SecretKey, Sha256Hex, Timestamp, Version};

use crate::device::{outcome, reason, Device};
use crate::fleet::Fleet;
use crate::proxy::{Fault, Rule};
use crate::store::{App, TestStore};
use crate::util::Run;

// ------------------------------------------------------------ the verdict

/// What must not change across a refused run.
pub struct Before {
    pub current: Option<String>,
    pub digest: Option<BTreeMap<String, String>>,
    pub version: String,
    /// The accepted cohort sequence, when the refusal is of the cohort
    /// manifest itself (then it must not raise the floor).
    pub sequence: Option<serde_json::Value>,
    /// `<state_dir>/state.json`, byte for byte.
    pub state_json: Vec<u8>,
    /// A validly signed cohort manifest the run must record even though it
    /// refuses what it points at (a downgrade, a release for other
    /// hardware): (cohort, sequence, sha256, signer key ids). See
    /// [`Before::accepting`].
    pub accepted: Option<(String, u64, String, Vec<String>)>,
}

impl Before {
    /// The refused run must record the cohort manifest now in `store` as
    /// accepted (its sequence becomes the replay floor) and change nothing
    /// else in `state.json`.
    pub fn accepting(mut self, store: &TestStore, cohort: &str) -> Before {
        let path = store.cohort_file(cohort);
        let bytes = fs::read(&path).unwrap();
        let doc = CohortManifest::parse(&bytes).unwrap();
        // The device records who signed it (fast-forward recovery), in key
        // id order; the store's signers are all trusted here.
        let sig = fs::read_to_string(path.with_extension("json.minisig")).unwrap();
        let ids: std::collections::BTreeSet<manifest::KeyId> = manifest::minisign::parse_signatures(&sig)
            .unwrap()
            .iter()
            .map(|b| b.key_id)
            .collect();
        let signers = ids.iter().map(ToString::to_string).collect();
        self.accepted = Some((
            cohort.into(),
            doc.sequence,
            Sha256Hex::digest(&bytes).to_hex(),
            signers,
        ));
        self
    }
}

/// `<state_dir>/state.json` (empty when there is none).
pub fn state_json(device: &Device) -> Vec<u8> {
    fs::read(device.state_dir.join("state.json")).unwrap_or_default()
}

pub fn before(device: &Device, version: &str) -> Before {
    Before {
        current: device.current(),
        digest: device.active_slot_digest(),
        version: version.into(),
        sequence: None,
        state_json: state_json(device),
        accepted: None,
    }
}

/// Like [`before`], for a cohort manifest that must be refused outright.
pub fn before_manifest_refusal(device: &Device, version: &str) -> Before {
    Before {
        sequence: Some(device.status_json()["cohort_sequence"].clone()),
        ..before(device, version)
    }
}

/// Exit 14 (`refused`), nothing changed, and the reason mentions one of `words`.
pub fn assert_refused(device: &Device, run: &Run, before: &Before, words: &[&str]) {
    assert_unchanged(device, run, before, 14, "refused", words);
}

/// Exit `code` with `last_check.outcome == outcome`, a `last_check.reason`
/// that mentions one of `words` (lowercase), and nothing changed:
/// `current`, the active slot's tree, the running app and, checked last so
/// that every other failure shows first, the bytes of `state.json`.
pub fn assert_unchanged(
    device: &Device,
    run: &Run,
    before: &Before,
    code: i32,
    outcome_: &str,
    words: &[&str],
) {
    run.expect_code(code);
    assert!(before.current.is_some());
    assert_eq!(device.current(), before.current, "current moved");
    assert_eq!(
        device.active_slot_digest(),
        before.digest,
        "the active slot changed"
    );
    let status = device.status_json();
    assert_eq!(outcome(&status), outcome_, "{status:#}");
    let why = reason(&status);
    assert!(
        words.iter().any(|w| why.contains(w)),
        "the reason {why:?} mentions none of {words:?}: {status:#}"
    );
    assert_eq!(status["active_version"], before.version.as_str(), "{status:#}");
    if let Some(seq) = &before.sequence {
        assert_eq!(
            &status["cohort_sequence"], seq,
            "a refused manifest raised the floor: {status:#}"
        );
    }
    device.wait_app_version(&before.version);
    assert_state_json_unchanged(device, before);
}

/// `state.json` is byte-identical, or, when the run had to record a new
/// cohort manifest ([`Before::accepting`]), equal to the old one with just
/// that entry of `accepted` replaced. On failure, name the top-level keys
/// that differ, so a legitimate bookkeeping change is told from a real one.
fn assert_state_json_unchanged(device: &Device, before: &Before) {
    let after = state_json(device);
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap_or_default();
    let (mut old, new) = (parse(&before.state_json), parse(&after));
    match &before.accepted {
        None if after == before.state_json => return,
        None => {}
        Some((cohort, sequence, sha256, signers)) => {
            old["accepted"][cohort.as_str()] =
                serde_json::json!({ "sequence": sequence, "sha256": sha256, "signers": signers });
            if old == new {
                return;
            }
        }
    }
    let mut keys: Vec<&String> = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|o| o.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| old.get(k.as_str()) != new.get(k.as_str()))
        .map(|k| format!("{k}: {} -> {}", old[k.as_str()], new[k.as_str()]))
        .collect();
    panic!(
        "a refused run rewrote state.json; changed keys (expected -> found):\n  {}\n--- before:\n{}\n--- after:\n{}",
        changed.join("\n  "),
        String::from_utf8_lossy(&before.state_json),
        String::from_utf8_lossy(&after)
    );
}

/// Publish good releases `versions` (by `manifest-builder`), promote the
/// first, and return a device that installed it and runs it.
pub fn device_on(fleet: &Fleet, versions: &[&str]) -> Device {
    for v in versions {
        fleet.store.publish(v, App::Good);
    }
    let device = fleet.device();
    fleet.promote("stable", versions[0]);
    device.check().expect_code(10);
    device.wait_app_version(versions[0]);
    device
}

/// A fleet with releases 1.0.0 and 2.0.0 and a device running 1.0.0.
pub fn device_on_v1(fleet: &Fleet) -> Device {
    device_on(fleet, &["1.0.0", "2.0.0"])
}

/// [`device_on_v1`], then 2.0.0 promoted and its cohort manifest taken
/// ([`accept_cohort_only`]): what the artifact refusals start from, with
/// the snapshot to compare against.
pub fn device_offered_v2(fleet: &Fleet) -> (Device, Before) {
    let device = device_on_v1(fleet);
    fleet.promote("stable", "2.0.0");
    accept_cohort_only(fleet, &device);
    let b = before(&device, "1.0.0");
    (device, b)
}

/// No partial download is left in `<state_dir>/downloads`.
pub fn assert_no_downloads(device: &Device) {
    let left = files_under(&device.state_dir.join("downloads"));
    assert!(left.is_empty(), "partial downloads left behind: {left:?}");
}

/// Let the device take the cohort manifest now served without installing
/// anything: artifact downloads answer 503 and the run ends offline (13).
///
/// A refused *artifact* comes with a validly signed cohort manifest, which
/// the device rightly records (its sequence is the new replay floor), so
/// `state.json` changes in that run for good reason. Taking the manifest
/// first isolates the refusal: the refused run must then leave `state.json`
/// byte-identical like any other.
pub fn accept_cohort_only(fleet: &Fleet, device: &Device) {
    let seq = device.status_json()["cohort_sequence"].clone();
    fleet
        .proxy
        .set_rule(Rule::new(Fault::Status(503)).on_prefix("/artifacts/"));
    device.check().expect_code(13);
    fleet.proxy.set_fault(Fault::None);
    let status = device.status_json();
    assert_ne!(
        status["cohort_sequence"], seq,
        "the new cohort manifest was not taken: {status:#}"
    );
}

// ------------------------------------------------------------ signing by hand

/// A minisign secret key, used through the `manifest` library.
pub struct Signer {
    pub key: SecretKey,
}

impl Signer {
    /// The store's own key (what its devices trust).
    pub fn of(store: &TestStore) -> Signer {
        Signer::from_file(&store.key)
    }

    pub fn from_file(path: &Path) -> Signer {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Signer {
            key: SecretKey::parse(&text).unwrap(),
        }
    }

    /// A fresh key nobody trusts.
    pub fn stranger() -> Signer {
        Signer {
            key: SecretKey::generate(),
        }
    }

    /// One block over `bytes`, with the trusted comment `manifest-builder`
    /// writes (`timestamp:…\tfile:NAME\thashed`).
    pub fn block(&self, bytes: &[u8], file_name: &str) -> SignatureBlock {
        let comment = format!("timestamp:{}\tfile:{file_name}\thashed", now().unix());
        self.key.sign(bytes, &comment).unwrap()
    }
}

pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Write `rel` (`cohorts/stable.json`) and its `.minisig` holding `blocks`.
pub fn write_with_signatures(store: &TestStore, rel: &str, bytes: &[u8], blocks: &[SignatureBlock]) {
    fs::write(store.store.join(rel), bytes).unwrap();
    fs::write(store.store.join(signature_path(rel)), signatures_to_text(blocks)).unwrap();
}

/// Write `rel` signed by the store's key alone.
pub fn write_signed(store: &TestStore, rel: &str, bytes: &[u8]) {
    let name = rel.rsplit('/').next().unwrap();
    let block = Signer::of(store).block(bytes, name);
    write_with_signatures(store, rel, bytes, &[block]);
}

/// Put `bytes` in the store as `artifacts/<sha256>`.
pub fn hand_artifact(store: &TestStore, bytes: &[u8]) -> Sha256Hex {
    let sha = Sha256Hex::digest(bytes);
    fs::write(store.store.join("artifacts").join(sha.to_hex()), bytes).unwrap();
    sha
}

/// Release `version`: a copy of release `base` whose component `component`
/// is replaced by `artifact` (a `tar.gz`) declared to unpack to
/// `unpacked_size` bytes, signed with the store's key. Returns the
/// manifest's bytes.
pub fn hand_release(
    store: &TestStore,
    base: &str,
    version: &str,
    component: &str,
    artifact: &[u8],
    unpacked_size: u64,
) -> Vec<u8> {
    let mut doc: ReleaseManifest = store.release_manifest(base);
    doc.version = Version::parse(version).unwrap();
    doc.created_at = now();
    let sha = hand_artifact(store, artifact);
    let c = doc
        .components
        .iter_mut()
        .find(|c| c.name.as_str() == component)
        .unwrap_or_else(|| panic!("release {base} has no component {component}"));
    assert_eq!(c.name, ComponentName::new(component).unwrap());
    c.sha256 = sha;
    c.size = artifact.len() as u64;
    c.unpacked_size = unpacked_size;
    c.format = ArchiveFormat::TarGz;
    let bytes = to_pretty_bytes(&doc);
    let rel = release_path(&doc.version);
    write_signed(store, &rel, &bytes);
    bytes
}

/// The cohort manifest now in the store, parsed.
pub fn cohort_doc(store: &TestStore, cohort: &str) -> CohortManifest {
    CohortManifest::parse(&fs::read(store.cohort_file(cohort)).unwrap()).unwrap()
}

/// The next cohort manifest an attacker would like the device to take:
/// the current one with its sequence bumped, fresh validity, and its target
/// pinned to release `version` (which must be in the store).
pub fn next_cohort(store: &TestStore, cohort: &str, version: &str) -> CohortManifest {
    let mut doc = cohort_doc(store, cohort);
    let v = Version::parse(version).unwrap();
    let release = fs::read(store.store.join(release_path(&v))).unwrap();
    doc.sequence += 1;
    doc.issued_at = now();
    doc.expires_at = now().saturating_add(Duration::from_secs(30 * 86_400));
    doc.target = manifest::Target {
        version: v,
        sha256: Sha256Hex::digest(&release),
        size: release.len() as u64,
    };
    doc
}

/// Write `doc` as `cohorts/<its cohort>.json` at `cohort`'s path (the same
/// unless an attacker serves one cohort's manifest as another's), signed by
/// the store's key. Returns the bytes.
pub fn hand_cohort(store: &TestStore, cohort: &str, doc: &CohortManifest) -> Vec<u8> {
    let bytes = to_pretty_bytes(doc);
    write_signed(store, &cohort_path(&CohortName::new(cohort).unwrap()), &bytes);
    bytes
}

/// `hand_release` + `hand_cohort`: promote a hand-made release to 100 % of
/// `stable` and wait until the server serves both.
pub fn hand_promote(
    fleet: &Fleet,
    base: &str,
    version: &str,
    component: &str,
    artifact: &[u8],
    unpacked: u64,
) {
    hand_release(&fleet.store, base, version, component, artifact, unpacked);
    let doc = next_cohort(&fleet.store, "stable", version);
    hand_cohort(&fleet.store, "stable", &doc);
    fleet.server.wait_serving(&format!("releases/{version}.json"));
    fleet.wait_cohort("stable");
}

// ------------------------------------------------------------ archives

/// One raw tar entry: what `tar::Builder` would refuse to write is fine.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Option<String>,
    /// (major, minor) for device nodes.
    pub device: Option<(u32, u32)>,
    /// What the header's size field says, if not `data.len()` (a lie).
    pub header_size: Option<u64>,
}

impl Entry {
    pub fn new(path: &str, kind: tar::EntryType, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            },
            data: data.to_vec(),
            link: None,
            device: None,
            header_size: None,
        }
    }

    pub fn file(path: &str, data: &[u8]) -> Entry {
        Entry::new(path, tar::EntryType::Regular, data)
    }

    pub fn dir(path: &str) -> Entry {
        Entry::new(path, tar::EntryType::Directory, b"")
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(path, tar::EntryType::Symlink, b"").link(target)
    }

    pub fn hard_link(path: &str, target: &str) -> Entry {
        Entry::new(path, tar::EntryType::Link, b"").link(target)
    }

    /// A PAX extended header (`x`) setting `key=value` for the next entry.
    pub fn pax(key: &str, value: &str) -> Entry {
        Entry::new(
            "PaxHeader",
            tar::EntryType::XHeader,
            pax_record(key, value).as_bytes(),
        )
    }

    /// A GNU long-name extension (`L`): the next entry's real path.
    pub fn gnu_long_name(path: &str) -> Entry {
        Entry::new(
            "././@LongLink",
            tar::EntryType::GNULongName,
            format!("{path}\0").as_bytes(),
        )
    }

    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    pub fn link(mut self, target: &str) -> Entry {
        self.link = Some(target.into());
        self
    }

    pub fn device(mut self, major: u32, minor: u32) -> Entry {
        self.device = Some((major, minor));
        self
    }

    /// Write `size` in the header's size field; the data still follows
    /// in full (what a PAX `size` record can make a reader take).
    pub fn header_size(mut self, size: u64) -> Entry {
        self.header_size = Some(size);
        self
    }
}

/// One PAX record, `LEN key=value\n`, whose LEN counts itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

/// The raw tar stream of `entries` (GNU headers, names written byte for
/// byte), with its end-of-archive blocks.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        assert!(e.path.len() <= 100, "{}: use a long-name entry", e.path);
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[..e.path.len()].copy_from_slice(e.path.as_bytes());
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.header_size.unwrap_or(e.data.len() as u64));
        h.set_mtime(1_700_000_000);
        if let Some(link) = &e.link {
            h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        if let Some((major, minor)) = e.device {
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `tar` + `gzip`: a component artifact.
pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    gzip(&tar(entries))
}

/// Regular files under `dir`, recursively (symlinks not followed).
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                out.extend(files_under(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

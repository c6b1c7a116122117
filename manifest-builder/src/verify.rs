//! `manifest-builder verify`: audit a whole store and list every problem,
//! not just the first. Checked: every manifest's signature threshold and
//! schema, that file names match contents, that each cohort's target
//! resolves to a release with the pinned hash and size, that every artifact
//! exists with the declared size and hash and passes the device's
//! safe-unpack rules, how soon each cohort manifest expires, and the root
//! of trust (`keys.json`) when there is one.
//!
//! A file that cannot be read is a problem about that file, not the end of
//! the audit; only a store directory that cannot be listed stops it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use manifest::archive::{self, Limits};
use manifest::store::{
    cohort_path, release_path, ARTIFACTS_DIR, COHORTS_DIR, RELEASES_DIR, SIGNATURE_SUFFIX,
};
use manifest::{
    keys_history_path, CohortManifest, KeyRing, ReleaseManifest, Sha256Hex, Timestamp, TrustedKeys, Version,
    KEYS_PATH,
};

use crate::error::Result;
use crate::pack::hash_file;
use crate::store::{Pair, Store};

/// Cohort manifests expiring sooner than this get a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub cohorts: usize,
    pub releases: usize,
    pub artifacts: usize,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn verify_store(root: &Path, trust: &TrustedKeys, now: Timestamp) -> Result<Report> {
    let store = Store::open(root)?;
    let mut report = Report::default();
    let releases = check_releases(&store, trust, &mut report)?;
    check_cohorts(&store, trust, now, &releases, &mut report)?;
    check_strays(&store, &releases, &mut report)?;
    check_keys(&store, trust, now, &mut report)?;
    Ok(report)
}

/// keys.json warns this long before it expires.
pub const KEYS_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The root of trust, when the store has one: `keys.json` signed by the
/// given keys (pass the root keys), consistent with its own roots, not
/// expiring soon, and present in the `keys/` history devices walk.
fn check_keys(store: &Store, trust: &TrustedKeys, now: Timestamp, report: &mut Report) -> Result<()> {
    let Some(pair) = read_or_report(store, KEYS_PATH, report) else {
        return Ok(());
    };
    let Some(sig) = pair.signature else {
        report.problems.push(format!("{KEYS_PATH}: no signature"));
        return Ok(());
    };
    if let Err(e) = trust.verify_bytes(KEYS_PATH, &pair.bytes, &sig) {
        report.problems.push(e.to_string());
    }
    let ring = match KeyRing::reload(&pair.bytes, &sig) {
        Ok(ring) => ring,
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(());
        }
    };
    if ring.check_expiry(now).is_err() {
        report.problems.push(format!(
            "{KEYS_PATH}: expired at {}: devices refuse every manifest; run `keys rotate`",
            ring.expires_at()
        ));
    } else if now.until(ring.expires_at()) < KEYS_EXPIRY_WARNING {
        report.warnings.push(format!(
            "{KEYS_PATH}: expires at {}: run `keys rotate` soon",
            ring.expires_at()
        ));
    }
    let history = keys_history_path(ring.version());
    if read_or_report(store, &history, report).is_none_or(|p| p.bytes != pair.bytes) {
        report.warnings.push(format!(
            "{history} is missing or differs from {KEYS_PATH}: devices that missed a root rotation cannot catch up"
        ));
    }
    Ok(())
}

/// Read a manifest and its signature; a read error is recorded as a
/// problem (it names the file) and reads as absent.
fn read_or_report(store: &Store, rel: &str, report: &mut Report) -> Option<Pair> {
    match store.read_pair(rel) {
        Ok(pair) => pair,
        Err(e) => {
            report.problems.push(format!("{rel}: cannot be read: {e}"));
            None
        }
    }
}

/// Read, verify and parse one manifest; on a bad signature, record the
/// problem and still parse it so the rest of the audit can go on.
fn load<T>(
    store: &Store,
    rel: &str,
    report: &mut Report,
    verify: impl FnOnce(&[u8], &[u8]) -> std::result::Result<manifest::Verified<T>, manifest::VerifyError>,
    parse: fn(&[u8]) -> std::result::Result<T, manifest::DocumentError>,
) -> Result<Option<(T, Vec<u8>)>> {
    let Some(pair) = read_or_report(store, rel, report) else {
        return Ok(None);
    };
    match &pair.signature {
        None => report.problems.push(format!(
            "{rel}: no signature ({rel}{SIGNATURE_SUFFIX} is missing)"
        )),
        Some(sig) => match verify(&pair.bytes, sig) {
            Ok(v) => return Ok(Some((v.into_inner(), pair.bytes))),
            Err(e) => report.problems.push(e.to_string()),
        },
    }
    match parse(&pair.bytes) {
        Ok(doc) => Ok(Some((doc, pair.bytes))),
        Err(e) => {
            report.problems.push(format!("{rel}: {e}"));
            Ok(None)
        }
    }
}

/// Verified releases by version, with the hash and size of their bytes.
type Releases = BTreeMap<Version, (ReleaseManifest, Sha256Hex, u64)>;

fn check_releases(store: &Store, trust: &TrustedKeys, report: &mut Report) -> Result<Releases> {
    let mut releases = Releases::new();
    let mut artifacts_seen: BTreeSet<Sha256Hex> = BTreeSet::new();
    // A shared artifact is checked again for each different declaration:
    // every release's `size` and `unpacked_size` must hold for it.
    let mut artifacts_checked: BTreeSet<(Sha256Hex, u64, u64)> = BTreeSet::new();
    for stem in store.list(RELEASES_DIR)? {
        let rel = format!("{RELEASES_DIR}/{stem}.json");
        report.releases += 1;
        let loaded = load(
            store,
            &rel,
            report,
            |b, s| trust.verify_release(&rel, b, s),
            ReleaseManifest::parse,
        )?;
        let Some((doc, bytes)) = loaded else { continue };
        if release_path(&doc.version) != rel {
            report.problems.push(format!(
                "{rel}: holds version {}, so it must be named {}",
                doc.version,
                release_path(&doc.version)
            ));
        }
        for c in &doc.components {
            if artifacts_seen.insert(c.sha256) {
                report.artifacts += 1;
            }
            if artifacts_checked.insert((c.sha256, c.size, c.unpacked_size)) {
                check_artifact(store, &rel, c, report);
            }
        }
        releases.insert(
            doc.version.clone(),
            (doc, Sha256Hex::digest(&bytes), bytes.len() as u64),
        );
    }
    Ok(releases)
}

/// Every finding, read errors included, goes to `report`.
fn check_artifact(store: &Store, rel: &str, c: &manifest::Component, report: &mut Report) {
    let path = store.path(&format!("{ARTIFACTS_DIR}/{}", c.sha256));
    let what = format!("{rel}: component {} (artifacts/{})", c.name, c.sha256);
    let size = match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => {
            report
                .problems
                .push(format!("{what}: artifact is not a regular file"));
            return;
        }
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.problems.push(format!("{what}: artifact is missing"));
            return;
        }
        Err(e) => {
            report
                .problems
                .push(format!("{what}: artifact cannot be read: {e}"));
            return;
        }
    };
    if size != c.size {
        report.problems.push(format!(
            "{what}: artifact is {size} bytes, the manifest says {}",
            c.size
        ));
        return;
    }
    let hash = match hash_file(&path) {
        Ok((hash, _)) => hash,
        Err(e) => {
            report
                .problems
                .push(format!("{what}: artifact cannot be read: {e}"));
            return;
        }
    };
    if hash != c.sha256 {
        report.problems.push(format!(
            "{what}: artifact content does not match its hash (sha256 is {hash})"
        ));
        return;
    }
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            report.problems.push(format!(
                "{what}: artifact cannot be read: {}: {e}",
                path.display()
            ));
            return;
        }
    };
    if let Err(e) = archive::scan(
        std::io::BufReader::with_capacity(1 << 16, file),
        Limits::unpacked(c.unpacked_size),
    ) {
        report
            .problems
            .push(format!("{what}: devices would refuse it: {e}"));
    }
}

fn check_cohorts(
    store: &Store,
    trust: &TrustedKeys,
    now: Timestamp,
    releases: &Releases,
    report: &mut Report,
) -> Result<()> {
    for stem in store.list(COHORTS_DIR)? {
        let rel = format!("{COHORTS_DIR}/{stem}.json");
        report.cohorts += 1;
        let loaded = load(
            store,
            &rel,
            report,
            |b, s| trust.verify_cohort(&rel, b, s),
            CohortManifest::parse,
        )?;
        let Some((doc, _)) = loaded else { continue };
        if cohort_path(&doc.cohort) != rel {
            report.problems.push(format!(
                "{rel}: names cohort {}, so it must be named {}",
                doc.cohort,
                cohort_path(&doc.cohort)
            ));
        }
        if doc.is_expired(now) {
            report.problems.push(format!(
                "{rel}: expired at {} (devices refuse it): re-sign with `manifest-builder sign {rel}`",
                doc.expires_at
            ));
        } else if now.until(doc.expires_at) < EXPIRY_WARNING {
            report.warnings.push(format!(
                "{rel}: expires at {}, within 7 days: re-sign soon with `manifest-builder sign`",
                doc.expires_at
            ));
        }
        let target = &doc.target;
        match releases.get(&target.version) {
            None => report.problems.push(format!(
                "{rel}: targets version {}, but {} is missing or unreadable",
                target.version,
                release_path(&target.version)
            )),
            Some((release, sha256, size)) => {
                if *sha256 != target.sha256 || *size != target.size {
                    report.problems.push(format!(
                        "{rel}: pins {} at sha256 {} ({} bytes), but the file has sha256 {sha256} ({size} bytes)",
                        release_path(&target.version),
                        target.sha256,
                        target.size
                    ));
                }
                if release.product != doc.product {
                    report.problems.push(format!(
                        "{rel}: product {} targets a release of product {}",
                        doc.product, release.product
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Files that are not part of the layout: signatures without manifests,
/// unknown files, artifacts nothing refers to.
fn check_strays(store: &Store, releases: &Releases, report: &mut Report) -> Result<()> {
    for dir in [COHORTS_DIR, RELEASES_DIR] {
        for name in store.files(dir)? {
            if let Some(stem) = name.strip_suffix(&format!(".json{SIGNATURE_SUFFIX}")) {
                if !store.path(&format!("{dir}/{stem}.json")).exists() {
                    report
                        .problems
                        .push(format!("{dir}/{name}: signature without a manifest"));
                }
            } else if !name.ends_with(".json") {
                report
                    .warnings
                    .push(format!("{dir}/{name}: not part of the store layout"));
            }
        }
    }
    let referenced: BTreeSet<String> = releases
        .values()
        .flat_map(|(r, _, _)| r.components.iter().map(|c| c.sha256.to_hex()))
        .collect();
    for name in store.files(ARTIFACTS_DIR)? {
        if name.parse::<Sha256Hex>().is_err() {
            report
                .warnings
                .push(format!("{ARTIFACTS_DIR}/{name}: not named by a sha256"));
        } else if !referenced.contains(&name) {
            report
                .warnings
                .push(format!("{ARTIFACTS_DIR}/{name}: no release refers to it"));
        }
    }
    Ok(())
}

//! Offline bundles (DESIGN: The device, `updater install BUNDLE`): a plain
//! tar written by `manifest-builder bundle` that holds a piece of a store,
//! `cohorts/<c>.json(.minisig)`, `releases/<v>.json(.minisig)` and
//! `artifacts/<sha256>`, plus, when the store has a root of trust,
//! `keys.json(.minisig)` and its history `keys/<n>.json(.minisig)`.
//!
//! This module only unpacks: it turns the tar into a directory that the
//! normal run then reads as a `file://` store, so a bundle passes the very
//! same checks as a server (signatures, product, cohort, sequence floor,
//! expiry, compatibility, downgrade, pinned hashes, and the root of trust's
//! chain) in `run::Agent`. The tar itself is untrusted input, so unpacking
//! is strict (`classify`): regular files only, only those store paths
//! (`cohorts/`, `releases/`, `artifacts/`, `keys.json`, `keys/`) with
//! validated names, no duplicates, manifests, key documents and signatures
//! under their usual caps, a bounded entry count.
//! Artifacts need no cap of their own: the tar is uncompressed, so what is
//! written never exceeds the bundle's size, and the stager bounds and hashes
//! every artifact again before using it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path};

use manifest::store::{ARTIFACTS_DIR, COHORTS_DIR, RELEASES_DIR, SIGNATURE_SUFFIX};
use manifest::{
    keys_history_path, CohortName, Sha256Hex, KEYS_HISTORY_DIR, KEYS_PATH, MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
};

/// File name of bundles the daemon picks up from `inbox/`.
pub const EXTENSION: &str = "bundle";

/// More entries than any real bundle has (4 manifests + artifacts).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle file cannot be opened (wrong path, unreadable).
    #[error("{path}: {source}")]
    Open { path: String, source: io::Error },
    /// The content is not an acceptable bundle: a verdict, like a bad signature.
    #[error("{path}: not a valid bundle: {reason}")]
    Invalid { path: String, reason: String },
    /// Writing the unpacked files failed (disk full, …).
    #[error("{path}: {source}")]
    Write { path: String, source: io::Error },
}

/// Unpack `bundle` into the empty or missing directory `dest`. Returns the
/// cohorts it holds, so the caller can say when this device's is missing.
pub fn unpack(bundle: &Path, dest: &Path) -> Result<Vec<CohortName>, BundleError> {
    let shown = bundle.display().to_string();
    let invalid = |reason: String| BundleError::Invalid {
        path: shown.clone(),
        reason,
    };
    let file = File::open(bundle).map_err(|source| BundleError::Open {
        path: shown.clone(),
        source,
    })?;
    let write_err = |path: &Path, source: io::Error| BundleError::Write {
        path: path.display().to_string(),
        source,
    };
    for dir in [COHORTS_DIR, RELEASES_DIR, ARTIFACTS_DIR, KEYS_HISTORY_DIR] {
        let d = dest.join(dir);
        std::fs::create_dir_all(&d).map_err(|e| write_err(&d, e))?;
    }
    // The same cap on metadata entries as component archives: the tar
    // reader would hold a huge PAX header or long name in memory whole.
    let mut archive = tar::Archive::new(manifest::archive::MetadataCap::new(io::BufReader::new(file)));
    let mut seen = HashSet::new();
    let mut cohorts = Vec::new();
    let entries = archive.entries().map_err(|e| invalid(e.to_string()))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(invalid(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        let raw = entry.path().map_err(|e| invalid(e.to_string()))?.into_owned();
        let name = raw.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir()
            && matches!(
                name.trim_end_matches('/'),
                COHORTS_DIR | RELEASES_DIR | ARTIFACTS_DIR | KEYS_HISTORY_DIR
            )
        {
            continue;
        }
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            return Err(invalid(format!("{name}: only regular files are allowed")));
        }
        let (rel, limit, cohort) = classify(&raw).ok_or_else(|| {
            invalid(format!(
                "{name}: not a store path (cohorts/<c>.json[.minisig], releases/<v>.json[.minisig], artifacts/<sha256>)"
            ))
        })?;
        if !seen.insert(rel.clone()) {
            return Err(invalid(format!("{name}: appears twice")));
        }
        // What the reader will read (a PAX `size` record overrides the
        // header's); a bundle whose two sizes disagree is not ours.
        let size = entry.size();
        if entry.header().size().ok() != Some(size) {
            return Err(invalid(format!(
                "{name}: its PAX size differs from its header size"
            )));
        }
        if limit.is_some_and(|l| size > l) {
            return Err(invalid(format!(
                "{name}: {size} bytes, more than the {} allowed",
                limit.unwrap()
            )));
        }
        cohorts.extend(cohort);
        let path = dest.join(&rel);
        let mut out = File::create(&path).map_err(|e| write_err(&path, e))?;
        // `take` bounds the copy by the header's size even if the reader
        // misbehaves; a short entry is a truncated bundle.
        let copied = io::copy(&mut (&mut entry).take(size), &mut out).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::InvalidData {
                invalid(format!("{name}: {e}"))
            } else {
                write_err(&path, e)
            }
        })?;
        if copied != size {
            return Err(invalid(format!("{name}: truncated ({copied} of {size} bytes)")));
        }
    }
    if cohorts.is_empty() {
        return Err(invalid("no cohort manifest in it".into()));
    }
    Ok(cohorts)
}

/// `rel` as a store path with validated names: (normalised path, size
/// cap, the cohort when it is a cohort manifest).
fn classify(rel: &Path) -> Option<(String, Option<u64>, Option<CohortName>)> {
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let manifest_cap = |is_sig: bool| {
        Some(if is_sig {
            MAX_SIGNATURE_BYTES
        } else {
            MAX_MANIFEST_BYTES
        } as u64)
    };
    if let [file] = parts.as_slice() {
        // The root of trust's delegations, at the top of the store.
        let is_sig = *file != KEYS_PATH;
        return (file.strip_suffix(SIGNATURE_SUFFIX).unwrap_or(file) == KEYS_PATH)
            .then(|| (file.to_string(), manifest_cap(is_sig), None));
    }
    let [dir, file] = parts.as_slice() else {
        return None;
    };
    let (stem, is_sig) = match file.strip_suffix(SIGNATURE_SUFFIX) {
        Some(stem) => (stem, true),
        None => (*file, false),
    };
    match *dir {
        COHORTS_DIR => {
            let name: CohortName = stem.strip_suffix(".json")?.parse().ok()?;
            let cohort = (!is_sig).then(|| name.clone());
            Some((format!("{COHORTS_DIR}/{file}"), manifest_cap(is_sig), cohort))
        }
        RELEASES_DIR => {
            let version = manifest::parse_version(stem.strip_suffix(".json")?).ok()?;
            (version.to_string() == stem.trim_end_matches(".json"))
                .then(|| (format!("{RELEASES_DIR}/{file}"), manifest_cap(is_sig), None))
        }
        KEYS_HISTORY_DIR => {
            let version: u64 = stem.strip_suffix(".json")?.parse().ok()?;
            (keys_history_path(version) == format!("{KEYS_HISTORY_DIR}/{stem}"))
                .then(|| (format!("{KEYS_HISTORY_DIR}/{file}"), manifest_cap(is_sig), None))
        }
        ARTIFACTS_DIR if !is_sig => {
            let sha: Sha256Hex = file.parse().ok()?;
            (sha.to_hex() == *file).then(|| (format!("{ARTIFACTS_DIR}/{file}"), None, None))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8]) -> Result<Vec<CohortName>, BundleError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.bundle");
        std::fs::write(&file, bytes).unwrap();
        unpack(&file, &dir.path().join("out"))
    }

    #[test]
    fn accepts_store_paths() {
        let sha = Sha256Hex::digest(b"a").to_hex();
        let art = format!("artifacts/{sha}");
        let bytes = tar_of(&[
            ("cohorts/stable.json", b"{}"),
            ("cohorts/stable.json.minisig", b"sig"),
            ("releases/1.2.0.json", b"{}"),
            ("releases/1.2.0.json.minisig", b"sig"),
            (&art, b"a"),
        ]);
        let cohorts = unpack_bytes(&bytes).unwrap();
        assert_eq!(cohorts.len(), 1);
        assert_eq!(cohorts[0].as_str(), "stable");
    }

    #[test]
    fn refuses_anything_else() {
        for path in [
            "etc/passwd",
            "cohorts/stable.txt",
            "artifacts/notahash",
            "releases/x.json",
            "cohorts/sub/stable.json",
            "state.json",
        ] {
            let bytes = tar_of(&[("cohorts/stable.json", b"{}"), (path, b"x")]);
            let err = unpack_bytes(&bytes).unwrap_err();
            assert!(matches!(err, BundleError::Invalid { .. }), "{path}: {err}");
        }
    }

    #[test]
    fn refuses_oversized_manifests_duplicates_and_garbage() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(unpack_bytes(&tar_of(&[("cohorts/stable.json", &big)])).is_err());
        assert!(unpack_bytes(&tar_of(&[
            ("cohorts/stable.json", b"{}"),
            ("cohorts/stable.json", b"{}")
        ]))
        .is_err());
        assert!(unpack_bytes(b"this is not a tar file at all, just text that goes on and on").is_err());
        assert!(unpack_bytes(&tar_of(&[])).is_err(), "no cohort");
    }

    #[test]
    fn refuses_links() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "cohorts/stable.json", "/etc/passwd")
            .unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(unpack_bytes(&bytes).is_err());
    }
}

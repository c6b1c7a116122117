//! Offline bundles (docs/DEPLOYMENT.md: Offline sites): one plain tar file
//! holding what a device of one cohort needs, exactly as in the store:
//!
//! ```text
//! cohorts/<cohort>.json            cohorts/<cohort>.json.minisig
//! releases/<version>.json          releases/<version>.json.minisig
//! artifacts/<sha256>               (one per component, already compressed)
//! keys.json  keys.json.minisig     (when the store has a root of trust,
//! keys/<n>.json[.minisig]            with its history)
//! ```
//!
//! `bundle` packages what is already signed and verifies nothing new: the
//! device checks a bundle with exactly the rules it applies to a server
//! (signatures, sequence, expiry, compatibility, pinned hashes). It refuses
//! to package a cohort whose files are missing, so a stick that leaves the
//! office is at least complete. The tar is uncompressed (artifacts already
//! are), with fixed metadata, so the same store gives the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use manifest::store::{artifact_path, cohort_path, release_path, signature_path};
use manifest::{CohortManifest, CohortName, ReleaseManifest, KEYS_HISTORY_DIR, KEYS_PATH};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::PUBLIC_FILE_MODE;
use crate::store::Store;

/// What a bundle holds, for the CLI's summary.
pub struct BundleSummary {
    pub version: String,
    pub files: usize,
    pub bytes: u64,
}

/// Write the bundle for `cohort` of the store at `store_dir` to `out`
/// (atomically: a temp file in the same directory, renamed when complete).
pub fn bundle(store_dir: &Path, cohort: &CohortName, out: &Path) -> Result<BundleSummary> {
    let store = Store::open(store_dir)?;
    let cohort_rel = cohort_path(cohort);
    let pair = store
        .read_pair(&cohort_rel)?
        .ok_or_else(|| Error::Invalid(format!("{}: no such cohort", store.path(&cohort_rel).display())))?;
    if pair.signature.is_none() {
        return Err(Error::Invalid(format!(
            "{}: not signed; sign it before bundling",
            store.path(&cohort_rel).display()
        )));
    }
    let manifest = CohortManifest::parse(&pair.bytes).map_err(|source| Error::Document {
        path: store.path(&cohort_rel),
        source,
    })?;
    let release_rel = release_path(&manifest.target.version);
    let release_pair = store.read_pair(&release_rel)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: the cohort's target release is missing",
            store.path(&release_rel).display()
        ))
    })?;
    let release = ReleaseManifest::parse(&release_pair.bytes).map_err(|source| Error::Document {
        path: store.path(&release_rel),
        source,
    })?;

    let mut files = Vec::new();
    // The root of trust travels along, so a device offline through a key
    // rotation can verify the manifests signed with the new keys.
    if store.path(KEYS_PATH).exists() {
        files.extend([KEYS_PATH.to_string(), signature_path(KEYS_PATH)]);
        // And its history, for a device offline through a root rotation.
        for name in store
            .files(KEYS_HISTORY_DIR)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !n.starts_with('.'))
        {
            files.push(format!("{KEYS_HISTORY_DIR}/{name}"));
        }
    }
    files.extend([
        cohort_rel.clone(),
        signature_path(&cohort_rel),
        release_rel.clone(),
        signature_path(&release_rel),
    ]);
    let mut artifacts: Vec<String> = release
        .components
        .iter()
        .map(|c| artifact_path(&c.sha256))
        .collect();
    artifacts.sort();
    artifacts.dedup();
    files.extend(artifacts);
    for rel in &files {
        if !store.path(rel).is_file() {
            return Err(Error::Invalid(format!(
                "{}: missing from the store; the bundle would be incomplete",
                store.path(rel).display()
            )));
        }
    }

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(PUBLIC_FILE_MODE))
        .tempfile_in(dir)
        .at(dir)?;
    let mut builder = tar::Builder::new(BufWriter::new(tmp.as_file()));
    let mut bytes = 0;
    for rel in &files {
        let path = store.path(rel);
        let mut file = File::open(&path).at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, rel, &mut file).at(&path)?;
        bytes += len;
    }
    let mut writer = builder.into_inner().at(out)?;
    writer.flush().at(out)?;
    drop(writer);
    tmp.as_file().sync_all().at(out)?;
    tmp.persist(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(BundleSummary {
        version: manifest.target.version.to_string(),
        files: files.len(),
        bytes,
    })
}

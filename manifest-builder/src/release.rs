//! `manifest-builder release`: components in, artifacts and a signed
//! release manifest out. Releases are immutable: the same version with other
//! content is refused, the same content again is a no-op.
//!
//! Steps: pack every component into a staging directory inside
//! `artifacts/` (same filesystem, so publishing is a rename); build the
//! manifest; if the version exists, compare and stop there (the staging
//! directory is dropped, so a refused release leaves nothing behind); else
//! move the artifacts in and write the manifest and its signature. An
//! identical re-run whose signature is missing (a crash between the two
//! renames of `Store::write_signed`) signs the manifest already there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use manifest::document::to_pretty_bytes;
use manifest::store::release_path;
use manifest::{
    ArchiveFormat, Component, ComponentName, HardwareId, Health, Hooks, ProductName, ReleaseManifest,
    SecretKey, Timestamp, Version, SCHEMA,
};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::sync_dir;
use crate::keys::trust_for;
use crate::pack::store_component;
use crate::store::{file_name, sign_with, Pair, Store};

pub struct ReleaseRequest {
    pub store: PathBuf,
    pub product: ProductName,
    pub version: Version,
    pub compatible: Vec<HardwareId>,
    pub components: Vec<(ComponentName, PathBuf)>,
    pub keys: Vec<SecretKey>,
    pub post_stage: Option<String>,
    pub health: Option<PathBuf>,
    pub now: Timestamp,
}

pub enum ReleaseOutcome {
    /// Written now; or found without its signature, which was written now.
    Created(ReleaseManifest),
    /// Found with identical content and a signature by every given key.
    AlreadyPublished(ReleaseManifest),
}

pub fn release(req: ReleaseRequest) -> Result<ReleaseOutcome> {
    let store = Store::create(&req.store)?;
    let health = match &req.health {
        None => None,
        Some(path) => {
            let text = std::fs::read(path).at(path)?;
            Some(serde_json::from_slice::<Health>(&text).map_err(|e| {
                Error::Invalid(format!("{}: not a valid health section: {e}", path.display()))
            })?)
        }
    };
    // Removed on drop: whatever refuses the release below, no artifact of
    // it is left in the store.
    let staging = tempfile::Builder::new()
        .prefix(".incoming-release-")
        .tempdir_in(store.artifacts_dir())
        .at(store.artifacts_dir())?;
    let mut components = Vec::new();
    for (name, input) in &req.components {
        let artifact = store_component(name.as_str(), input, staging.path())?;
        components.push(Component {
            name: name.clone(),
            sha256: artifact.sha256,
            size: artifact.size,
            unpacked_size: artifact.unpacked_size,
            format: ArchiveFormat::TarGz,
        });
    }
    let doc = ReleaseManifest {
        schema: SCHEMA,
        kind: "release".into(),
        product: req.product,
        version: req.version,
        compatible: req.compatible,
        created_at: req.now,
        components,
        health,
        hooks: req.post_stage.map(|p| Hooks { post_stage: Some(p) }),
    };
    doc.validate().map_err(|source| Error::Document {
        path: req.store.join(release_path(&doc.version)),
        source,
    })?;

    let rel = release_path(&doc.version);
    if let Some(existing) = store.read_pair(&rel)? {
        let old = ReleaseManifest::parse(&existing.bytes).map_err(|source| Error::Document {
            path: store.path(&rel),
            source,
        })?;
        if !old.content_eq(&doc) {
            return Err(Error::Refused(format!(
                "release {} already exists in {} with different content; releases are immutable: publish a new version",
                doc.version,
                store.path(&rel).display()
            )));
        }
        return match existing.signature {
            Some(ref signature) => {
                check_existing_signature(&req.keys, &rel, &existing, signature, &store)?;
                Ok(ReleaseOutcome::AlreadyPublished(old))
            }
            None => {
                // The manifest is ours (same content) but was never signed:
                // finish that publication, signing the bytes already there
                // so the release stays byte-for-byte what it was.
                publish_artifacts(&store, staging.path(), &old)?;
                let sig = sign_with(&req.keys, &existing.bytes, file_name(&rel), req.now)?;
                store.write_signature(&rel, &sig)?;
                Ok(ReleaseOutcome::Created(old))
            }
        };
    }
    publish_artifacts(&store, staging.path(), &doc)?;
    let bytes = to_pretty_bytes(&doc);
    let sig = sign_with(&req.keys, &bytes, file_name(&rel), req.now)?;
    store.write_signed(&rel, &bytes, &sig)?;
    Ok(ReleaseOutcome::Created(doc))
}

/// Move the release's artifacts from `staging` into `artifacts/`, keeping
/// any already there (content-addressed: same name, same bytes).
fn publish_artifacts(store: &Store, staging: &Path, doc: &ReleaseManifest) -> Result<()> {
    let artifacts = store.artifacts_dir();
    for c in &doc.components {
        let name = c.sha256.to_hex();
        let dest = artifacts.join(&name);
        if !dest.exists() {
            let staged = staging.join(&name);
            std::fs::rename(&staged, &dest).at(&dest)?;
        }
    }
    sync_dir(&artifacts)
}

/// "Already published" is only true if the signature there verifies with
/// every given key. Anything else (another key, a tampered file) is not
/// ours to overwrite: it may be the signature devices trust.
fn check_existing_signature(
    keys: &[SecretKey],
    rel: &str,
    existing: &Pair,
    signature: &[u8],
    store: &Store,
) -> Result<()> {
    let distinct: BTreeSet<_> = keys.iter().map(|k| k.id).collect();
    let trust = trust_for(keys, &[], distinct.len())?;
    trust
        .verify_bytes(rel, &existing.bytes, signature)
        .map(drop)
        .map_err(|e| {
            Error::Refused(format!(
                "{} has identical content, but its signature does not verify with the given key(s): {e}; \
                 check it with `manifest-builder verify`, or add a signature with `manifest-builder sign --append`",
                store.path(rel).display()
            ))
        })
}

//! `manifest-builder release`: components in, artifacts and a signed
//! release manifest out. Releases are immutable: the same version with other
//! content is refused, the same content again is a no-op.

use std::path::PathBuf;

use manifest::document::to_pretty_bytes;
use manifest::store::release_path;
use manifest::{
    ArchiveFormat, Component, ComponentName, HardwareId, Health, Hooks, ProductName, ReleaseManifest,
    SecretKey, Timestamp, Version, SCHEMA,
};

use crate::error::{Error, IoContext, Result};
use crate::pack::store_component;
use crate::store::{file_name, sign_with, Store};

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
    Created(ReleaseManifest),
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
    let mut components = Vec::new();
    for (name, input) in &req.components {
        let artifact = store_component(name.as_str(), input, &store.artifacts_dir())?;
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
        if old.content_eq(&doc) {
            return Ok(ReleaseOutcome::AlreadyPublished(old));
        }
        return Err(Error::Refused(format!(
            "release {} already exists in {} with different content; releases are immutable: publish a new version",
            doc.version,
            store.path(&rel).display()
        )));
    }
    let bytes = to_pretty_bytes(&doc);
    let sig = sign_with(&req.keys, &bytes, file_name(&rel), req.now)?;
    store.write_signed(&rel, &bytes, &sig)?;
    Ok(ReleaseOutcome::Created(doc))
}

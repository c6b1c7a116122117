//! `manifest-builder promote`: point a cohort at a release. The new cohort
//! manifest pins the release manifest by hash and size, and its sequence is
//! one more than the previous one, so devices accept it and refuse replays.

use std::path::PathBuf;
use std::time::Duration;

use manifest::document::to_pretty_bytes;
use manifest::store::{cohort_path, release_path};
use manifest::{
    version_change, CohortManifest, CohortName, Percent, PublicKey, Rollout, SecretKey, Target, Timestamp,
    Version, VersionChange, SCHEMA,
};

use crate::error::{Error, Result};
use crate::keys::trust_for;
use crate::store::{file_name, sign_with, Store};

/// Keys are borrowed: `rollout watch` signs many times with keys loaded once
/// (secret keys are deliberately not `Clone`).
pub struct PromoteRequest<'a> {
    pub store: PathBuf,
    pub cohort: CohortName,
    pub version: Version,
    pub percent: Option<Percent>,
    pub expires: Duration,
    pub allow_downgrade: bool,
    pub keys: &'a [SecretKey],
    /// Extra keys a release may be signed by (e.g. a separate release key).
    pub trusted: &'a [PublicKey],
    /// Refuse unless the cohort's current sequence is this one: `rollout`
    /// decides on what it read, and must not overwrite a change made since.
    pub expect_sequence: Option<u64>,
    pub now: Timestamp,
}

pub fn promote(req: PromoteRequest<'_>) -> Result<CohortManifest> {
    let store = Store::open(&req.store)?;
    let rel = release_path(&req.version);
    let pair = store.read_pair(&rel)?.ok_or_else(|| {
        Error::Refused(format!(
            "release {} is not in the store ({} is missing): run `manifest-builder release` first",
            req.version,
            store.path(&rel).display()
        ))
    })?;
    let signature = pair.signature.ok_or_else(|| {
        Error::Refused(format!(
            "{} has no signature: re-sign it before promoting",
            store.path(&rel).display()
        ))
    })?;
    // A store with a root of trust names its release keys itself.
    let mut trusted = req.trusted.to_vec();
    trusted.extend(crate::root::release_keys(&store)?);
    let trust = trust_for(req.keys, &trusted, 1)?;
    let release = trust.verify_release(&rel, &pair.bytes, &signature)?;
    // The file name is not signed, the content is: a validly signed 1.1.0
    // copied to releases/1.0.0.json must not become a cohort's "1.0.0".
    if release.version != req.version {
        return Err(Error::Refused(format!(
            "{} holds release {}, not {}: the file was renamed or copied; restore it with `manifest-builder release`",
            store.path(&rel).display(),
            release.version,
            req.version
        )));
    }

    let cohort_rel = cohort_path(&req.cohort);
    let previous = match store.read_pair(&cohort_rel)? {
        None => None,
        Some(p) => Some(CohortManifest::parse(&p.bytes).map_err(|source| Error::Document {
            path: store.path(&cohort_rel),
            source,
        })?),
    };
    if let Some(expected) = req.expect_sequence {
        let found = previous.as_ref().map(|p| p.sequence);
        if found != Some(expected) {
            return Err(Error::Refused(format!(
                "cohort {} changed while this ran (sequence {} instead of {expected}): run it again",
                req.cohort,
                found.map_or("none".to_string(), |s| s.to_string())
            )));
        }
    }
    if let Some(prev) = &previous {
        if prev.product != release.product {
            return Err(Error::Refused(format!(
                "cohort {} belongs to product {}, release {} to product {}",
                req.cohort, prev.product, req.version, release.product
            )));
        }
        if version_change(Some(&prev.target.version), &req.version, req.allow_downgrade)
            == VersionChange::RefusedDowngrade
        {
            return Err(Error::Refused(format!(
                "cohort {} targets {}; {} is lower and devices would refuse it: pass --allow-downgrade for a remote rollback",
                req.cohort, prev.target.version, req.version
            )));
        }
    }
    // Re-promoting the same version keeps its rollout; a new version goes to
    // everyone unless a percentage is given.
    let percent = req.percent.unwrap_or_else(|| match &previous {
        Some(prev) if prev.target.version == req.version => prev.rollout.percent,
        _ => Percent::ALL,
    });
    let doc = CohortManifest {
        schema: SCHEMA,
        kind: "cohort".into(),
        product: release.product.clone(),
        cohort: req.cohort.clone(),
        sequence: previous.as_ref().map_or(1, |p| p.sequence + 1),
        issued_at: req.now,
        expires_at: req.now.saturating_add(req.expires),
        target: Target {
            version: req.version.clone(),
            sha256: release.sha256(),
            size: release.size(),
        },
        rollout: Rollout { percent },
        allow_downgrade: req.allow_downgrade,
    };
    doc.validate().map_err(|source| Error::Document {
        path: store.path(&cohort_rel),
        source,
    })?;
    let bytes = to_pretty_bytes(&doc);
    let sig = sign_with(req.keys, &bytes, file_name(&cohort_rel), req.now)?;
    store.write_signed(&cohort_rel, &bytes, &sig)?;
    Ok(doc)
}

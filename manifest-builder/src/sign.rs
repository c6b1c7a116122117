//! `manifest-builder sign FILE`: the hand-edit path. Ops edit a cohort
//! manifest in any editor, then this validates it, bumps `sequence`,
//! refreshes `issued_at`/`expires_at` and writes the file and its signature.
//! Key order and formatting of the edited file are kept as far as JSON
//! allows (the file is re-rendered pretty, keys in the order ops left them).
//!
//! With `--append` the bytes are left untouched and this key's signature is
//! added to the existing ones: that is how a second key holder co-signs for
//! a threshold of 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use manifest::document::{probe_kind, Kind};
use manifest::minisign::parse_signatures;
use manifest::store::signature_path;
use manifest::{
    CohortManifest, KeysDocument, ReleaseManifest, SecretKey, Timestamp, MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
};

use crate::error::{Error, Result};
use crate::fsutil::{read_capped, read_optional, write_atomic};
use crate::store::sign_with;

pub struct SignRequest {
    pub file: PathBuf,
    pub keys: Vec<SecretKey>,
    /// New validity from now; default: the manifest's previous validity.
    pub expires: Option<Duration>,
    pub append: bool,
    pub now: Timestamp,
}

pub struct Signed {
    pub kind: Kind,
    pub sequence: Option<u64>,
}

fn doc_err(path: &Path) -> impl FnOnce(manifest::DocumentError) -> Error + '_ {
    move |source| Error::Document {
        path: path.to_path_buf(),
        source,
    }
}

pub fn sign(req: SignRequest) -> Result<Signed> {
    let path = &req.file;
    let original = read_capped(path, MAX_MANIFEST_BYTES)?;
    let kind = probe_kind(&original).map_err(doc_err(path))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig_path = PathBuf::from(signature_path(&path.to_string_lossy()));

    if req.append {
        validate(kind, &original, path)?;
        let mut text = match read_optional(&sig_path, MAX_SIGNATURE_BYTES)? {
            Some(existing) => String::from_utf8(existing)
                .map_err(|_| Error::Invalid(format!("{}: not a signature file", sig_path.display())))?,
            None => String::new(),
        };
        if !text.is_empty() {
            let blocks = parse_signatures(&text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", sig_path.display())))?;
            if let Some(dup) = req.keys.iter().find(|k| blocks.iter().any(|b| b.key_id == k.id)) {
                return Err(Error::Refused(format!(
                    "{} already holds a signature by key {}",
                    sig_path.display(),
                    dup.id
                )));
            }
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str(&sign_with(&req.keys, &original, &name, req.now)?);
        write_atomic(&sig_path, text.as_bytes())?;
        return Ok(Signed { kind, sequence: None });
    }

    let (bytes, sequence) = match kind {
        Kind::Release | Kind::Keys => {
            // Releases are immutable, keys.json is versioned by its
            // author (`keys rotate`): sign exactly what is there.
            validate(kind, &original, path)?;
            (original, None)
        }
        Kind::Cohort => {
            let (bytes, seq) = bump_cohort(&original, req.expires, req.now, path)?;
            (bytes, Some(seq))
        }
    };
    let sig = sign_with(&req.keys, &bytes, &name, req.now)?;
    write_atomic(path, &bytes)?;
    write_atomic(&sig_path, sig.as_bytes())?;
    Ok(Signed { kind, sequence })
}

fn validate(kind: Kind, bytes: &[u8], path: &Path) -> Result<()> {
    match kind {
        Kind::Release => ReleaseManifest::parse(bytes).map(drop),
        Kind::Cohort => CohortManifest::parse(bytes).map(drop),
        Kind::Keys => {
            return KeysDocument::parse(bytes)
                .map(drop)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
        }
    }
    .map_err(doc_err(path))
}

/// Validate an edited cohort manifest, then bump its sequence and refresh
/// its validity, keeping the field order ops chose.
fn bump_cohort(
    original: &[u8],
    expires: Option<Duration>,
    now: Timestamp,
    path: &Path,
) -> Result<(Vec<u8>, u64)> {
    let doc = CohortManifest::parse(original).map_err(doc_err(path))?;
    let validity = expires.unwrap_or_else(|| doc.issued_at.until(doc.expires_at));
    let mut value: serde_json::Value =
        serde_json::from_slice(original).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let sequence = doc.sequence + 1;
    let obj = value
        .as_object_mut()
        .expect("a parsed cohort manifest is an object");
    obj.insert("sequence".into(), sequence.into());
    obj.insert("issued_at".into(), now.to_string().into());
    obj.insert(
        "expires_at".into(),
        now.saturating_add(validity).to_string().into(),
    );
    let mut bytes = serde_json::to_vec_pretty(&value).expect("JSON values serialize");
    bytes.push(b'\n');
    CohortManifest::parse(&bytes).map_err(doc_err(path))?;
    Ok((bytes, sequence))
}

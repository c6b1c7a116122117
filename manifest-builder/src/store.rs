//! The store directory as the builder sees it: reading manifest/signature
//! pairs with size caps, writing signed manifests durably, listing documents.

use std::fs;
use std::path::{Path, PathBuf};

use manifest::store::{signature_path, ARTIFACTS_DIR, COHORTS_DIR, RELEASES_DIR};
use manifest::{SecretKey, Timestamp, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{read_optional, write_atomic};

pub struct Store {
    root: PathBuf,
}

/// A manifest as found on disk, signature possibly missing.
pub struct Pair {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

impl Store {
    /// Open an existing store; every subcommand but `release` needs one.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [COHORTS_DIR, RELEASES_DIR, ARTIFACTS_DIR] {
            if !root.join(dir).is_dir() {
                return Err(Error::Invalid(format!(
                    "{} is not a store: {dir}/ is missing (a store is created by `manifest-builder release`)",
                    root.display()
                )));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Open a store, creating its directories if needed.
    pub fn create(root: &Path) -> Result<Self> {
        for dir in [COHORTS_DIR, RELEASES_DIR, ARTIFACTS_DIR] {
            let p = root.join(dir);
            fs::create_dir_all(&p).at(&p)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.root.join(ARTIFACTS_DIR)
    }

    pub fn read_pair(&self, rel: &str) -> Result<Option<Pair>> {
        let Some(bytes) = read_optional(&self.path(rel), MAX_MANIFEST_BYTES)? else {
            return Ok(None);
        };
        let signature = read_optional(&self.path(&signature_path(rel)), MAX_SIGNATURE_BYTES)?;
        Ok(Some(Pair { bytes, signature }))
    }

    /// Write a manifest and its signature, each atomically, manifest first.
    /// (Servers keep serving the last pair that verifies, so the instant
    /// between the two renames is never visible to devices.)
    pub fn write_signed(&self, rel: &str, bytes: &[u8], signature: &str) -> Result<()> {
        write_atomic(&self.path(rel), bytes)?;
        self.write_signature(rel, signature)
    }

    /// Write (replace) the signature file of the manifest at `rel`.
    pub fn write_signature(&self, rel: &str, signature: &str) -> Result<()> {
        write_atomic(&self.path(&signature_path(rel)), signature.as_bytes())
    }

    /// Names (without `.json`) of the manifests in `cohorts/` or `releases/`.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.root.join(dir);
        let mut names = Vec::new();
        for entry in fs::read_dir(&path).at(&path)? {
            let name = entry.at(&path)?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json") {
                names.push(stem.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every file in a store directory, for spotting strays.
    pub fn files(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.root.join(dir);
        let mut names: Vec<String> = fs::read_dir(&path)
            .at(&path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .at(&path)?;
        names.sort();
        Ok(names)
    }
}

/// Sign `bytes` with every key, one block each, in one signature file.
/// The trusted comment follows minisign's own (`timestamp`, `file`, `hashed`).
pub fn sign_with(keys: &[SecretKey], bytes: &[u8], file_name: &str, now: Timestamp) -> Result<String> {
    let comment = format!("timestamp:{}\tfile:{}\thashed", now.unix(), file_name);
    let mut text = String::new();
    for key in keys {
        let block = key
            .sign(bytes, &comment)
            .map_err(|e| Error::Invalid(format!("signing {file_name}: {e}")))?;
        text.push_str(&block.to_text());
    }
    Ok(text)
}

/// The last path component, for trusted comments and messages.
pub fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

//! Loading and creating minisign key files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use manifest::{PublicKey, SecretKey, TrustedKeys};

use crate::error::{Error, IoContext, Result};

pub fn load_secret_key(path: &Path) -> Result<SecretKey> {
    let text = fs::read_to_string(path).at(path)?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.mode() & 0o077 != 0 {
            log::warn!(
                "{}: secret key is readable by other users (mode {:o}); run chmod 600",
                path.display(),
                meta.mode() & 0o777
            );
        }
    }
    SecretKey::parse(&text).map_err(|source| Error::Key {
        path: path.to_path_buf(),
        source,
    })
}

pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let text = fs::read_to_string(path).at(path)?;
    PublicKey::parse(&text).map_err(|source| Error::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// Trust the public halves of the signing keys plus any extra public keys.
pub fn trust_for(signing: &[SecretKey], extra: &[PublicKey], threshold: usize) -> Result<TrustedKeys> {
    let keys = signing
        .iter()
        .map(SecretKey::public_key)
        .chain(extra.iter().cloned());
    TrustedKeys::new(keys, threshold).map_err(|e| Error::Invalid(e.to_string()))
}

/// `keygen --out keys/NAME` writes `NAME.key` (0600) and `NAME.pub`, never
/// overwriting either.
pub fn keygen(out: &Path) -> Result<(PathBuf, PathBuf, SecretKey)> {
    let secret_path = with_suffix(out, "key");
    let public_path = with_suffix(out, "pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(Error::Refused(format!(
                "{} already exists: refusing to overwrite a key (move it away first)",
                p.display()
            )));
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).at(dir)?;
    }
    let key = SecretKey::generate();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .at(&secret_path)?;
    f.write_all(key.to_file_text().as_bytes()).at(&secret_path)?;
    f.sync_all().at(&secret_path)?;
    crate::fsutil::write_atomic(&public_path, key.public_key().to_file_text().as_bytes())?;
    Ok((secret_path, public_path, key))
}

fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

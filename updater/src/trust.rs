//! Which keys sign what on this device (DESIGN: Root of trust).
//!
//! Two modes, chosen in the config:
//! - `keys_dir` only: the keys found there sign cohort and release
//!   manifests alike (small fleets, one release engineer).
//! - `root_keys_dir`: the device pins *root* keys; the store's `keys.json`,
//!   signed by a threshold of them, names the `ops` keys (cohorts) and the
//!   `release` keys (releases). Every poll asks for `keys.json` (a 304 when
//!   nothing changed), so a rotation or revocation is in force on the next
//!   poll. The accepted document is kept in `<state_dir>/trust.json`: it,
//!   not the pinned roots, anchors the next one, so an old `keys.json` (that
//!   may still list a revoked key) can never be replayed.

use std::path::Path;

use manifest::{KeyRing, KeysError, Timestamp, TrustedKeys};
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::paths::Paths;

/// What the config pins.
#[derive(Debug, Clone)]
pub enum TrustConfig {
    /// `keys_dir`: these keys sign everything.
    Static(TrustedKeys),
    /// `root_keys_dir`: root keys; the store's `keys.json` delegates.
    Root(TrustedKeys),
}

/// The keys in force for one run.
pub enum ActiveKeys {
    Static(TrustedKeys),
    Ring(KeyRing),
}

impl ActiveKeys {
    /// Keys for cohort manifests.
    pub fn ops(&self, floor: Timestamp) -> Result<&TrustedKeys, KeysError> {
        match self {
            ActiveKeys::Static(k) => Ok(k),
            ActiveKeys::Ring(r) => r.ops(floor),
        }
    }

    /// Ids of the keys that sign cohort manifests, whether or not the ring
    /// expired (bookkeeping only; verify with [`ActiveKeys::ops`]).
    pub fn ops_key_ids(&self) -> Vec<String> {
        let ids: Box<dyn Iterator<Item = &manifest::KeyId>> = match self {
            ActiveKeys::Static(k) => Box::new(k.key_ids()),
            ActiveKeys::Ring(r) => Box::new(r.ops_key_ids()),
        };
        ids.map(ToString::to_string).collect()
    }

    /// Keys for release manifests.
    pub fn release(&self, floor: Timestamp) -> Result<&TrustedKeys, KeysError> {
        match self {
            ActiveKeys::Static(k) => Ok(k),
            ActiveKeys::Ring(r) => r.release(floor),
        }
    }
}

/// `trust.json`: the accepted `keys.json` and its signature, byte for byte,
/// in one file so that one atomic write replaces the pair.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    keys_json: String,
    minisig: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

/// The `keys.json` this device accepted earlier, and the ETag it came with.
pub struct Trusted {
    pub ring: KeyRing,
    pub etag: Option<String>,
}

/// Read back `trust.json`. A missing file is `None` (nothing accepted yet);
/// an unreadable or tampered one is an error: falling back to the pinned
/// roots would let an old `keys.json` back in.
pub fn load(paths: &Paths) -> Result<Option<Trusted>, String> {
    let path = paths.trust();
    let bytes = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(b) => b,
    };
    let corrupt = |why: String| {
        format!(
            "{} is corrupt ({why}); restore it from a backup, or move it away to trust the pinned root keys afresh",
            path.display()
        )
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let ring = KeyRing::reload(stored.keys_json.as_bytes(), stored.minisig.as_bytes())
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(Trusted {
        ring,
        etag: stored.etag,
    }))
}

/// Keep an accepted `keys.json` (already verified) for the next runs.
pub fn store(paths: &Paths, bytes: &[u8], sig: &[u8], etag: Option<&str>) -> Result<(), String> {
    let text =
        |b: &[u8], what: &str| String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8 text"));
    let stored = Stored {
        keys_json: text(bytes, "keys.json")?,
        minisig: text(sig, "keys.json.minisig")?,
        etag: etag.map(String::from),
    };
    let path = paths.trust();
    write_atomic(&path, &serde_json::to_vec_pretty(&stored).expect("serializes"))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Load the `*.pub` files of a key directory.
pub fn load_key_dir(dir: &Path) -> Result<Vec<manifest::PublicKey>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "pub") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            keys.push(manifest::PublicKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    if keys.is_empty() {
        return Err(format!("no *.pub key in {}", dir.display()));
    }
    Ok(keys)
}

//! The root of trust (DESIGN: Root of trust): `keys.json` at the top of a
//! store says which keys may sign what, and is itself signed by root keys.
//!
//! - Devices pin the *root* keys (offline, kept in a safe) in their config.
//! - `keys.json` delegates to online keys per role: `ops` keys sign cohort
//!   manifests, `release` keys sign release manifests. Each role has a
//!   threshold; the document has an expiry, so a frozen store shows.
//! - A new `keys.json` is accepted only with signatures from a threshold of
//!   the *current* root keys (the chain of trust) and a threshold of its own
//!   root keys (the new roots are really held), and only with a higher
//!   `version` (an old document, which may still list a since-revoked key,
//!   cannot be replayed).
//! - `revoked` key ids are never trusted in any role, even if listed.
//!
//! Like every verification here, this is done on raw bytes before parsing,
//! with no clock of its own: the caller passes its time floor.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::document::{parse_strict, DocumentError, Kind, SCHEMA};
use crate::minisign::{KeyId, PublicKey};
use crate::names::Sha256Hex;
use crate::time::Timestamp;
use crate::verify::{TrustError, TrustedKeys, VerifyError};

/// Where the current document lives in a store.
pub const KEYS_PATH: &str = "keys.json";
/// Every version ever published, `keys/<version>.json` (immutable): a
/// device that missed a root rotation walks this chain from the version it
/// trusts (TUF's root history).
pub const KEYS_HISTORY_DIR: &str = "keys";

pub fn keys_history_path(version: u64) -> String {
    format!("{KEYS_HISTORY_DIR}/{version}.json")
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{KEYS_PATH}: {0}")]
    Document(#[from] DocumentError),
    #[error("{KEYS_PATH}: role {role}: {source}")]
    Role {
        role: &'static str,
        #[source]
        source: TrustError,
    },
    #[error("{KEYS_PATH}: role {role}: key {key:?}: {reason}")]
    BadKey {
        role: &'static str,
        key: String,
        reason: String,
    },
    #[error("{KEYS_PATH}: version {found} is not newer than the trusted version {trusted}: an old document cannot be replayed")]
    NotNewer { found: u64, trusted: u64 },
    #[error("{KEYS_PATH}: version {version} again but with other bytes (sha256 {found}, trusted {trusted}): refused")]
    SameVersionOtherBytes {
        version: u64,
        found: Sha256Hex,
        trusted: Sha256Hex,
    },
    #[error("{KEYS_PATH}: expired at {expires_at} (time floor {floor}): ops must sign a new keys.json with the root keys")]
    Expired { expires_at: Timestamp, floor: Timestamp },
    #[error("{KEYS_PATH}: key {id} is listed in role {role} and as revoked")]
    RevokedListed { id: KeyId, role: &'static str },
    #[error("{KEYS_PATH}: invalid: {0}")]
    Invalid(String),
}

/// The keys of one role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// minisign public keys, as the bare base64 line (`RW…`).
    pub keys: Vec<String>,
    pub threshold: usize,
}

impl Role {
    pub fn new(keys: &[PublicKey], threshold: usize) -> Self {
        Self {
            keys: keys.iter().map(PublicKey::to_base64).collect(),
            threshold,
        }
    }

    pub fn public_keys(&self, role: &'static str) -> Result<Vec<PublicKey>, KeysError> {
        self.keys
            .iter()
            .map(|k| {
                PublicKey::parse(k).map_err(|e| KeysError::BadKey {
                    role,
                    key: k.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    pub fn key_ids(&self, role: &'static str) -> Result<BTreeSet<KeyId>, KeysError> {
        Ok(self.public_keys(role)?.iter().map(|k| k.id).collect())
    }

    fn trusted(&self, role: &'static str) -> Result<TrustedKeys, KeysError> {
        TrustedKeys::new(self.public_keys(role)?, self.threshold)
            .map_err(|source| KeysError::Role { role, source })
    }
}

/// `keys.json`, schema 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysDocument {
    pub schema: u32,
    pub kind: String,
    /// Only ever grows: devices refuse a lower or equal one with other bytes.
    pub version: u64,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub root: Role,
    /// Signs `releases/*.json`.
    pub release: Role,
    /// Signs `cohorts/*.json` (promotions, rollout steps, rollbacks).
    pub ops: Role,
    /// Key ids (16 hex digits, as minisign prints them) never to trust again.
    #[serde(default)]
    pub revoked: Vec<String>,
}

impl KeysDocument {
    pub const ROLES: [&'static str; 3] = ["root", "release", "ops"];

    pub fn parse(bytes: &[u8]) -> Result<Self, KeysError> {
        let doc: Self = parse_strict(bytes, Kind::Keys)?;
        doc.trust()?;
        Ok(doc)
    }

    fn role(&self, name: &str) -> &Role {
        match name {
            "root" => &self.root,
            "release" => &self.release,
            _ => &self.ops,
        }
    }

    pub fn revoked_ids(&self) -> Result<BTreeSet<KeyId>, KeysError> {
        self.revoked
            .iter()
            .map(|s| {
                parse_key_id(s)
                    .ok_or_else(|| KeysError::Invalid(format!("revoked id {s:?} is not 16 hex digits")))
            })
            .collect()
    }

    /// Check the document's own consistency and build its roles.
    pub fn trust(&self) -> Result<KeyRing, KeysError> {
        if self.schema != SCHEMA || self.kind != "keys" {
            return Err(KeysError::Invalid("schema must be 1 and kind \"keys\"".into()));
        }
        if self.version == 0 {
            return Err(KeysError::Invalid("\"version\" starts at 1".into()));
        }
        if self.expires_at <= self.issued_at {
            return Err(KeysError::Invalid(format!(
                "expires_at {} is not after issued_at {}",
                self.expires_at, self.issued_at
            )));
        }
        let revoked = self.revoked_ids()?;
        for role in Self::ROLES {
            if let Some(id) = self.role(role).key_ids(role)?.intersection(&revoked).next() {
                return Err(KeysError::RevokedListed { id: *id, role });
            }
        }
        Ok(KeyRing {
            root: self.root.trusted("root")?,
            release: self.release.trusted("release")?,
            ops: self.ops.trusted("ops")?,
            version: self.version,
            expires_at: self.expires_at,
            revoked,
            sha256: Sha256Hex::digest(b""),
        })
    }
}

/// Parse a key id as minisign prints it (16 hex digits, little-endian).
pub fn parse_key_id(s: &str) -> Option<KeyId> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().map(|n| KeyId(n.to_le_bytes()))
}

/// A verified `keys.json`: the keys each role may sign with.
#[derive(Debug, Clone)]
pub struct KeyRing {
    root: TrustedKeys,
    release: TrustedKeys,
    ops: TrustedKeys,
    version: u64,
    expires_at: Timestamp,
    revoked: BTreeSet<KeyId>,
    sha256: Sha256Hex,
}

/// What a verifier trusts before (or instead of) a `keys.json`.
#[derive(Clone, Copy)]
pub enum Anchor<'a> {
    /// The root keys pinned on the device: the first `keys.json` must be
    /// signed by a threshold of them.
    Pinned(&'a TrustedKeys),
    /// The `keys.json` trusted so far: a new one must be newer and signed
    /// by a threshold of its root keys.
    Ring(&'a KeyRing),
}

impl Anchor<'_> {
    /// The `keys.json` version trusted so far (0: only pinned roots).
    pub fn version(&self) -> u64 {
        match self {
            Anchor::Pinned(_) => 0,
            Anchor::Ring(r) => r.version,
        }
    }
}

impl KeyRing {
    /// Verify `bytes` (a `keys.json`) and its signature file against
    /// `anchor`. The same document as the anchor's is returned as is (no
    /// newer version needed to re-read it). Expiry is the caller's to judge
    /// ([`KeyRing::check_expiry`]): a link in the history chain may have
    /// expired long ago and still be a valid step.
    pub fn verify(anchor: Anchor<'_>, bytes: &[u8], sig: &[u8]) -> Result<KeyRing, KeysError> {
        let current_root = match &anchor {
            Anchor::Pinned(keys) => *keys,
            Anchor::Ring(ring) => &ring.root,
        };
        let sha256 = Sha256Hex::digest(bytes);
        // The chain of trust: the roots we trust now must sign the new document.
        current_root.verify_bytes(KEYS_PATH, bytes, sig)?;
        let doc = KeysDocument::parse(bytes)?;
        let mut ring = doc.trust()?;
        ring.sha256 = sha256;
        if let Anchor::Ring(current) = anchor {
            if ring.sha256 == current.sha256 {
                return Ok(ring);
            }
            if ring.version == current.version {
                return Err(KeysError::SameVersionOtherBytes {
                    version: ring.version,
                    found: ring.sha256,
                    trusted: current.sha256,
                });
            }
            if ring.version < current.version {
                return Err(KeysError::NotNewer {
                    found: ring.version,
                    trusted: current.version,
                });
            }
            // Revocations are forever, even if a later document forgot them.
            ring.revoked.extend(current.revoked.iter().copied());
            ring.check_not_revoked()?;
        }
        // The new roots are held: a threshold of them signed too.
        ring.root.verify_bytes(KEYS_PATH, bytes, sig)?;
        Ok(ring)
    }

    /// Re-check a document this device accepted earlier (read back from its
    /// own state): it must verify under its own root keys. Expiry is not
    /// judged here: an expired ring is kept, and refuses manifests, until a
    /// newer one arrives.
    pub fn reload(bytes: &[u8], sig: &[u8]) -> Result<KeyRing, KeysError> {
        let doc = KeysDocument::parse(bytes)?;
        let mut ring = doc.trust()?;
        ring.root.verify_bytes(KEYS_PATH, bytes, sig)?;
        ring.sha256 = Sha256Hex::digest(bytes);
        Ok(ring)
    }

    fn check_not_revoked(&self) -> Result<(), KeysError> {
        for (role, keys) in [
            ("root", &self.root),
            ("release", &self.release),
            ("ops", &self.ops),
        ] {
            if let Some(id) = keys.key_ids().find(|id| self.revoked.contains(id)) {
                return Err(KeysError::RevokedListed { id: *id, role });
            }
        }
        Ok(())
    }

    /// Keys that sign cohort manifests, unless the ring expired.
    pub fn ops(&self, floor: Timestamp) -> Result<&TrustedKeys, KeysError> {
        self.check_expiry(floor)?;
        Ok(&self.ops)
    }

    /// Ids of the keys that sign cohort manifests, expired or not (for
    /// bookkeeping such as fast-forward recovery, never to verify).
    pub fn ops_key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.ops.key_ids()
    }

    /// Keys that sign release manifests, unless the ring expired.
    pub fn release(&self, floor: Timestamp) -> Result<&TrustedKeys, KeysError> {
        self.check_expiry(floor)?;
        Ok(&self.release)
    }

    /// An expired ring signs nothing: a frozen store shows.
    pub fn check_expiry(&self, floor: Timestamp) -> Result<(), KeysError> {
        if self.expires_at <= floor {
            return Err(KeysError::Expired {
                expires_at: self.expires_at,
                floor,
            });
        }
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
    pub fn sha256(&self) -> Sha256Hex {
        self.sha256
    }
    pub fn revoked(&self) -> &BTreeSet<KeyId> {
        &self.revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::to_pretty_bytes;
    use crate::minisign::{signatures_to_text, SecretKey};

    const DAY: u64 = 86_400;

    struct Keys {
        root: Vec<SecretKey>,
        release: SecretKey,
        ops: SecretKey,
    }

    fn keys(roots: usize) -> Keys {
        Keys {
            root: (0..roots).map(|_| SecretKey::generate()).collect(),
            release: SecretKey::generate(),
            ops: SecretKey::generate(),
        }
    }

    fn doc(k: &Keys, version: u64, root_threshold: usize) -> KeysDocument {
        let pubs = |v: &[&SecretKey]| v.iter().map(|s| s.public_key()).collect::<Vec<_>>();
        KeysDocument {
            schema: 1,
            kind: "keys".into(),
            version,
            issued_at: Timestamp::from_unix(1000 * DAY),
            expires_at: Timestamp::from_unix(1400 * DAY),
            root: Role::new(&pubs(&k.root.iter().collect::<Vec<_>>()), root_threshold),
            release: Role::new(&pubs(&[&k.release]), 1),
            ops: Role::new(&pubs(&[&k.ops]), 1),
            revoked: vec![],
        }
    }

    fn signed(d: &KeysDocument, by: &[&SecretKey]) -> (Vec<u8>, Vec<u8>) {
        let bytes = to_pretty_bytes(d);
        let blocks: Vec<_> = by
            .iter()
            .map(|k| k.sign(&bytes, "file:keys.json").unwrap())
            .collect();
        (bytes, signatures_to_text(&blocks).into_bytes())
    }

    fn pinned(k: &Keys, threshold: usize) -> TrustedKeys {
        TrustedKeys::new(k.root.iter().map(SecretKey::public_key), threshold).unwrap()
    }

    const NOW: Timestamp = Timestamp::from_unix(1001 * DAY);

    #[test]
    fn first_document_needs_a_threshold_of_pinned_roots() {
        let k = keys(3);
        let d = doc(&k, 1, 2);
        let (bytes, sig) = signed(&d, &[&k.root[0], &k.root[2]]);
        let ring = KeyRing::verify(Anchor::Pinned(&pinned(&k, 2)), &bytes, &sig).unwrap();
        assert_eq!(ring.version(), 1);
        assert!(ring.ops(NOW).unwrap().key_ids().any(|id| *id == k.ops.id));
        // One root signature, twice, is still one.
        let (bytes, sig) = signed(&d, &[&k.root[0], &k.root[0]]);
        let err = KeyRing::verify(Anchor::Pinned(&pinned(&k, 2)), &bytes, &sig).unwrap_err();
        assert!(err.to_string().contains("1 of 2 required"), "{err}");
        // The ops key cannot sign keys.json.
        let (bytes, sig) = signed(&d, &[&k.ops, &k.release]);
        assert!(KeyRing::verify(Anchor::Pinned(&pinned(&k, 1)), &bytes, &sig).is_err());
    }

    #[test]
    fn rotation_chains_from_the_current_roots_and_needs_the_new_ones_too() {
        let old = keys(2);
        let (b1, s1) = signed(&doc(&old, 1, 2), &[&old.root[0], &old.root[1]]);
        let ring1 = KeyRing::verify(Anchor::Pinned(&pinned(&old, 2)), &b1, &s1).unwrap();

        let new = keys(2);
        let d2 = doc(&new, 2, 2);
        // Signed by the old roots only: the new roots are not proven held.
        let (b2, s2) = signed(&d2, &[&old.root[0], &old.root[1]]);
        let err = KeyRing::verify(Anchor::Ring(&ring1), &b2, &s2).unwrap_err();
        assert!(err.to_string().contains("0 of 2"), "{err}");
        // Signed by the new roots only: no chain from what the device trusts.
        let (b2, s2) = signed(&d2, &[&new.root[0], &new.root[1]]);
        assert!(KeyRing::verify(Anchor::Ring(&ring1), &b2, &s2).is_err());
        // Both: accepted, and the old ops key no longer signs cohorts.
        let all: Vec<&SecretKey> = old.root.iter().chain(new.root.iter()).collect();
        let (b2, s2) = signed(&d2, &all);
        let ring2 = KeyRing::verify(Anchor::Ring(&ring1), &b2, &s2).unwrap();
        assert!(!ring2.ops(NOW).unwrap().key_ids().any(|id| *id == old.ops.id));
        // And version 1 cannot come back.
        let err = KeyRing::verify(Anchor::Ring(&ring2), &b1, &s1).unwrap_err();
        assert!(
            err.to_string().contains("0 of 2") || err.to_string().contains("not newer"),
            "{err}"
        );
    }

    #[test]
    fn replay_same_version_expiry_and_revocation() {
        let k = keys(1);
        let (b1, s1) = signed(&doc(&k, 1, 1), &[&k.root[0]]);
        let ring1 = KeyRing::verify(Anchor::Pinned(&pinned(&k, 1)), &b1, &s1).unwrap();
        // The same bytes again: fine.
        KeyRing::verify(Anchor::Ring(&ring1), &b1, &s1).unwrap();
        // Same version, other bytes.
        let mut d = doc(&k, 1, 1);
        d.expires_at = Timestamp::from_unix(1500 * DAY);
        let (b, s) = signed(&d, &[&k.root[0]]);
        let err = KeyRing::verify(Anchor::Ring(&ring1), &b, &s).unwrap_err();
        assert!(matches!(err, KeysError::SameVersionOtherBytes { .. }), "{err}");
        // Expired against the floor, and an expired ring signs nothing.
        let late = Timestamp::from_unix(1401 * DAY);
        let err = ring1.check_expiry(late).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(ring1.ops(late).is_err());
        // Revoking the ops key: it may not stay listed, and stays revoked
        // even if a later document forgets it.
        let mut d2 = doc(&k, 2, 1);
        d2.revoked = vec![k.ops.id.to_string()];
        let (b, s) = signed(&d2, &[&k.root[0]]);
        let err = KeyRing::verify(Anchor::Ring(&ring1), &b, &s).unwrap_err();
        assert!(matches!(err, KeysError::RevokedListed { .. }), "{err}");
        let other = SecretKey::generate();
        d2.ops = Role::new(&[other.public_key()], 1);
        let (b2, s2) = signed(&d2, &[&k.root[0]]);
        let ring2 = KeyRing::verify(Anchor::Ring(&ring1), &b2, &s2).unwrap();
        let mut d3 = doc(&k, 3, 1);
        d3.revoked.clear();
        let (b3, s3) = signed(&d3, &[&k.root[0]]);
        let err = KeyRing::verify(Anchor::Ring(&ring2), &b3, &s3).unwrap_err();
        assert!(matches!(err, KeysError::RevokedListed { .. }), "{err}");
    }

    #[test]
    fn a_device_that_missed_root_rotations_walks_the_history() {
        // v1 roots A B, v2 roots B C, v3 roots C D; each step signed by the
        // previous roots and its own.
        let (a, b, c, d) = (keys(1), keys(1), keys(1), keys(1));
        let with_roots = |version, roots: [&Keys; 2]| {
            let mut doc = doc(roots[0], version, 2);
            doc.root = Role::new(&[roots[0].root[0].public_key(), roots[1].root[0].public_key()], 2);
            doc
        };
        let (b1, s1) = signed(&with_roots(1, [&a, &b]), &[&a.root[0], &b.root[0]]);
        let (b2, s2) = signed(&with_roots(2, [&b, &c]), &[&a.root[0], &b.root[0], &c.root[0]]);
        let (b3, s3) = signed(&with_roots(3, [&c, &d]), &[&b.root[0], &c.root[0], &d.root[0]]);
        let pinned = TrustedKeys::new([a.root[0].public_key(), b.root[0].public_key()], 2).unwrap();
        // A fresh device pinning A B cannot take v3 directly...
        assert!(KeyRing::verify(Anchor::Pinned(&pinned), &b3, &s3).is_err());
        // ...but can step through the history.
        let r1 = KeyRing::verify(Anchor::Pinned(&pinned), &b1, &s1).unwrap();
        let r2 = KeyRing::verify(Anchor::Ring(&r1), &b2, &s2).unwrap();
        let r3 = KeyRing::verify(Anchor::Ring(&r2), &b3, &s3).unwrap();
        assert_eq!(
            (Anchor::Ring(&r3).version(), Anchor::Pinned(&pinned).version()),
            (3, 0)
        );
        // Skipping a link is not possible: v3 does not verify against v1.
        assert!(KeyRing::verify(Anchor::Ring(&r1), &b3, &s3).is_err());
    }

    #[test]
    fn key_ids_round_trip() {
        let k = SecretKey::generate();
        assert_eq!(parse_key_id(&k.id.to_string()), Some(k.id));
        assert_eq!(parse_key_id("xyz"), None);
    }
}

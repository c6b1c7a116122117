//! Signature verification with a threshold of distinct trusted keys, on raw
//! bytes, before anything is parsed (DESIGN: Signatures).
//!
//! `Verified<T>` can only be built here, so code that installs software can
//! ask for a `Verified<ReleaseManifest>` and know the bytes behind it were
//! signed by enough trusted keys (STYLE: rust-tuf `verify_signatures`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use crate::document::{CohortManifest, DocumentError, ReleaseManifest};
use crate::minisign::{parse_signatures, KeyId, MinisignError, PublicKey};
use crate::names::Sha256Hex;

/// No manifest we fetch or serve may be larger than this.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// No signature file may be larger than this (room for dozens of blocks).
pub const MAX_SIGNATURE_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{file}: {size} bytes is over the {limit}-byte limit for this file")]
    TooLarge { file: String, size: usize, limit: usize },
    #[error("{file}.minisig: {source}")]
    Signature {
        file: String,
        #[source]
        source: MinisignError,
    },
    #[error("{file}.minisig: signature file is not UTF-8 text")]
    SignatureNotText { file: String },
    #[error("{file}: signature refused: {reason}")]
    Refused { file: String, reason: String },
    #[error("{file}: {source}")]
    Document {
        file: String,
        #[source]
        source: DocumentError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no trusted keys configured")]
    NoKeys,
    #[error("threshold {threshold} cannot be met by {keys} distinct trusted key(s)")]
    ThresholdTooHigh { threshold: usize, keys: usize },
    #[error("threshold must be at least 1")]
    ZeroThreshold,
    /// One Ed25519 key under two key ids would let one secret key sign as
    /// two "distinct" keys and meet a threshold of 2 alone.
    #[error(
        "trusted keys {first} and {second} are the same Ed25519 public key under two key ids; trust it once"
    )]
    SameKeyTwice { first: KeyId, second: KeyId },
    #[error("key id {id} names two different public keys")]
    ConflictingKeyId { id: KeyId },
}

/// The keys a verifier trusts and how many of them must sign.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
    threshold: usize,
}

impl TrustedKeys {
    /// The same key listed twice (same id, same key) counts once; the same
    /// Ed25519 key under two ids, or one id for two keys, is refused.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>, threshold: usize) -> Result<Self, TrustError> {
        let mut by_id: BTreeMap<KeyId, PublicKey> = BTreeMap::new();
        for key in keys {
            match by_id.get(&key.id) {
                Some(known) if *known == key => continue,
                Some(_) => return Err(TrustError::ConflictingKeyId { id: key.id }),
                None => {}
            }
            if let Some(known) = by_id.values().find(|known| same_ed25519_key(known, &key)) {
                return Err(TrustError::SameKeyTwice {
                    first: known.id,
                    second: key.id,
                });
            }
            by_id.insert(key.id, key);
        }
        let keys = by_id;
        if keys.is_empty() {
            return Err(TrustError::NoKeys);
        }
        if threshold == 0 {
            return Err(TrustError::ZeroThreshold);
        }
        if threshold > keys.len() {
            return Err(TrustError::ThresholdTooHigh {
                threshold,
                keys: keys.len(),
            });
        }
        Ok(Self { keys, threshold })
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// Check `bytes` against the signature file `sig` and return the distinct
    /// trusted keys that signed. `file` names the manifest in errors.
    ///
    /// Blocks by keys we do not trust are ignored (a store may carry extra
    /// signatures during a key rotation), but a block that claims a trusted
    /// key and fails is an error on its own: it means tampering.
    pub fn verify_bytes(&self, file: &str, bytes: &[u8], sig: &[u8]) -> Result<BTreeSet<KeyId>, VerifyError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(VerifyError::TooLarge {
                file: file.into(),
                size: bytes.len(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        if sig.len() > MAX_SIGNATURE_BYTES {
            return Err(VerifyError::TooLarge {
                file: format!("{file}.minisig"),
                size: sig.len(),
                limit: MAX_SIGNATURE_BYTES,
            });
        }
        let text =
            std::str::from_utf8(sig).map_err(|_| VerifyError::SignatureNotText { file: file.into() })?;
        let blocks = parse_signatures(text).map_err(|source| VerifyError::Signature {
            file: file.into(),
            source,
        })?;
        let mut signers = BTreeSet::new();
        let mut untrusted = BTreeSet::new();
        for block in &blocks {
            match self.keys.get(&block.key_id) {
                Some(key) => {
                    key.verify(bytes, block)
                        .map_err(|source| VerifyError::Signature {
                            file: file.into(),
                            source,
                        })?;
                    signers.insert(block.key_id);
                }
                None => {
                    untrusted.insert(block.key_id);
                }
            }
        }
        if signers.len() < self.threshold {
            let mut reason = format!(
                "{} of {} required distinct trusted key(s) signed it",
                signers.len(),
                self.threshold
            );
            if !untrusted.is_empty() {
                let ids: Vec<String> = untrusted.iter().map(KeyId::to_string).collect();
                reason.push_str(&format!("; signed by untrusted key(s) {}", ids.join(", ")));
            }
            let trusted: Vec<String> = self.keys.keys().map(KeyId::to_string).collect();
            reason.push_str(&format!("; trusted key(s): {}", trusted.join(", ")));
            return Err(VerifyError::Refused {
                file: file.into(),
                reason,
            });
        }
        Ok(signers)
    }

    pub fn verify_cohort(
        &self,
        file: &str,
        bytes: &[u8],
        sig: &[u8],
    ) -> Result<Verified<CohortManifest>, VerifyError> {
        self.verify_document(file, bytes, sig, CohortManifest::parse)
    }

    pub fn verify_release(
        &self,
        file: &str,
        bytes: &[u8],
        sig: &[u8],
    ) -> Result<Verified<ReleaseManifest>, VerifyError> {
        self.verify_document(file, bytes, sig, ReleaseManifest::parse)
    }

    fn verify_document<T>(
        &self,
        file: &str,
        bytes: &[u8],
        sig: &[u8],
        parse: fn(&[u8]) -> Result<T, DocumentError>,
    ) -> Result<Verified<T>, VerifyError> {
        let signers = self.verify_bytes(file, bytes, sig)?;
        let doc = parse(bytes).map_err(|source| VerifyError::Document {
            file: file.into(),
            source,
        })?;
        Ok(Verified {
            doc,
            signers,
            sha256: Sha256Hex::digest(bytes),
            size: bytes.len() as u64,
        })
    }
}

/// Whether two public keys hold the same Ed25519 key, whatever their ids.
/// (The key id is only a label: a signature block names it, but nothing
/// signed binds it to the key, so whoever holds the secret can use any id.)
fn same_ed25519_key(a: &PublicKey, b: &PublicKey) -> bool {
    let mut relabelled = a.clone();
    relabelled.id = b.id;
    relabelled == *b
}

/// A document whose exact bytes were signed by enough trusted keys.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    doc: T,
    signers: BTreeSet<KeyId>,
    sha256: Sha256Hex,
    size: u64,
}

impl<T> Verified<T> {
    pub fn signers(&self) -> &BTreeSet<KeyId> {
        &self.signers
    }
    /// SHA-256 of the signed bytes (what a cohort's `target.sha256` pins).
    pub fn sha256(&self) -> Sha256Hex {
        self.sha256
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn into_inner(self) -> T {
        self.doc
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::{signatures_to_text, SecretKey};

    const BODY: &[u8] = br#"{"schema": 1}"#;

    fn sign(keys: &[&SecretKey], bytes: &[u8]) -> Vec<u8> {
        let blocks: Vec<_> = keys
            .iter()
            .map(|k| k.sign(bytes, "timestamp:0\tfile:t.json").unwrap())
            .collect();
        signatures_to_text(&blocks).into_bytes()
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let trust = TrustedKeys::new([a.public_key(), b.public_key()], 2).unwrap();
        assert_eq!(
            trust
                .verify_bytes("t.json", BODY, &sign(&[&a, &b], BODY))
                .unwrap()
                .len(),
            2
        );
        let err = trust
            .verify_bytes("t.json", BODY, &sign(&[&a, &a], BODY))
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 of 2 required"), "{err}");
    }

    #[test]
    fn untrusted_key_is_named_and_refused() {
        let (a, stranger) = (SecretKey::generate(), SecretKey::generate());
        let trust = TrustedKeys::new([a.public_key()], 1).unwrap();
        let err = trust
            .verify_bytes("cohorts/stable.json", BODY, &sign(&[&stranger], BODY))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cohorts/stable.json: signature refused"), "{err}");
        assert!(err.contains(&stranger.id.to_string()), "{err}");
        // An extra untrusted signature beside a trusted one is fine.
        trust
            .verify_bytes("t", BODY, &sign(&[&stranger, &a], BODY))
            .unwrap();
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let a = SecretKey::generate();
        let trust = TrustedKeys::new([a.public_key()], 1).unwrap();
        let sig = sign(&[&a], BODY);
        let mut body = BODY.to_vec();
        body[3] ^= 1;
        let err = trust.verify_bytes("x.json", &body, &sig).unwrap_err().to_string();
        assert!(err.contains("does not match the signed bytes"), "{err}");
        let text = String::from_utf8(sig.clone()).unwrap();
        let comment = text.replace("file:t.json", "file:u.json");
        let err = trust
            .verify_bytes("x.json", BODY, comment.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("trusted comment"), "{err}");
        assert!(trust
            .verify_bytes("x.json", BODY, &vec![b'a'; MAX_SIGNATURE_BYTES + 1])
            .is_err());
        assert!(trust
            .verify_bytes("x.json", &vec![b' '; MAX_MANIFEST_BYTES + 1], &sig)
            .is_err());
    }

    /// `a`'s Ed25519 key under another key id.
    fn relabelled(a: &SecretKey, id: u8) -> PublicKey {
        let mut text = a.public_key().to_base64();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &text).unwrap();
        raw[2] = raw[2].wrapping_add(id);
        text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
        PublicKey::parse(&text).unwrap()
    }

    #[test]
    fn one_key_under_two_ids_is_refused() {
        let a = SecretKey::generate();
        let alias = relabelled(&a, 1);
        assert_ne!(alias.id, a.id);
        let err = TrustedKeys::new([a.public_key(), alias.clone()], 2).unwrap_err();
        assert!(
            matches!(err, TrustError::SameKeyTwice { first, second } if first == a.id && second == alias.id),
            "{err}"
        );
        assert!(err.to_string().contains("same Ed25519 public key"), "{err}");
        // Refused at threshold 1 as well: the trusted set itself is wrong.
        assert!(TrustedKeys::new([a.public_key(), alias], 1).is_err());
        // One id for two different keys is refused too.
        let b = SecretKey::generate();
        let mut clash = b.public_key();
        clash.id = a.id;
        let err = TrustedKeys::new([a.public_key(), clash], 1).unwrap_err();
        assert!(
            matches!(err, TrustError::ConflictingKeyId { id } if id == a.id),
            "{err}"
        );
    }

    #[test]
    fn threshold_must_be_reachable() {
        let a = SecretKey::generate();
        assert!(TrustedKeys::new([a.public_key()], 2).is_err());
        assert!(TrustedKeys::new([a.public_key(), a.public_key()], 2).is_err());
        assert!(TrustedKeys::new([], 1).is_err());
    }
}

//! The minisign file formats: public keys, unencrypted secret keys and
//! signatures, read and written byte-compatibly with the `minisign` tool, so
//! a store can be audited with `minisign -Vm FILE -p KEY.pub` and keys made
//! with `minisign -G -W` work here (DESIGN: Signatures).
//!
//! Formats (all base64 lines preceded by an `untrusted comment:` line):
//! - public key: `"Ed" | key id (8) | Ed25519 public key (32)`
//! - secret key: `"Ed" | kdf "\0\0" | "B2" | salt (32) | opslimit (8) |
//!   memlimit (8) | key id (8) | seed+public (64) | BLAKE2b-256 checksum (32)`
//! - signature: `"ED" (BLAKE2b-512 prehashed) or "Ed" (legacy) | key id (8) |
//!   signature (64)`, then `trusted comment: TEXT`, then the global signature
//!   over `signature || TEXT`.
//!
//! A signature *file* may hold several such blocks one after another: that is
//! how a manifest carries signatures from several keys (threshold signing).
//! `minisign -V` reads the first block; our verifier reads them all.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

const UNTRUSTED: &str = "untrusted comment:";
const TRUSTED: &str = "trusted comment:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinisignError {
    #[error("not a minisign {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the secret key is encrypted (kdf {0:?}); this tool reads unencrypted keys only: create one with `minisign -G -W` or `manifest-builder keygen`, and keep it offline")]
    EncryptedSecretKey(String),
    #[error("the secret key is corrupt: {0}")]
    CorruptSecretKey(&'static str),
    #[error("signature by key {key_id} does not match the signed bytes (the file was changed after signing, or the signature is for another file)")]
    BadSignature { key_id: KeyId },
    #[error("trusted comment of the signature by key {key_id} does not match its global signature (the comment was altered)")]
    BadGlobalSignature { key_id: KeyId },
    #[error("signature is by key {found}, not by key {expected}")]
    KeyMismatch { expected: KeyId, found: KeyId },
}

fn malformed(what: &'static str, reason: impl Into<String>) -> MinisignError {
    MinisignError::Malformed {
        what,
        reason: reason.into(),
    }
}

/// The 8-byte key id minisign prints as 16 uppercase hex digits (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// Split a minisign file into its non-empty lines, tolerating CRLF.
fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

fn decode_b64(what: &'static str, line: &str) -> Result<Vec<u8>, MinisignError> {
    B64.decode(line.trim())
        .map_err(|e| malformed(what, format!("bad base64: {e}")))
}

// ---------------------------------------------------------------- public key

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub id: KeyId,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parse a `.pub` file (comment line + base64) or the bare base64 line
    /// minisign prints for `-P`.
    pub fn parse(text: &str) -> Result<Self, MinisignError> {
        const WHAT: &str = "public key";
        let lines = lines(text);
        let b64 = match lines.as_slice() {
            [one] => one,
            [comment, key] if comment.starts_with(UNTRUSTED) => key,
            _ => {
                return Err(malformed(
                    WHAT,
                    "expected an untrusted comment line and one base64 line",
                ))
            }
        };
        let raw = decode_b64(WHAT, b64)?;
        if raw.len() != 42 {
            return Err(malformed(WHAT, format!("{} bytes instead of 42", raw.len())));
        }
        if &raw[..2] != b"Ed" {
            return Err(malformed(WHAT, "unknown signature algorithm"));
        }
        let id = KeyId(raw[2..10].try_into().expect("8 bytes"));
        let key_bytes: [u8; 32] = raw[10..42].try_into().expect("32 bytes");
        let key =
            VerifyingKey::from_bytes(&key_bytes).map_err(|_| malformed(WHAT, "not a valid Ed25519 point"))?;
        Ok(Self { id, key })
    }

    /// The bare base64 line (what `minisign -P` takes).
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    pub fn to_file_text(&self) -> String {
        format!(
            "{UNTRUSTED} minisign public key {}\n{}\n",
            self.id,
            self.to_base64()
        )
    }

    /// Check one signature block over `message` (signature and trusted comment).
    pub fn verify(&self, message: &[u8], sig: &SignatureBlock) -> Result<(), MinisignError> {
        if sig.key_id != self.id {
            return Err(MinisignError::KeyMismatch {
                expected: self.id,
                found: sig.key_id,
            });
        }
        let signature = Signature::from_bytes(&sig.signature);
        let checked = match sig.algorithm {
            SigAlgorithm::Prehashed => self.key.verify_strict(&Blake2b512::digest(message), &signature),
            SigAlgorithm::Legacy => self.key.verify_strict(message, &signature),
        };
        checked.map_err(|_| MinisignError::BadSignature { key_id: self.id })?;
        let global = Signature::from_bytes(&sig.global_signature);
        self.key
            .verify_strict(&sig.global_message(), &global)
            .map_err(|_| MinisignError::BadGlobalSignature { key_id: self.id })
    }
}

// ---------------------------------------------------------------- secret key

/// An unencrypted minisign secret key.
pub struct SecretKey {
    pub id: KeyId,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

type Blake2b256 = Blake2b<U32>;

fn secret_key_checksum(id: &KeyId, keypair: &[u8; 64]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(b"Ed");
    h.update(id.0);
    h.update(keypair);
    h.finalize().into()
}

impl SecretKey {
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let signing = SigningKey::generate(&mut rng);
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rng, &mut id);
        Self {
            id: KeyId(id),
            signing,
        }
    }

    pub fn parse(text: &str) -> Result<Self, MinisignError> {
        const WHAT: &str = "secret key";
        let lines = lines(text);
        let [comment, b64] = lines.as_slice() else {
            return Err(malformed(
                WHAT,
                "expected an untrusted comment line and one base64 line",
            ));
        };
        if !comment.starts_with(UNTRUSTED) {
            return Err(malformed(WHAT, "the first line is not an untrusted comment"));
        }
        let raw = decode_b64(WHAT, b64)?;
        if raw.len() != 158 {
            return Err(malformed(WHAT, format!("{} bytes instead of 158", raw.len())));
        }
        if &raw[0..2] != b"Ed" || &raw[4..6] != b"B2" {
            return Err(malformed(WHAT, "unknown algorithm"));
        }
        if raw[2..4] != [0, 0] {
            return Err(MinisignError::EncryptedSecretKey(
                String::from_utf8_lossy(&raw[2..4]).into_owned(),
            ));
        }
        let id = KeyId(raw[54..62].try_into().expect("8 bytes"));
        let keypair: [u8; 64] = raw[62..126].try_into().expect("64 bytes");
        let checksum: [u8; 32] = raw[126..158].try_into().expect("32 bytes");
        // minisign 0.11 writes an all-zero checksum for unencrypted keys;
        // anything else must be the real checksum.
        if checksum != [0u8; 32] && checksum != secret_key_checksum(&id, &keypair) {
            return Err(MinisignError::CorruptSecretKey("checksum mismatch"));
        }
        let seed: [u8; 32] = keypair[..32].try_into().expect("32 bytes");
        let signing = SigningKey::from_bytes(&seed);
        if signing.verifying_key().as_bytes() != &keypair[32..] {
            return Err(MinisignError::CorruptSecretKey(
                "public half does not match the seed",
            ));
        }
        Ok(Self { id, signing })
    }

    pub fn to_file_text(&self) -> String {
        let mut keypair = [0u8; 64];
        keypair[..32].copy_from_slice(self.signing.as_bytes());
        keypair[32..].copy_from_slice(self.signing.verifying_key().as_bytes());
        let mut raw = Vec::with_capacity(158);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&[0, 0]);
        raw.extend_from_slice(b"B2");
        raw.extend_from_slice(&[0u8; 32 + 8 + 8]);
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(&keypair);
        raw.extend_from_slice(&secret_key_checksum(&self.id, &keypair));
        format!(
            "{UNTRUSTED} minisign secret key (unencrypted)\n{}\n",
            B64.encode(raw)
        )
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.signing.verifying_key(),
        }
    }

    /// Sign `message` the way `minisign -S` does (prehashed, `ED`).
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Result<SignatureBlock, MinisignError> {
        check_comment(trusted_comment)?;
        let signature = self.signing.sign(&Blake2b512::digest(message)).to_bytes();
        let mut block = SignatureBlock {
            algorithm: SigAlgorithm::Prehashed,
            key_id: self.id,
            signature,
            untrusted_comment: format!("signature from minisign secret key {}", self.id),
            trusted_comment: trusted_comment.to_string(),
            global_signature: [0; 64],
        };
        block.global_signature = self.signing.sign(&block.global_message()).to_bytes();
        Ok(block)
    }
}

fn check_comment(c: &str) -> Result<(), MinisignError> {
    if c.contains(['\n', '\r']) {
        return Err(malformed("trusted comment", "it must be a single line"));
    }
    Ok(())
}

// ---------------------------------------------------------------- signatures

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlgorithm {
    /// `ED`: the message is hashed with BLAKE2b-512 first (minisign's default).
    Prehashed,
    /// `Ed`: the message itself is signed (minisign -l).
    Legacy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBlock {
    pub algorithm: SigAlgorithm,
    pub key_id: KeyId,
    pub signature: [u8; 64],
    pub untrusted_comment: String,
    pub trusted_comment: String,
    pub global_signature: [u8; 64],
}

impl SignatureBlock {
    fn global_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + self.trusted_comment.len());
        m.extend_from_slice(&self.signature);
        m.extend_from_slice(self.trusted_comment.as_bytes());
        m
    }

    pub fn to_text(&self) -> String {
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(match self.algorithm {
            SigAlgorithm::Prehashed => b"ED",
            SigAlgorithm::Legacy => b"Ed",
        });
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED} {}\n{}\n{TRUSTED} {}\n{}\n",
            self.untrusted_comment,
            B64.encode(raw),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// Parse a signature file holding one or more 4-line blocks.
pub fn parse_signatures(text: &str) -> Result<Vec<SignatureBlock>, MinisignError> {
    const WHAT: &str = "signature";
    let lines = lines(text);
    if lines.is_empty() || !lines.len().is_multiple_of(4) {
        return Err(malformed(
            WHAT,
            "expected blocks of 4 lines (untrusted comment, signature, trusted comment, global signature)",
        ));
    }
    lines
        .chunks(4)
        .map(|block| {
            let untrusted = block[0]
                .strip_prefix(UNTRUSTED)
                .ok_or_else(|| malformed(WHAT, "line 1 of a block is not an untrusted comment"))?;
            let raw = decode_b64(WHAT, block[1])?;
            if raw.len() != 74 {
                return Err(malformed(WHAT, format!("{} bytes instead of 74", raw.len())));
            }
            let algorithm = match &raw[..2] {
                b"ED" => SigAlgorithm::Prehashed,
                b"Ed" => SigAlgorithm::Legacy,
                _ => return Err(malformed(WHAT, "unknown signature algorithm")),
            };
            // minisign writes exactly one space after the colon; anything
            // after it is part of what the global signature covers.
            let trusted = block[2]
                .strip_prefix(TRUSTED)
                .ok_or_else(|| malformed(WHAT, "line 3 of a block is not a trusted comment"))?;
            let trusted = trusted.strip_prefix(' ').unwrap_or(trusted);
            let global = decode_b64(WHAT, block[3])?;
            let global_signature: [u8; 64] = global
                .try_into()
                .map_err(|_| malformed(WHAT, "the global signature is not 64 bytes"))?;
            Ok(SignatureBlock {
                algorithm,
                key_id: KeyId(raw[2..10].try_into().expect("8 bytes")),
                signature: raw[10..74].try_into().expect("64 bytes"),
                untrusted_comment: untrusted.trim_start().to_string(),
                trusted_comment: trusted.to_string(),
                global_signature,
            })
        })
        .collect()
}

/// Render several blocks as one signature file.
pub fn signatures_to_text(blocks: &[SignatureBlock]) -> String {
    blocks.iter().map(SignatureBlock::to_text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Debian's minisign 0.11: `minisign -G -W`, then `minisign -S`
    // and `minisign -S -l` over "hello\n".
    const PUB: &str = "untrusted comment: minisign public key 891E441F2BC4D064\nRWRk0MQrH0QeiQUOmkdqecqIDmumbQf4OuyYhgCDOIozmrP76gLgIjxa\n";
    const KEY: &str = "untrusted comment: minisign encrypted secret key\nRWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAZNDEKx9EHomlPHjyqTVH0xIk3BjZdfbYHXNbnisB2XirKw5Kw0iXjwUOmkdqecqIDmumbQf4OuyYhgCDOIozmrP76gLgIjxaAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    const SIG: &str = "untrusted comment: signature from minisign secret key\nRURk0MQrH0QeiVemORKPmY1BqdbCuvL3rn7U5bTMfpVKBEmTXAQfGvJ1yUqpqlP+z7ein1udbMfkBhPSYgB4vDKKHoljBnBDWgI=\ntrusted comment: timestamp:1795265837\tfile:f.txt\thashed\nGTq0s7sg9RWb+fw9EwIr1XmCCNJMAX5jbkbsc8minsvQS1Y4J/WkMkj+XLoNCMZ3DSwHCdOTBPbexCDZ7zPHAQ==\n";
    const LEGACY: &str = "untrusted comment: signature from minisign secret key\nRWRk0MQrH0QeiSlWru+m12fT6TVVlL10B+pvjMdDEb1sbvEFGe7fF0gHeArI1QqSVDGZlt447UG5SjQi64Z8pppYcKuiKP5Zxg8=\ntrusted comment: timestamp:1795265837\tfile:f.txt\nYx0mYxM20Y5Rv7rn6IJMOYxtHTKMhaRy50582FluBBMR6Q40RCAgIS2Xgp53CyIFVb+NlNcRrQ8lZ+ELG5KmCA==\n";

    #[test]
    fn reads_what_minisign_wrote() {
        let pk = PublicKey::parse(PUB).unwrap();
        assert_eq!(pk.id.to_string(), "891E441F2BC4D064");
        for sig in [SIG, LEGACY] {
            let blocks = parse_signatures(sig).unwrap();
            pk.verify(b"hello\n", &blocks[0]).unwrap();
            assert!(matches!(
                pk.verify(b"hello!\n", &blocks[0]),
                Err(MinisignError::BadSignature { .. })
            ));
        }
        let sk = SecretKey::parse(KEY).unwrap();
        assert_eq!(sk.public_key(), pk);
    }

    #[test]
    fn round_trips_our_own_formats() {
        let sk = SecretKey::generate();
        let again = SecretKey::parse(&sk.to_file_text()).unwrap();
        assert_eq!(again.public_key(), sk.public_key());
        let pk = PublicKey::parse(&sk.public_key().to_file_text()).unwrap();
        let block = sk.sign(b"data", "timestamp:1\tfile:x").unwrap();
        let parsed = parse_signatures(&block.to_text()).unwrap();
        assert_eq!(parsed, vec![block]);
        pk.verify(b"data", &parsed[0]).unwrap();
    }

    #[test]
    fn detects_altered_trusted_comment() {
        let pk = PublicKey::parse(PUB).unwrap();
        let altered = SIG.replace("file:f.txt", "file:g.txt");
        let blocks = parse_signatures(&altered).unwrap();
        assert!(matches!(
            pk.verify(b"hello\n", &blocks[0]),
            Err(MinisignError::BadGlobalSignature { .. })
        ));
    }

    #[test]
    fn refuses_encrypted_and_corrupt_keys() {
        let mut raw = B64.decode(lines(KEY)[1]).unwrap();
        raw[2..4].copy_from_slice(b"Sc");
        let encrypted = format!("untrusted comment: x\n{}\n", B64.encode(&raw));
        assert!(matches!(
            SecretKey::parse(&encrypted),
            Err(MinisignError::EncryptedSecretKey(_))
        ));
        let mut raw = B64.decode(lines(KEY)[1]).unwrap();
        raw[100] ^= 1;
        let corrupt = format!("untrusted comment: x\n{}\n", B64.encode(&raw));
        assert!(matches!(
            SecretKey::parse(&corrupt),
            Err(MinisignError::CorruptSecretKey(_))
        ));
    }
}

//! Validating newtypes for every name that ends up in a path or a URL.
//!
//! Product, cohort and component names become directory and file names on the
//! device and in the store (`cohorts/<cohort>.json`, `<slot>/<component>/`), so
//! they are checked once, here, and can never carry a `/`, a `..` or a leading
//! dot. A `Sha256Hex` is always 64 lowercase hex digits, so `artifacts/<hash>`
//! is always a plain file name too.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name or hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} {value:?} is not valid: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

const MAX_NAME_LEN: usize = 64;

/// The shared rule for safe names: 1-64 characters from `[A-Za-z0-9._-]`,
/// starting with a letter or digit (so never `.`, `..` or a hidden file).
fn check_safe_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let invalid = |reason| NameError::Invalid {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 64 characters"));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid("it must start with a letter or a digit"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

macro_rules! safe_name {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check_safe_name($what, &value)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

safe_name!(
    /// A product name (`neopro`): every manifest names the product it belongs to.
    ProductName,
    "product name"
);
safe_name!(
    /// A cohort name (`stable`, `canary`, `site-paris`): `cohorts/<name>.json`.
    CohortName,
    "cohort name"
);
safe_name!(
    /// A component name (`app`, `config`, `videos`): unpacks into `<slot>/<name>/`.
    ComponentName,
    "component name"
);
safe_name!(
    /// A hardware compatibility string (`raspberrypi-arm64`).
    HardwareId,
    "compatible (hardware) string"
);

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Hex([u8; 32]);

impl Sha256Hex {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Hash a byte slice (manifests are small; artifacts are hashed streaming
    /// by the caller with `sha2::Sha256` and converted with `from_bytes`).
    pub fn digest(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Sha256Hex {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let invalid = |reason| NameError::Invalid {
            what: "sha256",
            value: s.to_string(),
            reason,
        };
        if s.len() != 64 {
            return Err(invalid("it must be exactly 64 hex digits"));
        }
        if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("only lowercase hex digits are allowed"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| invalid("it is not hex"))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Sha256Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A release version: semver, and also a file name (`releases/<version>.json`),
/// so build metadata and pre-release identifiers are limited to the semver
/// character set, which never contains `/`.
pub type Version = semver::Version;

/// Parse a version with an error that says what was expected.
pub fn parse_version(s: &str) -> Result<Version, NameError> {
    semver::Version::parse(s).map_err(|_| NameError::Invalid {
        what: "version",
        value: s.to_string(),
        reason: "it must be a semantic version such as 1.3.0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_refuse_paths_and_dots() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "-x",
            "é",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(CohortName::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["stable", "site-paris", "v1.2_beta", "0canary"] {
            assert!(CohortName::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn sha256_hex_round_trips_and_refuses_uppercase() {
        let h = Sha256Hex::digest(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_hex().parse::<Sha256Hex>().unwrap(), h);
        assert!(h.to_hex().to_uppercase().parse::<Sha256Hex>().is_err());
        assert!("abc".parse::<Sha256Hex>().is_err());
    }
}

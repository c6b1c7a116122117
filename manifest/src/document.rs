//! Release and cohort manifests, schema 1 (DESIGN: The store).
//!
//! Parsing is two-step so that errors say the right thing: first a lenient
//! probe reads only `schema` and `kind` (a newer schema gets "this tool
//! understands schema 1" rather than a confusing unknown-field error), then
//! the strict parse refuses unknown fields and validates every value.
//! Parsing is only ever done on bytes whose signature has already been
//! checked (see `verify`), except by tools that edit manifests.

use std::collections::BTreeSet;
use std::path::{Component as PathComponent, Path};

use serde::{Deserialize, Serialize};

use crate::names::{CohortName, ComponentName, HardwareId, NameError, ProductName, Sha256Hex, Version};
use crate::rollout::Percent;
use crate::time::Timestamp;

/// The only schema this library reads and writes.
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("this tool understands schema {SCHEMA}, the document is schema {found}: upgrade the tool")]
    UnsupportedSchema { found: u64 },
    #[error("expected a {expected} manifest, the document is kind {found:?}")]
    WrongKind { expected: &'static str, found: String },
    #[error("not a valid {kind} manifest: {source}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {kind} manifest: {reason}")]
    Invalid { kind: &'static str, reason: String },
    #[error(transparent)]
    Name(#[from] NameError),
}

/// What kind of document a manifest says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Release,
    Cohort,
    /// `keys.json` (crate::keys).
    Keys,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Release => "release",
            Kind::Cohort => "cohort",
            Kind::Keys => "keys",
        }
    }
}

#[derive(Deserialize)]
struct Probe {
    schema: Option<serde_json::Value>,
    kind: Option<String>,
}

/// Read `schema` and `kind` without judging anything else.
pub fn probe_kind(bytes: &[u8]) -> Result<Kind, DocumentError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| DocumentError::Json {
        kind: "store",
        source,
    })?;
    match probe.schema {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(SCHEMA as u64) => {}
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
            return Err(DocumentError::UnsupportedSchema {
                found: n.as_u64().unwrap_or_default(),
            })
        }
        _ => {
            return Err(DocumentError::Invalid {
                kind: "store",
                reason: "field \"schema\" must be a whole number".into(),
            })
        }
    }
    match probe.kind.as_deref() {
        Some("release") => Ok(Kind::Release),
        Some("cohort") => Ok(Kind::Cohort),
        Some("keys") => Ok(Kind::Keys),
        other => Err(DocumentError::WrongKind {
            expected: "release, cohort or keys",
            found: other.unwrap_or("<missing>").to_string(),
        }),
    }
}

pub(crate) fn parse_strict<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    kind: Kind,
) -> Result<T, DocumentError> {
    let found = probe_kind(bytes)?;
    if found != kind {
        return Err(DocumentError::WrongKind {
            expected: kind.as_str(),
            found: found.as_str().to_string(),
        });
    }
    serde_json::from_slice(bytes).map_err(|source| DocumentError::Json {
        kind: kind.as_str(),
        source,
    })
}

/// Render a document the way our tools write it: pretty JSON plus a newline.
pub fn to_pretty_bytes<T: Serialize>(doc: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(doc).expect("manifest types always serialize");
    out.push(b'\n');
    out
}

// ---------------------------------------------------------------- release

/// How a component's archive is encoded. Only gzip'd tar today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchiveFormat {
    #[serde(rename = "tar.gz")]
    TarGz,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: ComponentName,
    /// Hash of the archive as stored in `artifacts/<sha256>`.
    pub sha256: Sha256Hex,
    /// Archive size in bytes: downloads are cut off past it.
    pub size: u64,
    /// Sum of the regular files' sizes once unpacked: unpacking stops past it.
    pub unpacked_size: u64,
    pub format: ArchiveFormat,
}

/// One health check a release adds to the device's own (DESIGN: One run, 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCheck {
    /// GET `url` must answer `status` (default 200).
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// The unit must be active (checked through the device's configured command).
    Unit { unit: String },
    /// Run a command; exit 0 is healthy. A relative program path is taken
    /// inside the new slot (`app/bin/selftest`).
    Command {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
    /// A release that needs longer to warm up may extend the device's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_window_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Program run inside the staged slot before the switch, path relative to
    /// the slot (`app/bin/post-stage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_stage: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseManifest {
    pub schema: u32,
    pub kind: String,
    pub product: ProductName,
    pub version: Version,
    pub compatible: Vec<HardwareId>,
    pub created_at: Timestamp,
    pub components: Vec<Component>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

impl ReleaseManifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let doc: Self = parse_strict(bytes, Kind::Release)?;
        doc.validate()?;
        Ok(doc)
    }

    pub fn validate(&self) -> Result<(), DocumentError> {
        let invalid = |reason: String| DocumentError::Invalid {
            kind: "release",
            reason,
        };
        if self.schema != SCHEMA || self.kind != "release" {
            return Err(invalid("schema must be 1 and kind \"release\"".into()));
        }
        if self.compatible.is_empty() {
            return Err(invalid("\"compatible\" must name at least one board".into()));
        }
        if self.components.is_empty() {
            return Err(invalid("a release needs at least one component".into()));
        }
        let mut seen = BTreeSet::new();
        for c in &self.components {
            if !seen.insert(c.name.as_str()) {
                return Err(invalid(format!(
                    "component {:?} is listed twice",
                    c.name.as_str()
                )));
            }
            if c.size == 0 {
                return Err(invalid(format!("component {:?} has size 0", c.name.as_str())));
            }
        }
        // Sums of signed sizes drive free-space checks: they must not wrap.
        let sum = |f: fn(&Component) -> u64| {
            self.components
                .iter()
                .try_fold(0u64, |acc, c| acc.checked_add(f(c)))
        };
        if sum(|c| c.size)
            .zip(sum(|c| c.unpacked_size))
            .and_then(|(a, b)| a.checked_add(b))
            .is_none()
        {
            return Err(invalid("the components' sizes add up past 2^64 bytes".into()));
        }
        if let Some(hook) = self.hooks.as_ref().and_then(|h| h.post_stage.as_deref()) {
            check_slot_relative_path(hook, &seen).map_err(|r| invalid(format!("hooks.post_stage: {r}")))?;
        }
        if let Some(health) = &self.health {
            for check in &health.checks {
                if let HealthCheck::Command { argv, .. } = check {
                    if argv.is_empty() || argv[0].is_empty() {
                        return Err(invalid("a command health check needs a program".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Total bytes of all archives (what a fresh install downloads).
    pub fn total_size(&self) -> u64 {
        self.components.iter().map(|c| c.size).sum()
    }

    pub fn total_unpacked_size(&self) -> u64 {
        self.components.iter().map(|c| c.unpacked_size).sum()
    }

    pub fn is_compatible_with(&self, hardware: &HardwareId) -> bool {
        self.compatible.iter().any(|h| h == hardware)
    }

    /// The parts that define a release's content, for "is this the same
    /// release?" comparisons that must ignore when it was created.
    pub fn content_eq(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.created_at = other.created_at;
        &a == other
    }
}

/// A path inside the slot: relative, no `..`, and its first component is one
/// of the release's components.
fn check_slot_relative_path(path: &str, components: &BTreeSet<&str>) -> Result<(), String> {
    let p = Path::new(path);
    let mut parts = p.components();
    match parts.next() {
        Some(PathComponent::Normal(first)) if components.contains(first.to_str().unwrap_or("")) => {}
        _ => {
            return Err(format!(
                "{path:?} must start with one of the release's components"
            ))
        }
    }
    if !parts.all(|c| matches!(c, PathComponent::Normal(_))) {
        return Err(format!("{path:?} must be a plain relative path without '..'"));
    }
    Ok(())
}

// ---------------------------------------------------------------- cohort

/// The release a cohort should run, pinned by the hash of its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub version: Version,
    /// SHA-256 of the exact bytes of `releases/<version>.json`.
    pub sha256: Sha256Hex,
    /// Size of `releases/<version>.json` in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub percent: Percent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortManifest {
    pub schema: u32,
    pub kind: String,
    pub product: ProductName,
    pub cohort: CohortName,
    /// Only ever grows: devices refuse a lower one (replay protection).
    pub sequence: u64,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub target: Target,
    pub rollout: Rollout,
    #[serde(default)]
    pub allow_downgrade: bool,
}

impl CohortManifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let doc: Self = parse_strict(bytes, Kind::Cohort)?;
        doc.validate()?;
        Ok(doc)
    }

    pub fn validate(&self) -> Result<(), DocumentError> {
        let invalid = |reason: String| DocumentError::Invalid {
            kind: "cohort",
            reason,
        };
        if self.schema != SCHEMA || self.kind != "cohort" {
            return Err(invalid("schema must be 1 and kind \"cohort\"".into()));
        }
        if self.sequence == 0 {
            return Err(invalid("\"sequence\" starts at 1".into()));
        }
        if self.expires_at <= self.issued_at {
            return Err(invalid(format!(
                "expires_at {} is not after issued_at {}",
                self.expires_at, self.issued_at
            )));
        }
        if self.target.size == 0 || self.target.size > crate::verify::MAX_MANIFEST_BYTES as u64 {
            return Err(invalid(format!(
                "target.size {} is outside 1..={}",
                self.target.size,
                crate::verify::MAX_MANIFEST_BYTES
            )));
        }
        Ok(())
    }

    /// Expired when `now` (the caller's time floor) is at or past `expires_at`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const COHORT: &str = r#"{
  "schema": 1, "kind": "cohort", "product": "neopro", "cohort": "stable",
  "sequence": 42,
  "issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-12-21T10:00:00Z",
  "target": {"version": "1.3.0", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 812},
  "rollout": {"percent": 10},
  "allow_downgrade": false
}"#;

    const RELEASE: &str = r#"{
  "schema": 1, "kind": "release", "product": "neopro", "version": "1.3.0",
  "compatible": ["raspberrypi-arm64"],
  "created_at": "2026-11-21T10:00:00Z",
  "components": [
    {"name": "app", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 48211, "unpacked_size": 190112, "format": "tar.gz"}
  ],
  "health": {"checks": [{"type": "http", "url": "http://127.0.0.1:8080/health"}]},
  "hooks": { "post_stage": "app/bin/post-stage" }
}"#;

    #[test]
    fn parses_the_design_examples() {
        let c = CohortManifest::parse(COHORT.as_bytes()).unwrap();
        assert_eq!(c.sequence, 42);
        assert_eq!(c.rollout.percent, Percent::from_basis_points(1000).unwrap());
        let r = ReleaseManifest::parse(RELEASE.as_bytes()).unwrap();
        assert_eq!(r.components[0].name.as_str(), "app");
        // What we write parses back to the same document.
        let again = ReleaseManifest::parse(&to_pretty_bytes(&r)).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn refuses_unknown_fields_and_newer_schema() {
        let extra = COHORT.replace("\"sequence\"", "\"surprise\": 1, \"sequence\"");
        let err = CohortManifest::parse(extra.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let newer = COHORT.replace("\"schema\": 1", "\"schema\": 2");
        let err = CohortManifest::parse(newer.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("understands schema 1, the document is schema 2"),
            "{err}"
        );
    }

    #[test]
    fn refuses_wrong_kind_and_bad_values() {
        let err = ReleaseManifest::parse(COHORT.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("expected a release manifest"), "{err}");
        let bad_cohort = COHORT.replace("\"stable\"", "\"../etc\"");
        assert!(CohortManifest::parse(bad_cohort.as_bytes()).is_err());
        let expired_before_issue = COHORT.replace("2026-12-21", "2026-10-21");
        assert!(CohortManifest::parse(expired_before_issue.as_bytes()).is_err());
        let escaping_hook = RELEASE.replace("app/bin/post-stage", "app/../../bin/sh");
        assert!(ReleaseManifest::parse(escaping_hook.as_bytes()).is_err());
        let dup = RELEASE.replace("\"components\": [", &format!("\"components\": [{},", r#"{"name": "app", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 1, "unpacked_size": 1, "format": "tar.gz"}"#));
        assert!(ReleaseManifest::parse(dup.as_bytes()).is_err());
    }

    /// Found by the `manifest_json` fuzz target's invariants (issue #6,
    /// docs/FUZZING.md): sizes that add up past `u64::MAX` made
    /// `total_size()` panic (overflow checks on) or wrap (release builds),
    /// and the updater's free-space check sums them the same way. Refused.
    #[test]
    fn component_sizes_that_overflow_u64() {
        let two = RELEASE.replace(
            "\"components\": [",
            &format!("\"components\": [{},", r#"{"name": "cfg", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 18446744073709551615, "unpacked_size": 18446744073709551615, "format": "tar.gz"}"#),
        );
        let two = two.replace("\"size\": 48211", "\"size\": 18446744073709551615");
        let err = ReleaseManifest::parse(two.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("add up past 2^64"), "{err}");
    }
}

//! The document format of the update system: release and cohort manifests,
//! the names and hashes inside them, minisign-compatible keys and signatures,
//! threshold verification, the safe-unpack rules for component archives, and
//! the rollout and version rules.
//!
//! No network, no clock, no global state: everything takes bytes (or a
//! reader) and the current time as arguments, so the builder, the server and
//! the updater all apply exactly the same rules. See `../shared/DESIGN.md`.

pub mod archive;
pub mod document;
pub mod keys;
pub mod minisign;
pub mod names;
pub mod report;
pub mod rollout;
pub mod store;
pub mod time;
pub mod verify;

pub use document::{
    ArchiveFormat, CohortManifest, Component, DocumentError, Health, HealthCheck, Hooks, Kind,
    ReleaseManifest, Rollout, Target, SCHEMA,
};
pub use keys::{keys_history_path, Anchor, KeyRing, KeysDocument, KeysError, KEYS_HISTORY_DIR, KEYS_PATH};
pub use minisign::{KeyId, MinisignError, PublicKey, SecretKey, SignatureBlock};
pub use names::{
    parse_version, CohortName, ComponentName, HardwareId, NameError, ProductName, Sha256Hex, Version,
};
pub use rollout::{bucket, in_rollout, version_change, Percent, VersionChange};
pub use time::Timestamp;
pub use verify::{TrustError, TrustedKeys, Verified, VerifyError, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES};

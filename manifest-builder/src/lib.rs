//! `manifest-builder`: the release engineers' and ops' tool. It turns build
//! outputs into content-addressed artifacts and signed release manifests,
//! points cohorts at releases, runs canary rollouts gated on device reports,
//! signs hand-edited manifests and audits whole stores. Everything it writes
//! is verifiable with the standard `minisign`.

pub mod bundle;
pub mod cli;
pub mod error;
pub mod fleet;
pub mod fsutil;
pub mod keys;
pub mod pack;
pub mod progress;
pub mod promote;
pub mod release;
pub mod rollout;
pub mod root;
pub mod sign;
pub mod status;
pub mod store;
pub mod verify;

pub use error::{Error, Result};

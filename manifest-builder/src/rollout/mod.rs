//! `manifest-builder rollout`: the canary procedure (DESIGN: Reports) run
//! from signed static manifests plus the fleet's reports.
//!
//! - [`policy`]: steps, stability period, threshold, failure limits, from
//!   defaults, a TOML file and flags.
//! - [`decide`]: the pure decision (advance, wait, halt, rollback, done)
//!   from the cohort manifest, the fleet numbers, the policy and `now`.
//! - [`apply`]: what a decision does to the store, through the same
//!   promote-and-sign code as `manifest-builder promote` (sequence + 1,
//!   the release re-verified, the previous validity kept).
//! - [`status`]: the per-cohort table of `rollout status`.
//! - [`cli`]: the `rollout` subcommands and their output.
//!
//! The fleet numbers come from `manifest-server`'s `GET /v1/fleet`
//! ([`crate::fleet`]); nothing here reads the clock or the network.

pub mod apply;
pub mod cli;
pub mod decide;
pub mod policy;
pub mod status;

pub use decide::{decide, Decision, Progress};
pub use policy::{OnFailure, Policy, PolicyError, PolicyLayer};

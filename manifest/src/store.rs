//! Where documents live in a store (DESIGN: The store). Relative paths with
//! `/` separators: the same strings are file paths under the store directory
//! and URL paths under the server's base URL.

use crate::names::{CohortName, Sha256Hex, Version};

pub const COHORTS_DIR: &str = "cohorts";
pub const RELEASES_DIR: &str = "releases";
pub const ARTIFACTS_DIR: &str = "artifacts";
pub const SIGNATURE_SUFFIX: &str = ".minisig";

pub fn cohort_path(cohort: &CohortName) -> String {
    format!("{COHORTS_DIR}/{cohort}.json")
}

pub fn release_path(version: &Version) -> String {
    format!("{RELEASES_DIR}/{version}.json")
}

pub fn artifact_path(sha256: &Sha256Hex) -> String {
    format!("{ARTIFACTS_DIR}/{sha256}")
}

/// The detached signature that goes with a manifest.
pub fn signature_path(manifest_path: &str) -> String {
    format!("{manifest_path}{SIGNATURE_SUFFIX}")
}

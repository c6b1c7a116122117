//! `manifest-builder status`: one line per cohort, what it targets now.

use std::path::Path;

use manifest::store::COHORTS_DIR;
use manifest::{CohortManifest, Timestamp};

use crate::error::Result;
use crate::store::Store;

pub fn status_lines(root: &Path, now: Timestamp) -> Result<Vec<String>> {
    let store = Store::open(root)?;
    let mut lines = Vec::new();
    for stem in store.list(COHORTS_DIR)? {
        let rel = format!("{COHORTS_DIR}/{stem}.json");
        let Some(pair) = store.read_pair(&rel)? else {
            continue;
        };
        let line = match CohortManifest::parse(&pair.bytes) {
            Err(e) => format!("{stem:<16} unreadable: {e}"),
            Ok(c) => {
                let expiry = if c.is_expired(now) {
                    "EXPIRED".to_string()
                } else {
                    format!("in {}", humantime::format_duration(now.until(c.expires_at)))
                };
                let unsigned = if pair.signature.is_none() {
                    "  UNSIGNED"
                } else {
                    ""
                };
                let downgrade = if c.allow_downgrade {
                    "  downgrade allowed"
                } else {
                    ""
                };
                format!(
                    "{:<16} {:<12} {:>6}%  seq {:<6} expires {} ({expiry}){downgrade}{unsigned}",
                    c.cohort,
                    c.target.version,
                    c.rollout.percent.to_string(),
                    c.sequence,
                    c.expires_at
                )
            }
        };
        lines.push(line);
    }
    Ok(lines)
}

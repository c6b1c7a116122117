//! `rollout status`: per cohort in the store, where its rollout stands and
//! what `rollout advance` would do now, and why (the same [`decide`] call,
//! never a second opinion).

use std::path::Path;

use manifest::store::COHORTS_DIR;
use manifest::{CohortManifest, Timestamp};
use serde_json::json;

use super::decide::{decide, fmt_duration, fmt_rate, Decision, Progress};
use super::policy::Policy;
use crate::error::Result;
use crate::fleet::Fleet;
use crate::store::Store;

pub enum Row {
    Cohort {
        doc: Box<CohortManifest>,
        progress: Progress,
        decision: Decision,
    },
    Unreadable {
        cohort: String,
        error: String,
    },
}

pub fn rows(root: &Path, fleet: &Fleet, policy: &Policy, now: Timestamp) -> Result<Vec<Row>> {
    let store = Store::open(root)?;
    let mut rows = Vec::new();
    for stem in store.list(COHORTS_DIR)? {
        let Some(pair) = store.read_pair(&format!("{COHORTS_DIR}/{stem}.json"))? else {
            continue;
        };
        rows.push(match CohortManifest::parse(&pair.bytes) {
            Err(e) => Row::Unreadable {
                cohort: stem,
                error: e.to_string(),
            },
            Ok(doc) => {
                let stats = fleet.target(doc.cohort.as_str(), &doc.target.version);
                Row::Cohort {
                    progress: Progress::of(&doc, stats, policy, now),
                    decision: decide(&doc, stats, policy, now),
                    doc: Box::new(doc),
                }
            }
        });
    }
    Ok(rows)
}

impl Row {
    /// Three lines for people.
    pub fn text(&self, policy: &Policy) -> String {
        match self {
            Row::Unreadable { cohort, error } => format!("{cohort:<16} unreadable: {error}"),
            Row::Cohort {
                doc,
                progress: p,
                decision,
            } => {
                let step = match p.step {
                    Some(i) => format!("step {i} of {}", policy.steps.len()),
                    None if p.percent == super::apply::zero() => "halted".to_string(),
                    None => "not a policy step".to_string(),
                };
                let rate = p.success_rate().map_or("-".to_string(), fmt_rate);
                let action = match decision {
                    Decision::Advance { to_percent, why } => format!("advance to {to_percent} %: {why}"),
                    other => format!("{}: {}", other.verb(), other.why()),
                };
                format!(
                    "{:<16} {} at {} % ({step}), sequence {}, {} in step{}\n\
                     {:<16} tried {}: succeeded {}, failed {}, rolled back {}; success {rate}; consecutive failures {}\n\
                     {:<16} rollout advance would {action}",
                    doc.cohort,
                    doc.target.version,
                    p.percent,
                    doc.sequence,
                    fmt_duration(p.time_in_step),
                    if doc.allow_downgrade { ", downgrade allowed" } else { "" },
                    "",
                    p.tried,
                    p.succeeded,
                    p.failed,
                    p.rolled_back,
                    p.consecutive_failures,
                    "",
                )
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        match self {
            Row::Unreadable { cohort, error } => json!({ "cohort": cohort, "error": error }),
            Row::Cohort {
                doc,
                progress: p,
                decision,
            } => json!({
                "cohort": doc.cohort.as_str(),
                "version": doc.target.version.to_string(),
                "percent": p.percent.as_f64(),
                "step": p.step,
                "sequence": doc.sequence,
                "issued_at": doc.issued_at.to_string(),
                "allow_downgrade": doc.allow_downgrade,
                "time_in_step_secs": p.time_in_step.as_secs(),
                "tried": p.tried,
                "succeeded": p.succeeded,
                "failed": p.failed,
                "rolled_back": p.rolled_back,
                "success_rate": p.success_rate(),
                "consecutive_failures": p.consecutive_failures,
                "decision": decision.verb(),
                "to_percent": match decision {
                    Decision::Advance { to_percent, .. } => Some(to_percent.as_f64()),
                    _ => None,
                },
                "why": decision.why(),
            }),
        }
    }
}

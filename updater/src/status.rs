//! `updater status` and `updater history`: what the device runs, what it
//! is doing and why, for people (default) and machines (`--json`).

use serde_json::{json, Value};

use crate::config::Config;
use crate::history;
use crate::paths::Paths;
use crate::state::{LastCheck, State, StateError};
use crate::trust::TrustConfig;

pub fn status_json(config: &Config, paths: &Paths) -> Result<Value, StateError> {
    let state = State::load(paths)?;
    let current = std::fs::read_link(paths.current())
        .ok()
        .map(|p| p.display().to_string());
    let staged = state
        .target
        .as_ref()
        .map(|t| json!({ "version": t.version.to_string(), "slot": t.slot.name() }));
    let accepted = state.accepted_for(&config.cohort);
    let last_check = LastCheck::load(paths);
    // With a root of trust: the keys.json in force (an unreadable one says so).
    let keys = match &config.trust {
        TrustConfig::Static(_) => Value::Null,
        TrustConfig::Root(_) => match crate::trust::load(paths) {
            Ok(Some(t)) => json!({
                "version": t.ring.version(),
                "expires_at": t.ring.expires_at().to_string(),
                "revoked": t.ring.revoked().len(),
            }),
            Ok(None) => json!({ "error": "no keys.json accepted yet" }),
            Err(e) => json!({ "error": e }),
        },
    };
    Ok(json!({
        "phase": state.phase.as_str(),
        "active_slot": state.active.as_ref().map(|a| a.slot.name()),
        "active_version": state.active.as_ref().map(|a| a.version.to_string()),
        "current": current,
        "staged": staged,
        "blocked": state.blocked,
        "cohort": config.cohort.as_str(),
        "cohort_sequence": accepted.map(|a| a.sequence),
        "time_floor": state.time_floor.to_string(),
        "keys": keys,
        "last_check": last_check.as_ref().map(|c| json!({
            "at": c.at.to_string(),
            "outcome": c.outcome.as_str(),
            "version": c.version.as_ref().map(ToString::to_string),
            "reason": c.reason,
        })),
    }))
}

pub fn status_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = String::new();
    out.push_str(&format!(
        "running:    {} (slot {})\n",
        s("active_version"),
        s("active_slot")
    ));
    out.push_str(&format!("phase:      {}\n", s("phase")));
    if let Some(st) = v["staged"].as_object() {
        out.push_str(&format!(
            "in flight:  {} (slot {})\n",
            st["version"].as_str().unwrap_or("-"),
            st["slot"].as_str().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "cohort:     {} (sequence {})\n",
        s("cohort"),
        v["cohort_sequence"]
            .as_u64()
            .map_or("-".into(), |n| n.to_string())
    ));
    if let Some(keys) = v["keys"].as_object() {
        let line = match keys.get("error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => format!(
                "version {}, expires {}",
                keys["version"],
                keys["expires_at"].as_str().unwrap_or("-")
            ),
        };
        out.push_str(&format!("keys.json:  {line}\n"));
    }
    if let Some(blocked) = v["blocked"].as_object().filter(|b| !b.is_empty()) {
        for (version, why) in blocked {
            out.push_str(&format!(
                "blocked:    {version}: {}\n",
                why.as_str().unwrap_or("")
            ));
        }
    }
    if let Some(c) = v["last_check"].as_object() {
        out.push_str(&format!(
            "last check: {} {}: {}\n",
            c["at"].as_str().unwrap_or("-"),
            c["outcome"].as_str().unwrap_or("-"),
            c["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

pub fn history_json(paths: &Paths) -> std::io::Result<Value> {
    Ok(serde_json::to_value(history::read(paths)?).expect("events serialize"))
}

pub fn history_text(paths: &Paths) -> std::io::Result<String> {
    let mut out = String::new();
    for e in history::read(paths)? {
        let from = e.from.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let to = e.to.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let took = e.duration_secs.map(|d| format!(" in {d} s")).unwrap_or_default();
        out.push_str(&format!(
            "{} {:<12} {from} -> {to}{took}: {}\n",
            e.at,
            e.outcome.as_str(),
            e.reason
        ));
    }
    if out.is_empty() {
        out.push_str("no installs or rollbacks yet\n");
    }
    Ok(out)
}

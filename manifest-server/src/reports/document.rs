//! The report a device POSTs (docs/REPORTS.md, `POST /v1/reports`), checked
//! field by field before anything is stored.
//!
//! The body is parsed as a JSON object first and each field is then taken
//! out and checked on its own, so that the 400 answer names the field that
//! is wrong (`field `device_id`: ...`) instead of quoting a serde position.
//! Schema 1 is exactly the documented fields: an unknown field is refused,
//! a device that needs a new one bumps `schema`. The nullable fields
//! (`from_version`, `to_version`, `running_version`, `stage`,
//! `duration_secs`) and `reason`/`dropped_reports` may be left out (null,
//! "" and 0); the rest are required.

use manifest::{parse_version, CohortName, ProductName, Timestamp, Version};
use serde_json::{Map, Value};

/// The only report schema this server understands.
pub const SCHEMA: u64 = 1;

/// How far ahead of the server's clock a report's `at` may be and still be
/// believed. A Pi has no RTC: a report stamped by a clock that ran ahead is
/// still the device's news, so it is *accepted* (refusing it lost it for
/// good: the device drops what is answered 400), but it is placed at the
/// server's receipt time (see [`Report::placed_at`]): a report from the
/// future would otherwise stay the device's "latest" state until its
/// clock caught up.
pub const MAX_CLOCK_AHEAD_SECS: u64 = 3600;

/// Before this (2025-01-01T00:00:00Z) no report of this product was
/// written: a clock that reads earlier was never set (a Pi booting at
/// 1970), and its report is placed at receipt time too.
pub const EARLIEST_PLAUSIBLE_UNIX: u64 = 1_735_689_600;

const MAX_DEVICE_ID_CHARS: usize = 128;

pub use manifest::report::{Outcome, STAGES};

const FIELDS: [&str; 14] = [
    "schema",
    "id",
    "device_id",
    "product",
    "cohort",
    "at",
    "outcome",
    "from_version",
    "to_version",
    "running_version",
    "stage",
    "reason",
    "duration_secs",
    "dropped_reports",
];

/// A report that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// 32 lowercase hex digits: the idempotency key.
    pub id: String,
    pub device_id: String,
    pub product: ProductName,
    pub cohort: CohortName,
    pub at: Timestamp,
    pub outcome: Outcome,
    pub from_version: Option<Version>,
    pub to_version: Option<Version>,
    pub running_version: Option<Version>,
    pub stage: Option<&'static str>,
    pub reason: String,
    pub duration_secs: Option<u64>,
    pub dropped_reports: u64,
}

/// Why a report was refused: one line, naming the field when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

fn bad(field: &str, reason: impl Into<String>) -> ReportError {
    ReportError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl Report {
    /// Parse and check a request body. `at` is taken as given, whatever the
    /// device's clock said (see [`Report::placed_at`]).
    pub fn parse(body: &[u8]) -> Result<Self, ReportError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ReportError::Json(one_line(&e.to_string())))?;
        let Value::Object(mut map) = value else {
            return Err(ReportError::NotAnObject);
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(
                &one_line(unknown),
                "unknown field (schema 1 has exactly the fields of docs/REPORTS.md)",
            ));
        }
        let schema = required(&mut map, "schema")?;
        if schema.as_u64() != Some(SCHEMA) {
            return Err(bad("schema", format!("must be {SCHEMA}, not {schema}")));
        }
        let id = required_str(&mut map, "id")?;
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("id", "must be 32 lowercase hex digits"));
        }
        let device_id = required_str(&mut map, "device_id")?;
        check_device_id(&device_id)?;
        let product = ProductName::new(required_str(&mut map, "product")?)
            .map_err(|e| bad("product", e.to_string()))?;
        let cohort =
            CohortName::new(required_str(&mut map, "cohort")?).map_err(|e| bad("cohort", e.to_string()))?;
        let at_text = required_str(&mut map, "at")?;
        let at = parse_at(&at_text)?;
        let outcome_text = required_str(&mut map, "outcome")?;
        let outcome = Outcome::parse(&outcome_text).ok_or_else(|| {
            let words: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            bad(
                "outcome",
                format!("{:?} is not one of {}", one_line(&outcome_text), words.join(", ")),
            )
        })?;
        let from_version = optional_version(&mut map, "from_version")?;
        let to_version = optional_version(&mut map, "to_version")?;
        let running_version = optional_version(&mut map, "running_version")?;
        let stage = match optional_str(&mut map, "stage")? {
            None => None,
            Some(s) => Some(*STAGES.iter().find(|st| **st == s).ok_or_else(|| {
                bad(
                    "stage",
                    format!("{:?} is not one of {} (or null)", one_line(&s), STAGES.join(", ")),
                )
            })?),
        };
        let reason = optional_str(&mut map, "reason")?.unwrap_or_default();
        let duration_secs = optional_u64(&mut map, "duration_secs")?;
        let dropped_reports = optional_u64(&mut map, "dropped_reports")?.unwrap_or(0);
        Ok(Self {
            id,
            device_id,
            product,
            cohort,
            at,
            outcome,
            from_version,
            to_version,
            running_version,
            stage,
            reason,
            duration_secs,
            dropped_reports,
        })
    }
}

impl Report {
    /// Where the report goes in time, for the device's latest state and
    /// every ordering of the fleet view: its own `at`, unless the device's
    /// clock is implausible (more than [`MAX_CLOCK_AHEAD_SECS`] ahead of
    /// `received`, or before [`EARLIEST_PLAUSIBLE_UNIX`]); then the
    /// server's receipt time. The second value says which (`true`: the
    /// device's `at` was replaced). The device's `at` is stored as given
    /// either way.
    pub fn placed_at(&self, received: Timestamp) -> (Timestamp, bool) {
        let ahead = self.at.unix() > received.unix().saturating_add(MAX_CLOCK_AHEAD_SECS);
        let unset = self.at.unix() < EARLIEST_PLAUSIBLE_UNIX;
        if ahead || unset {
            (received, true)
        } else {
            (self.at, false)
        }
    }
}

/// 1-128 characters, none of them a control character: device ids come
/// from hostnames, serial numbers or machine-id and end up in logs and on
/// the fleet page.
fn check_device_id(id: &str) -> Result<(), ReportError> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_DEVICE_ID_CHARS {
        return Err(bad(
            "device_id",
            format!("must be 1 to {MAX_DEVICE_ID_CHARS} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(bad("device_id", "must be printable (no control characters)"));
    }
    if id.trim() != id {
        return Err(bad("device_id", "must not start or end with white space"));
    }
    Ok(())
}

/// RFC 3339 in UTC (`2026-11-21T10:00:00Z`, fractions of a second allowed
/// and dropped), exactly what `manifest::Timestamp` accepts.
fn parse_at(text: &str) -> Result<Timestamp, ReportError> {
    if !text.ends_with('Z') {
        return Err(bad("at", "must be RFC 3339 in UTC, such as 2026-11-21T10:00:00Z"));
    }
    text.parse()
        .map_err(|_| bad("at", "must be RFC 3339 in UTC, such as 2026-11-21T10:00:00Z"))
}

fn required(map: &mut Map<String, Value>, field: &str) -> Result<Value, ReportError> {
    match map.remove(field) {
        None | Some(Value::Null) => Err(bad(field, "is required")),
        Some(v) => Ok(v),
    }
}

fn required_str(map: &mut Map<String, Value>, field: &str) -> Result<String, ReportError> {
    match required(map, field)? {
        Value::String(s) => Ok(s),
        _ => Err(bad(field, "must be a string")),
    }
}

fn optional_str(map: &mut Map<String, Value>, field: &str) -> Result<Option<String>, ReportError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a string or null")),
    }
}

fn optional_u64(map: &mut Map<String, Value>, field: &str) -> Result<Option<u64>, ReportError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(field, "must be a whole number of 0 or more, or null")),
    }
}

fn optional_version(map: &mut Map<String, Value>, field: &str) -> Result<Option<Version>, ReportError> {
    match optional_str(map, field)? {
        None => Ok(None),
        Some(s) => parse_version(&s).map(Some).map_err(|_| {
            bad(
                field,
                format!(
                    "{:?} is not a semantic version such as 1.3.0 (or null)",
                    one_line(&s)
                ),
            )
        }),
    }
}

/// Reasons go into a one-line answer and the log: no newlines from input,
/// and no more than a screenful of it.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn valid() -> Value {
        serde_json::json!({
            "schema": 1,
            "id": "9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
            "device_id": "hall-7-screen-2",
            "product": "neopro",
            "cohort": "stable",
            "at": "2026-11-21T10:00:00Z",
            "outcome": "rolled_back",
            "from_version": "2.0.0",
            "to_version": "3.0.0",
            "running_version": "2.0.0",
            "stage": "health",
            "reason": "health checks did not pass",
            "duration_secs": 12,
            "dropped_reports": 0
        })
    }

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v = valid();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    }

    fn err(body: &[u8]) -> String {
        Report::parse(body).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let r = Report::parse(&serde_json::to_vec(&valid()).unwrap()).unwrap();
        assert_eq!(r.outcome, Outcome::RolledBack);
        assert_eq!(r.to_version.unwrap().to_string(), "3.0.0");
        assert_eq!(r.stage, Some("health"));
        assert_eq!(r.at.to_string(), "2026-11-21T10:00:00Z");
        assert_eq!(r.duration_secs, Some(12));
    }

    #[test]
    fn nullable_fields_may_be_null_or_absent() {
        let mut v = valid();
        for f in [
            "from_version",
            "to_version",
            "running_version",
            "stage",
            "duration_secs",
        ] {
            v[f] = Value::Null;
        }
        let map = v.as_object_mut().unwrap();
        map.remove("reason");
        map.remove("dropped_reports");
        let r = Report::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            (r.to_version, r.stage, r.reason.as_str(), r.dropped_reports),
            (None, None, "", 0)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("schema", 2.into(), "field `schema`: must be 1"),
            ("id", "9F1C2B3A4D5E6F708192A3B4C5D6E7F8".into(), "field `id`"),
            ("id", "abc".into(), "field `id`"),
            ("device_id", "".into(), "field `device_id`"),
            ("device_id", "a\nb".into(), "field `device_id`: must be printable"),
            ("device_id", "x".repeat(129).into(), "field `device_id`"),
            ("product", "../etc".into(), "field `product`"),
            ("cohort", "".into(), "field `cohort`"),
            ("at", "2026-11-21 10:00:00".into(), "field `at`"),
            ("at", "2026-11-21T10:00:00+02:00".into(), "field `at`"),
            ("outcome", "exploded".into(), "field `outcome`"),
            ("to_version", "3.0".into(), "field `to_version`"),
            (
                "running_version",
                3.into(),
                "field `running_version`: must be a string",
            ),
            ("stage", "lunch".into(), "field `stage`"),
            ("duration_secs", (-1).into(), "field `duration_secs`"),
            ("reason", 7.into(), "field `reason`"),
            ("surprise", true.into(), "field `surprise`: unknown field"),
        ];
        for (field, value, want) in cases {
            let got = err(&with(field, value.clone()));
            assert!(got.starts_with(want), "{field}={value}: {got}");
            assert!(!got.contains('\n'), "{got}");
        }
        let mut v = valid();
        v.as_object_mut().unwrap().remove("device_id");
        assert_eq!(
            err(&serde_json::to_vec(&v).unwrap()),
            "field `device_id`: is required"
        );
        assert!(err(b"{not json").starts_with("not JSON: "));
        assert_eq!(err(b"[1]"), "the body must be a JSON object");
    }

    #[test]
    fn a_clock_far_ahead_or_never_set_is_accepted_and_placed_at_receipt() {
        let parse = |at: &str| Report::parse(&with("at", at.into())).unwrap();
        // Up to an hour ahead: believed.
        let r = parse("2026-11-21T13:00:00Z");
        assert_eq!(r.placed_at(now()), (r.at, false));
        // Two hours ahead, and a Pi at 1970: stored as given, placed now.
        for at in ["2026-11-21T14:00:00Z", "1970-01-01T00:00:42Z"] {
            let r = parse(at);
            assert_eq!(r.at.to_string(), at, "the device's at is kept");
            assert_eq!(r.placed_at(now()), (now(), true), "{at}");
        }
        // An old report from an outbox is plausible: kept where it was.
        let r = parse("2025-06-01T00:00:00Z");
        assert_eq!(r.placed_at(now()), (r.at, false));
    }

    #[test]
    fn routine_outcomes_are_the_heartbeats() {
        let routine: Vec<_> = Outcome::ALL.into_iter().filter(|o| o.is_routine()).collect();
        assert_eq!(
            routine,
            [
                Outcome::UpToDate,
                Outcome::Offline,
                Outcome::NotInRollout,
                Outcome::Blocked,
                Outcome::Locked
            ]
        );
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}

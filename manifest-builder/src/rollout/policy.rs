//! The rollout policy: which percentages a cohort goes through, how long each
//! step must be stable, and what counts as a failed rollout (DESIGN:
//! Reports; the canary procedure ops followed by hand).
//!
//! A policy is resolved in three layers: the defaults (that procedure:
//! 10/25/50/75/100, 30 min, 95 %, 3 consecutive failures, 3 reports, and
//! on failure stop *and* roll back),
//! then an optional TOML file (`--policy FILE`), then the command-line flags.
//! The file is checked key by key so that a typo (`treshold`) or a bad value
//! is refused with an error naming the key, never silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use manifest::Percent;

/// What to do with a rollout that fails: stop new installs, or also point the
/// cohort back at the previous release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// Percent 0: no new installs; devices already on the target stay.
    Halt,
    /// A new manifest targeting the previous release with `allow_downgrade`.
    Rollback,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Halt => "halt",
            OnFailure::Rollback => "rollback",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rollout percentages in increasing order; the last one ends the rollout.
    pub steps: Vec<Percent>,
    /// Minimum time at a step before it may be widened (or judged on its rate).
    pub stability: Duration,
    /// Minimum success rate among devices that tried the target.
    pub threshold: Percent,
    /// This many failure reports in a row (across devices) fail the rollout.
    pub max_consecutive_failures: u64,
    /// Devices that must have tried the target before its rate is judged.
    pub min_reports: u64,
    pub on_failure: OnFailure,
}

impl Default for Policy {
    fn default() -> Self {
        let pct = |p: u16| Percent::from_basis_points(p * 100).expect("whole percentages are valid");
        Self {
            steps: [10, 25, 50, 75, 100].into_iter().map(pct).collect(),
            stability: Duration::from_secs(30 * 60),
            threshold: pct(95),
            max_consecutive_failures: 3,
            min_reports: 3,
            // The procedure: "stop and roll back after 3 consecutive
            // failures". `halt` stays selectable (`--on-failure halt`).
            on_failure: OnFailure::Rollback,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: unknown key `{key}` (known: {})", path.display(), KEYS.join(", "))]
    UnknownKey { path: PathBuf, key: String },
    #[error("{origin}: `{key}` {reason}")]
    Value {
        origin: String,
        key: &'static str,
        reason: String,
    },
}

/// The keys a policy file may hold (the flags have the same names with `-`).
pub const KEYS: [&str; 6] = [
    "steps",
    "stability",
    "threshold",
    "max_consecutive_failures",
    "min_reports",
    "on_failure",
];

/// One layer of settings: every field optional, later layers win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyLayer {
    pub steps: Option<Vec<Percent>>,
    pub stability: Option<Duration>,
    pub threshold: Option<Percent>,
    pub max_consecutive_failures: Option<u64>,
    pub min_reports: Option<u64>,
    pub on_failure: Option<OnFailure>,
}

impl PolicyLayer {
    /// Parse a policy file's text; `path` is only used in messages.
    ///
    /// ```toml
    /// steps = [10, 25, 50, 75, 100]
    /// stability = "30m"
    /// threshold = 95
    /// max_consecutive_failures = 3
    /// min_reports = 3
    /// on_failure = "rollback"    # or "halt"
    /// ```
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| PolicyError::Syntax {
            path: path.to_path_buf(),
            // toml's message spans several lines with a source excerpt: keep
            // the first line (position) and the last (the reason).
            message: one_line(&e.to_string()),
        })?;
        let origin = path.display().to_string();
        let bad = |key: &'static str, reason: String| PolicyError::Value {
            origin: origin.clone(),
            key,
            reason,
        };
        let mut layer = PolicyLayer::default();
        for (key, value) in &table {
            match key.as_str() {
                "steps" => {
                    let toml::Value::Array(items) = value else {
                        return Err(bad(
                            "steps",
                            format!("must be a list of percentages, not {value}"),
                        ));
                    };
                    let steps = items
                        .iter()
                        .map(|v| {
                            percent_value(v)
                                .ok_or_else(|| bad("steps", format!("{v} is not a percentage from 0 to 100")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    layer.steps = Some(steps);
                }
                "stability" => {
                    let d = value
                        .as_str()
                        .and_then(|s| humantime::parse_duration(s).ok())
                        .ok_or_else(|| {
                            bad(
                                "stability",
                                format!("must be a duration such as \"30m\", not {value}"),
                            )
                        })?;
                    layer.stability = Some(d);
                }
                "threshold" => {
                    let p = percent_value(value).ok_or_else(|| {
                        bad(
                            "threshold",
                            format!("must be a percentage from 0 to 100, not {value}"),
                        )
                    })?;
                    layer.threshold = Some(p);
                }
                "max_consecutive_failures" => {
                    layer.max_consecutive_failures = Some(count_value(value).ok_or_else(|| {
                        bad(
                            "max_consecutive_failures",
                            format!("must be a whole number, not {value}"),
                        )
                    })?);
                }
                "min_reports" => {
                    layer.min_reports =
                        Some(count_value(value).ok_or_else(|| {
                            bad("min_reports", format!("must be a whole number, not {value}"))
                        })?);
                }
                "on_failure" => {
                    layer.on_failure = Some(match value.as_str() {
                        Some("halt") => OnFailure::Halt,
                        Some("rollback") => OnFailure::Rollback,
                        _ => {
                            return Err(bad(
                                "on_failure",
                                format!("must be \"halt\" or \"rollback\", not {value}"),
                            ))
                        }
                    });
                }
                other => {
                    return Err(PolicyError::UnknownKey {
                        path: path.to_path_buf(),
                        key: other.to_string(),
                    })
                }
            }
        }
        Ok(layer)
    }

    fn apply_to(self, p: &mut Policy) {
        if let Some(v) = self.steps {
            p.steps = v;
        }
        if let Some(v) = self.stability {
            p.stability = v;
        }
        if let Some(v) = self.threshold {
            p.threshold = v;
        }
        if let Some(v) = self.max_consecutive_failures {
            p.max_consecutive_failures = v;
        }
        if let Some(v) = self.min_reports {
            p.min_reports = v;
        }
        if let Some(v) = self.on_failure {
            p.on_failure = v;
        }
    }
}

fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if lines.len() > 1 => format!("{first}: {last}"),
        (Some(first), _) => first.to_string(),
        _ => message.to_string(),
    }
}

fn percent_value(v: &toml::Value) -> Option<Percent> {
    let n = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        _ => return None,
    };
    Percent::from_f64(n).ok()
}

fn count_value(v: &toml::Value) -> Option<u64> {
    v.as_integer().and_then(|i| u64::try_from(i).ok())
}

/// Defaults, then the file (if any), then the flags; then the whole is checked.
pub fn resolve(file: Option<&Path>, flags: PolicyLayer) -> Result<Policy, PolicyError> {
    let mut policy = Policy::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PolicyLayer::from_toml(&text, path)?.apply_to(&mut policy);
    }
    flags.apply_to(&mut policy);
    policy.validate()?;
    Ok(policy)
}

impl Policy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |key: &'static str, reason: &str| PolicyError::Value {
            origin: "rollout policy".into(),
            key,
            reason: reason.into(),
        };
        if self.steps.is_empty() {
            return Err(bad("steps", "needs at least one percentage"));
        }
        if self.steps[0] == Percent::from_basis_points(0).expect("0 is valid") {
            return Err(bad("steps", "must be above 0 (0 % is how a rollout is halted)"));
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("steps", "must be strictly increasing, e.g. 10,25,50,75,100"));
        }
        if self.max_consecutive_failures == 0 {
            return Err(bad("max_consecutive_failures", "must be at least 1"));
        }
        if self.min_reports == 0 {
            return Err(bad(
                "min_reports",
                "must be at least 1 (a success rate needs devices that tried the target)",
            ));
        }
        Ok(())
    }

    /// The first step strictly above `percent`, if any.
    pub fn next_step(&self, percent: Percent) -> Option<Percent> {
        self.steps.iter().copied().find(|s| *s > percent)
    }

    /// 1-based position of `percent` among the steps, if it is one.
    pub fn step_index(&self, percent: Percent) -> Option<usize> {
        self.steps.iter().position(|s| *s == percent).map(|i| i + 1)
    }

    pub fn last_step(&self) -> Percent {
        *self.steps.last().expect("a validated policy has steps")
    }

    /// One line for humans: `10,25,50,75,100 %, 30m, >= 95 %, …`.
    pub fn summary(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|p| p.to_string()).collect();
        format!(
            "steps {} %, stability {}, threshold {} %, {} consecutive failures, {} reports minimum, on failure {}",
            steps.join(","),
            humantime::format_duration(self.stability),
            self.threshold,
            self.max_consecutive_failures,
            self.min_reports,
            self.on_failure
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> Percent {
        s.parse().unwrap()
    }

    fn parse(text: &str) -> Result<PolicyLayer, PolicyError> {
        PolicyLayer::from_toml(text, Path::new("policy.toml"))
    }

    #[test]
    fn defaults_are_the_canary_procedure() {
        let p = Policy::default();
        assert_eq!(p.steps, ["10", "25", "50", "75", "100"].map(pct).to_vec());
        assert_eq!(p.stability, Duration::from_secs(1800));
        assert_eq!(p.threshold, pct("95"));
        assert_eq!((p.max_consecutive_failures, p.min_reports), (3, 3));
        assert_eq!(p.on_failure, OnFailure::Rollback, "stop and roll back");
        p.validate().unwrap();
        let halt = PolicyLayer::from_toml("on_failure = \"halt\"\n", Path::new("p.toml")).unwrap();
        assert_eq!(halt.on_failure, Some(OnFailure::Halt), "halt stays selectable");
    }

    #[test]
    fn a_full_file_is_read() {
        let layer = parse(
            r#"
steps = [5, 12.5, 100]
stability = "1h"
threshold = 99.5
max_consecutive_failures = 2
min_reports = 20
on_failure = "rollback"
"#,
        )
        .unwrap();
        let mut p = Policy::default();
        layer.apply_to(&mut p);
        assert_eq!(p.steps, ["5", "12.5", "100"].map(pct).to_vec());
        assert_eq!(p.stability, Duration::from_secs(3600));
        assert_eq!(p.threshold, pct("99.5"));
        assert_eq!((p.max_consecutive_failures, p.min_reports), (2, 20));
        assert_eq!(p.on_failure, OnFailure::Rollback);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = parse("treshold = 90\n").unwrap_err().to_string();
        assert!(
            err.contains("policy.toml") && err.contains("unknown key `treshold`"),
            "{err}"
        );
        assert!(
            err.contains("threshold"),
            "the message lists the known keys: {err}"
        );
        let err = parse("[rollout]\nsteps = [1]\n").unwrap_err().to_string();
        assert!(err.contains("unknown key `rollout`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("steps = 10", "`steps`"),
            ("steps = [10, 250]", "`steps`"),
            ("steps = [\"10\"]", "`steps`"),
            ("stability = 30", "`stability`"),
            ("stability = \"half an hour\"", "`stability`"),
            ("threshold = 101", "`threshold`"),
            ("threshold = \"95%\"", "`threshold`"),
            ("max_consecutive_failures = -1", "`max_consecutive_failures`"),
            ("min_reports = 2.5", "`min_reports`"),
            ("on_failure = \"panic\"", "`on_failure`"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with("policy.toml: ") && err.contains(key),
                "{text}: {err}"
            );
        }
        let err = parse("steps = [10,").unwrap_err().to_string();
        assert!(err.contains("not valid TOML") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "threshold = 90\nmin_reports = 10\n").unwrap();
        let flags = PolicyLayer {
            min_reports: Some(5),
            ..Default::default()
        };
        let p = resolve(Some(&file), flags).unwrap();
        assert_eq!(p.threshold, pct("90"), "from the file");
        assert_eq!(p.min_reports, 5, "the flag wins");
        assert_eq!(p.stability, Duration::from_secs(1800), "the default stays");
        let err = resolve(Some(&dir.path().join("missing.toml")), PolicyLayer::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn the_resolved_policy_is_checked() {
        let with = |layer: PolicyLayer| resolve(None, layer).map_err(|e| e.to_string());
        for (layer, key) in [
            (
                PolicyLayer {
                    steps: Some(vec![]),
                    ..Default::default()
                },
                "`steps`",
            ),
            (
                PolicyLayer {
                    steps: Some(vec![pct("0"), pct("100")]),
                    ..Default::default()
                },
                "`steps`",
            ),
            (
                PolicyLayer {
                    steps: Some(vec![pct("50"), pct("25")]),
                    ..Default::default()
                },
                "`steps`",
            ),
            (
                PolicyLayer {
                    max_consecutive_failures: Some(0),
                    ..Default::default()
                },
                "`max_consecutive_failures`",
            ),
            (
                PolicyLayer {
                    min_reports: Some(0),
                    ..Default::default()
                },
                "`min_reports`",
            ),
        ] {
            let err = with(layer).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn steps_are_found_from_any_percentage() {
        let p = Policy::default();
        assert_eq!(p.next_step(pct("0")), Some(pct("10")));
        assert_eq!(p.next_step(pct("10")), Some(pct("25")));
        assert_eq!(
            p.next_step(pct("12.5")),
            Some(pct("25")),
            "a hand-set percent joins the ladder"
        );
        assert_eq!(p.next_step(pct("100")), None);
        assert_eq!(p.step_index(pct("25")), Some(2));
        assert_eq!(p.step_index(pct("12.5")), None);
        assert_eq!(p.last_step(), pct("100"));
    }
}

//! The fleet summary as `manifest-server --reports-db` publishes it
//! (`GET /v1/fleet`, docs/REPORTS.md), and the small HTTP client that reads
//! it for `rollout status|advance|watch`.
//!
//! Only the fields the rollout decisions use are required; the rest of the
//! document (device list, recent failures) is ignored here, so the server
//! can add fields without breaking the builder. A missing required field is
//! a loud error, never a silent zero: a rollout must not advance on numbers
//! it could not read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The summary is a few hundred bytes per device; 64 MiB is far above any
/// real fleet and keeps a wrong URL from filling memory.
const MAX_FLEET_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Fleet {
    #[serde(default)]
    pub generated_at: Option<String>,
    pub cohorts: Vec<CohortStats>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CohortStats {
    pub cohort: String,
    #[serde(default)]
    pub devices: u64,
    #[serde(default)]
    pub silent: u64,
    /// Devices by the version they run now (`versions` in the summary).
    #[serde(default)]
    pub versions: BTreeMap<String, u64>,
    #[serde(default)]
    pub targets: Vec<TargetStats>,
}

/// Per cohort and target version (docs/REPORTS.md, "Definitions"): `tried`
/// = `succeeded` + `rolled_back` + `failed`, counted in devices by their
/// latest attempt at the version; `consecutive_failures` the distinct
/// devices among the newest failed attempts, up to the first success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TargetStats {
    pub version: String,
    pub tried: u64,
    pub succeeded: u64,
    pub rolled_back: u64,
    pub failed: u64,
    pub consecutive_failures: u64,
    #[serde(default)]
    pub first_report_at: Option<String>,
    #[serde(default)]
    pub last_report_at: Option<String>,
    /// Devices by the version they ran before their latest attempt at this
    /// one (absent from servers older than the field: empty).
    #[serde(default)]
    pub from_versions: BTreeMap<String, u64>,
    #[serde(default)]
    pub on_target: u64,
    #[serde(default)]
    pub in_progress: u64,
}

impl Fleet {
    /// The numbers for one cohort's target version; `None` when no device
    /// has reported about it yet.
    pub fn target(&self, cohort: &str, version: &manifest::Version) -> Option<&TargetStats> {
        let version = version.to_string();
        self.cohort(cohort)?.targets.iter().find(|t| t.version == version)
    }

    pub fn cohort(&self, cohort: &str) -> Option<&CohortStats> {
        self.cohorts.iter().find(|c| c.cohort == cohort)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{}: cannot read the report token: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no token in the file (empty, or only # comments)", path.display())]
    EmptyToken { path: PathBuf },
    #[error("{url}: cannot reach the server ({reason}): check --server and that manifest-server is running")]
    Unreachable { url: String, reason: String },
    #[error("{url}: 401 Unauthorized: {hint}")]
    Unauthorized { url: String, hint: &'static str },
    #[error(
        "{url}: 404 Not Found: the server has no fleet view; start manifest-server with --reports-db FILE"
    )]
    NotFound { url: String },
    #[error("{url}: the server answered {status}: see its log")]
    Status { url: String, status: u16 },
    #[error(
        "{url}: not a fleet summary (docs/REPORTS.md): {reason}; is --server the manifest-server's base URL?"
    )]
    BadJson { url: String, reason: String },
}

impl FleetError {
    /// Worth another try at the next round of `rollout watch`.
    pub fn is_transient(&self) -> bool {
        matches!(self, FleetError::Unreachable { .. })
            || matches!(self, FleetError::Status { status, .. } if *status >= 500 || *status == 429)
    }
}

/// `http://host:8080` and `http://host:8080/` become
/// `http://host:8080/v1/fleet`; a URL already ending in `/v1/fleet` is kept.
pub fn fleet_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    if base.ends_with("/v1/fleet") {
        base.to_string()
    } else {
        format!("{base}/v1/fleet")
    }
}

/// The bearer token: the first line that is neither empty nor a `#`
/// comment, trimmed. That is the format of the server's
/// `--report-token-file`, so the same file can serve both.
pub fn read_token(path: &Path) -> Result<String, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return Err(FleetError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

/// `GET <server>/v1/fleet`, with a bearer token when one is given.
pub fn fetch(server: &str, token: Option<&str>) -> Result<Fleet, FleetError> {
    let url = fleet_url(server);
    let unreachable = |e: &dyn std::error::Error| FleetError::Unreachable {
        url: url.clone(),
        reason: root_cause(e),
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("manifest-builder/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| unreachable(&e))?;
    let mut request = client.get(&url).header("Accept", "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().map_err(|e| unreachable(&e))?;
    match response.status().as_u16() {
        200 => {}
        401 | 403 => {
            return Err(FleetError::Unauthorized {
                url,
                hint: if token.is_some() {
                    "the server refused the token: check --token-file against the server's report token"
                } else {
                    "the server wants a token: pass --token-file with the server's report token"
                },
            })
        }
        404 => return Err(FleetError::NotFound { url }),
        status => return Err(FleetError::Status { url, status }),
    }
    let mut body = Vec::new();
    response
        .take(MAX_FLEET_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| unreachable(&e))?;
    if body.len() as u64 > MAX_FLEET_BYTES {
        return Err(FleetError::BadJson {
            url,
            reason: format!("larger than {MAX_FLEET_BYTES} bytes"),
        });
    }
    parse(&body).map_err(|reason| FleetError::BadJson { url, reason })
}

pub fn parse(body: &[u8]) -> Result<Fleet, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// The innermost cause ("Connection refused") is the useful part of a
/// reqwest error chain.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
  "generated_at": "2026-11-21T10:00:00Z",
  "silent_after_secs": 86400,
  "cohorts": [
    { "cohort": "stable", "devices": 200, "versions": { "2.0.0": 150, "1.0.0": 50 }, "silent": 3,
      "targets": [
        { "version": "2.0.0", "tried": 160, "succeeded": 150, "rolled_back": 8, "failed": 2,
          "consecutive_failures": 0, "first_report_at": "2026-11-21T09:00:00Z", "last_report_at": "2026-11-21T09:59:00Z" }
      ] }
  ],
  "devices": [ { "device_id": "d1", "cohort": "stable", "running_version": "2.0.0", "last_outcome": "updated",
                 "last_reason": "", "last_seen": "2026-11-21T09:59:00Z", "silent": false } ],
  "recent_failures": []
}"#;

    #[test]
    fn reads_the_documented_summary() {
        let fleet = parse(SAMPLE.as_bytes()).unwrap();
        let v = manifest::Version::parse("2.0.0").unwrap();
        let t = fleet.target("stable", &v).unwrap();
        assert_eq!(
            (
                t.tried,
                t.succeeded,
                t.rolled_back,
                t.failed,
                t.consecutive_failures
            ),
            (160, 150, 8, 2, 0)
        );
        assert!(fleet.target("beta", &v).is_none());
        assert!(fleet
            .target("stable", &manifest::Version::parse("3.0.0").unwrap())
            .is_none());
    }

    #[test]
    fn a_missing_count_is_an_error_not_a_zero() {
        let body = SAMPLE.replace("\"tried\": 160, ", "");
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(err.contains("tried"), "{err}");
    }

    #[test]
    fn the_url_is_the_server_base() {
        assert_eq!(fleet_url("http://h:8080"), "http://h:8080/v1/fleet");
        assert_eq!(fleet_url("http://h:8080/"), "http://h:8080/v1/fleet");
        assert_eq!(fleet_url("http://h/v1/fleet"), "http://h/v1/fleet");
    }

    #[test]
    fn an_unreachable_server_is_one_line_naming_the_url() {
        // A port that was free a moment ago: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = fetch(&format!("http://{addr}"), None).unwrap_err();
        assert!(err.is_transient());
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("http://{addr}/v1/fleet: cannot reach the server")),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn the_token_is_the_first_line_that_is_not_a_comment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "# ops token\n\n  s3cret \nother\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "s3cret");
        std::fs::write(&f, "\n# nothing\n").unwrap();
        assert!(matches!(read_token(&f), Err(FleetError::EmptyToken { .. })));
    }
}

//! Device reports and the fleet view (`--reports-db FILE`; docs/REPORTS.md,
//! DESIGN: Reports). Off unless configured: without it these paths are 404
//! as before and nothing here runs.
//!
//! - `POST /v1/reports`: token (`auth`), body of at most `MAX_BODY` read
//!   within `BODY_TIMEOUT`, strict validation (`document`), per-device rate
//!   limit (`limit`), then the idempotent insert on the writer thread
//!   (`worker`, `store`): 201 stored, 200 already stored.
//! - `GET /v1/fleet`: the summary as JSON (`crate::fleet`), computed on the
//!   reader thread.
//! - `GET /`: the same summary as an HTML page (`crate::fleet::page`).
//!
//! Each answer is counted in `/metrics` by the caller (`http::handle`), and
//! each report's result in `manifest_server_reports_total`.

pub mod auth;
pub mod document;
pub mod limit;
pub mod store;
pub mod worker;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::Request;
use axum::response::Response;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, StatusCode};
use manifest::Timestamp;

use crate::fleet::{page, Fleet};
use crate::metrics::{Metrics, PathClass, ReportResult};
use auth::Via;
pub use auth::{Auth, TokenFileError};
use document::Report;
use limit::RateLimiter;
use store::{Inserted, Store, StoreError};
use worker::{Worker, WorkerError};

/// The contract's body limit (docs/REPORTS.md).
pub const MAX_BODY: usize = 16 * 1024;
/// A report is a few hundred bytes: a body still arriving after this is a
/// stalled or hostile client, not a slow link.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// `--reports-db` and friends, resolved (see `config`).
#[derive(Debug, Clone)]
pub struct ReportsConfig {
    pub db: PathBuf,
    pub auth: Auth,
    pub silent_after: Duration,
}

/// Whether a path belongs to the reports endpoints (only asked when they
/// are on).
pub fn owns(path: &str) -> bool {
    path == "/" || path.starts_with("/v1/")
}

pub struct Reports {
    writer: Worker,
    reader: Worker,
    auth: Auth,
    limiter: RateLimiter,
    metrics: Arc<Metrics>,
    silent_after: Duration,
}

impl Reports {
    /// Open the database (creating and migrating it) and start its threads.
    /// Blocking: call it off the async workers.
    pub fn open(config: ReportsConfig, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let store = Store::open(&config.db)?;
        let stored = store.report_count()?;
        let reader = Store::open_reader(&config.db)?;
        let writer = Worker::spawn("reports-writer", store, true).map_err(StoreError::Thread)?;
        let reader = Worker::spawn("reports-reader", reader, false).map_err(StoreError::Thread)?;
        log::info!(
            "device reports enabled: {} ({stored} report(s) stored), devices silent after {}",
            config.db.display(),
            humantime::format_duration(config.silent_after)
        );
        if config.auth.is_open() {
            log::warn!(
                "--reports-open: anyone who can reach this server can post device reports and read the \
                 fleet (device ids, versions, failure reasons); give --report-token-file instead"
            );
        }
        Ok(Self {
            writer,
            reader,
            auth: config.auth,
            limiter: RateLimiter::new(limit::PER_MINUTE),
            metrics,
            silent_after: config.silent_after,
        })
    }

    /// Answer a request for a path `owns` accepted.
    pub async fn handle(&self, req: Request) -> (PathClass, Response) {
        let head = req.method() == Method::HEAD;
        match req.uri().path() {
            "/v1/reports" => (PathClass::Report, self.post_report(req).await),
            "/v1/fleet" => (PathClass::Fleet, self.fleet(req, head, false).await),
            "/" => (PathClass::Fleet, self.fleet(req, head, true).await),
            _ => (PathClass::Other, text(StatusCode::NOT_FOUND, "not found\n", head)),
        }
    }

    async fn post_report(&self, req: Request) -> Response {
        if req.method() != Method::POST {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", false);
            res.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            return res;
        }
        if !self.auth.allows(req.headers(), None, Via::Bearer) {
            self.metrics.report(ReportResult::Unauthorized);
            let mut res = text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
                false,
            );
            res.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"reports\""),
            );
            return res;
        }
        let rejected = |status, reason: String| {
            self.metrics.report(ReportResult::Rejected);
            // Info, not debug: the device drops a report answered
            // 400/413/422 (it counts it in `dropped_reports`), so this line
            // is the only trace of its content.
            log::info!("report refused ({status}): {reason}");
            owned_text(status, format!("{reason}\n"))
        };
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return rejected(
                StatusCode::BAD_REQUEST,
                "Content-Type must be application/json".into(),
            );
        }
        let body = match read_body(req.into_body(), MAX_BODY).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return rejected(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a report is at most {MAX_BODY} bytes"),
                )
            }
            Err(BodyError::Timeout) => {
                return rejected(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body took too long to arrive".into(),
                )
            }
            Err(BodyError::Broken) => {
                return rejected(StatusCode::BAD_REQUEST, "the body could not be read".into())
            }
        };
        let now = SystemTime::now();
        let report = match Report::parse(&body) {
            Ok(r) => r,
            Err(e) => return rejected(StatusCode::BAD_REQUEST, format!("invalid report: {e}")),
        };
        if let Err(wait) = self.limiter.check(&report.device_id, Instant::now()) {
            self.metrics.report(ReportResult::RateLimited);
            let mut res = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many reports from this device; send the rest later\n",
                false,
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            return res;
        }
        let received = Timestamp::from_system_time(now);
        if report.placed_at(received).1 {
            // Accepted all the same (docs/REPORTS.md, "Device clocks"): the
            // report is the device's news; only its place in time is ours.
            log::info!(
                "report {} from {}: its at ({}) is implausible (server clock {received}); placed at receipt time",
                report.id,
                report.device_id,
                report.at
            );
        }
        let id = report.id.clone();
        match self
            .writer
            .run(move |store| store.insert(&report, received))
            .await
        {
            Ok(Ok(Inserted::New)) => {
                self.metrics.report(ReportResult::Accepted);
                text(StatusCode::CREATED, "stored\n", false)
            }
            Ok(Ok(Inserted::Duplicate)) => {
                self.metrics.report(ReportResult::Duplicate);
                text(StatusCode::OK, "already stored\n", false)
            }
            Ok(Err(e)) => {
                log::error!("report {id}: {e}");
                self.unavailable(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the report could not be stored\n",
                )
            }
            Err(e @ WorkerError::Busy) | Err(e @ WorkerError::Gone) => {
                log::warn!("report {id}: {e}");
                self.unavailable(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the reports database is busy; retry later\n",
                )
            }
        }
    }

    fn unavailable(&self, status: StatusCode, msg: &'static str) -> Response {
        self.metrics.report(ReportResult::Unavailable);
        let mut res = text(status, msg, false);
        res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(60));
        res
    }

    async fn fleet(&self, req: Request, head: bool, html: bool) -> Response {
        if req.method() != Method::GET && !head {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", false);
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let via = if html { Via::Browser } else { Via::Bearer };
        if !self.auth.allows(req.headers(), req.uri().query(), via) {
            let (challenge, msg) = if html {
                (
                    "Basic realm=\"fleet\", charset=\"UTF-8\"",
                    "the fleet page needs a report token: as the password (any user name), \
                     as ?token=, or as a bearer token\n",
                )
            } else {
                ("Bearer realm=\"fleet\"", "a valid bearer token is required\n")
            };
            let mut res = text(StatusCode::UNAUTHORIZED, msg, head);
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            return res;
        }
        let now = Timestamp::from_system_time(SystemTime::now());
        let silent_after = self.silent_after;
        let fleet: Fleet = match self.reader.run(move |store| store.fleet(now, silent_after)).await {
            Ok(Ok(fleet)) => fleet,
            Ok(Err(e)) => {
                log::error!("fleet summary: {e}");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the fleet summary failed; see the log\n",
                    head,
                );
            }
            Err(e) => {
                log::warn!("fleet summary: {e}");
                let mut res = text(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later\n", head);
                res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(5));
                return res;
            }
        };
        let (body, content_type) = if html {
            (page::render(&fleet).into_bytes(), "text/html; charset=utf-8")
        } else {
            (
                serde_json::to_vec(&fleet).expect("the summary serializes"),
                "application/json",
            )
        };
        let mut res = response(StatusCode::OK, Bytes::from(body), head);
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, NO_STORE);
        if html {
            // Belt and braces to the escaping: no script, no external
            // anything, inline style only; no token in a Referer.
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
                ),
            );
            h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
            h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        }
        res
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
}

/// The whole body, refused as soon as it passes `limit` bytes (whatever
/// Content-Length claimed) or takes longer than `BODY_TIMEOUT`.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

fn response(status: StatusCode, body: Bytes, head: bool) -> Response {
    let len = body.len() as u64;
    let mut res = Response::new(if head { Body::empty() } else { Body::from(body) });
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    res
}

fn text(status: StatusCode, msg: &'static str, head: bool) -> Response {
    let mut res = response(status, Bytes::from_static(msg.as_bytes()), head);
    res.headers_mut().insert(CONTENT_TYPE, TEXT);
    res.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    res
}

fn owned_text(status: StatusCode, msg: String) -> Response {
    let mut res = response(status, Bytes::from(msg), false);
    res.headers_mut().insert(CONTENT_TYPE, TEXT);
    res.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    res
}

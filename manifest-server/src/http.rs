//! The HTTP surface: one handler for every request, so that routing, path
//! checks, metrics and the access log happen in exactly one place.
//!
//! - `/healthz` -> `ok`; `/metrics` -> Prometheus text.
//! - `/cohorts/*.json`, `/releases/*.json` and their `.minisig` come from
//!   the snapshot. Both halves of a pair carry the *same* strong ETag, so a
//!   device that fetched a manifest can ask for its signature with
//!   `If-Match: <that ETag>` and gets 412 if the pair was replaced in
//!   between (then it refetches both); `If-None-Match` gives the cheap 304
//!   idle poll. `Cache-Control: no-cache`: caches must revalidate.
//! - `/artifacts/<sha256>` is streamed from disk; its ETag is its name (the
//!   content hash), so it is known without reading the file, and it is
//!   `immutable`.
//! - With `--reports-db`: `POST /v1/reports`, `GET /v1/fleet` and the
//!   fleet page `GET /` go to `reports` (their own methods, auth and
//!   answers). Without it, or for any other path, nothing changes.
//! - Everything else is 404, any method but GET and HEAD is 405.
//!
//! HEAD answers exactly what GET would, headers included, without a body
//! (and, per RFC 9110, without range processing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::header::{ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::files::{self, Precondition, RangeDecision, StoreRoot, Target};
use crate::metrics::{Metrics, PathClass};
use crate::reports::{self, Reports};
use crate::snapshot::SharedSnapshot;

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const OCTETS: HeaderValue = HeaderValue::from_static("application/octet-stream");
const PROMETHEUS: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");

const UNKNOWN_PEER: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// What every request needs; cloned per request (one `Arc` increment).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    /// Artifacts are opened below it per request (`files::open_artifact`).
    root: StoreRoot,
    snapshot: SharedSnapshot,
    metrics: Arc<Metrics>,
    access_log: bool,
    verifying: bool,
    reports: Option<Reports>,
}

impl AppState {
    pub fn new(
        root: StoreRoot,
        snapshot: SharedSnapshot,
        metrics: Arc<Metrics>,
        access_log: bool,
        verifying: bool,
        reports: Option<Reports>,
    ) -> Self {
        Self(Arc::new(Inner {
            root,
            snapshot,
            metrics,
            access_log,
            verifying,
            reports,
        }))
    }

    pub fn access_log(&self) -> bool {
        self.0.access_log
    }
}

/// One access-log line, finished when the body is (see `files::stream_body`).
struct AccessLine {
    peer: SocketAddr,
    method: Method,
    path: String,
    status: u16,
    start: Instant,
}

impl AccessLine {
    fn emit(self, bytes: u64) {
        log::info!(
            target: crate::logging::ACCESS_TARGET,
            "{} {} {} {} {} {:.3}ms",
            self.peer,
            self.method,
            self.path,
            self.status,
            bytes,
            self.start.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Every request goes here. Served as a plain handler (see `Server::serve`)
/// rather than through a `Router`: `classify` already decides everything a
/// router would, and the idle-poll path is short enough for the router's
/// per-request work to show.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let s = &*state.0;
    // Present only with --access-log (see `Server::serve`): attaching it to
    // every request costs an allocation the idle-poll path does without.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(UNKNOWN_PEER, |c| c.0);
    let method = req.method();
    let path = req.uri().path();
    if let Some(reports) = &s.reports {
        // One pointer test on the store paths when reports are on; the
        // report paths themselves are off the hot path.
        if reports::owns(path) {
            let (method, path) = (method.clone(), path.to_string());
            // Boxed: the idle-poll path's future stays as small as before.
            let (class, res) = Box::pin(reports.handle(req)).await;
            return finish(s, class, res, peer, &method, &path, start);
        }
    }
    let head = method == Method::HEAD;
    let target = files::classify(path);
    let class = match target {
        Some(Target::Manifest { class, .. }) => class,
        Some(Target::Artifact { .. }) => PathClass::Artifact,
        None => PathClass::Other,
    };
    if method != Method::GET && !head {
        let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", false);
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return finish(s, class, res, peer, method, path, start);
    }
    let res = match target {
        Some(Target::Manifest { path, signature, .. }) => match s.snapshot.pair(path) {
            Some(pair) => {
                let body = if signature {
                    pair.signature.clone()
                } else {
                    Some(pair.manifest.clone())
                };
                match body {
                    Some(body) => {
                        let content_type = if signature { TEXT } else { JSON };
                        serve_bytes(req.headers(), head, body, &pair.etag, content_type)
                    }
                    // Unverified mode, manifest without its signature.
                    None => not_found(head),
                }
            }
            None => not_found(head),
        },
        Some(Target::Artifact { name }) => {
            return serve_artifact(s, &req, head, name, peer, start);
        }
        None if path == "/healthz" => plain(StatusCode::OK, "ok\n", head),
        None if path == "/metrics" => {
            let mut res = bytes_response(
                StatusCode::OK,
                Bytes::from(s.metrics.render(s.verifying, s.reports.is_some())),
                head,
            );
            res.headers_mut().insert(CONTENT_TYPE, PROMETHEUS);
            res.headers_mut().insert(CACHE_CONTROL, NO_CACHE);
            res
        }
        None => not_found(head),
    };
    finish(s, class, res, peer, method, path, start)
}

/// Count a fully built (in-memory) response and log it.
fn finish(
    s: &Inner,
    class: PathClass,
    res: Response,
    peer: SocketAddr,
    method: &Method,
    path: &str,
    start: Instant,
) -> Response {
    let status = res.status().as_u16();
    s.metrics.request(class, status);
    let bytes = if *method == Method::HEAD {
        0
    } else {
        body_len(res.headers())
    };
    s.metrics.bytes_sent(bytes);
    if s.access_log {
        AccessLine {
            peer,
            method: method.clone(),
            path: path.to_string(),
            status,
            start,
        }
        .emit(bytes);
    }
    res
}

fn body_len(headers: &HeaderMap) -> u64 {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A manifest or signature from memory, with validators and ranges.
fn serve_bytes(
    headers: &HeaderMap,
    head: bool,
    body: Bytes,
    etag: &HeaderValue,
    content_type: HeaderValue,
) -> Response {
    let tag = etag.to_str().unwrap_or_default();
    let len = body.len() as u64;
    let mut res = match files::evaluate_preconditions(headers, tag) {
        Precondition::NotModified => empty(StatusCode::NOT_MODIFIED),
        Precondition::Failed => empty(StatusCode::PRECONDITION_FAILED),
        Precondition::Proceed => match if head {
            RangeDecision::Full
        } else {
            files::decide_range(headers, tag, len)
        } {
            RangeDecision::Full => {
                let mut res = bytes_response(StatusCode::OK, body, head);
                res.headers_mut().insert(CONTENT_TYPE, content_type);
                res.headers_mut().insert(ACCEPT_RANGES, BYTES);
                res
            }
            RangeDecision::Partial { start, end } => {
                let part = body.slice(start as usize..=end as usize);
                let mut res = bytes_response(StatusCode::PARTIAL_CONTENT, part, false);
                res.headers_mut().insert(CONTENT_TYPE, content_type);
                res.headers_mut().insert(ACCEPT_RANGES, BYTES);
                res.headers_mut()
                    .insert(CONTENT_RANGE, content_range(start, end, len));
                res
            }
            RangeDecision::Unsatisfiable => unsatisfiable(len),
        },
    };
    res.headers_mut().insert(ETAG, etag.clone());
    res.headers_mut().insert(CACHE_CONTROL, NO_CACHE);
    res
}

fn serve_artifact(
    s: &Inner,
    req: &Request,
    head: bool,
    name: &str,
    peer: SocketAddr,
    start: Instant,
) -> Response {
    let method = req.method();
    let uri_path = req.uri().path();
    let (file, len) = match files::open_artifact(&s.root, name) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return finish(
                s,
                PathClass::Artifact,
                not_found(head),
                peer,
                method,
                uri_path,
                start,
            )
        }
        Err(e) => {
            log::error!("artifacts/{name}: {e}");
            let res = plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n", head);
            return finish(s, PathClass::Artifact, res, peer, method, uri_path, start);
        }
    };
    // The name is the content hash, so it is a strong validator as it is.
    let etag = format!("\"{name}\"");
    let headers = req.headers();
    let (status, first, count) = match files::evaluate_preconditions(headers, &etag) {
        Precondition::NotModified => (StatusCode::NOT_MODIFIED, 0, 0),
        Precondition::Failed => (StatusCode::PRECONDITION_FAILED, 0, 0),
        Precondition::Proceed if head => (StatusCode::OK, 0, len),
        Precondition::Proceed => match files::decide_range(headers, &etag, len) {
            RangeDecision::Full => (StatusCode::OK, 0, len),
            RangeDecision::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            RangeDecision::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0),
        },
    };
    let etag = HeaderValue::try_from(etag).expect("hex is a valid header value");
    let mut res = match status {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
            let body = if head || count == 0 {
                Body::empty()
            } else {
                let on_done = s.access_log.then(|| {
                    let line = AccessLine {
                        peer,
                        method: method.clone(),
                        path: uri_path.to_string(),
                        status: status.as_u16(),
                        start,
                    };
                    Box::new(move |sent| line.emit(sent)) as files::OnDone
                });
                files::stream_body(file, first, count, s.metrics.clone(), on_done)
            };
            let mut res = Response::new(body);
            *res.status_mut() = status;
            let h = res.headers_mut();
            h.insert(CONTENT_LENGTH, HeaderValue::from(count));
            h.insert(CONTENT_TYPE, OCTETS);
            h.insert(ACCEPT_RANGES, BYTES);
            if status == StatusCode::PARTIAL_CONTENT {
                h.insert(CONTENT_RANGE, content_range(first, first + count - 1, len));
            }
            res
        }
        StatusCode::RANGE_NOT_SATISFIABLE => unsatisfiable(len),
        other => empty(other),
    };
    res.headers_mut().insert(ETAG, etag);
    res.headers_mut().insert(CACHE_CONTROL, IMMUTABLE);
    let streamed = matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) && !head && count > 0;
    if streamed {
        // Bytes and the access log are accounted by the body as it flows.
        s.metrics.request(PathClass::Artifact, status.as_u16());
        res
    } else {
        finish(s, PathClass::Artifact, res, peer, method, uri_path, start)
    }
}

fn content_range(start: u64, end: u64, len: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes {start}-{end}/{len}")).expect("digits are a valid header value")
}

fn unsatisfiable(len: u64) -> Response {
    let mut res = empty(StatusCode::RANGE_NOT_SATISFIABLE);
    res.headers_mut().insert(
        CONTENT_RANGE,
        HeaderValue::try_from(format!("bytes */{len}")).expect("digits"),
    );
    res.headers_mut().insert(ACCEPT_RANGES, BYTES);
    res
}

/// A response whose Content-Length is the body's, body dropped for HEAD.
fn bytes_response(status: StatusCode, body: Bytes, head: bool) -> Response {
    let len = body.len() as u64;
    let mut res = Response::new(if head { Body::empty() } else { Body::from(body) });
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    res
}

fn plain(status: StatusCode, text: &'static str, head: bool) -> Response {
    let mut res = bytes_response(status, Bytes::from_static(text.as_bytes()), head);
    res.headers_mut().insert(CONTENT_TYPE, TEXT);
    res
}

fn not_found(head: bool) -> Response {
    let mut res = plain(StatusCode::NOT_FOUND, "not found\n", head);
    // A missing cohort or artifact may appear any moment: never cache the 404.
    res.headers_mut().insert(CACHE_CONTROL, NO_CACHE);
    res
}

/// 304, 412, 416: no body. 304 must not carry Content-Length of the
/// representation; hyper derives the right framing from the empty body.
fn empty(status: StatusCode) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    res
}

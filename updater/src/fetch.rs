//! The network seam (STYLE: Effects at the edges): small documents with
//! conditional requests, and resumable artifact downloads, over HTTP(S) or
//! from a `file://` store (USB sticks, tests). Errors tell "not there" from
//! "cannot reach the server", because the two lead to different outcomes.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::config::Network;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not found on the server")]
    NotFound { url: String },
    #[error("{url}: cannot reach the server: {reason}")]
    Offline { url: String, reason: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: {bytes} bytes in {secs} s (at least {min} required), the connection stalled")]
    Stalled {
        url: String,
        bytes: u64,
        secs: u64,
        min: u64,
    },
    #[error("{url}: changed on the server while it was being fetched")]
    Changed { url: String },
}

impl FetchError {
    /// Worth another try later (network trouble) rather than a verdict on content.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Offline { .. } | FetchError::Stalled { .. } | FetchError::Changed { .. }
        ) || matches!(self, FetchError::Status { status, .. } if *status >= 500 || *status == 429)
    }
}

pub enum Small {
    NotModified,
    Body { bytes: Vec<u8>, etag: Option<String> },
}

enum Backend {
    Http(reqwest::Client),
    File(PathBuf),
}

/// One store base URL.
pub struct Transport {
    base: String,
    backend: Backend,
    pace: PaceRule,
}

/// The slow-retrieval guard (TUF "slow retrieval"): a transfer must move at
/// least `min_bytes` in every `window`, or it is abandoned as stalled. A
/// plain idle timeout is not enough: a server trickling one byte every few
/// seconds would keep it alive forever.
#[derive(Debug, Clone, Copy)]
struct PaceRule {
    window: Duration,
    min_bytes: u64,
}

/// One transfer's progress against its [`PaceRule`].
struct Pace {
    rule: PaceRule,
    window_end: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rule: PaceRule) -> Self {
        Self {
            rule,
            window_end: Instant::now() + rule.window,
            bytes: 0,
        }
    }

    fn stalled(&self, url: &str) -> FetchError {
        FetchError::Stalled {
            url: url.to_string(),
            bytes: self.bytes,
            secs: self.rule.window.as_secs(),
            min: self.rule.min_bytes,
        }
    }

    /// A window ended: too few bytes is an error, else a new window starts.
    fn close_window(&mut self, url: &str) -> Result<(), FetchError> {
        if self.bytes < self.rule.min_bytes {
            return Err(self.stalled(url));
        }
        self.bytes = 0;
        self.window_end = Instant::now() + self.rule.window;
        Ok(())
    }

    /// The next chunk of `resp`, held to the pace.
    async fn chunk(&mut self, url: &str, resp: &mut reqwest::Response) -> Result<Option<Bytes>, FetchError> {
        loop {
            // `Response::chunk` is cancel-safe: a timeout loses no data.
            match tokio::time::timeout_at(self.window_end, resp.chunk()).await {
                Err(_) => self.close_window(url)?,
                Ok(Err(e)) => return Err(offline(url, root_cause(&e))),
                Ok(Ok(chunk)) => {
                    if let Some(c) = &chunk {
                        self.bytes += c.len() as u64;
                        if Instant::now() >= self.window_end {
                            self.close_window(url)?;
                        }
                    }
                    return Ok(chunk);
                }
            }
        }
    }
}

/// Follow redirects only within the origin (scheme, host, port) they
/// started from: a store is one origin, and a redirect elsewhere is a
/// hijacked or misconfigured server. Signatures would catch forged content,
/// but refusing keeps a device from feeding a stranger its requests.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(|u| u.origin());
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if first.is_some_and(|o| o != attempt.url().origin()) {
            let msg = format!(
                "redirect to another host ({}) refused: only redirects within the configured server are followed",
                attempt.url().origin().ascii_serialization()
            );
            attempt.error(msg)
        } else {
            attempt.follow()
        }
    })
}

fn offline(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Offline {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

/// Describe a reqwest error by its root cause ("connection refused"), not
/// the wrapper's generic text.
fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

impl Transport {
    pub fn new(base: &str, net: &Network) -> Result<Self, String> {
        let backend = if let Some(path) = base.strip_prefix("file://") {
            Backend::File(PathBuf::from(path))
        } else {
            let client = reqwest::Client::builder()
                .connect_timeout(net.connect_timeout)
                .user_agent(concat!("updater/", env!("CARGO_PKG_VERSION")))
                // Artifacts are already compressed; manifests are tiny.
                .no_gzip()
                .redirect(same_origin_redirects())
                .build()
                .map_err(|e| format!("cannot set up HTTP: {e}"))?;
            Backend::Http(client)
        };
        Ok(Self {
            base: base.to_string(),
            backend,
            pace: PaceRule {
                window: net.stall_timeout,
                min_bytes: net.stall_min_bytes,
            },
        })
    }

    pub fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }

    /// Fetch a small document (manifest, signature) with a size cap.
    /// `if_none_match` turns an unchanged document into `NotModified`;
    /// `if_match` makes the server refuse (412 -> `Changed`) if the document
    /// is no longer the one with that ETag (a signature fetched to go with a
    /// manifest must belong to that manifest).
    pub async fn get_small(
        &self,
        rel: &str,
        if_none_match: Option<&str>,
        if_match: Option<&str>,
        limit: usize,
    ) -> Result<Small, FetchError> {
        let url = self.url(rel);
        match &self.backend {
            Backend::File(root) => {
                let path = root.join(rel);
                let file = match tokio::fs::File::open(&path).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(FetchError::NotFound { url })
                    }
                    Err(e) => return Err(offline(&url, e)),
                    Ok(f) => f,
                };
                let mut bytes = Vec::new();
                file.take(limit as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| offline(&url, e))?;
                if bytes.len() > limit {
                    return Err(FetchError::TooLarge {
                        url,
                        limit: limit as u64,
                    });
                }
                Ok(Small::Body { bytes, etag: None })
            }
            Backend::Http(client) => {
                let mut req = client.get(&url);
                if let Some(etag) = if_none_match {
                    req = req.header(reqwest::header::IF_NONE_MATCH, etag);
                }
                if let Some(etag) = if_match {
                    // nginx closes the connection after the 412 it answers a
                    // failed `If-Match` with, yet says `keep-alive`: the next
                    // request on it is reset (measured: 6 % of the time).
                    // Asking for the close up front keeps hyper from pooling it.
                    req = req
                        .header(reqwest::header::IF_MATCH, etag)
                        .header(reqwest::header::CONNECTION, "close");
                }
                let mut resp = tokio::time::timeout(self.pace.window, req.send())
                    .await
                    .map_err(|_| Pace::new(self.pace).stalled(&url))?
                    .map_err(|e| offline(&url, root_cause(&e)))?;
                let status = resp.status().as_u16();
                match status {
                    304 => return Ok(Small::NotModified),
                    404 | 410 => return Err(FetchError::NotFound { url }),
                    412 => return Err(FetchError::Changed { url }),
                    200 => {}
                    _ => return Err(FetchError::Status { url, status }),
                }
                if resp.content_length().is_some_and(|n| n > limit as u64) {
                    return Err(FetchError::TooLarge {
                        url,
                        limit: limit as u64,
                    });
                }
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let mut bytes = Vec::new();
                let mut pace = Pace::new(self.pace);
                while let Some(chunk) = pace.chunk(&url, &mut resp).await? {
                    if bytes.len() + chunk.len() > limit {
                        return Err(FetchError::TooLarge {
                            url,
                            limit: limit as u64,
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Small::Body { bytes, etag })
            }
        }
    }

    /// Start (or resume at `offset`) downloading an artifact. `if_range`:
    /// the ETag the partial's first bytes came with; a server whose copy
    /// changed since then answers 200 with the whole artifact instead of
    /// a 206 (RFC 9110 If-Range).
    pub async fn open_download(
        &self,
        rel: &str,
        offset: u64,
        if_range: Option<&str>,
    ) -> Result<Download, FetchError> {
        let url = self.url(rel);
        match &self.backend {
            Backend::File(root) => {
                let path = root.join(rel);
                let mut file = match tokio::fs::File::open(&path).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(FetchError::NotFound { url })
                    }
                    Err(e) => return Err(offline(&url, e)),
                    Ok(f) => f,
                };
                let total = file.metadata().await.map_err(|e| offline(&url, e))?.len();
                let start = offset.min(total);
                tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| offline(&url, e))?;
                Ok(Download {
                    url,
                    start,
                    total: Some(total),
                    etag: None,
                    body: Body::File(file),
                })
            }
            Backend::Http(client) => {
                let mut req = client.get(&url);
                if offset > 0 {
                    req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
                    if let Some(etag) = if_range {
                        req = req.header(reqwest::header::IF_RANGE, etag);
                    }
                }
                let resp = tokio::time::timeout(self.pace.window, req.send())
                    .await
                    .map_err(|_| Pace::new(self.pace).stalled(&url))?
                    .map_err(|e| offline(&url, root_cause(&e)))?;
                let status = resp.status().as_u16();
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| v.starts_with('"'))
                    .map(String::from);
                let (start, total) = match status {
                    200 => (0, resp.content_length()),
                    206 => {
                        let range = resp
                            .headers()
                            .get(reqwest::header::CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_content_range);
                        match range {
                            Some((start, total)) if start == offset => (start, total),
                            // A range we did not ask for: start over cleanly.
                            _ => return Err(FetchError::Status { url, status }),
                        }
                    }
                    404 | 410 => return Err(FetchError::NotFound { url }),
                    // Our partial file is as long as the artifact or longer.
                    416 => (u64::MAX, None),
                    _ => return Err(FetchError::Status { url, status }),
                };
                Ok(Download {
                    url,
                    start,
                    total,
                    etag,
                    body: Body::Http(resp, Pace::new(self.pace)),
                })
            }
        }
    }
}

/// `bytes START-END/TOTAL` -> (START, Some(TOTAL)).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()))
}

enum Body {
    Http(reqwest::Response, Pace),
    File(tokio::fs::File),
}

/// An open artifact download.
pub struct Download {
    pub url: String,
    /// Offset of the first byte this response delivers (0 when the server
    /// ignored our Range; `u64::MAX` after a 416).
    pub start: u64,
    /// Full size of the artifact, when the server said.
    pub total: Option<u64>,
    /// The response's strong ETag, if it had one.
    pub etag: Option<String>,
    body: Body,
}

impl Download {
    /// The next chunk, `None` at the end. A transfer slower than the pace
    /// rule is an error, so a hung or trickling server cannot hang a run.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let url = &self.url;
        match &mut self.body {
            Body::Http(resp, pace) => pace.chunk(url, resp).await,
            Body::File(f) => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = f.read(&mut buf).await.map_err(|e| offline(url, e))?;
                buf.truncate(n);
                Ok((n > 0).then(|| Bytes::from(buf)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}

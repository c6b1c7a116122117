//! Who may post reports and read the fleet: the bearer tokens of
//! `--report-token-file`, or anyone with `--reports-open`.
//!
//! Tokens are kept as SHA-256 digests and a presented token is hashed and
//! compared with every one of them without an early exit, so neither the
//! answer time nor its length tells an attacker how close a guess was.
//!
//! Where a token may come from: `Authorization: Bearer` everywhere; for the
//! HTML page also HTTP Basic (any user name, the token as password: the
//! browser asks for it) and `?token=` (for a bookmark or a headless
//! screenshot; it then sits in browser history, so Basic is preferred).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("report token file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report token file {}: no token in it (one token per line; empty lines and # comments are ignored)", path.display())]
    Empty { path: PathBuf },
}

#[derive(Clone)]
pub enum Auth {
    /// `--reports-open`: anyone may post and read.
    Open,
    Tokens(Vec<[u8; 32]>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Open => f.write_str("Open"),
            Auth::Tokens(t) => write!(f, "Tokens({} token(s))", t.len()),
        }
    }
}

/// Where a presented token may come from (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    /// Bearer, Basic or `?token=`.
    Browser,
}

impl Auth {
    /// Read `--report-token-file`: one token per line, surrounding white
    /// space trimmed, empty lines and lines starting with `#` skipped.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            if token.len() < 16 {
                log::warn!(
                    "report token file {}: line {}: a token of {} characters is easy to guess; use 16 or more \
                     (e.g. `openssl rand -hex 24`)",
                    path.display(),
                    i + 1,
                    token.len()
                );
            }
            tokens.push(digest(token.as_bytes()));
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Auth::Tokens(tokens))
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open)
    }

    /// Whether the request carries an accepted token (always, when open).
    pub fn allows(&self, headers: &HeaderMap, query: Option<&str>, via: Via) -> bool {
        let Auth::Tokens(tokens) = self else {
            return true;
        };
        let presented = presented(headers, query, via);
        let Some(presented) = presented else {
            return false;
        };
        let presented = digest(&presented);
        let mut ok = false;
        for t in tokens {
            ok |= constant_time_eq(t, &presented);
        }
        ok
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

fn presented(headers: &HeaderMap, query: Option<&str>, via: Via) -> Option<Vec<u8>> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.as_bytes();
        let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
            Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
            None => (value, &b""[..]),
        };
        if scheme.eq_ignore_ascii_case(b"bearer") {
            return Some(rest.to_vec());
        }
        if via == Via::Browser && scheme.eq_ignore_ascii_case(b"basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            return Some(decoded[colon + 1..].to_vec());
        }
        return None;
    }
    if via == Via::Browser {
        for pair in query?.split('&') {
            if let Some(value) = pair.strip_prefix("token=") {
                return percent_decode(value);
            }
        }
    }
    None
}

/// `%XX` and `+` as a browser form encodes them.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "s3cret-token-0123456789";

    fn auth() -> Auth {
        Auth::Tokens(vec![digest(b"another-token-abcdefgh"), digest(TOKEN.as_bytes())])
    }

    fn with_header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_is_accepted_everywhere_basic_and_query_only_for_the_page() {
        let a = auth();
        let none = HeaderMap::new();
        assert!(a.allows(&with_header(&format!("Bearer {TOKEN}")), None, Via::Bearer));
        assert!(a.allows(&with_header(&format!("bearer  {TOKEN} ")), None, Via::Bearer));
        assert!(!a.allows(&with_header("Bearer wrong-token-0123456789"), None, Via::Bearer));
        assert!(!a.allows(&none, None, Via::Bearer));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("ops:{TOKEN}"))
        );
        assert!(!a.allows(&with_header(&basic), None, Via::Bearer));
        assert!(a.allows(&with_header(&basic), None, Via::Browser));
        let query = format!("x=1&token={}", TOKEN.replace('-', "%2D"));
        assert!(!a.allows(&none, Some(&query), Via::Bearer));
        assert!(a.allows(&none, Some(&query), Via::Browser));
        assert!(!a.allows(&none, Some("token=nope"), Via::Browser));
        assert!(Auth::Open.allows(&none, None, Via::Bearer));
    }

    #[test]
    fn the_token_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(&f, format!("# ops\n\n  {TOKEN}  \nsecond-token-abcdefgh\n")).unwrap();
        let Auth::Tokens(t) = Auth::from_file(&f).unwrap() else {
            panic!()
        };
        assert_eq!(t.len(), 2);
        std::fs::write(&f, "# nothing\n\n").unwrap();
        assert!(matches!(Auth::from_file(&f), Err(TokenFileError::Empty { .. })));
    }
}

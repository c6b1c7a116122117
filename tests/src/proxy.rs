//! A fault-injecting HTTP/1.1 proxy for the unhappy network paths (DESIGN:
//! What "done" means here: the kernel has no netem, so faults come from here).
//!
//! It listens on `127.0.0.1:0` and forwards each client connection to one
//! upstream address (the real `manifest-server`), one thread per connection,
//! at most [`MAX_CONNECTIONS`] at once. Keep-alive is kept simple: every
//! forwarded request says `Connection: close`, every response is rewritten to
//! say so too, and the proxy closes the connection after one response, so
//! each request the updater makes is one connection and one [`Record`].
//!
//! Per request it:
//! 1. reads the request head and picks the first active [`Rule`] whose path
//!    prefix matches (a rule limited to its first k matches counts them down);
//! 2. records method, path, `Range` and `If-None-Match` in the request log;
//! 3. applies the fault: `Refuse` closes, `Status`, `Answer` and
//!    `RedirectTo` answer without calling upstream (a captive portal, a
//!    hijacked server), `IgnoreRange` strips `Range`/`If-Range` before
//!    forwarding;
//! 4. forwards the response head untouched (but for `Connection`), then the
//!    body, counting body bytes in the record as they go. `CutAfter(n)` and
//!    `StallAfter(n)` count **body bytes only** (headers are always sent
//!    whole), so `CutAfter(n)` on an artifact leaves the client with exactly
//!    n bytes of it: what a resumed download must not fetch again.
//!    `Trickle(d)` forwards the body one byte every `d` (a slow-loris server).
//!
//! The log is what tests assert on: "the second download asked for
//! `Range: bytes=N-` and re-fetched less than 10 % of the artifact".

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at once; more are closed on accept (a test that needs
/// more is misbehaving, and an unbounded proxy would hide it).
pub const MAX_CONNECTIONS: usize = 64;
const HEAD_LIMIT: usize = 64 << 10;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// What the proxy does to a request that a rule selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    None,
    /// Forward the response head and the first n **body** bytes, then close.
    CutAfter(u64),
    /// Forward the head and n body bytes, then send nothing more and keep the
    /// connection open until the client gives up or the proxy is dropped.
    StallAfter(u64),
    /// Answer with this status and an empty body; upstream is not called.
    Status(u16),
    /// Strip `Range` and `If-Range`, so the server answers 200 with everything.
    IgnoreRange,
    /// Play a server whose copy changed: strip `Range` and `If-Range` (the
    /// server answers 200 with everything, as RFC 9110 says it must when
    /// `If-Range` no longer matches) and send this ETag instead of its own.
    ChangedEtag(String),
    /// Close the connection without an answer.
    Refuse,
    /// Answer with this canned response; upstream is not called.
    Answer(Canned),
    /// Answer `302 Found` to `BASE` + the request's path (another host).
    RedirectTo(String),
    /// Forward the head whole, then the body one byte at a time, one every
    /// this long, for as long as the client keeps the connection open.
    Trickle(Duration),
}

/// A response the proxy makes up (see [`Fault::Answer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canned {
    pub status: u16,
    pub content_type: String,
    pub body: Arc<Vec<u8>>,
}

impl Fault {
    /// `200` with `content_type` and `body`.
    pub fn answer(content_type: &str, body: impl Into<Vec<u8>>) -> Fault {
        Fault::Answer(Canned {
            status: 200,
            content_type: content_type.into(),
            body: Arc::new(body.into()),
        })
    }

    /// A captive portal's login page: `200 text/html`, whatever was asked.
    pub fn captive_portal() -> Fault {
        Fault::answer(
            "text/html; charset=utf-8",
            "<!DOCTYPE html>\n<html><head><title>Wi-Fi login</title></head>\n<body><form action=\"/login\">Accept the terms to continue</form></body></html>\n",
        )
    }
}

/// A fault, where it applies, and how often.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    /// Only requests whose path starts with this (e.g. `/artifacts/`).
    pub path_prefix: Option<String>,
    /// Only the first k matching requests; `None`: all of them.
    pub remaining: Option<usize>,
}

impl Rule {
    /// The fault on every request, forever.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            path_prefix: None,
            remaining: None,
        }
    }

    pub fn on_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    pub fn first(mut self, k: usize) -> Self {
        self.remaining = Some(k);
        self
    }

    fn matches(&self, path: &str) -> bool {
        self.remaining != Some(0) && self.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Record {
    pub method: String,
    pub path: String,
    /// The client's `Range` header, as sent (before `IgnoreRange` strips it).
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_none_match: Option<String>,
    /// The status forwarded to the client; `None` when none was (refused,
    /// upstream unreachable, or the client went away first).
    pub status: Option<u16>,
    /// Response body bytes forwarded to the client.
    pub body_bytes: u64,
    pub fault: Fault,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Record>>,
    stop: AtomicBool,
    active: AtomicUsize,
}

impl Shared {
    fn pick(&self, path: &str) -> Fault {
        let mut rules = self.rules.lock().unwrap();
        for rule in rules.iter_mut() {
            if rule.matches(path) {
                if let Some(k) = rule.remaining.as_mut() {
                    *k -= 1;
                }
                return rule.fault.clone();
            }
        }
        Fault::None
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut Record)) {
        f(&mut self.log.lock().unwrap()[idx]);
    }
}

/// A running proxy; stops accepting (and ends stalled connections) on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        // Non-blocking accept polled with a short sleep, so drop can stop it
        // without a wake-up connection.
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL a device is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Point at another upstream (a server restarted elsewhere).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// One fault for every request, replacing all rules (`Fault::None` clears).
    pub fn set_fault(&self, fault: Fault) {
        self.set_rule(Rule::new(fault));
    }

    /// Replace all rules with this one.
    pub fn set_rule(&self, rule: Rule) {
        *self.shared.rules.lock().unwrap() = vec![rule];
    }

    /// Add a rule after the existing ones (the first match wins).
    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// The request log so far, oldest first.
    pub fn requests(&self) -> Vec<Record> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Whether any logged request's path starts with `prefix`.
    pub fn requested(&self, prefix: &str) -> bool {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path.starts_with(prefix))
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Body bytes forwarded for requests whose path starts with `prefix`.
    pub fn body_bytes(&self, prefix: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .map(|r| r.body_bytes)
            .sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("proxy-conn".into())
                    .spawn(move || {
                        let _ = client.set_nonblocking(false);
                        let _ = handle(client, &s);
                        s.active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Read up to and including the blank line; returns the head and whatever
/// was read past it (the start of a body).
fn read_head(stream: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > HEAD_LIMIT {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> io::Result<Head> {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let first_line = lines
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty head"))?
            .to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Head { first_line, headers })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Serialise, dropping `skip` headers and ending with `Connection: close`.
    fn render(&self, skip: &[&str]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first_line);
        for (n, v) in &self.headers {
            if !skip.iter().any(|s| n.eq_ignore_ascii_case(s)) {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection"];

fn handle(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head_bytes, mut leftover) = read_head(&mut client)?;
    let req = Head::parse(&head_bytes)?;
    let mut parts = req.first_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let fault = shared.pick(&path);
    let idx = {
        let mut log = shared.log.lock().unwrap();
        log.push(Record {
            method: method.clone(),
            path: path.clone(),
            range: req.get("range").map(str::to_string),
            if_range: req.get("if-range").map(str::to_string),
            if_none_match: req.get("if-none-match").map(str::to_string),
            status: None,
            body_bytes: 0,
            fault: fault.clone(),
        });
        log.len() - 1
    };

    let answer = |client: &mut TcpStream, code: u16, extra: &str, body: &[u8]| -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 {code} Injected By Proxy\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes())?;
        shared.update(idx, |r| r.status = Some(code));
        client.write_all(body)?;
        shared.update(idx, |r| r.body_bytes = body.len() as u64);
        let _ = client.shutdown(Shutdown::Write);
        Ok(())
    };
    match &fault {
        Fault::Refuse => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Status(code) => return answer(&mut client, *code, "", b""),
        Fault::Answer(c) => {
            return answer(
                &mut client,
                c.status,
                &format!("Content-Type: {}\r\n", c.content_type),
                &c.body,
            )
        }
        Fault::RedirectTo(base) => {
            let location = format!("Location: {}{path}\r\n", base.trim_end_matches('/'));
            return answer(&mut client, 302, &location, b"");
        }
        _ => {}
    }

    let upstream_addr = *shared.upstream.lock().unwrap();
    let mut upstream = match TcpStream::connect_timeout(&upstream_addr, Duration::from_secs(2)) {
        Ok(s) => s,
        // Upstream down: the client sees the connection close, as it would
        // if the server itself were unreachable behind a TCP relay.
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    upstream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;

    let mut skip: Vec<&str> = HOP_BY_HOP.to_vec();
    if matches!(fault, Fault::IgnoreRange | Fault::ChangedEtag(_)) {
        skip.extend(["range", "if-range"]);
    }
    upstream.write_all(&req.render(&skip))?;
    // A request body (none from the updater, but be correct): forward it.
    let content_length: u64 = req
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let already = (leftover.len() as u64).min(content_length);
    upstream.write_all(&leftover[..already as usize])?;
    if content_length > already {
        io::copy(&mut (&mut client).take(content_length - already), &mut upstream)?;
    }
    leftover.clear();

    let (resp_bytes, body_start) = read_head(&mut upstream)?;
    let mut resp = Head::parse(&resp_bytes)?;
    if let Fault::ChangedEtag(etag) = &fault {
        for (name, value) in &mut resp.headers {
            if name.eq_ignore_ascii_case("etag") {
                value.clone_from(etag);
            }
        }
    }
    let status: u16 = resp
        .first_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    client.write_all(&resp.render(HOP_BY_HOP))?;
    shared.update(idx, |r| r.status = Some(status));

    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || status < 200;
    let expected: Option<u64> = if no_body {
        Some(0)
    } else {
        resp.get("content-length").and_then(|v| v.parse().ok())
    };
    let limit = match fault {
        Fault::CutAfter(n) | Fault::StallAfter(n) => Some(n),
        _ => None,
    };
    let trickle = match fault {
        Fault::Trickle(every) => Some(every),
        _ => None,
    };

    let mut sent: u64 = 0;
    let mut pending = body_start;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if expected.is_some_and(|e| sent >= e) {
            break;
        }
        let chunk: &[u8] = if !pending.is_empty() {
            &pending
        } else {
            let n = upstream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            &buf[..n]
        };
        let mut take = chunk.len() as u64;
        if let Some(e) = expected {
            take = take.min(e - sent);
        }
        let mut limited = false;
        if let Some(l) = limit {
            if sent + take >= l {
                take = l - sent;
                limited = true;
            }
        }
        match trickle {
            None => {
                client.write_all(&chunk[..take as usize])?;
                sent += take;
                shared.update(idx, |r| r.body_bytes = sent);
            }
            Some(every) => {
                for byte in &chunk[..take as usize] {
                    client.write_all(std::slice::from_ref(byte))?;
                    client.flush()?;
                    sent += 1;
                    shared.update(idx, |r| r.body_bytes = sent);
                    if !pause(every, shared) {
                        let _ = client.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                }
            }
        }
        pending.clear();
        if limited {
            // `>=` above: reaching exactly n bytes is enough to apply the
            // fault, unless the body was exactly that long anyway.
            if expected == Some(sent) {
                break;
            }
            match fault {
                Fault::StallAfter(_) => stall(&mut client, shared),
                _ => {
                    let _ = client.shutdown(Shutdown::Both);
                }
            }
            return Ok(());
        }
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// Sleep `d` in short steps; `false` if the proxy stopped meanwhile.
fn pause(d: Duration, shared: &Shared) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - std::time::Instant::now()));
    }
    !shared.stop.load(Ordering::SeqCst)
}

/// Keep the connection open and silent until the client closes it or the
/// proxy stops.
fn stall(client: &mut TcpStream, shared: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    //! The proxy against a tiny std HTTP server that serves one body and
    //! honours `Range: bytes=N-`, and counts the requests it sees.
    use super::*;
    use std::sync::atomic::AtomicU64;

    struct Upstream {
        addr: SocketAddr,
        hits: Arc<AtomicU64>,
        last_range: Arc<Mutex<Option<String>>>,
    }

    fn body() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn upstream() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let last_range = Arc::new(Mutex::new(None));
        let (h, lr) = (hits.clone(), last_range.clone());
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                let lr = lr.clone();
                std::thread::spawn(move || {
                    let (head, _) = read_head(&mut s).unwrap();
                    let head = Head::parse(&head).unwrap();
                    let range = head.get("range").map(str::to_string);
                    *lr.lock().unwrap() = range.clone();
                    let body = body();
                    let start: usize = range
                        .as_deref()
                        .and_then(|r| r.strip_prefix("bytes="))
                        .and_then(|r| r.strip_suffix('-'))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let status = if range.is_some() {
                        "206 Partial Content"
                    } else {
                        "200 OK"
                    };
                    let part = &body[start..];
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                        part.len()
                    );
                    let _ = s.write_all(part);
                });
            }
        });
        Upstream {
            addr,
            hits,
            last_range,
        }
    }

    /// One raw request; returns (status line, body) as far as it got.
    fn get(proxy: &Proxy, path: &str, extra: &str) -> io::Result<(String, Vec<u8>)> {
        let mut s = TcpStream::connect(proxy.addr())?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")?;
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if all.is_empty() => return Err(e),
                Err(_) => break, // timed out mid-body: return what came
            }
        }
        let end = find(&all, b"\r\n\r\n").map_or(all.len(), |e| e + 4);
        let status = String::from_utf8_lossy(&all[..end])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        Ok((status, all[end.min(all.len())..].to_vec()))
    }

    #[test]
    fn forwards_faithfully_and_counts_body_bytes() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        let (status, body) = get(&proxy, "/artifacts/x", "").unwrap();
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, super::tests::body());
        let log = proxy.requests();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (
                log[0].method.as_str(),
                log[0].path.as_str(),
                log[0].status,
                log[0].body_bytes
            ),
            ("GET", "/artifacts/x", Some(200), 100_000)
        );
    }

    #[test]
    fn cut_after_applies_to_matching_paths_for_the_first_k_requests_only() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_rule(Rule::new(Fault::CutAfter(1000)).on_prefix("/artifacts/").first(1));
        let (_, body) = get(&proxy, "/cohorts/stable.json", "").unwrap();
        assert_eq!(body.len(), 100_000, "other paths are not cut");
        let (status, body) = get(&proxy, "/artifacts/x", "").unwrap();
        assert!(status.contains("200"));
        assert_eq!(
            body,
            super::tests::body()[..1000],
            "cut after exactly 1000 body bytes"
        );
        let (_, body) = get(&proxy, "/artifacts/x", "Range: bytes=1000-\r\n").unwrap();
        assert_eq!(body, super::tests::body()[1000..], "only the first match is cut");
        let log = proxy.requests();
        assert_eq!(log[1].fault, Fault::CutAfter(1000));
        assert_eq!(log[1].body_bytes, 1000);
        assert_eq!(log[2].range.as_deref(), Some("bytes=1000-"));
        assert_eq!((log[2].status, log[2].body_bytes), (Some(206), 99_000));
        assert_eq!(proxy.body_bytes("/artifacts/"), 100_000);
    }

    #[test]
    fn stall_after_sends_n_bytes_then_keeps_silent() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_fault(Fault::StallAfter(500));
        let (status, body) = get(&proxy, "/artifacts/x", "").unwrap();
        assert!(status.contains("200"));
        assert_eq!(body.len(), 500, "the client timed out after 500 body bytes");
    }

    #[test]
    fn status_answers_without_calling_upstream() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_fault(Fault::Status(503));
        let (status, body) = get(&proxy, "/cohorts/stable.json", "").unwrap();
        assert!(status.starts_with("HTTP/1.1 503"), "{status}");
        assert!(body.is_empty());
        assert_eq!(up.hits.load(Ordering::SeqCst), 0);
        assert_eq!(proxy.requests()[0].status, Some(503));
    }

    #[test]
    fn ignore_range_strips_the_range_header() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_fault(Fault::IgnoreRange);
        let (status, body) = get(&proxy, "/artifacts/x", "Range: bytes=10-\r\nIf-Range: \"e\"\r\n").unwrap();
        assert!(status.contains("200"), "{status}");
        assert_eq!(body.len(), 100_000);
        assert_eq!(*up.last_range.lock().unwrap(), None);
        assert_eq!(
            proxy.requests()[0].range.as_deref(),
            Some("bytes=10-"),
            "logged as sent"
        );
    }

    #[test]
    fn answer_and_redirect_are_made_up_without_calling_upstream() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_rule(Rule::new(Fault::captive_portal()).on_prefix("/cohorts/"));
        proxy.add_rule(Rule::new(Fault::RedirectTo("http://127.0.0.1:9".into())));
        let (status, body) = get(&proxy, "/cohorts/stable.json", "").unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(body.starts_with(b"<!DOCTYPE html>"), "{body:?}");
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        write!(s, "GET /artifacts/x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = String::new();
        s.read_to_string(&mut head).unwrap();
        assert!(head.starts_with("HTTP/1.1 302"), "{head}");
        assert!(
            head.contains("Location: http://127.0.0.1:9/artifacts/x\r\n"),
            "{head}"
        );
        assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn trickle_forwards_one_body_byte_per_interval() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_fault(Fault::Trickle(Duration::from_millis(200)));
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        write!(s, "GET /artifacts/x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let start = std::time::Instant::now();
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while start.elapsed() < Duration::from_millis(1100) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let end = find(&all, b"\r\n\r\n").expect("the head arrives whole") + 4;
        let body = all.len() - end;
        assert!(
            (3..=8).contains(&body),
            "{body} body bytes in 1.1 s at one per 200 ms"
        );
    }

    #[test]
    fn refuse_closes_without_an_answer_and_none_clears() {
        let up = upstream();
        let proxy = Proxy::start(up.addr);
        proxy.set_fault(Fault::Refuse);
        match get(&proxy, "/x", "") {
            Ok((status, body)) => assert!(status.is_empty() && body.is_empty(), "{status}"),
            Err(e) => assert!(e.kind() != io::ErrorKind::WouldBlock, "{e}"),
        }
        assert_eq!(up.hits.load(Ordering::SeqCst), 0);
        proxy.set_fault(Fault::None);
        let (status, _) = get(&proxy, "/x", "").unwrap();
        assert!(status.contains("200"));
    }
}

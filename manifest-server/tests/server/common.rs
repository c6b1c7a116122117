//! Shared fixtures: a store built at test time with a snakeoil key, and the
//! real `manifest-server` binary running on `127.0.0.1:0`, killed on drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use manifest::minisign::signatures_to_text;
use manifest::{SecretKey, TrustedKeys};

pub const BIN: &str = env!("CARGO_BIN_EXE_manifest-server");

/// A store in a temp dir: `<tmp>/store/{cohorts,releases,artifacts}`, the
/// public key at `<tmp>/keys/release.pub`, and `<tmp>/secret.txt` as a file
/// outside the store that must never be served.
pub struct Store {
    pub tmp: tempfile::TempDir,
    pub key: SecretKey,
}

pub const SECRET: &str = "outside the store: must never be served\n";

impl Store {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        for dir in ["store/cohorts", "store/releases", "store/artifacts", "keys"] {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        let key = SecretKey::generate();
        std::fs::write(
            tmp.path().join("keys/release.pub"),
            key.public_key().to_file_text(),
        )
        .unwrap();
        std::fs::write(tmp.path().join("secret.txt"), SECRET).unwrap();
        Self { tmp, key }
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    pub fn key_file(&self) -> PathBuf {
        self.tmp.path().join("keys/release.pub")
    }

    pub fn trust(&self) -> TrustedKeys {
        TrustedKeys::new([self.key.public_key()], 1).unwrap()
    }

    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        let block = self.key.sign(bytes, "timestamp:0\tfile:stable.json").unwrap();
        signatures_to_text(&[block]).into_bytes()
    }

    /// Replace `rel` atomically: temp file in the same directory, then rename.
    pub fn replace(&self, rel: &str, bytes: &[u8]) {
        let dest = self.root().join(rel);
        let tmp = dest.with_file_name(format!(".{}.tmp", dest.file_name().unwrap().to_str().unwrap()));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }

    /// Write a manifest and then its signature, each atomically, the way
    /// `manifest-builder` and ops do.
    pub fn publish(&self, rel: &str, bytes: &[u8]) {
        self.publish_slowly(rel, bytes, Duration::ZERO);
    }

    /// `publish`, with `gap` between the two renames: a slow writer (a sync
    /// over a network), whose half-written pair stays on disk for a while.
    pub fn publish_slowly(&self, rel: &str, bytes: &[u8], gap: Duration) {
        let sig = self.sign(bytes);
        self.replace(rel, bytes);
        std::thread::sleep(gap);
        self.replace(&format!("{rel}.minisig"), &sig);
    }

    pub fn put_artifact(&self, bytes: &[u8]) -> String {
        let name = manifest::Sha256Hex::digest(bytes).to_hex();
        std::fs::write(self.root().join("artifacts").join(&name), bytes).unwrap();
        name
    }
}

/// A valid cohort manifest for cohort `stable` at `sequence`.
pub fn cohort(sequence: u64) -> Vec<u8> {
    format!(
        r#"{{
  "schema": 1, "kind": "cohort", "product": "neopro", "cohort": "stable",
  "sequence": {sequence},
  "issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-12-21T10:00:00Z",
  "target": {{"version": "1.3.0", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 812}},
  "rollout": {{"percent": 10}},
  "allow_downgrade": false
}}
"#
    )
    .into_bytes()
}

pub fn sequence_of(manifest: &[u8]) -> u64 {
    manifest::CohortManifest::parse(manifest).unwrap().sequence
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(len as u64)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The running binary; killed and reaped on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// `manifest-server --store <store> --listen 127.0.0.1:0 --keys <key>`.
    pub fn start(store: &Store) -> Self {
        let key = store.key_file();
        Self::start_with(&store.root(), &["--keys", key.to_str().unwrap()])
    }

    pub fn start_with(store: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(store, extra, &[("RUST_LOG", "info")])
    }

    /// `start_with`, with these environment variables (RUST_LOG is unset
    /// unless given).
    pub fn start_with_env(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(store)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no `listening on` line, got {line:?}; stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        let addr = addr.parse().unwrap();
        Self { child, addr, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send `signal` (`libc::SIGTERM`, ...) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Wait for the process to exit on its own, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_with_deadline(&mut self.child, limit)
    }

    /// A counter or gauge from `/metrics`.
    pub fn metric(&self, client: &reqwest::blocking::Client, name: &str) -> u64 {
        let text = client.get(self.url("/metrics")).send().unwrap().text().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Poll `check` until it returns `Some`, or panic after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("not within {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Send `GET <target>` byte for byte (no client-side normalisation) and
/// return the status code and the body.
pub fn raw_get(addr: SocketAddr, target: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(&req).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => response[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

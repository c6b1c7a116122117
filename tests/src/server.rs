//! The real `manifest-server` as a child process.
//!
//! Started on `127.0.0.1:0`; the one stdout line `listening on http://ADDR`
//! says where. Its log (with `--access-log`, one line per request) goes to a
//! file the tests can read. It can be stopped (the "server down" case) and
//! started again on the same address, retrying while the port is taken.
//!
//! The server serves manifests from an in-memory snapshot refreshed by a
//! file watcher, so after a test changes the store it calls
//! [`Server::wait_serving`] before it runs the device.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bins;

pub struct Server {
    store: PathBuf,
    keys: Vec<PathBuf>,
    extra: Vec<String>,
    addr: SocketAddr,
    child: Option<Child>,
    logs: tempfile::TempDir,
    generation: usize,
}

impl Server {
    /// Serve `store`, verifying manifests with `keys` (empty: unverified).
    pub fn start(store: &Path, keys: &[PathBuf]) -> Server {
        Server::start_with(store, keys, &[])
    }

    /// Like [`Server::start`], with more flags (e.g. `--reports-db FILE`).
    pub fn start_with(store: &Path, keys: &[PathBuf], extra: &[&str]) -> Server {
        let mut server = Server {
            store: store.to_path_buf(),
            keys: keys.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            logs: tempfile::tempdir().unwrap(),
            generation: 0,
        };
        let (child, addr) = server.spawn().unwrap_or_else(|e| panic!("{e}"));
        server.child = Some(child);
        server.addr = addr;
        server
    }

    /// Serve `store` without `--keys`: every pair on disk is served as it is.
    /// The refusal tests need it, since a verifying server would not serve
    /// a manifest signed by a stranger or a replayed one (DESIGN:
    /// manifest-server), and the device must refuse those on its own.
    pub fn start_unverified(store: &Path) -> Server {
        Server::start(store, &[])
    }

    fn spawn(&mut self) -> Result<(Child, SocketAddr), String> {
        self.generation += 1;
        let log = self.logs.path().join(format!("server-{}.log", self.generation));
        let mut cmd = Command::new(bins::manifest_server());
        cmd.arg("--store")
            .arg(&self.store)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--access-log");
        if !self.keys.is_empty() {
            cmd.arg("--keys").args(&self.keys);
        }
        cmd.args(&self.extra);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("spawn manifest-server: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(format!(
                    "manifest-server did not print `listening on` (exit {status:?}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
        };
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| format!("unexpected first line from manifest-server: {line:?}"))?;
        Ok((child, addr))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the store's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kill the server (SIGKILL: as abrupt as a network outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same address, retrying while the port is taken.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr, "restarted on another address");
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("manifest-server restart on {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("could not restart manifest-server on {}: {e}", self.addr),
            }
        }
    }

    /// Everything the server logged, all generations (access log included).
    pub fn log(&self) -> String {
        (1..=self.generation)
            .map(|g| {
                std::fs::read_to_string(self.logs.path().join(format!("server-{g}.log"))).unwrap_or_default()
            })
            .collect()
    }

    /// GET a store path directly (not through any proxy): status and body.
    pub fn get(&self, rel: &str) -> Option<(u16, Vec<u8>)> {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let resp = client.get(format!("{}/{rel}", self.url())).send().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.bytes().ok()?.to_vec()))
    }

    /// Wait until the server serves exactly the store's current bytes of the
    /// manifest `rel` (e.g. `cohorts/stable.json`) and of its signature.
    pub fn wait_serving(&self, rel: &str) {
        let manifest = self.store.join(rel);
        let sig = self.store.join(format!("{rel}.minisig"));
        crate::util::wait_for(
            &format!("manifest-server to serve the new {rel}"),
            Duration::from_secs(20),
            || {
                let want_m = std::fs::read(&manifest).ok()?;
                let want_s = std::fs::read(&sig).ok()?;
                let (s1, m) = self.get(rel)?;
                let (s2, s) = self.get(&format!("{rel}.minisig"))?;
                (s1 == 200 && s2 == 200 && m == want_m && s == want_s).then_some(())
            },
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

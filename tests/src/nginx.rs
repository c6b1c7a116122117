//! Debian's nginx serving a store, as docs/DEPLOYMENT.md configures it: a
//! private config in a temp dir, `daemon off`, one process
//! (`master_process off`: no worker switching to `nobody`, who could not
//! read a test's private temp dirs), `127.0.0.1` on a free port, `root` =
//! the store, and `Cache-Control` per path class (cohorts `no-cache`;
//! releases and artifacts `immutable`).
//!
//! [`Nginx::find`] says whether nginx is installed; the caller decides
//! whether its absence skips the test or fails it (in CI).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::free_port;

pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The `server` block of docs/DEPLOYMENT.md, for `root` on `port`.
pub fn server_block(root: &Path, port: u16) -> String {
    format!(
        r#"    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex off;
        # Temp files of atomic writes (.tmp-*) are nobody's business.
        location ~ /\. {{ return 404; }}
        # The only files that change in place: always revalidate (ETag -> 304).
        location /cohorts/ {{
            add_header Cache-Control "no-cache" always;
        }}
        # The root of trust (docs/runbooks/key-rotation.md), revalidated likewise.
        location ~ ^/keys\.json(\.minisig)?$ {{
            add_header Cache-Control "no-cache" always;
        }}
        # Immutable once written (an artifact's name is its hash).
        location /releases/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location /artifacts/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        # Every keys.json version, for devices that missed a root rotation.
        location /keys/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location / {{ return 404; }}
    }}
"#,
        root = root.display()
    )
}

impl Nginx {
    /// `$NGINX`, else `nginx` in `/usr/sbin`, `/usr/bin` or `$PATH`.
    pub fn find() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("NGINX") {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        ["/usr/sbin", "/usr/bin"]
            .iter()
            .map(PathBuf::from)
            .chain(std::env::split_paths(&path))
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    }

    /// Serve `store`, retrying on another port if the chosen one was taken.
    pub fn start(bin: &Path, store: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let d = dir.path();
            fs::create_dir_all(d.join("tmp")).unwrap();
            let conf = format!(
                r#"# Written by tests/src/nginx.rs.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    sendfile on;
{server}}}
"#,
                d = d.display(),
                server = server_block(store, port)
            );
            let conf_path = d.join("nginx.conf");
            fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(d)
                .arg("-e")
                .arg(d.join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "nginx exited {status}: {}",
                        fs::read_to_string(d.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { child, dir, port };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start: {last}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log: one line per request (`"GET /path HTTP/1.1" STATUS …`).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error.log:\n{}--- nginx access.log:\n{}",
                fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default(),
                self.access_log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

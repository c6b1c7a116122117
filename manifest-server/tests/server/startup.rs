//! Start-up failures are one clear line and a non-zero exit; SIGTERM and
//! SIGINT are a clean, prompt exit 0, after the downloads in flight finish.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Run the binary to completion; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (
        status.and_then(|s| s.code()),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let store = Store::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let root = store.root();
    let (code, stdout, stderr) = run(&["--store", root.to_str().unwrap(), "--listen", &addr]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: address already in use")),
        "{stderr}"
    );
    assert_eq!(
        stderr.trim().lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "{stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
}

#[test]
fn a_missing_store_or_subdir_or_bad_key_is_a_clear_error() {
    let store = Store::new();
    let missing = store.tmp.path().join("nope");
    let (code, _, stderr) = run(&["--store", missing.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("store {}", missing.display())),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");

    std::fs::remove_dir(store.root().join("artifacts")).unwrap();
    let root = store.root();
    let (code, _, stderr) = run(&["--store", root.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing artifacts/"), "{stderr}");
    std::fs::create_dir(store.root().join("artifacts")).unwrap();

    let bad_key = store.tmp.path().join("keys/bad.pub");
    std::fs::write(&bad_key, "untrusted comment: x\nnot base64!\n").unwrap();
    let (code, _, stderr) = run(&[
        "--store",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--keys",
        bad_key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("key file {}", bad_key.display())),
        "{stderr}"
    );
    let absent = store.tmp.path().join("keys/absent.pub");
    let (code, _, stderr) = run(&[
        "--store",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--keys",
        absent.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("key file {}", absent.display())),
        "{stderr}"
    );
}

#[test]
fn without_keys_it_warns_once_and_serves_what_is_on_disk() {
    let store = Store::new();
    store.replace("cohorts/stable.json", b"not even json");
    let server = Server::start_with(&store.root(), &[]);
    let http = client();
    let res = http.get(server.url("/cohorts/stable.json")).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().unwrap().as_ref(), b"not even json");
    let warnings = server.stderr().matches("WITHOUT verifying").count();
    assert_eq!(warnings, 1, "{}", server.stderr());
    assert_eq!(
        server.metric(&http, "manifest_server_signature_verification_enabled"),
        0
    );
}

#[test]
fn sigterm_stops_promptly_with_status_0() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    let mut server = Server::start(&store);
    // An idle keep-alive connection must not hold the shutdown.
    let http = client();
    assert_eq!(http.get(server.url("/healthz")).send().unwrap().status(), 200);
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        server.stderr().contains("SIGTERM received"),
        "{}",
        server.stderr()
    );
}

#[test]
fn sigint_stops_promptly_with_status_0() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    let mut server = Server::start(&store);
    let http = client();
    assert_eq!(http.get(server.url("/healthz")).send().unwrap().status(), 200);
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(server.stderr().contains("SIGINT received"), "{}", server.stderr());
}

#[test]
fn a_download_in_flight_at_sigterm_completes_before_the_exit() {
    // Far more than the socket buffers of both ends hold.
    const LEN: usize = 32 << 20;
    let store = Store::new();
    let data = random_bytes(LEN);
    let name = store.put_artifact(&data);
    let mut server = Server::start(&store);

    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        stream,
        "GET /artifacts/{name} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // A slow reader: the headers and a first part of the body only...
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let header_end = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the headers");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..header_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {LEN}\r\n")), "{head}");
    while got.len() - header_end < 1 << 20 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // ...then SIGTERM, and a pause: the server waits for this download.
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "exited with a download in flight: {}",
        server.stderr()
    );
    assert!(
        got.len() - header_end < LEN,
        "the whole body was already buffered"
    );
    stream.read_to_end(&mut got).unwrap();
    let body = &got[header_end..];
    assert_eq!(body.len(), LEN, "{}", server.stderr());
    assert!(body == data.as_slice(), "the body differs");

    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after the download ended");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    let log = server.stderr();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(!log.contains("stopping anyway"), "{log}");
}

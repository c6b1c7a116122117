//! The harness itself, against the real `manifest-builder` and
//! `manifest-server` (no updater needed): the sample app answers as the
//! tests expect, the proxy forwards ranges and cuts artifacts served by the
//! real server, and the server restarts on the same address.

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::util::{free_port, wait_for};
use e2e_tests::{bins, App, Fault, Proxy, Rule, Server, TestStore};

fn http_get(url: &str, range: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut req = client.get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.bytes().ok()?.to_vec()))
}

#[test]
fn sample_app_reports_its_health_file_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let health = dir.path().join("health");
    let pid_file = dir.path().join("app.pid");
    let port = free_port();
    std::fs::write(&health, "ok\n").unwrap();
    let mut child = Command::new(bins::sample_app())
        .args(["--port", &port.to_string(), "--version", "7.1.0", "--health-file"])
        .arg(&health)
        .arg("--pid-file")
        .arg(&pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let (status, body) = wait_for("the sample app", Duration::from_secs(10), || {
        http_get(&format!("{base}/health"), None)
    });
    assert_eq!((status, body.as_slice()), (200, b"7.1.0".as_slice()));
    assert_eq!(http_get(&format!("{base}/version"), None).unwrap().1, b"7.1.0");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        child.id().to_string()
    );
    std::fs::write(&health, "broken\n").unwrap();
    assert_eq!(http_get(&format!("{base}/health"), None).unwrap().0, 500);
    std::fs::remove_file(&health).unwrap();
    assert_eq!(http_get(&format!("{base}/health"), None).unwrap().0, 500);
    // SIGTERM ends it.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait_for("the app to exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert!(!status.success() || status.code() == Some(0));
}

#[test]
fn proxy_in_front_of_the_real_server_resumes_and_cuts_artifacts() {
    let store = TestStore::new();
    store.publish_release(&e2e_tests::Release::new("1.0.0", App::Good).videos_mib(2));
    store.promote_ok("stable", "1.0.0");
    let server = Server::start(&store.store, std::slice::from_ref(&store.public_key));
    server.wait_serving("cohorts/stable.json");
    let proxy = Proxy::start(server.addr());
    let artifact = std::fs::read(store.artifact("1.0.0", "videos")).unwrap();
    let path = store.artifact_url_path("1.0.0", "videos");
    let url = format!("{}{path}", proxy.url());

    let (status, body) = http_get(&url, None).unwrap();
    assert_eq!((status, body.len()), (200, artifact.len()));
    let (status, body) = http_get(&url, Some("bytes=1000-")).unwrap();
    assert_eq!(status, 206, "the real server honours Range through the proxy");
    assert_eq!(body, artifact[1000..]);

    proxy.set_rule(Rule::new(Fault::IgnoreRange).on_prefix("/artifacts/"));
    let (status, body) = http_get(&url, Some("bytes=1000-")).unwrap();
    assert_eq!((status, body.len()), (200, artifact.len()));

    proxy.clear_log();
    proxy.set_rule(Rule::new(Fault::CutAfter(4096)).on_prefix("/artifacts/").first(1));
    // A truncated body is an error for the client, but the log says how much went.
    let _ = http_get(&url, None);
    let (status, body) = http_get(&url, None).unwrap();
    assert_eq!((status, body.len()), (200, artifact.len()));
    let log = proxy.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].body_bytes, 4096);
    assert_eq!(log[1].body_bytes, artifact.len() as u64);

    proxy.set_fault(Fault::Status(503));
    assert_eq!(http_get(&url, None).unwrap().0, 503);
}

#[test]
fn server_restarts_on_the_same_address() {
    let store = TestStore::new();
    store.publish("1.0.0", App::Good);
    store.promote_ok("stable", "1.0.0");
    let mut server = Server::start(&store.store, std::slice::from_ref(&store.public_key));
    let addr = server.addr();
    server.wait_serving("cohorts/stable.json");
    server.stop();
    assert!(http_get(&format!("{}/cohorts/stable.json", server.url()), None).is_none());
    server.restart();
    assert_eq!(server.addr(), addr);
    server.wait_serving("cohorts/stable.json");
    assert!(
        server.log().contains("/cohorts/stable.json"),
        "access log:\n{}",
        server.log()
    );
}

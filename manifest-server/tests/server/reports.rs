//! Device reports and the fleet view (issue #5, docs/REPORTS.md) against the
//! real binary with a real SQLite file: answers, idempotency, limits, the
//! latest-state rule, restarts, the exact `/v1/fleet` numbers of a
//! hand-built fleet, and the HTML page.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use manifest::Timestamp;
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const TOKEN: &str = "fleet-token-0123456789abcdef";

/// A store plus a reports database and a token file in the same temp dir.
struct Setup {
    store: Store,
}

impl Setup {
    fn new() -> Self {
        let store = Store::new();
        std::fs::write(
            store.tmp.path().join("tokens"),
            format!("# report tokens\n{TOKEN}\nsecond-token-abcdefghijkl\n"),
        )
        .unwrap();
        Self { store }
    }

    fn db(&self) -> PathBuf {
        self.store.tmp.path().join("reports.db")
    }

    fn start(&self, extra: &[&str]) -> Server {
        let db = self.db();
        let tokens = self.store.tmp.path().join("tokens");
        let mut args = vec![
            "--reports-db",
            db.to_str().unwrap(),
            "--report-token-file",
            tokens.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_with(&self.store.root(), &args)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// RFC 3339 for `secs_ago` seconds before now.
fn ago(secs_ago: u64) -> String {
    Timestamp::from_unix(now() - secs_ago).to_string()
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A report as `updater` sends it (updater/src/report.rs), with a fresh id.
#[allow(clippy::too_many_arguments)]
fn report(
    device: &str,
    cohort: &str,
    at: &str,
    outcome: &str,
    from: Option<&str>,
    to: Option<&str>,
    running: Option<&str>,
    stage: Option<&str>,
    reason: &str,
) -> Value {
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({
        "schema": 1,
        "id": format!("{:016x}{:016x}", std::process::id(), n),
        "device_id": device,
        "product": "neopro",
        "cohort": cohort,
        "at": at,
        "outcome": outcome,
        "from_version": from,
        "to_version": to,
        "running_version": running,
        "stage": stage,
        "reason": reason,
        "duration_secs": if outcome == "updated" { json!(42) } else { Value::Null },
        "dropped_reports": 0
    })
}

fn post(http: &Client, server: &Server, body: &Value) -> Response {
    post_raw(http, server, Some(TOKEN), serde_json::to_vec(body).unwrap())
}

fn post_raw(http: &Client, server: &Server, token: Option<&str>, body: Vec<u8>) -> Response {
    let mut req = http
        .post(server.url("/v1/reports"))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().unwrap()
}

fn fleet(http: &Client, server: &Server) -> Value {
    let res = http
        .get(server.url("/v1/fleet"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    serde_json::from_slice(&res.bytes().unwrap()).unwrap()
}

fn cohort<'a>(fleet: &'a Value, name: &str) -> &'a Value {
    fleet["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cohort"] == name)
        .unwrap_or_else(|| panic!("no cohort {name} in {fleet:#}"))
}

fn target<'a>(cohort: &'a Value, version: &str) -> &'a Value {
    cohort["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["version"] == version)
        .unwrap_or_else(|| panic!("no target {version} in {cohort:#}"))
}

fn device<'a>(fleet: &'a Value, id: &str) -> &'a Value {
    fleet["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == id)
        .unwrap_or_else(|| panic!("no device {id} in {fleet:#}"))
}

fn updated(device: &str, at: &str) -> Value {
    report(
        device,
        "stable",
        at,
        "updated",
        Some("1.0.0"),
        Some("2.0.0"),
        Some("2.0.0"),
        None,
        "installed 2.0.0",
    )
}

#[test]
fn a_report_is_stored_once_whatever_the_retries() {
    let setup = Setup::new();
    let server = setup.start(&[]);
    let http = client();
    let r = updated("hall-7-screen-2", &ago(60));
    let res = post(&http, &server, &r);
    assert_eq!(res.status(), StatusCode::CREATED);
    for _ in 0..3 {
        assert_eq!(post(&http, &server, &r).status(), StatusCode::OK);
    }
    let f = fleet(&http, &server);
    let stable = cohort(&f, "stable");
    assert_eq!(stable["devices"], 1);
    assert_eq!(stable["versions"], json!({"2.0.0": 1}));
    let t = target(stable, "2.0.0");
    assert_eq!((t["tried"].as_u64(), t["succeeded"].as_u64()), (Some(1), Some(1)));
    assert_eq!(t["first_report_at"], r["at"]);
    let d = device(&f, "hall-7-screen-2");
    assert_eq!(d["last_outcome"], "updated");
    assert_eq!(d["last_seen"], r["at"]);
    assert_eq!(d["silent"], false);
    let accepted = "manifest_server_reports_total{result=\"accepted\"}";
    assert_eq!(server.metric(&http, accepted), 1);
    assert_eq!(
        server.metric(&http, "manifest_server_reports_total{result=\"duplicate\"}"),
        3
    );
    assert_eq!(
        server.metric(
            &http,
            "manifest_server_requests_total{class=\"report\",status=\"201\"}"
        ),
        1
    );
}

#[test]
fn tokens_sizes_and_fields_are_checked() {
    let setup = Setup::new();
    let server = setup.start(&[]);
    let http = client();
    let body = serde_json::to_vec(&updated("d1", &ago(5))).unwrap();

    // No token, a wrong one: 401 with a challenge; the second token works.
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let res = post_raw(&http, &server, token, body.clone());
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"reports\"");
    }
    let res = http.get(server.url("/v1/fleet")).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = post_raw(&http, &server, Some("second-token-abcdefghijkl"), body.clone());
    assert_eq!(res.status(), StatusCode::CREATED);

    // Over 16 KiB, with or without a Content-Length up front.
    let mut big = updated("d1", &ago(5));
    big["reason"] = json!("x".repeat(17 * 1024));
    let res = post(&http, &server, &big);
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(chunked_post(&server, 20 * 1024), 413);

    // Not JSON, and one bad field at a time: 400 naming it, on one line.
    let res = post_raw(&http, &server, Some(TOKEN), b"{\"schema\": 1,".to_vec());
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().unwrap().starts_with("invalid report: not JSON: "));
    let cases: [(&str, Value); 8] = [
        ("schema", json!(2)),
        ("id", json!("not-hex")),
        ("device_id", json!("")),
        ("cohort", json!("../etc")),
        ("at", json!("yesterday")),
        ("outcome", json!("exploded")),
        ("to_version", json!("2.0")),
        ("stage", json!("lunch")),
    ];
    for (field, value) in cases {
        let mut r = updated("d1", &ago(5));
        r[field] = value;
        let res = post(&http, &server, &r);
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{field}");
        let text = res.text().unwrap();
        assert!(
            text.starts_with(&format!("invalid report: field `{field}`: ")),
            "{field}: {text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }
    let res = http
        .post(server.url("/v1/reports"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "text/plain")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Wrong methods.
    let res = http
        .get(server.url("/v1/reports"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(
        server.metric(&http, "manifest_server_reports_total{result=\"rejected\"}"),
        12
    );
    assert_eq!(
        server.metric(&http, "manifest_server_reports_total{result=\"unauthorized\"}"),
        2
    );
    // Only the one good report got in.
    assert_eq!(fleet(&http, &server)["devices"].as_array().unwrap().len(), 1);
}

/// POST `len` bytes to /v1/reports in 1 KiB chunks, with no
/// Content-Length, on a raw connection (a client library may give up
/// sending when the server answers early); returns the status.
fn chunked_post(server: &Server, len: usize) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..len / 1024 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b' '; 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(&req);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[test]
fn a_chatty_device_is_rate_limited_and_others_are_not() {
    let setup = Setup::new();
    let server = setup.start(&[]);
    let http = client();
    let mut limited = None;
    for i in 0..40 {
        let res = post(&http, &server, &updated("chatty", &ago(100 - i)));
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, res.headers()["retry-after"].to_str().unwrap().to_string()));
            break;
        }
        assert_eq!(res.status(), StatusCode::CREATED, "report {i}");
    }
    let (at, retry_after) = limited.expect("never rate limited");
    // 30 at once, then one every 2 s: a slow test machine may earn a few more.
    assert!((30..=35).contains(&at), "limited after {at} reports");
    let secs: u64 = retry_after.parse().unwrap();
    assert!((1..=2).contains(&secs), "{retry_after}");
    assert_eq!(
        post(&http, &server, &updated("quiet", &ago(5))).status(),
        StatusCode::CREATED
    );
    assert_eq!(
        server.metric(&http, "manifest_server_reports_total{result=\"rate_limited\"}"),
        1
    );
}

#[test]
fn a_late_old_report_does_not_overwrite_a_newer_state_and_reports_survive_a_restart() {
    let setup = Setup::new();
    let mut server = setup.start(&[]);
    let http = client();
    let newer = updated("d1", &ago(60));
    let older = report(
        "d1",
        "stable",
        &ago(3600),
        "deferred",
        Some("1.0.0"),
        Some("2.0.0"),
        Some("1.0.0"),
        None,
        "outside the install window",
    );
    assert_eq!(post(&http, &server, &newer).status(), StatusCode::CREATED);
    assert_eq!(post(&http, &server, &older).status(), StatusCode::CREATED);
    let before = fleet(&http, &server);
    let d = device(&before, "d1");
    assert_eq!(d["last_outcome"], "updated");
    assert_eq!(d["running_version"], "2.0.0");
    assert_eq!(d["last_seen"], newer["at"]);

    // Same database file, new process: everything is still there, and a
    // report already stored is still recognised.
    drop(std::mem::replace(&mut server, setup.start(&[])));
    let after = fleet(&http, &server);
    assert_eq!(after["cohorts"], before["cohorts"]);
    assert_eq!(after["devices"], before["devices"]);
    assert_eq!(post(&http, &server, &newer).status(), StatusCode::OK);
    assert_eq!(post(&http, &server, &older).status(), StatusCode::OK);
}

/// The hand-built fleet: stable rolls 2.0.0 out over 1.0.0, canary 3.0.0
/// over 2.0.0; times are minutes before now, s8 was last heard of two days
/// ago. Expected numbers follow docs/REPORTS.md's definitions.
fn hand_built_fleet() -> Vec<Value> {
    let v1 = Some("1.0.0");
    let v2 = Some("2.0.0");
    let v3 = Some("3.0.0");
    let m = |minutes: u64| ago(minutes * 60);
    vec![
        report(
            "s1",
            "stable",
            &m(120),
            "updated",
            v1,
            v2,
            v2,
            None,
            "installed 2.0.0",
        ),
        report(
            "s1",
            "stable",
            &m(60),
            "up_to_date",
            v2,
            v2,
            v2,
            None,
            "running 2.0.0",
        ),
        report(
            "s2",
            "stable",
            &m(180),
            "failed",
            v1,
            v2,
            v1,
            Some("download"),
            "hash mismatch",
        ),
        report(
            "s2",
            "stable",
            &m(90),
            "updated",
            v1,
            v2,
            v2,
            None,
            "installed 2.0.0",
        ),
        report(
            "s3",
            "stable",
            &m(80),
            "rolled_back",
            v1,
            v2,
            v1,
            Some("health"),
            "app did not start",
        ),
        report(
            "s3",
            "stable",
            &m(30),
            "blocked",
            v1,
            v2,
            v1,
            None,
            "2.0.0 is blocked here",
        ),
        report(
            "s4",
            "stable",
            &m(70),
            "failed",
            v1,
            v2,
            v1,
            Some("stage"),
            "disk full",
        ),
        report(
            "s4",
            "stable",
            &m(55),
            "failed",
            v1,
            v2,
            v1,
            Some("stage"),
            "disk full",
        ),
        report(
            "s5",
            "stable",
            &m(50),
            "rolled_back",
            v1,
            v2,
            v1,
            Some("health"),
            "crash loop",
        ),
        report(
            "s6",
            "stable",
            &m(40),
            "not_in_rollout",
            v1,
            v2,
            v1,
            None,
            "bucket 80.00",
        ),
        report(
            "s7",
            "stable",
            &m(20),
            "up_to_date",
            v2,
            v2,
            v2,
            None,
            "running 2.0.0",
        ),
        report(
            "s8",
            "stable",
            &m(48 * 60),
            "up_to_date",
            v1,
            v1,
            v1,
            None,
            "running 1.0.0",
        ),
        report(
            "c1",
            "canary",
            &m(240),
            "updated",
            v2,
            v3,
            v3,
            None,
            "installed 3.0.0",
        ),
        report(
            "c2",
            "canary",
            &m(230),
            "updated",
            v2,
            v3,
            v3,
            None,
            "installed 3.0.0",
        ),
        report(
            "c3",
            "canary",
            &m(220),
            "rolled_back",
            v2,
            v3,
            v2,
            Some("health"),
            "<script>alert('x')</script> did not answer",
        ),
        report(
            "c4",
            "canary",
            &m(210),
            "failed",
            v2,
            None,
            v2,
            Some("fetch"),
            "cohort manifest: 500",
        ),
        report(
            "c5",
            "canary",
            &m(200),
            "updated",
            v2,
            v3,
            v3,
            None,
            "installed 3.0.0",
        ),
        report(
            "c6",
            "canary",
            &m(190),
            "refused",
            v2,
            v3,
            v2,
            Some("verify"),
            "bad signature",
        ),
        // Sent late from s1's outbox: older than its latest state.
        report(
            "s1",
            "stable",
            &m(150),
            "deferred",
            v1,
            v2,
            v1,
            None,
            "outside the install window",
        ),
        // c7 has 3.0.0 staged and waits for its install window (in
        // progress), and lost two reports from a full outbox.
        {
            let mut r = report(
                "c7",
                "canary",
                &m(185),
                "deferred",
                v2,
                v3,
                v2,
                None,
                "outside the install window",
            );
            r["dropped_reports"] = json!(2);
            r
        },
    ]
}

#[test]
fn the_fleet_summary_of_a_hand_built_fleet_is_exact() {
    let setup = Setup::new();
    let server = setup.start(&[]);
    let http = client();
    let reports = hand_built_fleet();
    for r in &reports {
        assert_eq!(post(&http, &server, r).status(), StatusCode::CREATED, "{r}");
    }
    let f = fleet(&http, &server);
    assert_eq!(f["silent_after_secs"], 86_400);
    let names: Vec<_> = f["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cohort"].clone())
        .collect();
    assert_eq!(names, [json!("canary"), json!("stable")]);
    let at = |i: usize| reports[i]["at"].clone();

    let stable = cohort(&f, "stable");
    assert_eq!((&stable["devices"], &stable["silent"]), (&json!(8), &json!(1)));
    assert_eq!(stable["dropped_reports"], 0);
    assert_eq!(
        serde_json::to_string(&stable["versions"]).unwrap(),
        r#"{"2.0.0":3,"1.0.0":5}"#
    );
    let versions: Vec<_> = stable["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["version"].clone())
        .collect();
    assert_eq!(versions, [json!("2.0.0"), json!("1.0.0")]);
    assert_eq!(
        target(stable, "2.0.0"),
        &json!({
            "version": "2.0.0", "on_target": 3, "in_progress": 0,
            "tried": 6, "succeeded": 3, "rolled_back": 2, "failed": 1,
            "consecutive_failures": 3, "first_report_at": at(2), "last_report_at": at(8),
            "from_versions": {"1.0.0": 5}
        })
    );
    assert_eq!(
        target(stable, "1.0.0"),
        &json!({
            "version": "1.0.0", "on_target": 5, "in_progress": 0,
            "tried": 5, "succeeded": 5, "rolled_back": 0, "failed": 0,
            "consecutive_failures": 0, "first_report_at": null, "last_report_at": null,
            "from_versions": {}
        })
    );
    let canary = cohort(&f, "canary");
    assert_eq!((&canary["devices"], &canary["silent"]), (&json!(7), &json!(0)));
    assert_eq!(canary["dropped_reports"], 2);
    assert_eq!(canary["versions"], json!({"3.0.0": 3, "2.0.0": 4}));
    assert_eq!(canary["targets"].as_array().unwrap().len(), 1);
    assert_eq!(
        target(canary, "3.0.0"),
        &json!({
            "version": "3.0.0", "on_target": 3, "in_progress": 1,
            "tried": 4, "succeeded": 3, "rolled_back": 1, "failed": 0,
            "consecutive_failures": 0, "first_report_at": at(12), "last_report_at": at(16),
            "from_versions": {"2.0.0": 4}
        })
    );

    assert_eq!(f["devices"].as_array().unwrap().len(), 15);
    assert_eq!(
        device(&f, "s1"),
        &json!({
            "device_id": "s1", "cohort": "stable", "running_version": "2.0.0",
            "last_outcome": "up_to_date", "last_reason": "running 2.0.0",
            "last_seen": at(1), "silent": false, "dropped_reports": 0
        })
    );
    assert_eq!(device(&f, "c7")["dropped_reports"], 2);
    assert_eq!(device(&f, "s8")["silent"], true);
    let failures: Vec<_> = f["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["device_id"].as_str().unwrap(), x["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failures,
        [
            ("s5", "rolled_back"),
            ("s4", "failed"),
            ("s4", "failed"),
            ("s3", "rolled_back"),
            ("s2", "failed"),
            ("c4", "failed"),
            ("c3", "rolled_back"),
        ]
    );
    assert_eq!(
        f["recent_failures"][0],
        json!({
            "device_id": "s5", "cohort": "stable", "at": at(8), "to_version": "2.0.0",
            "outcome": "rolled_back", "stage": "health", "reason": "crash loop"
        })
    );

    // The HTML page: same numbers, escaped, behind the same token.
    let res = http.get(server.url("/")).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    let res = http
        .get(server.url("/"))
        .basic_auth("ops", Some(TOKEN))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = http.get(server.url("/")).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = http.get(server.url(&format!("/?token={TOKEN}"))).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = res.text().unwrap();
    assert!(
        html.contains("<h2>stable</h2>") && html.contains("<h2>canary</h2>"),
        "{html}"
    );
    assert!(html.contains("8 devices") && html.contains("7 devices") && html.contains("1 silent"));
    // stable 2.0.0: on target 3, in progress 0, tried 6, succeeded 3,
    // rolled back 2, failed 1; canary 3.0.0: on target 3, in progress 1.
    assert!(html.contains(
        "<td class=\"n\">3</td><td class=\"n\">0</td><td class=\"n\">6</td><td class=\"n\">3</td>\
         <td class=\"n\">2</td><td class=\"n\">1</td>"
    ));
    assert!(html.contains("<code>3.0.0</code></td><td class=\"n\">3</td><td class=\"n\">1</td>"));
    assert!(
        html.contains(">2 reports lost</span>"),
        "the cohort total is shown"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; did not answer"));
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("<code>s8</code>"), "the silent device is named");
    // ?token= is for the page only.
    let res = http
        .get(server.url(&format!("/v1/fleet?token={TOKEN}")))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// A Pi without RTC: a report stamped a day ahead (or at 1970) is the
/// device's news all the same. It is stored (201; a 400 made the device
/// drop it for good) and placed at the server's receipt time, so it does
/// not stay the device's latest state until the clock catches up.
#[test]
fn a_report_from_a_device_clock_far_off_is_accepted_and_placed_now() {
    let setup = Setup::new();
    let server = setup.start(&[]);
    let http = client();
    let before = now();
    let ahead = Timestamp::from_unix(now() + 86_400).to_string();
    let r = report(
        "rtc-less",
        "stable",
        &ahead,
        "rolled_back",
        Some("1.0.0"),
        Some("2.0.0"),
        Some("1.0.0"),
        Some("health"),
        "crash loop",
    );
    assert_eq!(post(&http, &server, &r).status(), StatusCode::CREATED);
    assert_eq!(
        post(&http, &server, &r).status(),
        StatusCode::OK,
        "still idempotent"
    );
    let f = fleet(&http, &server);
    let seen: Timestamp = device(&f, "rtc-less")["last_seen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before..=now()).contains(&seen.unix()),
        "placed at receipt, not at {ahead}: {seen}"
    );
    assert_eq!(f["recent_failures"][0]["at"], json!(seen.to_string()));
    // A normal report a minute later is the latest state again.
    let next = updated("rtc-less", &ago(0));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(post(&http, &server, &next).status(), StatusCode::CREATED);
    assert_eq!(
        device(&fleet(&http, &server), "rtc-less")["last_outcome"],
        "updated"
    );
    // A clock never set (1970) is placed at receipt too.
    let r = updated("at-1970", "1970-01-01T00:01:00Z");
    assert_eq!(post(&http, &server, &r).status(), StatusCode::CREATED);
    let seen: Timestamp = device(&fleet(&http, &server), "at-1970")["last_seen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seen.unix() >= before, "{seen}");
}

#[test]
fn without_reports_db_the_endpoints_do_not_exist() {
    let store = Store::new();
    let server = Server::start(&store);
    let http = client();
    for path in ["/", "/v1/fleet", "/v1/reports"] {
        assert_eq!(
            http.get(server.url(path)).send().unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let res = post_raw(
        &http,
        &server,
        Some(TOKEN),
        serde_json::to_vec(&updated("d", &ago(1))).unwrap(),
    );
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let metrics = http.get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert!(!metrics.contains("manifest_server_reports_total"), "{metrics}");
}

#[test]
fn reports_open_needs_no_token_and_says_so() {
    let setup = Setup::new();
    let db = setup.db();
    let server = Server::start_with(
        &setup.store.root(),
        &[
            "--reports-db",
            db.to_str().unwrap(),
            "--reports-open",
            "--silent-after",
            "1h",
        ],
    );
    let http = client();
    let res = post_raw(
        &http,
        &server,
        None,
        serde_json::to_vec(&updated("d", &ago(7200))).unwrap(),
    );
    assert_eq!(res.status(), StatusCode::CREATED);
    let f: Value =
        serde_json::from_slice(&http.get(server.url("/v1/fleet")).send().unwrap().bytes().unwrap()).unwrap();
    assert_eq!(f["silent_after_secs"], 3600);
    assert_eq!(cohort(&f, "stable")["silent"], 1);
    assert_eq!(http.get(server.url("/")).send().unwrap().status(), StatusCode::OK);
    assert!(
        server.stderr().contains("--reports-open: anyone"),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_reports_db_that_cannot_be_created_or_a_missing_token_is_a_clear_error() {
    let setup = Setup::new();
    let root = setup.store.root();
    let bad = setup.store.tmp.path().join("no-such-dir/reports.db");
    let tokens = setup.store.tmp.path().join("tokens");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--store", root.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[
        "--reports-db",
        bad.to_str().unwrap(),
        "--report-token-file",
        tokens.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("reports database {}: ", bad.display())),
        "{stderr}"
    );
    let db = setup.db();
    let (code, stderr) = run(&["--reports-db", db.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--reports-db needs --report-token-file"),
        "{stderr}"
    );
}

//! Device reports across an outage (issue 5, "Judged by"): reports produced
//! while the report server is unreachable wait in the outbox and arrive
//! after it returns (and its backoff has passed), oldest first, each
//! exactly once, even when a device re-sends one it had already delivered
//! (power cut between the answer and the delete); and reports a full
//! outbox dropped are counted and reach the fleet view.

use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::{wait_for, App, Fault, Fleet, Proxy, Rule, Server};

const TOKEN: &str = "reports-e2e-token-0123456789";

/// The report server: its own (empty) store, a reports database and a
/// token, behind a proxy that can make it unreachable.
struct ReportSink {
    _dir: tempfile::TempDir,
    server: Server,
    proxy: Proxy,
    db: String,
    token_file: PathBuf,
}

impl ReportSink {
    fn start() -> ReportSink {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cohorts", "releases", "artifacts"] {
            std::fs::create_dir_all(dir.path().join("store").join(sub)).unwrap();
        }
        let token_file = dir.path().join("tokens");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let db = dir.path().join("reports.sqlite").display().to_string();
        let tokens = token_file.display().to_string();
        let server = Server::start_with(
            &dir.path().join("store"),
            &[],
            &["--reports-db", &db, "--report-token-file", &tokens],
        );
        let proxy = Proxy::start(server.addr());
        ReportSink {
            _dir: dir,
            server,
            proxy,
            db,
            token_file,
        }
    }

    /// A device's `[report]` section for this server (through the proxy),
    /// with `extra` lines.
    fn report_toml(&self, extra: &str) -> String {
        format!(
            "\n[report]\nurl = \"{}/v1/reports\"\ntoken_file = \"{}\"\n{extra}",
            self.proxy.url(),
            self.token_file.display()
        )
    }
}

fn metric(text: &str, result: &str) -> u64 {
    let key = format!("manifest_server_reports_total{{result=\"{result}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&key).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{key} not in /metrics:\n{text}"))
}

/// The reports the server stored, in the order it received them: (outcome,
/// to_version), read from the server's database (WAL mode: a reader beside
/// the running server is fine).
fn stored_in_order(db: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{db}: {e}"));
    let mut stmt = conn
        .prepare("SELECT outcome, COALESCE(to_version, '-') FROM reports ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Time passes: the device's report backoff (outbox/backoff, docs/REPORTS.md)
/// expires. A delivery removes the file too; here no clock is faked.
fn backoff_expires(outbox: &std::path::Path) {
    let path = outbox.join("backoff");
    assert!(path.exists(), "a failed flush left a backoff");
    std::fs::remove_file(path).unwrap();
}

fn outbox_events(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.ends_with(".json") && name != "heartbeat.json"
    });
    v.sort();
    v
}

#[test]
fn reports_made_offline_arrive_later_exactly_once() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);

    let sink = ReportSink::start();
    let (reports, reports_proxy, db) = (&sink.server, &sink.proxy, &sink.db);
    let device = fleet.device_with(|c| c.extra_toml = sink.report_toml(""));
    let outbox = device.state_dir.join("outbox");

    // The report server is unreachable while the device installs twice.
    reports_proxy.set_rule(Rule::new(Fault::Refuse));
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(10);
    let waiting = outbox_events(&outbox);
    assert_eq!(
        waiting.len(),
        2,
        "two install reports wait in the outbox: {waiting:?}"
    );
    let first = std::fs::read(&waiting[0]).unwrap();

    // The second run did not even try: the first failure set a backoff.
    let tries = reports_proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(tries, 1, "one attempt, then the backoff holds");

    // It comes back, and once the backoff has passed the next run delivers
    // them, oldest first, plus its own.
    reports_proxy.set_rule(Rule::new(Fault::None));
    backoff_expires(&outbox);
    device.check().expect_code(0);
    assert!(outbox_events(&outbox).is_empty(), "outbox flushed");
    let posts: Vec<_> = reports_proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.status == Some(201))
        .collect();
    assert_eq!(posts.len(), 3, "{posts:?}");
    assert_eq!(
        stored_in_order(db),
        [
            ("updated".to_string(), "1.0.0".to_string()),
            ("updated".to_string(), "2.0.0".to_string()),
            ("up_to_date".to_string(), "2.0.0".to_string()),
        ],
        "received oldest first"
    );
    assert!(!outbox.join("backoff").exists(), "a delivery resets the backoff");

    // A power cut after the server answered but before the file was
    // deleted: the device sends it again, and it is not counted twice.
    std::fs::write(&waiting[0], &first).unwrap();
    device.check().expect_code(0);
    assert!(outbox_events(&outbox).is_empty());

    let get = |path: &str| {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}{path}", reports.url()))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.text().unwrap()
    };
    let metrics = wait_for("the duplicate to be counted", Duration::from_secs(10), || {
        let m = get("/metrics");
        (metric(&m, "duplicate") == 1).then_some(m)
    });
    // 2 installs + 2 heartbeats ("up to date"), each stored once.
    assert_eq!(metric(&metrics, "accepted"), 4, "{metrics}");

    let fleet_view: serde_json::Value = serde_json::from_str(&get("/v1/fleet")).unwrap();
    let me = fleet_view["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "test-device-1")
        .unwrap_or_else(|| panic!("device missing: {fleet_view:#}"))
        .clone();
    assert_eq!(me["running_version"], "2.0.0", "{me:#}");
    let stable = fleet_view["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cohort"] == "stable")
        .unwrap()
        .clone();
    for version in ["1.0.0", "2.0.0"] {
        let t = stable["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["version"] == version)
            .unwrap_or_else(|| panic!("no target {version}: {stable:#}"))
            .clone();
        assert_eq!(
            (t["tried"].as_u64(), t["succeeded"].as_u64()),
            (Some(1), Some(1)),
            "{t:#}"
        );
    }
}

#[test]
fn reports_a_full_outbox_dropped_are_counted_in_the_fleet_view() {
    let fleet = Fleet::new();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        fleet.store.publish(v, App::Good);
    }
    let sink = ReportSink::start();
    let (reports, reports_proxy) = (&sink.server, &sink.proxy);
    // Room for one event report only.
    let device = fleet.device_with(|c| c.extra_toml = sink.report_toml("max_reports = 1\n"));
    let outbox = device.state_dir.join("outbox");
    reports_proxy.set_rule(Rule::new(Fault::Refuse));
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        fleet.promote("stable", v);
        device.check().expect_code(10);
    }
    assert_eq!(outbox_events(&outbox).len(), 1, "the outbox kept the newest");
    assert_eq!(
        std::fs::read_to_string(outbox.join("dropped")).unwrap().trim(),
        "2"
    );

    reports_proxy.set_rule(Rule::new(Fault::None));
    backoff_expires(&outbox);
    device.check().expect_code(0);
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/v1/fleet", reports.url()))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    let view: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    let me = view["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "test-device-1")
        .unwrap_or_else(|| panic!("device missing: {view:#}"))
        .clone();
    assert_eq!(me["dropped_reports"], 2, "{me:#}");
    assert_eq!(view["cohorts"][0]["dropped_reports"], 2, "{view:#}");
    let left = std::fs::read_to_string(outbox.join("dropped")).unwrap_or_default();
    assert!(
        matches!(left.trim(), "" | "0"),
        "the count was delivered: {left:?}"
    );
}

//! `manifest-builder rollout …` as ops run it: real binaries, real files,
//! and for `status`/`advance` the real `manifest-server --reports-db`, fed
//! with reports POSTed over HTTP the way updaters send them
//! (docs/REPORTS.md). Every manifest written is checked with the library's
//! `TrustedKeys`, as a device would.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use manifest::{CohortManifest, PublicKey, Timestamp, TrustedKeys};

use super::{builder, promote, release, workspace, Run};

/// The cohort manifest, verified against the workspace's dev key.
fn verified_cohort(d: &Path) -> CohortManifest {
    let key = PublicKey::parse(&fs::read_to_string(d.join("keys/dev.pub")).unwrap()).unwrap();
    let trust = TrustedKeys::new([key], 1).unwrap();
    trust
        .verify_cohort(
            "cohorts/stable.json",
            &fs::read(d.join("store/cohorts/stable.json")).unwrap(),
            &fs::read(d.join("store/cohorts/stable.json.minisig")).unwrap(),
        )
        .expect("the cohort manifest verifies")
        .into_inner()
}

fn rollout(d: &Path, sub: &str, extra: &[&str]) -> Run {
    let mut args = vec!["rollout", sub, "--store", "store"];
    args.extend_from_slice(extra);
    builder(d, &args)
}

fn code(run: &Run) -> Option<i32> {
    run.out.status.code()
}

#[test]
fn halt_and_rollback_write_signed_manifests_with_the_next_sequence() {
    let ws = workspace();
    let d = ws.path();
    for v in ["0.9.0", "1.0.0", "2.0.0-rc.1", "2.0.0"] {
        release(d, v).ok();
    }
    promote(d, "2.0.0", &["--percent", "25"]).ok();
    let key = ["--cohort", "stable", "--key", "keys/dev.key"];

    let out = rollout(d, "halt", &key).ok();
    assert!(out.contains("halted") && out.contains("sequence 2"), "{out}");
    let c = verified_cohort(d);
    assert_eq!(
        (
            c.sequence,
            c.rollout.percent.basis_points(),
            c.target.version.to_string()
        ),
        (2, 0, "2.0.0".into())
    );
    assert!(!c.allow_downgrade);
    // Halting a halted cohort writes nothing.
    let before = fs::read(d.join("store/cohorts/stable.json")).unwrap();
    let out = rollout(d, "halt", &key).ok();
    assert!(out.contains("already halted"), "{out}");
    assert_eq!(fs::read(d.join("store/cohorts/stable.json")).unwrap(), before);

    // Without --to and without the fleet's reports nothing says which
    // release the cohort ran before: refused, nothing written, and the way
    // out is named (the store's next lower release is not evidence).
    let err = rollout(d, "rollback", &key).fails();
    assert!(
        err.contains("which release did cohort stable run before 2.0.0?")
            && err.contains("--server URL")
            && err.contains("--to VERSION"),
        "{err}"
    );
    assert_eq!(verified_cohort(d).sequence, 2);
    rollout(d, "rollback", &[&key[..], &["--to", "1.0.0"]].concat()).ok();
    let c = verified_cohort(d);
    assert_eq!(
        (c.sequence, c.target.version.to_string(), c.allow_downgrade),
        (3, "1.0.0".into(), true)
    );
    assert_eq!(c.rollout.percent, manifest::Percent::ALL);
    let release_bytes = fs::read(d.join("store/releases/1.0.0.json")).unwrap();
    assert_eq!(c.target.sha256, manifest::Sha256Hex::digest(&release_bytes));

    // --to names the version; it must be lower and published.
    let err = rollout(d, "rollback", &[&key[..], &["--to", "2.0.0"]].concat()).fails();
    assert!(err.contains("2.0.0 is not lower than 1.0.0"), "{err}");
    let err = rollout(d, "rollback", &[&key[..], &["--to", "0.5.0"]].concat()).fails();
    assert!(err.contains("release 0.5.0 is not in the store"), "{err}");
    rollout(d, "rollback", &[&key[..], &["--to", "0.9.0"]].concat()).ok();
    let c = verified_cohort(d);
    assert_eq!((c.sequence, c.target.version.to_string()), (4, "0.9.0".into()));
    // Nothing lower than 0.9.0: refused, nothing written.
    let err = rollout(d, "rollback", &[&key[..], &["--to", "0.5.0"]].concat()).fails();
    assert!(err.contains("0.5.0 is not in the store"), "{err}");
    assert_eq!(verified_cohort(d).sequence, 4);

    builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]).ok();
}

#[test]
fn advance_needs_the_fleet_and_says_so_in_one_line() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    promote(d, "1.0.0", &["--percent", "10"]).ok();
    let before = fs::read(d.join("store/cohorts/stable.json")).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let run = rollout(
        d,
        "advance",
        &["--cohort", "stable", "--key", "keys/dev.key", "--server", &url],
    );
    assert_eq!(code(&run), Some(1));
    let err = run.stderr();
    assert!(
        err.contains(&format!("{url}/v1/fleet: cannot reach the server")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(fs::read(d.join("store/cohorts/stable.json")).unwrap(), before);

    // A policy file with a typo is refused before any request.
    fs::write(
        d.join("policy.toml"),
        "steps = [10, 50, 100]\nstabilty = \"1h\"\n",
    )
    .unwrap();
    let err = rollout(
        d,
        "advance",
        &[
            "--cohort",
            "stable",
            "--key",
            "keys/dev.key",
            "--server",
            &url,
            "--policy",
            "policy.toml",
        ],
    )
    .fails();
    assert!(err.contains("policy.toml: unknown key `stabilty`"), "{err}");

    // Something that is not a fleet summary (a captive portal, a wrong URL).
    let (url, portal) = one_shot_http("200 OK", "text/html", "<html>welcome</html>");
    let err = rollout(d, "status", &["--server", &url]).fails();
    portal.join().unwrap();
    assert!(
        err.contains(&format!("{url}/v1/fleet: not a fleet summary")),
        "{err}"
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Answers exactly one HTTP request with the given status and body. Only for
/// what no real manifest-server would say (a page that is not JSON).
fn one_shot_http(
    status: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    (url, handle)
}

// ------------------------------------------------- against the real server

/// `target/debug/manifest-server`, next to this test's `deps/` directory.
/// `cargo test --workspace` builds it; `cargo test -p manifest-builder`
/// alone needs `cargo build -p manifest-server` first.
fn manifest_server() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("manifest-server");
    assert!(
        path.is_file(),
        "missing {}: run `cargo build -p manifest-server` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// The real `manifest-server` serving `d/store` with reports in `d/reports.db`.
struct ReportServer {
    child: Child,
    url: String,
}

impl ReportServer {
    fn start(d: &Path, extra: &[&str]) -> ReportServer {
        let mut child = Command::new(manifest_server())
            .args(["--store", "store", "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(d.join("server.log")).unwrap())
            .spawn()
            .expect("spawn manifest-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "manifest-server did not start ({line:?}): {}",
                fs::read_to_string(d.join("server.log")).unwrap_or_default()
            );
        };
        ReportServer {
            url: addr.to_string(),
            child,
        }
    }

    fn with_reports(d: &Path, auth: &[&str]) -> ReportServer {
        let mut args = vec!["--reports-db", "reports.db"];
        args.extend_from_slice(auth);
        ReportServer::start(d, &args)
    }
}

impl Drop for ReportServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One device report, as the updater's outbox sends it (docs/REPORTS.md).
struct Report<'a> {
    device: &'a str,
    outcome: &'a str,
    to: &'a str,
    from: &'a str,
    /// Seconds after the test's reference time (reports are ordered by it).
    at: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn post(server: &ReportServer, token: Option<&str>, base: u64, r: &Report) {
    post_in(server, token, base, "stable", r)
}

fn post_in(server: &ReportServer, token: Option<&str>, base: u64, cohort: &str, r: &Report) {
    let failed = r.outcome != "updated";
    let body = serde_json::json!({
        "schema": 1,
        "id": format!("{:032x}", rand::random::<u128>()),
        "device_id": r.device,
        "product": "neopro",
        "cohort": cohort,
        "at": Timestamp::from_unix(base + r.at).to_string(),
        "outcome": r.outcome,
        "from_version": r.from,
        "to_version": r.to,
        "running_version": if failed { r.from } else { r.to },
        "stage": if failed { Some("health") } else { None },
        "reason": if failed { "health checks did not pass: GET /health returned 500" } else { "" },
        "duration_secs": 12,
        "dropped_reports": 0,
    });
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}/v1/reports", server.url))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().expect("POST /v1/reports");
    let status = resp.status().as_u16();
    assert_eq!(status, 201, "report refused: {}", resp.text().unwrap_or_default());
}

/// Run `rollout advance` until its output contains `want`, or fail after
/// `limit`: the stability clock is real time, in whole seconds.
fn advance_until(d: &Path, args: &[&str], want: &str, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        let run = rollout(d, "advance", args);
        if run.stdout().contains(want) || Instant::now() > deadline {
            assert!(
                run.stdout().contains(want),
                "no {want:?} within {limit:?}; last: {}{}",
                run.stdout(),
                run.stderr()
            );
            return run;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn advance_waits_then_widens_on_successes_then_halts_on_consecutive_failures() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    release(d, "2.0.0").ok();
    promote(d, "2.0.0", &["--percent", "10"]).ok();
    let server = ReportServer::with_reports(d, &["--reports-open"]);
    let base = unix_now() - 600;
    let ok = |device, at| Report {
        device,
        outcome: "updated",
        to: "2.0.0",
        from: "1.0.0",
        at,
    };
    let url = server.url.as_str();
    // This test is about halting; the default, rollback, has its own test.
    let common = [
        "--cohort",
        "stable",
        "--key",
        "keys/dev.key",
        "--server",
        url,
        "--on-failure",
        "halt",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> { [&common[..], extra].concat() };

    let status = rollout(d, "status", &["--server", url, "--on-failure", "halt"]).ok();
    assert!(
        status.contains("2.0.0 at 10 % (step 1 of 5)") && status.contains("tried 0"),
        "{status}"
    );

    // Two successes, inside a long stability period: wait, nothing written.
    post(&server, None, base, &ok("d1", 1));
    post(&server, None, base, &ok("d2", 2));
    let out = rollout(d, "advance", &with(&["--stability", "1h"])).ok();
    assert!(
        out.contains("waiting at 10 %") && out.contains("of the 1h stability period"),
        "{out}"
    );
    assert_eq!(verified_cohort(d).sequence, 1);

    // A tiny stability period: once it has passed, two reports are too few.
    advance_until(
        d,
        &with(&["--stability", "1s"]),
        "2 device(s) tried 2.0.0, 3 needed",
        Duration::from_secs(20),
    );
    assert_eq!(verified_cohort(d).sequence, 1);

    // The third success: 10 -> 25 %, signed, sequence + 1.
    post(&server, None, base, &ok("d3", 3));
    let run = advance_until(
        d,
        &with(&["--stability", "1s"]),
        "advanced 2.0.0 from 10 % to 25 %",
        Duration::from_secs(20),
    );
    assert!(
        run.stdout().contains("3 of 3 succeeded (100 %)"),
        "{}",
        run.stdout()
    );
    let c = verified_cohort(d);
    assert_eq!((c.sequence, c.rollout.percent.basis_points()), (2, 2500));

    // Three failures in a row: halted at once, even inside the stability
    // period, with exit status 3.
    for (i, device) in ["d4", "d5", "d6"].into_iter().enumerate() {
        post(
            &server,
            None,
            base,
            &Report {
                device,
                outcome: if i == 1 { "failed" } else { "rolled_back" },
                to: "2.0.0",
                from: "1.0.0",
                at: 100 + i as u64,
            },
        );
    }
    let status = rollout(d, "status", &["--server", url, "--on-failure", "halt"]).ok();
    assert!(
        status.contains("tried 6: succeeded 3") && status.contains("consecutive failures 3"),
        "{status}"
    );
    assert!(status.contains("rollout advance would halt"), "{status}");
    let dry = rollout(d, "advance", &with(&["--stability", "1h", "--dry-run"]));
    assert_eq!(code(&dry), Some(0), "{}", dry.stderr());
    assert!(dry.stdout().contains("would halt"), "{}", dry.stdout());
    assert_eq!(verified_cohort(d).sequence, 2, "a dry run writes nothing");

    let run = rollout(d, "advance", &with(&["--stability", "1h"]));
    assert_eq!(code(&run), Some(3), "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("HALTED 2.0.0 at 0 %")
            && run.stdout().contains("3 consecutive failures of 2.0.0 (limit 3)"),
        "{}",
        run.stdout()
    );
    let c = verified_cohort(d);
    assert_eq!(
        (
            c.sequence,
            c.rollout.percent.basis_points(),
            c.target.version.to_string()
        ),
        (3, 0, "2.0.0".into())
    );
    let json = rollout(d, "status", &["--server", url, "--json", "--on-failure", "halt"]).ok();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = &doc["cohorts"][0];
    assert_eq!(
        (&row["cohort"], &row["percent"], &row["tried"], &row["decision"]),
        (&"stable".into(), &0.0.into(), &6.into(), &"halt".into()),
        "{json}"
    );
    // Asked again: still halted, nothing re-signed.
    let run = rollout(d, "advance", &with(&[]));
    assert_eq!(code(&run), Some(3));
    assert!(run.stdout().contains("is halted (0 %)"), "{}", run.stdout());
    assert_eq!(verified_cohort(d).sequence, 3);
}

#[test]
fn watch_runs_a_rollout_to_the_end_and_rolls_back_a_failing_one() {
    let ws = workspace();
    let d = ws.path();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        release(d, v).ok();
    }
    promote(d, "2.0.0", &["--percent", "10"]).ok();
    fs::write(d.join("token"), "# ops\nops-token\n").unwrap();
    fs::write(d.join("wrong-token"), "nope\n").unwrap();
    let server = ReportServer::with_reports(d, &["--report-token-file", "token"]);
    let url = server.url.as_str();
    let base = unix_now() - 600;

    // The token: missing, wrong, right.
    let err = rollout(d, "status", &["--server", url]).fails();
    assert!(err.contains("401") && err.contains("pass --token-file"), "{err}");
    let err = rollout(d, "status", &["--server", url, "--token-file", "wrong-token"]).fails();
    assert!(err.contains("401") && err.contains("refused the token"), "{err}");
    rollout(d, "status", &["--server", url, "--token-file", "token"]).ok();

    for (i, device) in ["d1", "d2", "d3"].into_iter().enumerate() {
        post(
            &server,
            Some("ops-token"),
            base,
            &Report {
                device,
                outcome: "updated",
                to: "2.0.0",
                from: "1.0.0",
                at: i as u64,
            },
        );
    }
    let watch = [
        "--cohort",
        "stable",
        "--key",
        "keys/dev.key",
        "--server",
        url,
        "--token-file",
        "token",
        "--steps",
        "10,100",
        "--stability",
        "1s",
        "--interval",
        "300ms",
        "--max-rounds",
        "100",
    ];
    let out = rollout(d, "watch", &watch).ok();
    assert!(out.contains("advanced 2.0.0 from 10 % to 100 %"), "{out}");
    assert!(
        out.contains("stable: done: 2.0.0 is at 100 %, the last step"),
        "{out}"
    );
    let c = verified_cohort(d);
    assert_eq!((c.sequence, c.rollout.percent.basis_points()), (2, 10_000));

    // 3.0.0 fails on its canaries: watch rolls the cohort back to 2.0.0.
    promote(d, "3.0.0", &["--percent", "10"]).ok();
    for (i, device) in ["d1", "d2", "d3"].into_iter().enumerate() {
        post(
            &server,
            Some("ops-token"),
            base,
            &Report {
                device,
                outcome: "rolled_back",
                to: "3.0.0",
                from: "2.0.0",
                at: 100 + i as u64,
            },
        );
    }
    let run = rollout(d, "watch", &[&watch[..], &["--on-failure", "rollback"]].concat());
    assert_eq!(code(&run), Some(3), "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("ROLLED BACK")
            && run
                .stdout()
                .contains("2.0.0 is what cohort stable ran before 3.0.0"),
        "{}",
        run.stdout()
    );
    let c = verified_cohort(d);
    assert_eq!(
        (c.sequence, c.target.version.to_string(), c.allow_downgrade),
        (4, "2.0.0".into(), true)
    );
    drop(server);

    // A server without --reports-db has no fleet view, and says so.
    let plain = ReportServer::start(d, &[]);
    let err = rollout(d, "status", &["--server", &plain.url]).fails();
    assert!(err.contains("404") && err.contains("--reports-db"), "{err}");
}

/// The rollback target is what the cohort ran, not the store's next lower
/// release: 2.5.0 was published for `beta` only, so `stable`, rolling out
/// 3.0.0 over 1.0.0, goes back to 1.0.0, whether `advance` (by default)
/// or `rollout rollback` decides it. Without evidence it refuses.
#[test]
fn rollback_returns_the_cohort_to_what_it_ran_not_to_another_cohorts_release() {
    let ws = workspace();
    let d = ws.path();
    for v in ["1.0.0", "2.5.0", "3.0.0"] {
        release(d, v).ok();
    }
    promote(d, "1.0.0", &[]).ok();
    builder(
        d,
        &[
            "promote",
            "--store",
            "store",
            "--cohort",
            "beta",
            "--version",
            "2.5.0",
            "--key",
            "keys/dev.key",
        ],
    )
    .ok();
    promote(d, "3.0.0", &["--percent", "10"]).ok();
    let server = ReportServer::with_reports(d, &["--reports-open"]);
    let url = server.url.as_str();
    let base = unix_now() - 600;
    let report = |device, outcome, to, from, at| Report {
        device,
        outcome,
        to,
        from,
        at,
    };
    // Without any report: refused, naming --to; nothing written.
    let err = rollout(
        d,
        "rollback",
        &["--cohort", "stable", "--key", "keys/dev.key", "--server", url],
    )
    .fails();
    assert!(
        err.contains("cannot tell which release cohort stable ran before 3.0.0")
            && err.contains("--to VERSION"),
        "{err}"
    );
    assert_eq!(verified_cohort(d).sequence, 2);

    // stable: s1..s5 run 1.0.0 (the canary did not reach them), three
    // canaries failed 3.0.0 coming from 1.0.0; beta runs 2.5.0.
    for (i, device) in ["s1", "s2", "s3", "s4", "s5"].into_iter().enumerate() {
        post(
            &server,
            None,
            base,
            &report(device, "updated", "1.0.0", "0.9.0", i as u64),
        );
    }
    for (i, device) in ["c1", "c2", "c3"].into_iter().enumerate() {
        post(
            &server,
            None,
            base,
            &report(device, "rolled_back", "3.0.0", "1.0.0", 10 + i as u64),
        );
    }
    for (i, device) in ["b1", "b2", "b3", "b4", "b5", "b6"].into_iter().enumerate() {
        post_in(
            &server,
            None,
            base,
            "beta",
            &report(device, "updated", "2.5.0", "1.0.0", i as u64),
        );
    }

    // A dry run of the default policy says rollback; the real one does it.
    let args = ["--cohort", "stable", "--key", "keys/dev.key", "--server", url];
    let dry = rollout(d, "advance", &[&args[..], &["--dry-run"]].concat()).ok();
    assert!(dry.contains("would roll back from 3.0.0"), "{dry}");
    let run = rollout(d, "advance", &args);
    assert_eq!(code(&run), Some(3), "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("ROLLED BACK")
            && run
                .stdout()
                .contains("1.0.0 is what cohort stable ran before 3.0.0")
            && run.stdout().contains("3 consecutive failures of 3.0.0"),
        "{}",
        run.stdout()
    );
    let c = verified_cohort(d);
    assert_eq!(
        (c.sequence, c.target.version.to_string(), c.allow_downgrade),
        (3, "1.0.0".into(), true)
    );

    // `rollout rollback` asks the same question the same way.
    promote(d, "3.0.0", &["--percent", "10"]).ok();
    let out = rollout(d, "rollback", &args).ok();
    assert!(
        out.contains("cohort stable -> 1.0.0 at 100 % with allow_downgrade, from 3.0.0")
            && out.contains("1.0.0 is what cohort stable ran before 3.0.0: 8 device(s)"),
        "{out}"
    );
    assert_eq!(verified_cohort(d).target.version.to_string(), "1.0.0");
    // --to needs no server.
    promote(d, "3.0.0", &["--percent", "10"]).ok();
    rollout(
        d,
        "rollback",
        &["--cohort", "stable", "--key", "keys/dev.key", "--to", "2.5.0"],
    )
    .ok();
    assert_eq!(verified_cohort(d).target.version.to_string(), "2.5.0");
}

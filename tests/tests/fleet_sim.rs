//! Fleet simulation (issue 5, "Judged by"): 200 real `updater` processes,
//! each with its own state dir, against one real `manifest-server` that
//! collects their reports, driven by the real `manifest-builder rollout`.
//!
//! - a good release goes 10 -> 25 -> 50 -> 75 -> 100 % with `rollout advance`
//!   and every device converges;
//! - a release that fails its health check on 30 % of devices is stopped at
//!   the canary step by `advance`, and `rollout rollback` brings every
//!   updated device back to the previous version;
//! - devices offline during the rollouts catch up when they return;
//! - `/v1/fleet` agrees with every device's own `status --json`.
//!
//! Devices run no app: the restart list is empty and the health check is a
//! script that fails for devices whose index ends in 0, 1 or 2 when the
//! running release is marked flaky. Deterministic: buckets depend on the
//! device id and version only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e_tests::util::{run_with_timeout, write_executable};
use e2e_tests::{bins, App, Release, Server, TestStore};

const DEVICES: usize = 200;
/// Devices `OFFLINE_FROM..DEVICES` are unreachable during the rollouts.
const OFFLINE_FROM: usize = 180;
const WORKERS: usize = 4;
const TOKEN: &str = "fleet-sim-token";

struct Sim {
    store: TestStore,
    server: Server,
    dir: tempfile::TempDir,
}

impl Sim {
    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }
    fn device_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("dev-{i:03}"))
    }
    fn device_id(i: usize) -> String {
        format!("sim-{i:03}")
    }

    fn new() -> Sim {
        let store = TestStore::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let db = dir.path().join("reports.sqlite");
        let token = dir.path().join("token");
        let server = Server::start_with(
            &store.store,
            std::slice::from_ref(&store.public_key),
            &[
                "--reports-db",
                &db.display().to_string(),
                "--report-token-file",
                &token.display().to_string(),
            ],
        );
        let health = dir.path().join("health.sh");
        write_executable(
            &health,
            "#!/bin/sh\n# $1 state dir, $2 device index: the flaky release fails on indexes ending in 0-2.\n\
             if grep -q flaky \"$1/current/config/settings.conf\" 2>/dev/null && [ $(($2 % 10)) -lt 3 ]; then exit 1; fi\nexit 0\n",
        );
        let sim = Sim { store, server, dir };
        for i in 0..DEVICES {
            std::fs::create_dir_all(sim.device_dir(i).join("keys")).unwrap();
            std::fs::copy(&sim.store.public_key, sim.device_dir(i).join("keys/release.pub")).unwrap();
            sim.write_config(i, true);
        }
        sim
    }

    /// `online = false` points the device at a closed port: it runs, and
    /// finds nothing (the "offline site" of the runbooks).
    fn write_config(&self, i: usize, online: bool) {
        let d = self.device_dir(i);
        let url = if online {
            self.server.url()
        } else {
            "http://127.0.0.1:9".to_string()
        };
        let text = format!(
            r#"server = "{url}"
product = "neopro"
cohort = "stable"
compatible = "{hw}"
device_id = "{id}"
keys_dir = "{keys}"
state_dir = "{state}"

[restart]
units = []

[health]
grace = "0s"
interval = "50ms"
# Two passes take ~100 ms; the window is wide so that 200 updaters on two
# loaded cores never miss it with a healthy release (a 1 s window did).
window = "3s"
required_passes = 2
commands = [["/bin/sh", "{health}", "{state}", "{i}"]]

[network]
connect_timeout = "1s"
stall_timeout = "5s"
retries = 0

[report]
url = "{url}/v1/reports"
token_file = "{token}"
"#,
            hw = e2e_tests::store::HARDWARE,
            id = Sim::device_id(i),
            keys = d.join("keys").display(),
            state = d.join("state").display(),
            health = self.dir.path().join("health.sh").display(),
            token = self.token_file().display(),
        );
        std::fs::write(d.join("updater.toml"), text).unwrap();
    }

    fn updater(&self, i: usize, args: &[&str]) -> e2e_tests::Run {
        let d = self.device_dir(i);
        let mut cmd = Command::new(bins::updater());
        cmd.arg("--config").arg(d.join("updater.toml")).args(args);
        run_with_timeout(cmd, &d, Duration::from_secs(120))
    }

    /// One `updater check` on each of `devices`, `WORKERS` at a time.
    fn round(&self, devices: &[usize]) -> BTreeMap<usize, i32> {
        let next = AtomicUsize::new(0);
        let results = std::sync::Mutex::new(BTreeMap::new());
        std::thread::scope(|s| {
            for _ in 0..WORKERS {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = devices.get(k) else { break };
                    let run = self.updater(i, &["check"]);
                    let code = run.code.unwrap_or_else(|| panic!("device {i}: {}", run.output()));
                    results.lock().unwrap().insert(i, code);
                });
            }
        });
        results.into_inner().unwrap()
    }

    fn status(&self, i: usize) -> serde_json::Value {
        let run = self.updater(i, &["status", "--json"]);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("device {i} status: {e}: {}", run.output()))
    }

    fn builder(&self, args: &[&str]) -> e2e_tests::Run {
        self.store.builder(args)
    }

    fn rollout(&self, verb: &str, extra: &[&str]) -> e2e_tests::Run {
        let store = self.store.store.display().to_string();
        let key = self.store.key.display().to_string();
        let url = self.server.url();
        let token = self.token_file().display().to_string();
        let mut args = vec![
            "rollout", verb, "--store", &store, "--cohort", "stable", "--key", &key,
        ];
        if verb == "rollback" {
            // The release to go back to is what the cohort ran before, as
            // its devices report it.
            args.extend(["--server", &url, "--token-file", &token]);
        }
        if verb == "advance" {
            args.extend([
                "--server",
                &url,
                "--token-file",
                &token,
                "--stability",
                "1s",
                "--min-reports",
                "3",
            ]);
        }
        args.extend_from_slice(extra);
        self.builder(&args)
    }

    fn cohort(&self) -> manifest::CohortManifest {
        manifest::CohortManifest::parse(&std::fs::read(self.store.cohort_file("stable")).unwrap()).unwrap()
    }

    fn fleet(&self) -> serde_json::Value {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}/v1/fleet", self.server.url()))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        serde_json::from_slice(&resp.bytes().unwrap()).unwrap()
    }

    fn wait_cohort(&self) {
        self.server.wait_serving("cohorts/stable.json");
    }
}

fn codes_summary(codes: &BTreeMap<usize, i32>) -> BTreeMap<i32, usize> {
    let mut out = BTreeMap::new();
    for c in codes.values() {
        *out.entry(*c).or_default() += 1;
    }
    out
}

#[test]
fn two_hundred_devices_through_a_canary_rollout_a_halt_and_a_rollback() {
    let sim = Sim::new();
    let all: Vec<usize> = (0..DEVICES).collect();
    let online: Vec<usize> = (0..OFFLINE_FROM).collect();
    let offline: Vec<usize> = (OFFLINE_FROM..DEVICES).collect();
    sim.store.publish("1.0.0", App::Good);
    sim.store.publish("2.0.0", App::Good);
    sim.store
        .publish_release(&Release::new("3.0.0", App::Good).config("flaky\n"));

    // Everyone starts on 1.0.0.
    sim.store.promote_ok("stable", "1.0.0");
    sim.wait_cohort();
    let codes = sim.round(&all);
    assert_eq!(
        codes_summary(&codes),
        BTreeMap::from([(10, DEVICES)]),
        "{codes:?}"
    );

    // Some sites go offline for the whole rollout.
    for &i in &offline {
        sim.write_config(i, false);
    }

    // 2.0.0: 10 -> 25 -> 50 -> 75 -> 100 with `rollout advance`.
    let run = sim.store.promote("stable", "2.0.0", Some("10"), &[]);
    assert_eq!(run.code, Some(0), "{}", run.output());
    sim.wait_cohort();
    let mut percents = vec![sim.cohort().rollout.percent.to_string()];
    for _ in 0..10 {
        let codes = sim.round(&online);
        assert!(
            codes.values().all(|c| matches!(c, 0 | 10)),
            "{:?}",
            codes_summary(&codes)
        );
        let offline_codes = sim.round(&offline);
        assert!(offline_codes.values().all(|&c| c == 13), "{offline_codes:?}");
        std::thread::sleep(Duration::from_millis(1100)); // the stability period
        let run = sim.rollout("advance", &[]);
        assert_eq!(run.code, Some(0), "advance: {}", run.output());
        sim.wait_cohort();
        let percent = sim.cohort().rollout.percent.to_string();
        if percents.last() != Some(&percent) {
            percents.push(percent);
        }
        let on_target = online
            .iter()
            .filter(|&&i| sim.status(i)["active_version"] == "2.0.0")
            .count();
        if percents.last().map(String::as_str) == Some("100") && on_target == online.len() {
            break;
        }
    }
    assert_eq!(percents, ["10", "25", "50", "75", "100"]);
    for &i in &online {
        assert_eq!(sim.status(i)["active_version"], "2.0.0", "device {i}");
    }

    // 3.0.0 fails on 30 % of devices: advance stops it at the canary step.
    let run = sim.store.promote("stable", "3.0.0", Some("10"), &[]);
    assert_eq!(run.code, Some(0), "{}", run.output());
    sim.wait_cohort();
    let codes = sim.round(&online);
    let summary = codes_summary(&codes);
    let rolled_back = summary.get(&11).copied().unwrap_or(0);
    let updated = summary.get(&10).copied().unwrap_or(0);
    assert!(
        rolled_back >= 1 && updated >= 1,
        "expected both outcomes at the canary step: {summary:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    // `--on-failure halt`: the default (rollback) would go back by itself;
    // this run halts, then rolls back by hand with `rollout rollback`.
    let run = sim.rollout("advance", &["--on-failure", "halt"]);
    assert_eq!(
        run.code,
        Some(3),
        "advance must refuse a failing canary: {}",
        run.output()
    );
    assert!(
        run.stdout
            .contains("stable: HALTED 3.0.0 at 0 %: no new installs")
            && (run.stdout.contains("consecutive failures of 3.0.0")
                || run.stdout.contains("below the 95 % threshold")),
        "the reason is printed: {}",
        run.output()
    );
    assert_eq!(sim.cohort().target.version.to_string(), "3.0.0");
    assert_eq!(
        sim.cohort().rollout.percent.to_string(),
        "0",
        "halted: no new installs"
    );

    // Remote rollback to the previous version.
    let run = sim.rollout("rollback", &[]);
    assert_eq!(run.code, Some(0), "rollback: {}", run.output());
    assert!(
        run.stdout
            .contains("2.0.0 is what cohort stable ran before 3.0.0"),
        "{}",
        run.output()
    );
    sim.wait_cohort();
    let cohort = sim.cohort();
    assert_eq!(
        (cohort.target.version.to_string(), cohort.allow_downgrade),
        ("2.0.0".to_string(), true)
    );
    let codes = sim.round(&online);
    assert_eq!(
        codes.values().filter(|&&c| c == 10).count(),
        updated,
        "every updated device went back: {codes:?}"
    );
    for &i in &online {
        assert_eq!(sim.status(i)["active_version"], "2.0.0", "device {i}");
    }

    // The offline sites come back and go straight to the current target.
    for &i in &offline {
        sim.write_config(i, true);
    }
    let codes = sim.round(&offline);
    assert!(codes.values().all(|&c| c == 10), "{codes:?}");

    // One more quiet round so every device's latest report is "up to date".
    sim.round(&all);
    let fleet = sim.fleet();
    let devices: BTreeMap<String, serde_json::Value> = fleet["devices"]
        .as_array()
        .expect("devices list")
        .iter()
        .map(|d| (d["device_id"].as_str().unwrap().to_string(), d.clone()))
        .collect();
    assert_eq!(devices.len(), DEVICES);
    for &i in &all {
        let status = sim.status(i);
        let seen = &devices[&Sim::device_id(i)];
        assert_eq!(
            (&seen["running_version"], &seen["cohort"], &seen["last_outcome"]),
            (
                &status["active_version"],
                &status["cohort"],
                &status["last_check"]["outcome"]
            ),
            "device {i}: fleet {seen} vs status {status}"
        );
    }
    let stable = fleet["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cohort"] == "stable")
        .unwrap()
        .clone();
    assert_eq!(stable["versions"]["2.0.0"], DEVICES as u64, "{stable:#}");
}

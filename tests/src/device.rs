//! A device in a temp directory: `updater.toml` written per docs/UPDATER.md,
//! a trusted-keys directory, the state dir, and the app's supervisor.
//!
//! systemd is not PID 1 here, so the updater restarts "units" through its
//! configurable `restart.command` (DESIGN: What "done" means here). That
//! command is `restart-app`, a sh script written next to the config: it stops
//! the running sample app (pid file), then starts `<state>/current/app/bin/start`
//! detached (`setsid nohup … &`, output to a log file) so the updater does not
//! wait on it, and exits 0. The app then answers `/health` on the device's
//! `APP_PORT`, which is what the updater's `[health] http` check polls.
//!
//! `check` runs the real `updater` binary with a timeout; `status_json`
//! parses `updater status --json`; `active_slot_digest` hashes what `current`
//! points at, to assert "the active slot is byte-identical".

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins;
use crate::util::{free_port, run_with_timeout, tree_digest, wait_for, write_executable, Run};

/// How long one `updater` run may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The transitions `UPDATER_TEST_FAILPOINT` can crash at (docs/UPDATER.md).
pub const PHASES: [&str; 6] = [
    "downloading",
    "staged",
    "switching",
    "trial",
    "rolling_back",
    "committed",
];

/// `last_check.outcome` of a `status --json` document ("" when absent).
pub fn outcome(status: &serde_json::Value) -> String {
    status["last_check"]["outcome"].as_str().unwrap_or("").to_string()
}

/// `last_check.reason`, lowercased ("" when absent).
pub fn reason(status: &serde_json::Value) -> String {
    status["last_check"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_lowercase()
}

/// Everything that goes into `updater.toml`. Durations are the updater's
/// strings (`"200ms"`, `"5s"`).
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    pub server: String,
    pub product: String,
    pub cohort: String,
    pub compatible: String,
    pub device_id: String,
    pub threshold: usize,
    pub grace: String,
    pub interval: String,
    /// Long enough for a real process to start on a loaded 2-core machine,
    /// short enough to keep the rollback tests quick.
    pub window: String,
    pub required_passes: u32,
    pub max_trial_attempts: u32,
    pub max_trial_shutdowns: u32,
    pub windows: Vec<String>,
    pub connect_timeout: String,
    pub stall_timeout: String,
    pub retries: u32,
    pub backoff_initial: String,
    /// Raw TOML appended to the file (`[daemon]`, `[report]` sections).
    pub extra_toml: String,
    /// Pinned root keys (`root_keys_dir`, `root_threshold`): the store's
    /// keys.json then says who signs what.
    pub root_keys: Option<(PathBuf, usize)>,
    /// `[install] busy_command`; empty: none.
    pub busy_command: Vec<String>,
    /// `[install] hook_timeout`; `None`: the updater's default.
    pub hook_timeout: Option<String>,
    /// `[health] unit_command`; `None`: the updater's default (systemctl).
    pub unit_command: Option<Vec<String>>,
    /// `[health] units` and `commands` (besides the app's HTTP check).
    pub health_units: Vec<String>,
    pub health_commands: Vec<Vec<String>>,
}

impl DeviceConfig {
    pub fn new(server: &str) -> Self {
        DeviceConfig {
            server: server.into(),
            product: crate::store::PRODUCT.into(),
            cohort: "stable".into(),
            compatible: crate::store::HARDWARE.into(),
            device_id: "test-device-1".into(),
            threshold: 1,
            grace: "0s".into(),
            interval: "200ms".into(),
            window: "5s".into(),
            required_passes: 2,
            max_trial_attempts: 3,
            max_trial_shutdowns: 5,
            windows: Vec::new(),
            connect_timeout: "2s".into(),
            stall_timeout: "2s".into(),
            retries: 0,
            backoff_initial: "100ms".into(),
            extra_toml: String::new(),
            root_keys: None,
            busy_command: Vec::new(),
            hook_timeout: None,
            unit_command: None,
            health_units: Vec::new(),
            health_commands: Vec::new(),
        }
    }
}

pub struct Device {
    dir: tempfile::TempDir,
    pub cfg: DeviceConfig,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub app_port: u16,
    pid_file: PathBuf,
    restart_script: PathBuf,
}

fn q(s: &str) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::to_string(s).unwrap()
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// A TOML list of lists of strings (`commands = [["sh", "-c", "…"]]`).
fn lists(items: &[Vec<String>]) -> String {
    let inner: Vec<String> = items.iter().map(|a| list(a)).collect();
    format!("[{}]", inner.join(", "))
}

impl Device {
    /// A device trusting `keys` (copied into its keys dir), configured by `cfg`.
    pub fn new(cfg: DeviceConfig, keys: &[&Path]) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let keys_dir = root.join("keys");
        fs::create_dir_all(&keys_dir).unwrap();
        for key in keys {
            fs::copy(key, keys_dir.join(key.file_name().unwrap())).unwrap();
        }
        let state_dir = root.join("state");
        fs::create_dir_all(&state_dir).unwrap();
        let device = Device {
            cfg,
            config_path: root.join("updater.toml"),
            state_dir,
            keys_dir,
            app_port: free_port(),
            pid_file: root.join("app.pid"),
            restart_script: root.join("restart-app"),
            dir,
        };
        device.write_restart_script();
        device.write_config();
        device
    }

    /// The common case: default config against `server`, trusting one key.
    pub fn simple(server: &str, key: &Path) -> Device {
        Device::new(DeviceConfig::new(server), &[key])
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Change the config and rewrite `updater.toml`.
    pub fn reconfigure(&mut self, f: impl FnOnce(&mut DeviceConfig)) {
        f(&mut self.cfg);
        self.write_config();
    }

    pub fn write_config(&self) {
        let c = &self.cfg;
        let text = format!(
            r#"# Written by the e2e harness (tests/src/device.rs) per docs/UPDATER.md.
server = {server}
product = {product}
cohort = {cohort}
compatible = {compatible}
device_id = {device_id}
keys_dir = {keys_dir}
threshold = {threshold}
state_dir = {state_dir}
{root_keys}

[restart]
units = ["app.service"]
command = [{restart}]

[health]
grace = {grace}
interval = {interval}
window = {window}
required_passes = {passes}
max_trial_attempts = {attempts}
max_trial_shutdowns = {shutdowns}
units = {health_units}
http = [{{ url = "http://127.0.0.1:{port}/health", status = 200 }}]
commands = {health_commands}
{unit_command}

[install]
windows = {windows}
busy_command = {busy_command}
{hook_timeout}

[network]
connect_timeout = {connect}
stall_timeout = {stall}
retries = {retries}
backoff_initial = {backoff}
{extra}"#,
            root_keys = c
                .root_keys
                .as_ref()
                .map(|(dir, n)| format!(
                    "root_keys_dir = {}\nroot_threshold = {n}",
                    q(&dir.display().to_string())
                ))
                .unwrap_or_default(),
            server = q(&c.server),
            product = q(&c.product),
            cohort = q(&c.cohort),
            compatible = q(&c.compatible),
            device_id = q(&c.device_id),
            keys_dir = q(&self.keys_dir.display().to_string()),
            threshold = c.threshold,
            state_dir = q(&self.state_dir.display().to_string()),
            restart = q(&self.restart_script.display().to_string()),
            grace = q(&c.grace),
            interval = q(&c.interval),
            window = q(&c.window),
            passes = c.required_passes,
            attempts = c.max_trial_attempts,
            shutdowns = c.max_trial_shutdowns,
            port = self.app_port,
            windows = list(&c.windows),
            connect = q(&c.connect_timeout),
            stall = q(&c.stall_timeout),
            retries = c.retries,
            backoff = q(&c.backoff_initial),
            extra = c.extra_toml,
            health_units = list(&c.health_units),
            health_commands = lists(&c.health_commands),
            unit_command = c
                .unit_command
                .as_ref()
                .map(|argv| format!("unit_command = {}", list(argv)))
                .unwrap_or_default(),
            busy_command = list(&c.busy_command),
            hook_timeout = c
                .hook_timeout
                .as_ref()
                .map(|t| format!("hook_timeout = {}", q(t)))
                .unwrap_or_default(),
        );
        fs::write(&self.config_path, text).unwrap();
    }

    fn write_restart_script(&self) {
        let sq = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let text = format!(
            r#"#!/bin/sh
# The device's restart command (tests/src/device.rs): stop the sample app,
# start the one in `current` detached, exit 0. Unit names are appended.
STATE={state}
PID_FILE={pid}
echo "$(date +%T.%N) restart $*" >> {restart_log}
# A zombie (nobody reaps orphans here) counts as dead.
alive() {{ [ -r "/proc/$1/stat" ] && ! grep -q ') Z ' "/proc/$1/stat"; }}
if [ -s "$PID_FILE" ]; then
  pid=$(cat "$PID_FILE")
  if [ -n "$pid" ] && alive "$pid"; then
    kill "$pid" 2>/dev/null
    i=0
    while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    alive "$pid" && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$PID_FILE"
fi
start="$STATE/current/app/bin/start"
if [ -x "$start" ]; then
  SAMPLE_APP={app} APP_PORT={port} APP_PID_FILE="$PID_FILE" \
    setsid nohup "$start" </dev/null >>{app_log} 2>&1 &
  echo "$!" > "$PID_FILE"
fi
exit 0
"#,
            state = sq(&self.state_dir),
            pid = sq(&self.pid_file),
            restart_log = sq(&self.root().join("restart.log")),
            app = sq(&bins::sample_app()),
            port = self.app_port,
            app_log = sq(&self.root().join("app.log")),
        );
        write_executable(&self.restart_script, &text);
    }

    /// `updater --config F ARGS` with extra environment; fails the test
    /// after [`RUN_TIMEOUT`].
    pub fn updater(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.updater_via(&[], args, env)
    }

    /// Like [`updater`](Self::updater), run through a wrapper command
    /// (`["faketime", "1970-01-01 00:00:00"]`) when `wrapper` is not empty.
    pub fn updater_via(&self, wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bins::updater()),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bins::updater());
                c
            }
        };
        cmd.arg("--config").arg(&self.config_path).args(args);
        cmd.env_remove("UPDATER_TEST_FAILPOINT")
            .env_remove("UPDATER_TEST_SYNC_LOG")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = run_with_timeout(cmd, self.root(), RUN_TIMEOUT);
        eprintln!(
            "[{}] updater {} -> {} in {:?}\n{}",
            self.cfg.device_id,
            args.join(" "),
            run.describe(),
            run.elapsed,
            run.stderr.trim_end()
        );
        run
    }

    /// One convergence run: `updater check`.
    pub fn check(&self) -> Run {
        self.updater(&["check"], &[])
    }

    /// `updater check` that SIGKILLs itself right after persisting `phase`.
    pub fn check_with_failpoint(&self, phase: &str) -> Run {
        self.updater(&["check"], &[("UPDATER_TEST_FAILPOINT", phase)])
    }

    /// `updater install BUNDLE`: an offline install.
    pub fn install(&self, bundle: &Path) -> Run {
        self.updater(&["install", &bundle.display().to_string()], &[])
    }

    /// `<state>/inbox/`, where the daemon picks up bundles.
    pub fn inbox(&self) -> PathBuf {
        self.state_dir.join("inbox")
    }

    /// `updater status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let run = self.updater(&["status", "--json"], &[]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", run.stdout))
    }

    /// The status without what changes on every run (`last_check`,
    /// `time_floor`): equal before and after means "nothing changed".
    pub fn durable_status(&self) -> serde_json::Value {
        let mut s = self.status_json();
        if let Some(o) = s.as_object_mut() {
            o.remove("last_check");
            o.remove("time_floor");
        }
        s
    }

    /// `history --json` output, raw (its exact shape is the updater's).
    pub fn history(&self) -> String {
        let run = self.updater(&["history", "--json"], &[]);
        run.expect_code(0);
        run.stdout
    }

    /// How many `history --json` events have `outcome` and the version
    /// `field` (`"to"` or `"from"`) equal to `version`: an install or
    /// rollback must be recorded exactly once, whatever crashed when.
    pub fn history_count(&self, outcome: &str, field: &str, version: &str) -> usize {
        let events: Vec<serde_json::Value> = serde_json::from_str(&self.history())
            .unwrap_or_else(|e| panic!("history --json is not a JSON list ({e})"));
        events
            .iter()
            .filter(|e| e["outcome"] == outcome && e[field] == version)
            .count()
    }

    /// Where `<state>/current` points, relative to the state dir
    /// (`slots/a`), or `None` when there is no `current` yet.
    pub fn current(&self) -> Option<String> {
        let link = self.state_dir.join("current");
        let target = fs::read_link(&link).ok()?;
        let abs = if target.is_absolute() {
            target
        } else {
            self.state_dir.join(target)
        };
        let abs = abs.canonicalize().unwrap_or(abs);
        let state = self.state_dir.canonicalize().unwrap();
        Some(
            abs.strip_prefix(&state)
                .unwrap_or_else(|_| panic!("current points outside the state dir: {}", abs.display()))
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// Hash of every file in the slot `current` points at.
    pub fn active_slot_digest(&self) -> Option<BTreeMap<String, String>> {
        self.current().map(|rel| tree_digest(&self.state_dir.join(rel)))
    }

    /// Hash of the whole `slots/` tree (both slots).
    pub fn slots_digest(&self) -> BTreeMap<String, String> {
        let slots = self.state_dir.join("slots");
        if slots.exists() {
            tree_digest(&slots)
        } else {
            BTreeMap::new()
        }
    }

    /// Panic unless `current` (if present) is a complete slot: `slot.json`
    /// and the app's entry point are there.
    pub fn assert_current_complete(&self, context: &str) {
        if let Some(rel) = self.current() {
            let slot = self.state_dir.join(&rel);
            assert!(
                slot.join("slot.json").is_file(),
                "{context}: current -> {rel} has no slot.json"
            );
            assert!(
                slot.join("app/bin/start").is_file(),
                "{context}: current -> {rel} has no app/bin/start"
            );
        }
    }

    /// Content of a file inside the active slot.
    pub fn read_current(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.state_dir.join("current").join(rel)).ok()
    }

    /// GET `/version` from the running app, if it answers.
    pub fn app_version(&self) -> Option<String> {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let resp = client
            .get(format!("http://127.0.0.1:{}/version", self.app_port))
            .send()
            .ok()?;
        resp.status().is_success().then(|| resp.text().ok()).flatten()
    }

    /// Wait until the running app answers `version` (it was just restarted).
    pub fn wait_app_version(&self, version: &str) {
        let mut last = None;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                &format!("the app to answer version {version}"),
                Duration::from_secs(15),
                || {
                    last = self.app_version();
                    (last.as_deref() == Some(version)).then_some(())
                },
            )
        }));
        if found.is_err() {
            panic!(
                "the app on port {} answers {last:?}, expected {version}\n--- app.log:\n{}--- restart.log:\n{}",
                self.app_port,
                fs::read_to_string(self.root().join("app.log")).unwrap_or_default(),
                fs::read_to_string(self.root().join("restart.log")).unwrap_or_default()
            );
        }
    }

    fn app_pid(&self) -> Option<i32> {
        fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(pid) = self.app_pid() {
            // Only if that pid is still a sample app: pids get reused.
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid > 1 && String::from_utf8_lossy(&cmdline).contains("sample-app") {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

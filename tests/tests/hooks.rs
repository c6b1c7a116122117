//! The programs the updater runs on the device around a switch, end to end
//! (docs/UPDATER.md, `[install]` and `[health]`): the busy command that
//! defers a switch, the release's `post_stage` hook and its timeout (which
//! must kill what the hook started, not just the hook), and the health
//! checks besides HTTP: device `commands`, units through `unit_command`, the
//! release's own checks, and N consecutive passes within the window. Real
//! `manifest-builder`, `manifest-server`, `updater` and sample-app processes.

use std::fs;
use std::path::Path;
use std::time::Duration;

use e2e_tests::device::reason;
use e2e_tests::util::write_executable;
use e2e_tests::{outcome, App, Device, Fleet, Release};

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Single-quoted for sh.
fn sq(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Live processes whose command line contains `marker`, as "pid: cmdline".
/// A zombie's command line is empty: dead, merely not reaped (nobody reaps
/// orphans in a container without an init).
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!("{name}: {}", cmdline.trim_end()));
        }
    }
    found
}

/// Kills what is left of `marker`'s processes when the test ends, passed or
/// failed, so a broken updater does not leave 5-minute sleeps behind.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for p in processes_with(&self.0) {
            if let Some(Ok(pid)) = p.split(':').next().map(str::parse::<i32>) {
                // SAFETY: kill(2) has no memory-safety preconditions; the
                // marker is unique to this test process.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// 1.0.0 published and installed on `device`; returns its slot.
fn install_v1(fleet: &Fleet, device: &Device) -> String {
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    device.current().expect("current exists after an install")
}

/// 2.0.0 was rolled back: the device is on v1's slot, the app answers
/// 1.0.0, and 2.0.0 is blocked for a reason containing `why`. Returns the
/// status for further checks.
fn assert_rolled_back(device: &Device, slot_v1: &str, why: &str) -> serde_json::Value {
    assert_eq!(device.current().as_deref(), Some(slot_v1));
    device.wait_app_version("1.0.0");
    let status = device.status_json();
    assert_eq!(outcome(&status), "rolled_back", "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    let blocked = status["blocked"]["2.0.0"].as_str().unwrap_or_default();
    assert!(blocked.contains(why), "blocked for {why:?}? {status:#}");
    status
}

#[test]
fn a_busy_device_gets_the_release_staged_and_switched_once_it_is_free() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", App::Good);
    let scripts = tempfile::tempdir().unwrap();
    let free = scripts.path().join("match-over");
    let calls = scripts.path().join("busy.log");
    // Exit 0 = busy (a match is on), as docs/UPDATER.md says.
    let busy = format!("echo called >> {}; [ ! -e {} ]", sq(&calls), sq(&free));
    let device = fleet.device_with(|c| c.busy_command = sh(&busy));

    fs::write(&free, "").unwrap();
    let slot_v1 = install_v1(&fleet, &device);
    assert_eq!(
        lines(&calls).len(),
        1,
        "the busy command is asked before a switch"
    );

    // A match starts; 2.0.0 is promoted: downloaded and staged, not switched.
    fs::remove_file(&free).unwrap();
    fleet.promote("stable", "2.0.0");
    fleet.proxy.clear_log();
    device.check().expect_code(12);
    assert_eq!(
        fleet.artifact_requests().len(),
        2,
        "app and config of 2.0.0 downloaded"
    );
    assert_eq!(
        device.current().as_deref(),
        Some(slot_v1.as_str()),
        "not switched"
    );
    device.wait_app_version("1.0.0");
    let status = device.status_json();
    assert_eq!(outcome(&status), "deferred", "{status:#}");
    assert!(
        reason(&status).contains("busy"),
        "the reason says why: {status:#}"
    );
    assert_eq!(status["last_check"]["version"], "2.0.0", "{status:#}");
    assert_eq!(status["phase"], "staged", "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert_eq!(status["staged"]["version"], "2.0.0", "{status:#}");
    assert_ne!(status["staged"]["slot"], status["active_slot"], "{status:#}");

    // Still busy at the next run: deferred again, nothing downloaded again.
    fleet.proxy.clear_log();
    device.check().expect_code(12);
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new());
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));

    // The match is over: the next run switches to what is staged.
    fs::write(&free, "").unwrap();
    fleet.proxy.clear_log();
    device.check().expect_code(10);
    assert_eq!(
        fleet.artifact_requests(),
        Vec::<String>::new(),
        "no second download"
    );
    device.wait_app_version("2.0.0");
    assert_ne!(device.current().as_deref(), Some(slot_v1.as_str()));
    let status = device.status_json();
    assert_eq!(outcome(&status), "updated", "{status:#}");
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert!(status["staged"].is_null(), "{status:#}");
    assert_eq!(lines(&calls).len(), 4, "asked once per run that could switch");
}

#[test]
fn a_post_stage_hook_runs_once_per_staging_inside_the_staged_slot() {
    let fleet = Fleet::new();
    let scripts = tempfile::tempdir().unwrap();
    let hook_log = scripts.path().join("hook.log");
    let free = scripts.path().join("free");
    // The hook sees the staged slot (cwd and $UPDATER_SLOT) complete, and
    // what it writes there is part of the release that runs.
    let hook = format!(
        r#"#!/bin/sh
set -e
test -x app/bin/start
test -f config/settings.conf
echo "$UPDATER_VERSION $UPDATER_SLOT $(pwd -P)" >> {log}
echo "generated-by-hook=$UPDATER_VERSION" > "$UPDATER_SLOT/config/generated.conf"
"#,
        log = sq(&hook_log)
    );
    fleet.publish_v1_and(&Release::new("2.0.0", App::Good).post_stage(&hook));
    let busy = format!("[ ! -e {} ]", sq(&free));
    let device = fleet.device_with(|c| c.busy_command = sh(&busy));
    fs::write(&free, "").unwrap();
    install_v1(&fleet, &device);
    assert_eq!(lines(&hook_log), Vec::<String>::new(), "1.0.0 has no hook");

    // Staged while busy (the hook runs at staging), switched later: the
    // hook ran once, in the slot that then became `current`.
    fs::remove_file(&free).unwrap();
    fleet.promote("stable", "2.0.0");
    device.check().expect_code(12);
    assert_eq!(lines(&hook_log).len(), 1, "the hook ran at staging");
    fs::write(&free, "").unwrap();
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    device.check().expect_code(0);

    let slot = device.state_dir.join(device.current().unwrap());
    assert_eq!(
        lines(&hook_log),
        vec![format!(
            "2.0.0 {} {}",
            slot.display(),
            slot.canonicalize().unwrap().display()
        )],
        "once per staging, in the staged slot"
    );
    assert_eq!(
        device.read_current("config/generated.conf").as_deref(),
        Some("generated-by-hook=2.0.0\n")
    );
    assert_eq!(device.status_json()["active_version"], "2.0.0");
}

#[test]
fn a_post_stage_hook_past_its_timeout_is_killed_with_what_it_started() {
    let fleet = Fleet::new();
    // `sleep 300.<pid><n>`: unique to this test; sleep takes fractions.
    let marker = format!("300.{}41", std::process::id());
    let _reaper = Reaper(marker.clone());
    let hook = format!("#!/bin/sh\nsleep {marker} &\nsh -c 'sleep {marker}' &\nsleep {marker}\n");
    fleet.publish_v1_and(&Release::new("2.0.0", App::Good).post_stage(&hook));
    let device = fleet.device_with(|c| c.hook_timeout = Some("1s".into()));
    let slot_v1 = install_v1(&fleet, &device);
    let digest_v1 = device.active_slot_digest().unwrap();

    fleet.promote("stable", "2.0.0");
    let run = device.check();
    run.expect_code(1);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    // SIGKILL is sent to the whole group before the updater goes on; dying
    // takes the kernel a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !processes_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new(), "left running");

    let status = device.status_json();
    assert_eq!(outcome(&status), "failed", "{status:#}");
    assert_eq!(status["last_check"]["version"], "2.0.0", "{status:#}");
    let why = reason(&status);
    assert!(
        why.contains("post_stage hook app/bin/post-stage"),
        "names the hook: {why}"
    );
    assert!(
        why.contains("install.hook_timeout (1s)"),
        "names the timeout: {why}"
    );
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert!(status["staged"].is_null(), "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));
    assert_eq!(
        device.active_slot_digest().unwrap(),
        digest_v1,
        "active slot untouched"
    );
    device.wait_app_version("1.0.0");
}

/// `updater config check` names a system program the config points at
/// that does not exist, by its key; the device's normal config passes.
#[test]
fn config_check_names_a_missing_busy_command() {
    let fleet = Fleet::new();
    let device = fleet.device();
    device.updater(&["config", "check"], &[]).expect_code(0);
    let broken = fleet.device_with(|c| c.busy_command = vec!["/nonexistent/match-in-progress".into()]);
    let run = broken.updater(&["config", "check"], &[]);
    run.expect_code(2);
    assert!(
        run.output()
            .contains("install.busy_command: /nonexistent/match-in-progress"),
        "{}",
        run.output()
    );
}

/// A shutdown (SIGTERM) while a long `post_stage` hook runs: the run stops
/// at once with exit 16, the hook and what it started are killed with it,
/// instead of the signal waiting out `hook_timeout` (here 5 min) and the
/// service manager's SIGKILL.
#[test]
fn a_shutdown_during_a_post_stage_hook_stops_the_run_and_the_hook() {
    let fleet = Fleet::new();
    let marker = format!("300.{}57", std::process::id());
    let _reaper = Reaper(marker.clone());
    let hook = format!("#!/bin/sh\nsleep {marker} &\nsleep {marker}\n");
    fleet.publish_v1_and(&Release::new("2.0.0", App::Good).post_stage(&hook));
    let device = fleet.device_with(|c| c.hook_timeout = Some("5m".into()));
    let slot_v1 = install_v1(&fleet, &device);

    fleet.promote("stable", "2.0.0");
    let started = std::time::Instant::now();
    let status = device.check_terminated_when("the post_stage hook", |_| processes_with(&marker).len() == 2);
    assert_eq!(status.code(), Some(16), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run waited for the hook: {:?}",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !processes_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new(), "left running");
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));
    device.wait_app_version("1.0.0");
}

/// A hook that always fails is not retried forever (each retry downloads
/// and stages the whole release again): after `MAX_HOOK_FAILURES` (3) runs
/// in a row the version is blocked, and the next poll downloads nothing.
#[test]
fn a_post_stage_hook_that_keeps_failing_is_blocked_after_three_runs() {
    let fleet = Fleet::new();
    let hook = "#!/bin/sh\necho 'no room for the cache' >&2\nexit 3\n";
    fleet.publish_v1_and(&Release::new("2.0.0", App::Good).post_stage(hook));
    let device = fleet.device();
    let slot_v1 = install_v1(&fleet, &device);

    fleet.promote("stable", "2.0.0");
    for run in 1..=3 {
        device.check().expect_code(1);
        let status = device.status_json();
        let blocked = status["blocked"].get("2.0.0").is_some();
        assert_eq!(blocked, run == 3, "run {run}: {status:#}");
        assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    }
    let status = device.status_json();
    assert!(
        reason(&status).contains("now blocked on this device"),
        "{status:#}"
    );
    assert!(
        status["blocked"]["2.0.0"]
            .as_str()
            .is_some_and(|r| r.contains("post_stage hook failed 3 runs in a row")),
        "{status:#}"
    );
    fleet.proxy.clear_log();
    device.check().expect_code(0);
    assert_eq!(outcome(&device.status_json()), "blocked");
    assert_eq!(fleet.artifact_requests(), Vec::<String>::new());
    assert_eq!(device.current().as_deref(), Some(slot_v1.as_str()));
    device.wait_app_version("1.0.0");
}

/// A device `commands` check: it runs in the slot on trial, so a release
/// whose app answers HTTP fine but fails the device's own self-test is
/// rolled back and blocked.
#[test]
fn a_failing_command_check_rolls_back_and_blocks() {
    let fleet = Fleet::new();
    fleet
        .store
        .publish_release(&Release::new("1.0.0", App::Good).config("selftest=pass\n"));
    fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).config("selftest=fail\n"));
    let selftest = "grep -qx selftest=pass config/settings.conf";
    let device = fleet.device_with(|c| c.health_commands = vec![sh(selftest)]);
    let slot_v1 = install_v1(&fleet, &device);

    fleet.promote("stable", "2.0.0");
    device.check().expect_code(11);
    let status = assert_rolled_back(
        &device,
        &slot_v1,
        &format!("check `sh -c {selftest}` exited with status 1"),
    );
    assert!(
        !reason(&status).contains("warning"),
        "1.0.0 passes again: {status:#}"
    );
    device.check().expect_code(0);
    assert_eq!(outcome(&device.status_json()), "blocked");
}

/// Units are checked through `unit_command` with the unit name appended (a
/// script standing in for `systemctl is-active --quiet`): active for 1.0.0,
/// failed for 2.0.0 (what the release's config says, so the rollback's own
/// checks pass).
#[test]
fn the_unit_check_goes_through_unit_command() {
    let fleet = Fleet::new();
    fleet
        .store
        .publish_release(&Release::new("1.0.0", App::Good).config("app.service=active\n"));
    fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).config("app.service=failed\n"));
    let scripts = tempfile::tempdir().unwrap();
    let is_active = scripts.path().join("is-active");
    let calls = scripts.path().join("is-active.log");
    let device = fleet.device_with(|c| {
        c.unit_command = Some(vec![is_active.display().to_string(), "--quiet".into()]);
        c.health_units = vec!["app.service".into()];
    });
    write_executable(
        &is_active,
        &format!(
            "#!/bin/sh\n# is-active --quiet UNIT\necho \"$*\" >> {calls}\ngrep -qx \"$2=active\" {state}/current/config/settings.conf\n",
            calls = sq(&calls),
            state = sq(&device.state_dir)
        ),
    );
    let slot_v1 = install_v1(&fleet, &device);
    assert!(
        lines(&calls).iter().all(|l| l == "--quiet app.service") && lines(&calls).len() >= 2,
        "asked with the unit appended, once per round: {:?}",
        lines(&calls)
    );

    fleet.promote("stable", "2.0.0");
    device.check().expect_code(11);
    let status = assert_rolled_back(&device, &slot_v1, "unit app.service is not active");
    assert!(
        !reason(&status).contains("warning"),
        "1.0.0 passes again: {status:#}"
    );
}

/// The release's own checks, published with it (`manifest-builder release
/// --health`), are judged on top of the device's: 2.0.0's app answers HTTP
/// like a healthy one, but its own self-test fails.
#[test]
fn a_release_whose_own_check_fails_is_rolled_back() {
    let fleet = Fleet::new();
    let own = |code: u8| {
        format!(
            r#"{{"checks": [{{"type": "command", "argv": ["sh", "-c", "exit {code}"], "timeout_secs": 5}}]}}"#
        )
    };
    fleet
        .store
        .publish_release(&Release::new("1.0.0", App::Good).health(&own(0)));
    let v2 = fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).health(&own(7)));
    assert_eq!(
        v2.health.as_ref().map(|h| h.checks.len()),
        Some(1),
        "published with the release"
    );
    let device = fleet.device();
    let slot_v1 = install_v1(&fleet, &device);

    fleet.promote("stable", "2.0.0");
    device.check().expect_code(11);
    let status = assert_rolled_back(&device, &slot_v1, "check `sh -c exit 7` exited with status 7");
    assert!(
        !reason(&status).contains("warning"),
        "1.0.0's own check passes: {status:#}"
    );
}

/// A check that flaps (pass, fail, pass, …) passes often, but never
/// `required_passes` (2) times in a row: rolled back when the window closes.
#[test]
fn a_flapping_check_never_reaches_n_passes_in_a_row() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).config("flap\n"));
    let scripts = tempfile::tempdir().unwrap();
    let rounds = scripts.path().join("rounds");
    // Steady for releases without `flap` in their config; for 2.0.0 it
    // passes on even rounds only.
    let flap = format!(
        "grep -qx flap config/settings.conf || exit 0
         n=$(cat {r} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {r}
         [ $((n % 2)) -eq 0 ]",
        r = sq(&rounds)
    );
    let device = fleet.device_with(|c| {
        c.health_commands = vec![sh(&flap)];
        c.window = "2s".into();
        c.required_passes = 2;
    });
    let slot_v1 = install_v1(&fleet, &device);

    fleet.promote("stable", "2.0.0");
    let run = device.check();
    run.expect_code(11);
    let n: u32 = fs::read_to_string(&rounds).unwrap().trim().parse().unwrap();
    assert!(
        n >= 4,
        "checked through the window, passing half the time: {n} rounds"
    );
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);
    assert_rolled_back(&device, &slot_v1, "did not pass 2 times in a row within 2s");
}

/// A device that reaches its store through a proxy (`HTTP_PROXY` in the
/// updater's environment) still checks its own app directly: a health check
/// of `http://127.0.0.1/…` sent to the proxy fails every release.
#[test]
fn a_proxy_for_the_store_does_not_carry_the_health_checks() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    // The store by name, exempt from the proxy; the app's check by address.
    let server = fleet.proxy.url().replace("127.0.0.1", "localhost");
    let device = fleet.device_with(|c| c.server = server);
    let dead = format!("http://127.0.0.1:{}", e2e_tests::util::free_port());
    fleet.promote("stable", "1.0.0");
    let env = [
        ("HTTP_PROXY", dead.as_str()),
        ("http_proxy", dead.as_str()),
        ("NO_PROXY", "localhost"),
        ("no_proxy", "localhost"),
    ];
    device.updater(&["check"], &env).expect_code(10);
    device.wait_app_version("1.0.0");
}

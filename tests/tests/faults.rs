//! The fault suite of issue #6.
//!
//! 1. SIGKILL before every durable sync: a good run v1 -> v2 is recorded once
//!    with `UPDATER_TEST_SYNC_LOG` to learn its sync points; then, for every
//!    N, a fresh device on v1 runs `check` with `UPDATER_TEST_FAILPOINT=sync:N`
//!    (killed immediately before its N-th fsync), then plain `check`s until
//!    it settles. It must end on a complete, working slot: v2 committed for
//!    a healthy v2 (one crash uses one trial attempt of three, so a healthy
//!    release is never rolled back by it), v1 with v2 blocked for a broken v2
//!    (its health check fails on every attempt). Good: every N twice; broken:
//!    every N once. docs/SECURITY.md, "Crash points (fsync)", lists the points.
//! 2. Disk full (ENOSPC) during the download and during the unpack, on a
//!    tmpfs state dir, after the free-space check passed.
//! 3. manifest-server killed mid-download and restarted on the same port: the
//!    same run retries and resumes with a Range request (206).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e_tests::device::reason;
use e2e_tests::faults::{read_sync_log, Tmpfs};
use e2e_tests::{wait_for, App, Device, Fault, Fleet, Release, Rule};

/// Workers per sweep; the good and the broken sweeps run at the same time
/// (two tests), so up to twice this many devices run on the 2 cores. Most
/// of a run is waiting on health checks, not CPU.
const WORKERS: usize = 4;

/// A store with 1.0.0 (good) as the target of cohort `base` and 2.0.0
/// (`second`) as the target of cohort `stable`.
fn sweep_fleet(second: App) -> Fleet {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet.store.publish("2.0.0", second);
    fleet.promote("base", "1.0.0");
    fleet.promote("stable", "2.0.0");
    fleet
}

/// A fresh device that installed 1.0.0 from cohort `base` and now follows
/// `stable` (target 2.0.0); returns it with v1's slot.
fn device_on_v1(fleet: &Fleet, id: &str) -> (Device, String) {
    let mut device = fleet.device_with(|c| {
        c.cohort = "base".into();
        c.device_id = id.into();
    });
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    device.reconfigure(|c| c.cohort = "stable".into());
    let slot = device.current().expect("v1 is installed");
    (device, slot)
}

/// The sync points of one uninterrupted upgrade run.
fn learn_sync_points(fleet: &Fleet, second: App) -> Vec<String> {
    let (device, _) = device_on_v1(fleet, "learner");
    let log = device.root().join("syncs.log");
    let run = device.check_logging_syncs(&log, None);
    run.expect_code(if second == App::Good { 10 } else { 11 });
    let labels = read_sync_log(&log);
    eprintln!("sync points of the {second:?} upgrade:\n{}", labels.join("\n"));
    labels
}

/// Kill the upgrade before sync point `n`, recover, check the end state.
fn killed_before_sync(fleet: &Fleet, second: App, labels: &[String], n: usize, id: &str) {
    let what = format!("sync:{n} ({})", labels[n - 1]);
    let (device, slot_v1) = device_on_v1(fleet, id);
    let v1_digest = device.active_slot_digest();
    let log = device.root().join("syncs.log");
    device.check_logging_syncs(&log, Some(n)).expect_killed(&what);
    // The run reached exactly the sync point we meant: the points are the
    // same in every run, and the kill was before the N-th.
    let seen = read_sync_log(&log);
    assert_eq!(seen, labels[..n], "{what}: the killed run's sync points");
    device.assert_current_complete(&format!("right after a kill at {what}"));

    // Plain runs until one has nothing left to do (exit 0): the first one
    // finishes the upgrade (10) or the rollback (11), unless the kill came
    // after the verdict was persisted; the next one must then be idle.
    let converging = if second == App::Good { 10 } else { 11 };
    let run = device.check();
    match run.code {
        Some(0) => {}
        Some(c) if c == converging => {
            let again = device.check();
            assert_eq!(again.code, Some(0), "{what}: not settled\n{}", again.output());
        }
        _ => panic!(
            "{what}: the recovery run exited {}, expected {converging} or 0\n{}",
            run.describe(),
            run.output()
        ),
    }
    device.assert_current_complete(&format!("after recovering from {what}"));
    let status = device.status_json();
    assert_eq!(status["phase"], "idle", "{what}: {status:#}");
    let temps = device.temp_files();
    assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
    // The verdict is in the history exactly once, even when the kill came
    // between the state write that recorded it and the history append.
    let (outcome, field) = if second == App::Good {
        ("updated", "to")
    } else {
        ("rolled_back", "from")
    };
    assert_eq!(
        device.history_count(outcome, field, "2.0.0"),
        1,
        "{what}: history:\n{}",
        device.history()
    );
    if second == App::Good {
        assert_eq!(status["active_version"], "2.0.0", "{what}: {status:#}");
        assert!(status["blocked"].get("2.0.0").is_none(), "{what}: {status:#}");
        assert_ne!(device.current(), Some(slot_v1), "{what}: still on v1's slot");
        device.wait_app_version("2.0.0");
    } else {
        assert_eq!(status["active_version"], "1.0.0", "{what}: {status:#}");
        assert!(status["blocked"].get("2.0.0").is_some(), "{what}: {status:#}");
        assert_eq!(device.current(), Some(slot_v1), "{what}: not back on v1's slot");
        assert_eq!(
            device.active_slot_digest(),
            v1_digest,
            "{what}: v1's slot changed"
        );
        device.wait_app_version("1.0.0");
    }
}

/// Every sync point of an upgrade to a `second` v2, `repeat` times each,
/// on `WORKERS` threads; all failures are reported together.
fn sweep(second: App, repeat: usize) {
    let started = Instant::now();
    let fleet = sweep_fleet(second);
    let labels = learn_sync_points(&fleet, second);
    assert!(labels.len() >= 5, "only {} sync points: {labels:?}", labels.len());
    for want in ["write_atomic state.json", "flip_symlink current (dir)"] {
        assert!(
            labels.iter().any(|l| l == want),
            "no sync point {want:?} in {labels:?}"
        );
    }
    let jobs: Vec<(usize, usize)> = (1..=labels.len())
        .flat_map(|n| (0..repeat).map(move |r| (n, r)))
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let Some(&(n, r)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let id = format!("{second:?}-sync{n}-{r}").to_lowercase();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    killed_before_sync(&fleet, second, &labels, n, &id)
                }));
                if let Err(panic) = result {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("sync:{n} ({}) #{r}: {msg}", labels[n - 1]));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{second:?} sweep: {} sync points x {repeat} in {:?}",
        labels.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} kills did not recover:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n")
    );
}

#[test]
fn a_good_upgrade_killed_before_any_fsync_ends_committed_on_v2() {
    sweep(App::Good, 2);
}

#[test]
fn a_broken_upgrade_killed_before_any_fsync_ends_rolled_back_on_v1() {
    sweep(App::Broken, 1);
}

/// A device whose state dir is a fresh `bytes`-sized tmpfs, running 1.0.0,
/// with `v2` published and promoted; also returns where `current` points and
/// the active slot's digest. `None` when tmpfs cannot be mounted (skipped,
/// see [`Tmpfs`]).
fn upgrade_on_tmpfs(
    fleet: &Fleet,
    v2: &Release,
    bytes: u64,
    f: impl FnOnce(&mut e2e_tests::DeviceConfig),
) -> Option<(Device, Tmpfs, V1)> {
    fleet.publish_v1_and(v2);
    let device = fleet.device_with(f);
    let tmpfs = Tmpfs::mount_or_skip(&device.state_dir, bytes)?;
    fleet.install_v1_then_promote_v2(&device);
    let v1 = V1 {
        current: device.current(),
        digest: device.active_slot_digest(),
    };
    Some((device, tmpfs, v1))
}

/// The running v1 as the device had it before the failed upgrade.
struct V1 {
    current: Option<String>,
    digest: Option<std::collections::BTreeMap<String, String>>,
}

/// What must hold after a run that failed for lack of space.
fn assert_failed_for_space_and_untouched(device: &Device, run: &e2e_tests::Run, v1: &V1) {
    assert_eq!(
        run.code,
        Some(1),
        "a disk-full run fails (exit 1)\n{}",
        run.output()
    );
    let status = device.status_json();
    let why = reason(&status);
    assert!(
        ["no space left", "disk full", "free space"]
            .iter()
            .any(|w| why.contains(w)),
        "the reason does not say the disk is full: {why:?}\n{status:#}"
    );
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert_eq!(status["active_version"], "1.0.0", "{status:#}");
    assert_eq!(device.current(), v1.current, "current moved");
    assert_eq!(device.active_slot_digest(), v1.digest, "the active slot changed");
    device.assert_current_complete("after a disk-full run");
    device.wait_app_version("1.0.0");
}

/// ENOSPC while the artifact is being downloaded: the download of v2's
/// videos stalls half-way, the disk is filled meanwhile (the free-space
/// check passed long before), the retry's first write fails.
#[test]
fn disk_full_during_the_download_fails_cleanly_and_the_next_run_installs() {
    let fleet = Fleet::new();
    let v2 = Release::new("2.0.0", App::Good).videos_mib(8);
    let Some((device, tmpfs, v1)) = upgrade_on_tmpfs(&fleet, &v2, 64 << 20, |c| {
        c.retries = 2;
        c.stall_timeout = "3s".into();
    }) else {
        return;
    };
    let videos = fleet.store.artifact_url_path("2.0.0", "videos");
    let size = std::fs::metadata(fleet.store.artifact("2.0.0", "videos"))
        .unwrap()
        .len();
    fleet.proxy.set_rule(
        Rule::new(Fault::StallAfter(size / 2))
            .on_prefix(videos.clone())
            .first(1),
    );

    let (run, filler) = std::thread::scope(|s| {
        let run = s.spawn(|| device.check());
        wait_for("half the videos to arrive", Duration::from_secs(30), || {
            fleet
                .gets(&videos)
                .first()
                .is_some_and(|r| r.body_bytes == size / 2)
                .then_some(())
        });
        // The check passed long ago; now take all the space. Whichever
        // write comes next fails: the unpacker's, or the retry's append to
        // the partial file (the error the run reports either way).
        let partial_dir = device.state_dir.join("downloads");
        let partials = std::fs::read_dir(&partial_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count();
        assert!(
            partials == 1,
            "the download is in progress in {}",
            partial_dir.display()
        );
        let filler = tmpfs.fill("filler");
        (run.join().unwrap(), filler)
    });
    assert!(
        run.stderr.contains("No space left"),
        "the run does not say why it failed:\n{}",
        run.output()
    );
    assert_failed_for_space_and_untouched(&device, &run, &v1);

    std::fs::remove_file(filler).unwrap();
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let installed = std::fs::read(device.state_dir.join("current/videos/intro.mp4")).unwrap();
    let source = std::fs::read(fleet.store.root().join("src/videos-8/intro.mp4")).unwrap();
    assert!(
        installed == source,
        "the installed videos differ from the released ones"
    );
}

/// ENOSPC while unpacking: 3000 two-byte files declare 6 KB unpacked, pass
/// the free-space check with room to spare, but take a 4 KiB page each on
/// the 8 MiB tmpfs (12 MiB): the download fits, the unpacked tree does not.
#[test]
fn disk_full_during_the_unpack_fails_cleanly_and_the_next_run_installs() {
    let fleet = Fleet::new();
    let v2 = Release::new("2.0.0", App::Good).tiny_files(3000);
    let Some((device, tmpfs, v1)) = upgrade_on_tmpfs(&fleet, &v2, 8 << 20, |_| {}) else {
        return;
    };
    let run = device.check();
    assert!(
        run.stderr.contains("No space left"),
        "the run does not say why it failed:\n{}",
        run.output()
    );
    assert_failed_for_space_and_untouched(&device, &run, &v1);

    tmpfs.resize(64 << 20);
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let files = std::fs::read_dir(device.state_dir.join("current/assets"))
        .unwrap()
        .count();
    assert_eq!(files, 3000);
}

/// manifest-server dies in the middle of sending the videos artifact (the
/// proxy holds the transfer half-way so the kill lands mid-response), is
/// restarted on the same port and store, and the same run, retrying with
/// backoff, resumes with `Range` and gets a 206.
#[test]
fn a_server_killed_mid_download_and_restarted_is_resumed_with_a_range_request() {
    let mut fleet = Fleet::new();
    let (device, videos, size) = fleet.upgrade_with_videos(16, |c| {
        c.retries = 8;
        c.backoff_initial = "300ms".into();
    });
    let half = size / 2;
    fleet.proxy.set_rule(
        Rule::new(Fault::StallAfter(half))
            .on_prefix(videos.clone())
            .first(1),
    );

    let run = std::thread::scope(|s| {
        let run = s.spawn(|| device.check());
        wait_for("half the videos to arrive", Duration::from_secs(30), || {
            fleet
                .gets(&videos)
                .first()
                .is_some_and(|r| r.body_bytes == half)
                .then_some(())
        });
        fleet.server.stop();
        // At least one retry finds the server down.
        wait_for(
            "a retry while the server is down",
            Duration::from_secs(30),
            || (fleet.gets(&videos).len() >= 2).then_some(()),
        );
        fleet.server.restart();
        run.join().unwrap()
    });
    run.expect_code(10);
    device.wait_app_version("2.0.0");

    let all = fleet.gets(&videos);
    assert_eq!(all[0].body_bytes, half, "{all:?}");
    assert_eq!(all[1].status, None, "the server was down: {all:?}");
    let resumed = all.last().unwrap();
    assert_eq!(
        resumed.range.as_deref(),
        Some(format!("bytes={half}-").as_str()),
        "{all:?}"
    );
    assert_eq!(resumed.status, Some(206), "{all:?}");
    assert_eq!(resumed.body_bytes, size - half, "{all:?}");
    let log = fleet.server.log();
    assert!(
        log.lines().any(|l| l.contains(&videos) && l.contains("206")),
        "no 206 for {videos} in the server's access log:\n{log}"
    );
    let installed = std::fs::read(device.state_dir.join("current/videos/intro.mp4")).unwrap();
    let source = std::fs::read(fleet.store.root().join("src/videos-16/intro.mp4")).unwrap();
    assert!(
        installed == source,
        "the installed videos differ from the released ones"
    );
    assert_eq!(device.status_json()["active_version"], "2.0.0");
}

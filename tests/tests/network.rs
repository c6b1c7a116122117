//! Downloads over a bad network and with shared content (issue 4, "Judged
//! by"): a cut connection is resumed with a Range request, and a release that
//! changes only a small component beside a big one downloads almost nothing.
//! The proxy counts the artifact bytes it forwards.

use e2e_tests::{outcome, App, Fault, Fleet, Release, Rule};

#[test]
fn a_cut_download_is_resumed_with_a_range_request() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).videos_mib(16));
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    let current = device.current();
    let digest = device.active_slot_digest();

    fleet.promote("stable", "2.0.0");
    let videos = fleet.store.artifact_url_path("2.0.0", "videos");
    let size = std::fs::metadata(fleet.store.artifact("2.0.0", "videos"))
        .unwrap()
        .len();
    let cut = size / 2;
    fleet
        .proxy
        .set_rule(Rule::new(Fault::CutAfter(cut)).on_prefix(videos.clone()).first(1));

    // First run: the connection is cut mid-artifact.
    let run = device.check();
    assert!(
        matches!(run.code, Some(13) | Some(1)),
        "a cut download fails the run (13 offline or 1), got {}\n{}",
        run.describe(),
        run.output()
    );
    assert_eq!(device.current(), current, "nothing switched");
    assert_eq!(
        device.active_slot_digest(),
        digest,
        "the active slot is untouched"
    );
    device.wait_app_version("1.0.0");
    let first = fleet.gets(&videos);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        first[0].body_bytes, cut,
        "the proxy cut after {cut} bytes: {first:?}"
    );

    // Second run: resumes where the partial download ended.
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let all = fleet.gets(&videos);
    assert!(all.len() >= 2, "{all:?}");
    let resumed = &all[1];
    let start: u64 = resumed
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second download did not ask for a Range: {resumed:?}"));
    assert!(
        start > 0 && start <= cut,
        "resumed at {start}, {cut} bytes had arrived"
    );
    assert_eq!(resumed.status, Some(206), "{resumed:?}");
    // The resume names the ETag the partial began with (RFC 9110 If-Range),
    // so a server whose copy changed would send it all instead.
    assert!(
        resumed.if_range.as_deref().is_some_and(|e| e.starts_with('"')),
        "the resume sent no If-Range validator: {resumed:?}"
    );
    let total: u64 = all.iter().map(|r| r.body_bytes).sum();
    let refetched = total.saturating_sub(size);
    assert!(
        refetched * 10 < size,
        "re-fetched {refetched} of {size} bytes (>= 10 %): {all:?}"
    );
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
}

/// The server's copy of an artifact changed between the cut and the resume
/// (a different ETag, and a 200 with the whole body as RFC 9110 says an
/// If-Range mismatch gets): the partial is dropped and the artifact is
/// downloaded from the start, never spliced onto bytes of another version.
#[test]
fn a_resume_against_a_changed_artifact_starts_the_download_over() {
    let fleet = Fleet::new();
    fleet.store.publish("1.0.0", App::Good);
    fleet
        .store
        .publish_release(&Release::new("2.0.0", App::Good).videos_mib(8));
    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    fleet.promote("stable", "2.0.0");
    let videos = fleet.store.artifact_url_path("2.0.0", "videos");
    let size = std::fs::metadata(fleet.store.artifact("2.0.0", "videos"))
        .unwrap()
        .len();
    fleet.proxy.set_rule(
        Rule::new(Fault::CutAfter(size / 2))
            .on_prefix(videos.clone())
            .first(1),
    );
    let run = device.check();
    assert!(matches!(run.code, Some(13) | Some(1)), "{}", run.output());

    fleet.proxy.set_rule(
        Rule::new(Fault::ChangedEtag("\"another-copy\"".into()))
            .on_prefix(videos.clone())
            .first(1),
    );
    let run = device.check();
    run.expect_code(10);
    assert!(
        run.output().contains("changed on the server"),
        "no log line says why the download started over:\n{}",
        run.output()
    );
    let gets = fleet.gets(&videos);
    assert_eq!(gets.len(), 3, "cut, changed, fresh: {gets:?}");
    assert!(gets[1].if_range.is_some(), "{gets:?}");
    assert_eq!(
        gets[2].range, None,
        "the fresh download asked for a range: {gets:?}"
    );
    assert_eq!(gets[2].body_bytes, size, "{gets:?}");
    device.wait_app_version("2.0.0");
}

#[test]
fn a_release_changing_only_config_beside_50_mib_of_videos_downloads_under_1_percent() {
    let fleet = Fleet::new();
    // Same app (label and health), same videos, different config.
    let v1 = fleet.store.publish_release(
        &Release::new("1.0.0", App::Good)
            .app_label("1.0.0")
            .config("volume=3\n")
            .videos_mib(50),
    );
    let v2 = fleet.store.publish_release(
        &Release::new("2.0.0", App::Good)
            .app_label("1.0.0")
            .config("volume=4\n")
            .videos_mib(50),
    );
    let hashes = |r: &manifest::ReleaseManifest| -> Vec<String> {
        r.components
            .iter()
            .map(|c| format!("{} {}", c.name, c.sha256))
            .collect()
    };
    let (h1, h2) = (hashes(&v1), hashes(&v2));
    assert_eq!(h1.len(), 3);
    assert_eq!(
        h1.iter().zip(&h2).filter(|(a, b)| a != b).count(),
        1,
        "only config differs: {h1:?} vs {h2:?}"
    );

    let device = fleet.device();
    fleet.promote("stable", "1.0.0");
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    assert_eq!(
        device.read_current("config/settings.conf").as_deref(),
        Some("volume=3\n")
    );

    fleet.promote("stable", "2.0.0");
    fleet.proxy.clear_log();
    device.check().expect_code(10);
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert_eq!(outcome(&status), "updated", "{status:#}");
    assert_eq!(
        device.read_current("config/settings.conf").as_deref(),
        Some("volume=4\n")
    );
    device.wait_app_version("1.0.0");

    let downloaded = fleet.proxy.body_bytes("/artifacts/");
    let release_bytes: u64 = v2.components.iter().map(|c| c.size).sum();
    assert!(
        downloaded * 100 < release_bytes,
        "downloaded {downloaded} of the release's {release_bytes} bytes (>= 1 %): {:?}",
        fleet.proxy.requests()
    );
    let videos = fleet.store.artifact_url_path("2.0.0", "videos");
    assert!(
        !fleet.proxy.requests().iter().any(|r| r.path == videos),
        "the unchanged videos artifact was requested"
    );
}

/// Beyond the list: the stall timeout ends a silent download (the
/// run fails instead of hanging), and the next run resumes it.
#[test]
fn a_stalled_download_times_out_and_is_resumed() {
    let fleet = Fleet::new();
    let (device, videos, size) = fleet.upgrade_with_videos(4, |_| {});
    let current = device.current();
    fleet.proxy.set_rule(
        Rule::new(Fault::StallAfter(size / 3))
            .on_prefix(videos.clone())
            .first(1),
    );
    let run = device.check();
    assert!(
        matches!(run.code, Some(13) | Some(1)),
        "a stalled download fails the run, got {}\n{}",
        run.describe(),
        run.output()
    );
    // stall_timeout is 2 s; the run timeout (60 s) would catch a hang, this
    // bound says the stall timeout, not something else, ended it.
    assert!(run.elapsed.as_secs() < 30, "took {:?}", run.elapsed);
    assert_eq!(device.current(), current);
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let gets = fleet.gets(&videos);
    assert!(
        gets.len() >= 2 && gets[1].range.as_deref().is_some_and(|r| r.starts_with("bytes=")),
        "{gets:?}"
    );
}

/// Beyond the list: a server (or CDN) that ignores `Range` answers
/// 200 with the whole artifact; the device must not append it to its
/// partial file, and still installs exactly the signed bytes.
#[test]
fn a_server_ignoring_range_still_gives_a_correct_install() {
    let fleet = Fleet::new();
    let (device, videos, size) = fleet.upgrade_with_videos(4, |_| {});
    fleet.proxy.set_rule(
        Rule::new(Fault::CutAfter(size / 2))
            .on_prefix(videos.clone())
            .first(1),
    );
    fleet
        .proxy
        .add_rule(Rule::new(Fault::IgnoreRange).on_prefix(videos.clone()));
    let run = device.check();
    assert!(matches!(run.code, Some(13) | Some(1)), "{}", run.output());
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
    let status = device.status_json();
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    let installed = std::fs::read(device.state_dir.join("current/videos/intro.mp4")).unwrap();
    let source = std::fs::read(fleet.store.root().join("src/videos-4/intro.mp4")).unwrap();
    assert!(
        installed == source,
        "the installed videos differ from the released ones"
    );
}

//! Any static host (issue 7): Debian's nginx serves the store instead of
//! `manifest-server`, configured as docs/DEPLOYMENT.md says, and the
//! updater installs v1, upgrades to v2, rolls a broken v3 back, and polls
//! idly with one conditional request answered 304.
//!
//! Without nginx the test is skipped with a loud note, unless `CI` is set:
//! then a missing nginx fails it (CI installs it: `apt-get install nginx`).

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_tests::nginx::Nginx;
use e2e_tests::trust::{keys_cmd, RootKeys};
use e2e_tests::{outcome, wait_for, App, Device, DeviceConfig, TestStore};

fn nginx_or_skip() -> Option<PathBuf> {
    match Nginx::find() {
        Some(bin) => Some(bin),
        None if std::env::var_os("CI").is_some() => {
            panic!("nginx is not installed and CI is set: `apt-get install nginx`")
        }
        None => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: nginx is not installed (apt-get install nginx); \
                 with CI set this test fails instead !!!!!!!!\n"
            );
            None
        }
    }
}

/// nginx's ETag is the file's mtime in whole seconds plus its size, and
/// two manifests of one cohort often have the same size: promote in a
/// later second than the device's last fetch, as any real promotion is.
fn promote(store: &TestStore, version: &str) {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let written = secs(
        fs::metadata(store.cohort_file("stable"))
            .unwrap()
            .modified()
            .unwrap(),
    );
    wait_for("the next second", Duration::from_secs(5), || {
        (secs(SystemTime::now()) > written).then_some(())
    });
    store.promote_ok("stable", version);
}

/// `(status, Cache-Control)` of a GET.
fn head(url: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(url).send().unwrap();
    let cc = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (resp.status().as_u16(), cc)
}

/// Status codes nginx logged for `GET <path> `, in order.
fn logged(nginx: &Nginx, path: &str) -> Vec<u16> {
    let needle = format!("\"GET {path} HTTP/1.1\" ");
    nginx
        .access_log()
        .lines()
        .filter_map(|l| l.split_once(&needle))
        .filter_map(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn an_updater_installs_upgrades_and_rolls_back_against_nginx() {
    let Some(bin) = nginx_or_skip() else { return };
    let store = TestStore::new();
    store.publish("1.0.0", App::Good);
    store.publish("2.0.0", App::Good);
    store.publish("3.0.0", App::Broken);
    store.promote_ok("stable", "1.0.0");
    let nginx = Nginx::start(&bin, &store.store);
    let device = Device::simple(&nginx.url(), &store.public_key);

    // Headers per path class (docs/DEPLOYMENT.md), and nothing else served.
    let base = nginx.url();
    let (status, cc) = head(&format!("{base}/cohorts/stable.json"));
    assert_eq!((status, cc.as_str()), (200, "no-cache"));
    let (status, cc) = head(&format!("{base}/releases/1.0.0.json"));
    assert_eq!(status, 200);
    assert!(cc.contains("immutable"), "{cc}");
    let (status, cc) = head(&format!("{base}{}", store.artifact_url_path("1.0.0", "app")));
    assert_eq!(status, 200);
    assert!(cc.contains("immutable"), "{cc}");
    for path in ["/", "/cohorts/", "/artifacts/", "/../keys/dev.key"] {
        let (status, _) = head(&format!("{base}{path}"));
        assert!(status == 403 || status == 404, "{path}: {status}");
    }

    device.check().expect_code(10);
    device.wait_app_version("1.0.0");

    // An idle poll is one conditional GET answered 304.
    device.check().expect_code(0);
    assert_eq!(logged(&nginx, "/cohorts/stable.json").last(), Some(&304));

    promote(&store, "2.0.0");
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");

    promote(&store, "3.0.0");
    device.check().expect_code(11);
    device.wait_app_version("2.0.0");
    let status = device.status_json();
    assert_eq!(outcome(&status), "rolled_back", "{status:#}");
    assert_eq!(status["active_version"], "2.0.0", "{status:#}");
    assert!(status["blocked"]["3.0.0"].is_string(), "{status:#}");

    eprintln!("--- nginx access log:\n{}", nginx.access_log());
}

/// A root of trust on a static host: nginx serves `keys.json` (revalidated,
/// `no-cache`), a device pinning the root keys installs through the
/// delegated release and ops keys, and a rotation is in force on its next
/// poll.
#[test]
fn a_root_of_trust_works_through_nginx() {
    let Some(bin) = nginx_or_skip() else { return };
    let mut store = TestStore::new();
    let keys = RootKeys::init(&store);
    store.key = keys.release.0.clone();
    store.publish("1.0.0", App::Good);
    store.publish("2.0.0", App::Good);
    store.key = keys.ops.0.clone();
    store.promote_ok("stable", "1.0.0");
    let nginx = Nginx::start(&bin, &store.store);
    let (status, cc) = head(&format!("{}/keys.json", nginx.url()));
    assert_eq!((status, cc.as_str()), (200, "no-cache"));
    let (status, _) = head(&format!("{}/keys.json.minisig", nginx.url()));
    assert_eq!(status, 200);

    let mut cfg = DeviceConfig::new(&nginx.url());
    cfg.root_keys = Some((keys.pinned_dir(&store), 2));
    let device = Device::new(cfg, &[]);
    device.check().expect_code(10);
    device.wait_app_version("1.0.0");
    device.check().expect_code(0);
    assert_eq!(logged(&nginx, "/keys.json").last(), Some(&304));

    // Rotate the ops key; the next poll accepts keys.json version 2 and
    // the cohort manifest signed with the new key.
    let ops2 = store.keygen("keys/ops2");
    keys_cmd(
        &store,
        &["keys", "rotate", "--add-ops", &ops2.1.display().to_string()],
        &keys.root_signers(),
    )
    .expect_code(0);
    store.key = ops2.0.clone();
    promote(&store, "2.0.0");
    device.check().expect_code(10);
    device.wait_app_version("2.0.0");
}

//! Nothing outside the store, no dotfiles, no listings: every form is a 404.
//! Requests are written byte for byte on a TCP socket, because HTTP clients
//! normalise `..` and percent-encoding away before sending.

use crate::common::*;

#[test]
fn every_traversal_form_is_refused() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    // A signed, valid manifest under a hidden name: only the dot keeps it out.
    store.publish("cohorts/.stable.json", &cohort(1));
    store.publish("cohorts/.hidden.json", &cohort(1));
    let artifact = store.put_artifact(b"real artifact");
    // A symlink inside artifacts/, named like an artifact, leading out.
    let link_name = manifest::Sha256Hex::digest(SECRET.as_bytes()).to_hex();
    std::os::unix::fs::symlink(
        store.tmp.path().join("secret.txt"),
        store.root().join("artifacts").join(&link_name),
    )
    .unwrap();
    // A directory named like an artifact.
    let dir_name = "d".repeat(64);
    std::fs::create_dir(store.root().join("artifacts").join(&dir_name)).unwrap();
    std::fs::write(store.root().join("artifacts/.env"), "KEY=secret\n").unwrap();
    let server = Server::start(&store);

    // Control: the same raw client does get the real files.
    let (status, body) = raw_get(server.addr, b"/cohorts/stable.json");
    assert_eq!(status, 200);
    assert_eq!(body, cohort(1));
    let (status, body) = raw_get(server.addr, format!("/artifacts/{artifact}").as_bytes());
    assert_eq!(status, 200);
    assert_eq!(body, b"real artifact");

    let forms: Vec<Vec<u8>> = vec![
        b"/../secret.txt".to_vec(),
        b"/../../etc/passwd".to_vec(),
        b"/cohorts/../../etc/passwd".to_vec(),
        b"/cohorts/../../secret.txt".to_vec(),
        b"/cohorts/../cohorts/stable.json".to_vec(),
        b"/cohorts/./stable.json".to_vec(),
        b"/artifacts/../../secret.txt".to_vec(),
        b"/%2e%2e/secret.txt".to_vec(),
        b"/%2E%2E/%2E%2E/etc/passwd".to_vec(),
        b"/cohorts/%2e%2e/%2e%2e/secret.txt".to_vec(),
        b"/cohorts/..%2f..%2fsecret.txt".to_vec(),
        b"/cohorts%2fstable.json".to_vec(),
        b"/cohorts%2Fstable.json".to_vec(),
        b"/cohorts/stable%2ejson".to_vec(),
        b"/cohorts/..%5c..%5csecret.txt".to_vec(),
        b"/cohorts/..%5C..%5Csecret.txt".to_vec(),
        b"/cohorts/stable.json%00".to_vec(),
        b"/cohorts/stable.json%00.minisig".to_vec(),
        b"//etc/passwd".to_vec(),
        b"//cohorts/stable.json".to_vec(),
        b"/cohorts//stable.json".to_vec(),
        b"/cohorts/..\\..\\secret.txt".to_vec(),
        b"/cohorts\\stable.json".to_vec(),
        b"/cohorts/.stable.json".to_vec(),
        b"/cohorts/.hidden.json".to_vec(),
        b"/cohorts/.hidden.json.minisig".to_vec(),
        b"/artifacts/.env".to_vec(),
        format!("/artifacts/{link_name}").into_bytes(),
        format!("/artifacts/{dir_name}").into_bytes(),
        b"/artifacts".to_vec(),
        b"/artifacts/".to_vec(),
        b"/cohorts".to_vec(),
        b"/cohorts/".to_vec(),
        b"/releases/".to_vec(),
        format!("{}/secret.txt", store.tmp.path().display()).into_bytes(),
        format!("/{}/secret.txt", store.tmp.path().display()).into_bytes(),
    ];
    for form in &forms {
        let (status, body) = raw_get(server.addr, form);
        let shown = String::from_utf8_lossy(form);
        assert_eq!(status, 404, "{shown} answered {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("must never be served"),
            "{shown} leaked the outside file"
        );
    }
}

/// `<tmp>/<name>/`: a directory outside the store, for links to point at.
fn outside_dir(store: &Store, name: &str) -> std::path::PathBuf {
    let dir = store.tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// Replace store directory `dir` by a link to `target` (the old one is kept
/// as `<dir>.old`), the way a careless sync or an attacker would.
fn swap_for_link(store: &Store, dir: &str, target: &std::path::Path) {
    let path = store.root().join(dir);
    std::fs::rename(&path, store.root().join(format!("{dir}.old"))).unwrap();
    std::os::unix::fs::symlink(target, &path).unwrap();
}

#[test]
fn a_keys_dir_linked_out_of_the_store_is_never_loaded() {
    let store = Store::new();
    let outside = outside_dir(&store, "other-keys");
    std::fs::write(outside.join("1.json"), SECRET).unwrap();
    std::fs::write(outside.join("1.json.minisig"), SECRET).unwrap();

    // Made after start (as `keys init` would make keys/): never loaded.
    // Unverified, so anything read through the link would be served.
    let server = Server::start_with(&store.root(), &[]);
    std::os::unix::fs::symlink(&outside, store.root().join("keys")).unwrap();
    // A rescan that sees beta started after the link was made.
    store.publish("cohorts/beta.json", b"beta");
    let http = client();
    eventually(std::time::Duration::from_secs(10), "beta served", || {
        (http
            .get(server.url("/cohorts/beta.json"))
            .send()
            .unwrap()
            .status()
            == 200)
            .then_some(())
    });
    for path in ["/keys/1.json", "/keys/1.json.minisig"] {
        let (status, body) = raw_get(server.addr, path.as_bytes());
        assert_eq!(status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("must never be served"));
    }
    assert_eq!(server.metric(&http, "manifest_server_snapshot_manifests"), 1);
    assert!(
        server.stderr().contains("keys/ in the store is a symbolic link"),
        "{}",
        server.stderr()
    );
    drop(server);

    // At start: refused with a clear message.
    let mut child = std::process::Command::new(BIN)
        .arg("--store")
        .arg(store.root())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, std::time::Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "started: {stderr}");
    assert!(stderr.contains("keys/ is a symbolic link"), "{stderr}");
}

#[test]
fn store_dirs_replaced_by_links_after_start_are_never_followed() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    let artifact = store.put_artifact(b"real artifact");
    // Validly signed manifests and a well-named file, all outside the store.
    let cohorts = outside_dir(&store, "other-cohorts");
    let sign = |dir: &std::path::Path, name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap();
        std::fs::write(dir.join(format!("{name}.minisig")), store.sign(bytes)).unwrap();
    };
    sign(&cohorts, "stable.json", &cohort(5));
    let beta = String::from_utf8(cohort(1))
        .unwrap()
        .replace("\"stable\"", "\"beta\"");
    sign(&cohorts, "beta.json", beta.as_bytes());
    let artifacts = outside_dir(&store, "other-artifacts");
    let secret_name = manifest::Sha256Hex::digest(SECRET.as_bytes()).to_hex();
    std::fs::write(artifacts.join(&secret_name), SECRET).unwrap();
    std::fs::write(artifacts.join(&artifact), b"real artifact").unwrap();

    let server = Server::start(&store);
    let http = client();
    let get = |path: &str| {
        let res = http.get(server.url(path)).send().unwrap();
        (res.status().as_u16(), res.bytes().unwrap().to_vec())
    };
    assert_eq!(get("/cohorts/stable.json"), (200, cohort(1)));
    assert_eq!(get(&format!("/artifacts/{artifact}")).0, 200);

    swap_for_link(&store, "cohorts", &cohorts);
    swap_for_link(&store, "artifacts", &artifacts);
    // A rescan that sees this release started after the swap.
    let release = br#"{"schema": 1, "kind": "release", "product": "neopro", "version": "1.3.0",
  "compatible": ["raspberrypi-arm64"], "created_at": "2026-11-21T10:00:00Z",
  "components": [{"name": "app", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "size": 3, "unpacked_size": 3, "format": "tar.gz"}]}"#;
    store.publish("releases/1.3.0.json", release);
    eventually(
        std::time::Duration::from_secs(10),
        "the release is served",
        || (get("/releases/1.3.0.json").0 == 200).then_some(()),
    );
    // Through the settle of the refused pair and beyond: never the outside.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let (status, body) = get("/cohorts/stable.json");
        assert_eq!(
            (status, sequence_of(&body)),
            (200, 1),
            "the last good pair stays served"
        );
        assert_eq!(get("/cohorts/beta.json").0, 404);
        assert_eq!(get("/cohorts/beta.json.minisig").0, 404);
        for name in [&secret_name, &artifact] {
            let (status, body) = raw_get(server.addr, format!("/artifacts/{name}").as_bytes());
            assert_eq!(status, 404, "artifacts/{name} through the link");
            assert!(!String::from_utf8_lossy(&body).contains("must never be served"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eventually(
        std::time::Duration::from_secs(10),
        "the refusal is counted",
        || (server.metric(&http, "manifest_server_manifests_rejected_total") == 1).then_some(()),
    );
    let log = server.stderr();
    assert!(log.contains("cohorts/ in the store is a symbolic link"), "{log}");
    assert!(log.contains("artifacts/ is a symbolic link"), "{log}");
    assert_eq!(
        log.matches("artifacts/ is a symbolic link").count(),
        1,
        "logged once: {log}"
    );
}

#[test]
fn a_linked_signature_is_refused() {
    let store = Store::new();
    let outside = outside_dir(&store, "sigs");
    std::fs::write(outside.join("stable.json.minisig"), store.sign(&cohort(1))).unwrap();
    store.replace("cohorts/stable.json", &cohort(1));
    std::os::unix::fs::symlink(
        outside.join("stable.json.minisig"),
        store.root().join("cohorts/stable.json.minisig"),
    )
    .unwrap();
    let key = store.key_file();
    for args in [vec!["--keys", key.to_str().unwrap()], vec![]] {
        let server = Server::start_with(&store.root(), &args);
        for path in ["/cohorts/stable.json", "/cohorts/stable.json.minisig"] {
            assert_eq!(
                raw_get(server.addr, path.as_bytes()).0,
                404,
                "{path} with {args:?}"
            );
        }
        let log = server.stderr();
        assert!(
            log.contains("cohorts/stable.json.minisig is a symbolic link"),
            "{args:?}: {log}"
        );
    }
}

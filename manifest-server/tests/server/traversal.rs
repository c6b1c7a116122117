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

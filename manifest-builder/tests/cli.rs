//! The real `manifest-builder` binary against real directories, and Debian's
//! real `minisign` for interoperability (installed by .ci/run; these tests
//! fail under CI=true when it is missing, and are skipped with a note locally).
//! The `rollout` tests are in `cli/rollout.rs`, in this same test binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use manifest::document::to_pretty_bytes;
use manifest::minisign::signatures_to_text;
use manifest::{CohortManifest, SecretKey, Timestamp};

/// `rollout …` against the real `manifest-server` with reports.
#[path = "cli/rollout.rs"]
mod rollout;

struct Run {
    out: Output,
}

impl Run {
    fn ok(self) -> String {
        assert!(
            self.out.status.success(),
            "failed: {}\n{}",
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
    fn fails(self) -> String {
        assert!(
            !self.out.status.success(),
            "unexpectedly succeeded: {}",
            self.stdout()
        );
        self.stderr()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

fn builder(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_manifest-builder"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run manifest-builder");
    Run { out }
}

fn minisign() -> Option<PathBuf> {
    let found = ["/usr/bin/minisign", "/usr/local/bin/minisign"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "minisign is required under CI (.ci/run installs it)"
        );
        eprintln!("note: minisign not installed; interoperability test skipped");
    }
    found
}

/// A temp workspace with a dev key and two component directories.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    builder(d, &["keygen", "--out", "keys/dev"]).ok();
    fs::create_dir_all(d.join("app/bin")).unwrap();
    fs::write(d.join("app/bin/run"), "#!/bin/sh\necho v1\n").unwrap();
    fs::create_dir_all(d.join("config")).unwrap();
    fs::write(d.join("config/app.conf"), "volume=3\n").unwrap();
    dir
}

fn release(d: &Path, version: &str) -> Run {
    release_signed_by(d, version, "keys/dev.key")
}

fn release_signed_by(d: &Path, version: &str, key: &str) -> Run {
    builder(
        d,
        &[
            "release",
            "--store",
            "store",
            "--product",
            "neopro",
            "--version",
            version,
            "--compatible",
            "raspberrypi-arm64",
            "--component",
            "app=app",
            "--component",
            "config=config",
            "--key",
            key,
        ],
    )
}

fn promote(d: &Path, version: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "promote",
        "--store",
        "store",
        "--cohort",
        "stable",
        "--version",
        version,
        "--key",
        "keys/dev.key",
    ];
    args.extend_from_slice(extra);
    builder(d, &args)
}

#[test]
fn minisign_verifies_what_we_write_and_signs_what_we_read() {
    let Some(minisign) = minisign() else { return };
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    promote(d, "1.0.0", &["--percent", "10"]).ok();
    for file in ["store/cohorts/stable.json", "store/releases/1.0.0.json"] {
        let out = Command::new(&minisign)
            .args(["-Vm", file, "-p", "keys/dev.pub"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "minisign refused {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A key made by `minisign -G -W` works with `manifest-builder sign`, and a
    // file signed by `minisign -S` is accepted by the library.
    let out = Command::new(&minisign)
        .args(["-G", "-W", "-p", "mk.pub", "-s", "mk.key"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    builder(d, &["sign", "--key", "mk.key", "store/cohorts/stable.json"]).ok();
    let out = Command::new(&minisign)
        .args(["-Vm", "store/cohorts/stable.json", "-p", "mk.pub"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(&minisign)
        .args([
            "-S",
            "-s",
            "mk.key",
            "-m",
            "store/releases/1.0.0.json",
            "-x",
            "minisign-release.sig",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = manifest::PublicKey::parse(&fs::read_to_string(d.join("mk.pub")).unwrap()).unwrap();
    let trust = manifest::TrustedKeys::new([key], 1).unwrap();
    let verified = trust
        .verify_release(
            "releases/1.0.0.json",
            &fs::read(d.join("store/releases/1.0.0.json")).unwrap(),
            &fs::read(d.join("minisign-release.sig")).unwrap(),
        )
        .unwrap();
    assert_eq!(verified.version.to_string(), "1.0.0");

    // And the other way: our key signs with the standard tool.
    let out = Command::new(&minisign)
        .args(["-S", "-s", "keys/dev.key", "-m", "config/app.conf"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minisign could not use our key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make a tree with the given creation order, mtime and owner.
fn make_tree(root: &Path, reverse: bool, mtime: u64, owner: Option<u32>) {
    let mut files = vec![
        ("b/z.txt", "zed"),
        ("a.txt", "alpha"),
        ("b/c/deep.bin", "deep"),
        ("exec.sh", "#!/bin/sh\n"),
    ];
    if reverse {
        files.reverse();
    }
    for (name, content) in files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        root.join("exec.sh"),
        fs::Permissions::from_mode(if reverse { 0o700 } else { 0o755 }),
    )
    .unwrap();
    fs::set_permissions(
        root.join("a.txt"),
        fs::Permissions::from_mode(if reverse { 0o600 } else { 0o664 }),
    )
    .unwrap();
    for p in ["a.txt", "b/z.txt", "b/c/deep.bin", "exec.sh", "b/c", "b"] {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        let f = fs::File::options().read(true).open(root.join(p)).unwrap();
        f.set_modified(t).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(root.join(p), Some(uid), Some(uid)).unwrap();
        }
    }
}

#[test]
fn packing_is_byte_identical_across_mtimes_owners_and_creation_order() {
    let ws = tempfile::tempdir().unwrap();
    let d = ws.path();
    builder(d, &["keygen", "--out", "keys/dev"]).ok();
    let is_root = unsafe_is_root();
    make_tree(&d.join("one"), false, 1_000_000, None);
    make_tree(
        &d.join("two"),
        true,
        1_700_000_000,
        if is_root { Some(4242) } else { None },
    );
    for (store, src) in [("s1", "one"), ("s2", "two")] {
        let comp = format!("app={src}");
        builder(
            d,
            &[
                "release",
                "--store",
                store,
                "--product",
                "p",
                "--version",
                "1.0.0",
                "--compatible",
                "hw",
                "--component",
                &comp,
                "--key",
                "keys/dev.key",
            ],
        )
        .ok();
    }
    let artifacts = |s: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(d.join(s).join("artifacts"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (a1, a2) = (artifacts("s1"), artifacts("s2"));
    assert_eq!(a1.len(), 1);
    assert_eq!(a1, a2, "same tree packed to different bytes");
}

fn unsafe_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn keygen_refuses_to_overwrite_and_keeps_the_secret_private() {
    let ws = workspace();
    let d = ws.path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(d.join("keys/dev.key")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(d.join("keys/dev.key")).unwrap();
    let err = builder(d, &["keygen", "--out", "keys/dev"]).fails();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(d.join("keys/dev.key")).unwrap(), before);
}

#[test]
fn releases_are_immutable_and_republishing_is_a_no_op() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    let first = fs::read(d.join("store/releases/1.0.0.json")).unwrap();
    let out = release(d, "1.0.0").ok();
    assert!(out.contains("identical content"), "{out}");
    fs::write(d.join("config/app.conf"), "volume=11\n").unwrap();
    let err = release(d, "1.0.0").fails();
    assert!(err.contains("immutable"), "{err}");
    assert_eq!(fs::read(d.join("store/releases/1.0.0.json")).unwrap(), first);
}

/// File names under `store/artifacts`, staging leftovers included.
fn artifact_names(d: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(d.join("store/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_release_refused_as_immutable_stores_no_artifact() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    let before = artifact_names(d);
    fs::write(d.join("config/app.conf"), "volume=11\n").unwrap();
    let err = release(d, "1.0.0").fails();
    assert!(err.contains("immutable"), "{err}");
    assert_eq!(artifact_names(d), before, "the refused release left artifacts");
}

#[test]
fn an_identical_release_missing_its_signature_is_signed_again() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    let manifest = d.join("store/releases/1.0.0.json");
    let signature = d.join("store/releases/1.0.0.json.minisig");
    let bytes = fs::read(&manifest).unwrap();
    // A crash between the manifest's rename and the signature's.
    fs::remove_file(&signature).unwrap();
    let out = release(d, "1.0.0").ok();
    assert!(!out.contains("already published"), "{out}");
    assert_eq!(fs::read(&manifest).unwrap(), bytes, "the release was rewritten");
    builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]).ok();
    let out = release(d, "1.0.0").ok();
    assert!(out.contains("already published"), "{out}");

    // A signature by another key is not "already published" for this one,
    // and is not ours to replace.
    builder(d, &["keygen", "--out", "keys/other"]).ok();
    let by_dev = fs::read(&signature).unwrap();
    let err = release_signed_by(d, "1.0.0", "keys/other.key").fails();
    assert!(
        err.contains("releases/1.0.0.json has identical content, but its signature does not verify"),
        "{err}"
    );
    assert!(err.contains("sign --append"), "{err}");
    assert_eq!(fs::read(&signature).unwrap(), by_dev);
}

#[test]
fn promote_refuses_a_release_file_holding_another_version() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    fs::write(d.join("config/app.conf"), "volume=11\n").unwrap();
    release(d, "1.1.0").ok();
    // Validly signed 1.1.0 bytes under the name of 1.0.0.
    for suffix in ["", ".minisig"] {
        fs::copy(
            d.join(format!("store/releases/1.1.0.json{suffix}")),
            d.join(format!("store/releases/1.0.0.json{suffix}")),
        )
        .unwrap();
    }
    let err = promote(d, "1.0.0", &[]).fails();
    assert!(
        err.contains("releases/1.0.0.json holds release 1.1.0, not 1.0.0"),
        "{err}"
    );
    assert!(!d.join("store/cohorts/stable.json").exists());
}

#[test]
fn promote_pins_the_release_and_bumps_the_sequence() {
    let ws = workspace();
    let d = ws.path();
    let err = promote(d, "1.0.0", &[]).fails();
    assert!(
        err.contains("not a store") || err.contains("not in the store"),
        "{err}"
    );
    release(d, "1.0.0").ok();
    release(d, "0.9.0").ok();
    let err = promote(d, "2.0.0", &[]).fails();
    assert!(err.contains("release 2.0.0 is not in the store"), "{err}");
    promote(d, "1.0.0", &["--percent", "12.5"]).ok();
    let c1 = CohortManifest::parse(&fs::read(d.join("store/cohorts/stable.json")).unwrap()).unwrap();
    assert_eq!(c1.sequence, 1);
    assert_eq!(c1.rollout.percent.basis_points(), 1250);
    let release_bytes = fs::read(d.join("store/releases/1.0.0.json")).unwrap();
    assert_eq!(c1.target.sha256, manifest::Sha256Hex::digest(&release_bytes));
    assert_eq!(c1.target.size, release_bytes.len() as u64);
    let err = promote(d, "0.9.0", &[]).fails();
    assert!(err.contains("--allow-downgrade"), "{err}");
    promote(d, "0.9.0", &["--allow-downgrade"]).ok();
    let c2 = CohortManifest::parse(&fs::read(d.join("store/cohorts/stable.json")).unwrap()).unwrap();
    assert_eq!(
        (c2.sequence, c2.allow_downgrade, c2.rollout.percent.basis_points()),
        (2, true, 10000)
    );
    let status = builder(d, &["status", "--store", "store"]).ok();
    assert!(
        status.contains("stable") && status.contains("0.9.0") && status.contains("seq 2"),
        "{status}"
    );
}

#[test]
fn a_release_tampered_after_signing_cannot_be_promoted() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    let path = d.join("store/releases/1.0.0.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("raspberrypi-arm64", "raspberrypi-armv7");
    fs::write(&path, text).unwrap();
    let err = promote(d, "1.0.0", &[]).fails();
    assert!(
        err.contains("releases/1.0.0.json") && err.contains("does not match the signed bytes"),
        "{err}"
    );
}

#[test]
fn sign_validates_a_hand_edit_and_bumps_the_sequence() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    promote(d, "1.0.0", &["--percent", "10"]).ok();
    let path = d.join("store/cohorts/stable.json");
    let edited = fs::read_to_string(&path)
        .unwrap()
        .replace("\"percent\": 10", "\"percent\": 25");
    fs::write(&path, &edited).unwrap();
    builder(d, &["sign", "--key", "keys/dev.key", "store/cohorts/stable.json"]).ok();
    let c = CohortManifest::parse(&fs::read(&path).unwrap()).unwrap();
    assert_eq!((c.sequence, c.rollout.percent.basis_points()), (2, 2500));
    builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]).ok();

    // A typo is refused and nothing is written.
    let typo = fs::read_to_string(&path)
        .unwrap()
        .replace("\"percent\"", "\"percnet\"");
    fs::write(&path, &typo).unwrap();
    let sig_before = fs::read(d.join("store/cohorts/stable.json.minisig")).unwrap();
    let err = builder(d, &["sign", "--key", "keys/dev.key", "store/cohorts/stable.json"]).fails();
    assert!(
        err.contains("store/cohorts/stable.json") && err.contains("percnet"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), typo);
    assert_eq!(
        fs::read(d.join("store/cohorts/stable.json.minisig")).unwrap(),
        sig_before
    );
}

#[test]
fn cosigning_meets_a_threshold_of_two_and_the_same_key_twice_does_not() {
    let ws = workspace();
    let d = ws.path();
    builder(d, &["keygen", "--out", "keys/ops"]).ok();
    release(d, "1.0.0").ok();
    // The release is co-signed properly, so every failure below is the
    // cohort manifest's alone.
    builder(
        d,
        &[
            "sign",
            "--append",
            "--key",
            "keys/ops.key",
            "store/releases/1.0.0.json",
        ],
    )
    .ok();
    promote(d, "1.0.0", &[]).ok();
    let two = [
        "verify",
        "--store",
        "store",
        "--keys",
        "keys/dev.pub",
        "keys/ops.pub",
        "--threshold",
        "2",
    ];
    let only_the_cohort_short = |err: &str| {
        assert!(
            err.contains("cohorts/stable.json: signature refused: 1 of 2 required distinct trusted key(s)"),
            "{err}"
        );
        assert!(!err.contains("releases/1.0.0.json"), "{err}");
    };
    only_the_cohort_short(&builder(d, &two).fails());
    // The same key appended again does not count twice.
    let err = builder(
        d,
        &[
            "sign",
            "--append",
            "--key",
            "keys/dev.key",
            "store/cohorts/stable.json",
        ],
    )
    .fails();
    assert!(err.contains("already holds a signature"), "{err}");
    // Duplicate blocks written by hand do not count twice either.
    let sig = d.join("store/cohorts/stable.json.minisig");
    let once = fs::read_to_string(&sig).unwrap();
    fs::write(&sig, format!("{once}{once}")).unwrap();
    only_the_cohort_short(&builder(d, &two).fails());
    fs::write(&sig, &once).unwrap();
    builder(
        d,
        &[
            "sign",
            "--append",
            "--key",
            "keys/ops.key",
            "store/cohorts/stable.json",
        ],
    )
    .ok();
    builder(d, &two).ok();
}

/// Every kind of tampering is reported with the file and the reason.
#[test]
fn verify_names_the_file_and_reason_for_each_tampering() {
    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tamper, &[&str])> = vec![
        (
            "one byte of the manifest",
            Box::new(|d| {
                flip(
                    &d.join("store/cohorts/stable.json"),
                    "\"sequence\": 1",
                    "\"sequence\": 7",
                )
            }),
            &[
                "cohorts/stable.json.minisig: signature by key",
                "does not match the signed bytes",
            ],
        ),
        (
            // One base64 character inside the Ed25519 signature itself.
            "the signature line",
            Box::new(|d| edit_line(&d.join("store/cohorts/stable.json.minisig"), 1)),
            &[
                "cohorts/stable.json.minisig: signature by key",
                "does not match the signed bytes",
            ],
        ),
        (
            "the trusted comment",
            Box::new(|d| {
                flip(
                    &d.join("store/cohorts/stable.json.minisig"),
                    "file:stable.json",
                    "file:stable.jsoN",
                )
            }),
            &["cohorts/stable.json.minisig", "trusted comment"],
        ),
        (
            "an untrusted key",
            Box::new(|d| {
                let stranger = SecretKey::generate();
                let bytes = fs::read(d.join("store/cohorts/stable.json")).unwrap();
                let sig = stranger.sign(&bytes, "timestamp:0\tfile:stable.json").unwrap();
                fs::write(
                    d.join("store/cohorts/stable.json.minisig"),
                    signatures_to_text(&[sig]),
                )
                .unwrap();
            }),
            &["cohorts/stable.json: signature refused", "untrusted key"],
        ),
    ];
    for (what, tamper, reasons) in cases {
        let ws = workspace();
        let d = ws.path();
        release(d, "1.0.0").ok();
        promote(d, "1.0.0", &[]).ok();
        builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]).ok();
        tamper(d);
        let err = builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]).fails();
        for reason in reasons {
            assert!(err.contains(reason), "{what}: {reason:?} not in {err}");
        }
    }
}

fn flip(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Change one base64 character in line `n` (0-based) of a file.
fn edit_line(path: &Path, n: usize) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut chars: Vec<char> = lines[n].chars().collect();
    chars[20] = if chars[20] == 'A' { 'B' } else { 'A' };
    lines[n] = chars.into_iter().collect();
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn verify_reports_every_problem_not_just_the_first() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    promote(d, "1.0.0", &[]).ok();
    let doc: manifest::ReleaseManifest =
        manifest::ReleaseManifest::parse(&fs::read(d.join("store/releases/1.0.0.json")).unwrap()).unwrap();
    // Missing artifact (app) and wrong-size artifact (config).
    let app = d.join("store/artifacts").join(doc.components[0].sha256.to_hex());
    let config = d.join("store/artifacts").join(doc.components[1].sha256.to_hex());
    fs::remove_file(app).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap()
        .set_len(doc.components[1].size + 3)
        .unwrap();
    // Expired cohort, properly signed.
    let key = SecretKey::parse(&fs::read_to_string(d.join("keys/dev.key")).unwrap()).unwrap();
    let mut cohort = CohortManifest::parse(&fs::read(d.join("store/cohorts/stable.json")).unwrap()).unwrap();
    cohort.issued_at = Timestamp::from_unix(1_600_000_000);
    cohort.expires_at = Timestamp::from_unix(1_600_086_400);
    cohort.sequence += 1;
    let bytes = to_pretty_bytes(&cohort);
    let sig = key.sign(&bytes, "timestamp:0\tfile:stable.json").unwrap();
    fs::write(d.join("store/cohorts/stable.json"), &bytes).unwrap();
    fs::write(
        d.join("store/cohorts/stable.json.minisig"),
        signatures_to_text(&[sig]),
    )
    .unwrap();

    let run = builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]);
    assert_eq!(run.out.status.code(), Some(1));
    let err = run.stderr();
    assert!(
        err.contains("component app") && err.contains("artifact is missing"),
        "{err}"
    );
    assert!(
        err.contains("component config") && err.contains("the manifest says"),
        "{err}"
    );
    assert!(
        err.contains("cohorts/stable.json: expired at 2020-09-14T12:26:40Z"),
        "{err}"
    );
    assert!(run.stdout().contains("3 problem(s)"), "{}", run.stdout());
}

#[test]
fn verify_reports_an_unreadable_file_and_goes_on() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    fs::write(d.join("config/app.conf"), "volume=11\n").unwrap();
    release(d, "1.1.0").ok();
    promote(d, "1.0.0", &[]).ok();
    // Root reads through chmod 000; nobody reads a directory as a file.
    let manifest = d.join("store/releases/1.0.0.json");
    fs::remove_file(&manifest).unwrap();
    fs::create_dir(&manifest).unwrap();
    let doc =
        manifest::ReleaseManifest::parse(&fs::read(d.join("store/releases/1.1.0.json")).unwrap()).unwrap();
    let config = d.join("store/artifacts").join(doc.components[1].sha256.to_hex());
    fs::remove_file(&config).unwrap();
    fs::create_dir(&config).unwrap();

    let run = builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: releases/1.0.0.json: cannot be read:"),
        "{err}"
    );
    assert!(
        err.contains("releases/1.1.0.json: component config") && err.contains("not a regular file"),
        "{err}"
    );
    // The cohort was still checked, against what could not be read.
    assert!(
        err.contains(
            "cohorts/stable.json: targets version 1.0.0, but releases/1.0.0.json is missing or unreadable"
        ),
        "{err}"
    );
    assert!(run.stdout().contains("3 problem(s)"), "{}", run.stdout());
}

#[test]
fn verify_checks_a_shared_artifact_against_every_release() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    release(d, "1.1.0").ok();
    release(d, "1.2.0").ok();
    builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]).ok();
    // Later releases declare other sizes for the same artifacts, signed.
    let key = SecretKey::parse(&fs::read_to_string(d.join("keys/dev.key")).unwrap()).unwrap();
    let redeclare = |version: &str, edit: &dyn Fn(&mut manifest::Component)| {
        let path = d.join(format!("store/releases/{version}.json"));
        let mut doc = manifest::ReleaseManifest::parse(&fs::read(&path).unwrap()).unwrap();
        edit(&mut doc.components[1]);
        let bytes = to_pretty_bytes(&doc);
        let sig = key
            .sign(&bytes, &format!("timestamp:0\tfile:{version}.json"))
            .unwrap();
        fs::write(&path, &bytes).unwrap();
        fs::write(
            d.join(format!("store/releases/{version}.json.minisig")),
            signatures_to_text(&[sig]),
        )
        .unwrap();
    };
    redeclare("1.1.0", &|c| c.unpacked_size = 1);
    redeclare("1.2.0", &|c| c.size += 1);
    let run = builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("releases/1.1.0.json: component config")
            && err.contains("more than the declared 1 bytes"),
        "{err}"
    );
    assert!(
        err.contains("releases/1.2.0.json: component config") && err.contains("the manifest says"),
        "{err}"
    );
    assert!(run.stdout().contains("2 problem(s)"), "{}", run.stdout());
    assert!(run.stdout().contains("2 artifact(s)"), "{}", run.stdout());
}

#[test]
fn verify_warns_about_a_manifest_expiring_within_a_week() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    promote(d, "1.0.0", &["--expires", "3d"]).ok();
    let run = builder(d, &["verify", "--store", "store", "--keys", "keys/dev.pub"]);
    assert!(run.out.status.success());
    assert!(
        run.stderr().contains("warning: cohorts/stable.json: expires at"),
        "{}",
        run.stderr()
    );
}

#[test]
fn release_refuses_a_tarball_a_device_would_refuse() {
    let ws = workspace();
    let d = ws.path();
    // A tarball with an absolute symlink, made with the system tar.
    fs::create_dir_all(d.join("evil")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", d.join("evil/shadow")).unwrap();
    let out = Command::new("tar")
        .args(["czf", "evil.tar.gz", "-C", "evil", "."])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = builder(
        d,
        &[
            "release",
            "--store",
            "store",
            "--product",
            "p",
            "--version",
            "1.0.0",
            "--compatible",
            "hw",
            "--component",
            "app=evil.tar.gz",
            "--key",
            "keys/dev.key",
        ],
    )
    .fails();
    assert!(err.contains("component app") && err.contains("absolute"), "{err}");
    assert!(!d.join("store/releases/1.0.0.json").exists());
    // A well-formed tarball is imported as is.
    let out = Command::new("tar")
        .args(["czf", "good.tar.gz", "-C", "config", "."])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success());
    builder(
        d,
        &[
            "release",
            "--store",
            "store",
            "--product",
            "p",
            "--version",
            "1.0.0",
            "--compatible",
            "hw",
            "--component",
            "config=good.tar.gz",
            "--key",
            "keys/dev.key",
        ],
    )
    .ok();
    let hash = manifest::Sha256Hex::digest(&fs::read(d.join("good.tar.gz")).unwrap());
    assert!(d.join("store/artifacts").join(hash.to_hex()).exists());
}

#[test]
fn bundle_packs_the_cohorts_signed_files_exactly_and_refuses_an_incomplete_store() {
    let ws = workspace();
    let d = ws.path();
    release(d, "1.0.0").ok();
    promote(d, "1.0.0", &[]).ok();
    let args = [
        "bundle",
        "--store",
        "store",
        "--cohort",
        "stable",
        "--out",
        "site.bundle",
    ];
    let out = builder(d, &args).ok();
    assert!(out.contains("1.0.0"), "{out}");

    // Every entry is a regular file at its store path, byte-identical.
    let bytes = fs::read(d.join("site.bundle")).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        assert_eq!(entry.header().entry_type(), tar::EntryType::Regular);
        let name = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        assert_eq!(content, fs::read(d.join("store").join(&name)).unwrap(), "{name}");
        names.push(name);
    }
    assert_eq!(
        names[..4],
        [
            "cohorts/stable.json",
            "cohorts/stable.json.minisig",
            "releases/1.0.0.json",
            "releases/1.0.0.json.minisig"
        ]
    );
    assert_eq!(names.len(), 6, "two components: {names:?}");
    assert!(names[4..].iter().all(|n| n.starts_with("artifacts/")));

    // The same store gives the same bytes.
    builder(d, &args).ok();
    assert_eq!(fs::read(d.join("site.bundle")).unwrap(), bytes);

    // A missing artifact: no bundle rather than an incomplete one.
    let artifact = d.join("store").join(&names[5]);
    fs::remove_file(&artifact).unwrap();
    let err = builder(
        d,
        &[
            "bundle",
            "--store",
            "store",
            "--cohort",
            "stable",
            "--out",
            "b2.bundle",
        ],
    )
    .fails();
    assert!(err.contains("missing"), "{err}");
    assert!(!d.join("b2.bundle").exists());
    let err = builder(
        d,
        &[
            "bundle",
            "--store",
            "store",
            "--cohort",
            "beta",
            "--out",
            "b3.bundle",
        ],
    )
    .fails();
    assert!(err.contains("no such cohort"), "{err}");
}

/// `keys init|rotate|revoke|show` and `verify` on a store with a root of
/// trust: nothing is written without enough root signatures, every version
/// lands in `keys/`, a revoked key cannot come back, and `verify` names a
/// tampered `keys.json`.
#[test]
fn keys_commands_keep_a_verifiable_root_of_trust() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["root1", "root2", "release", "ops", "ops2"] {
        builder(d, &["keygen", "--out", &format!("keys/{k}")]).ok();
    }
    fs::create_dir_all(d.join("store")).unwrap();
    let roots = ["--sign", "keys/root1.key", "--sign", "keys/root2.key"];
    let mut init = vec![
        "keys",
        "init",
        "--store",
        "store",
        "--root",
        "keys/root1.pub",
        "--root",
        "keys/root2.pub",
        "--root-threshold",
        "2",
        "--release",
        "keys/release.pub",
        "--ops",
        "keys/ops.pub",
    ];
    let err = builder(d, &[&init[..], &roots[..2]].concat()).fails();
    assert!(
        err.contains("1 of 2 required") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!d.join("store/keys.json").exists());
    init.extend(roots);
    builder(d, &init).ok();
    let err = builder(d, &init).fails();
    assert!(err.contains("already exists"), "{err}");
    let verify = [
        "verify",
        "--store",
        "store",
        "--keys",
        "keys/root1.pub",
        "keys/root2.pub",
    ];
    builder(d, &verify).ok();

    let out = builder(
        d,
        &[
            &[
                "keys",
                "revoke",
                "--store",
                "store",
                "--key",
                "keys/ops.pub",
                "--add-ops",
                "keys/ops2.pub",
            ][..],
            &roots[..],
        ]
        .concat(),
    )
    .ok();
    assert!(out.contains("version 2") && out.contains("revoked"), "{out}");
    for v in [1, 2] {
        assert!(d.join(format!("store/keys/{v}.json")).is_file());
    }
    // A revoked key cannot be delegated again.
    let err = builder(
        d,
        &[
            &["keys", "rotate", "--store", "store", "--add-ops", "keys/ops.pub"][..],
            &roots[..],
        ]
        .concat(),
    )
    .fails();
    assert!(err.contains("revoked"), "{err}");
    let show = builder(d, &["keys", "show", "--store", "store"]).ok();
    assert!(show.contains("version 2"), "{show}");

    // A hand edit of keys.json breaks its signatures: verify says so.
    let path = d.join("store/keys.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"threshold\": 2", "\"threshold\": 1");
    fs::write(&path, text).unwrap();
    let err = builder(d, &verify).fails();
    assert!(err.contains("keys.json"), "{err}");
}

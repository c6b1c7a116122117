//! Arbitrary bytes through the device's own unpacker
//! (`updater::unpack::unpack`, which applies `manifest::archive::walk`) into
//! a fresh temporary slot, then checks nothing was written outside it
//! (docs/FUZZING.md).
//!
//! Input: one mode byte, then the payload. Even mode: the payload is the
//! `tar.gz` stream as downloaded. Odd mode: the payload is a plain tar, gzip'd
//! here, so mutations hit tar headers directly instead of deflate bits.
#![no_main]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use manifest::archive::{scan, ArchiveError, Limits};

const LIMITS: Limits = Limits {
    max_unpacked: 256 << 10,
    max_entries: 512,
};
const CANARY: &[u8] = b"outside the slot\n";

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

/// Names directly in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every symlink under `root` must resolve (lexically, and on disk if it
/// resolves at all) inside `root`.
fn check_tree(root: &Path, canon_root: &Path, dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o6000, 0, "setuid/setgid on {path:?}");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap();
            let mut resolved: Vec<_> = rel.parent().unwrap().components().collect();
            for c in target.components() {
                match c {
                    Component::ParentDir => {
                        assert!(resolved.pop().is_some(), "symlink {rel:?} -> {target:?} leaves the root")
                    }
                    Component::CurDir => {}
                    Component::Normal(_) => resolved.push(c),
                    _ => panic!("absolute symlink {rel:?} -> {target:?}"),
                }
            }
            if let Ok(real) = fs::canonicalize(&path) {
                assert!(real.starts_with(canon_root), "symlink {rel:?} -> {target:?} resolves to {real:?}");
            }
        } else if meta.is_dir() {
            check_tree(root, canon_root, &path);
        } else {
            assert!(meta.is_file(), "special file {path:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let owned;
    let tar_gz: &[u8] = if mode & 1 == 1 {
        owned = gzip(payload);
        &owned
    } else {
        payload
    };

    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("canary"), CANARY).unwrap();
    let slot = tmp.path().join("slot");
    let dest: PathBuf = slot.join("app");
    fs::create_dir_all(&dest).unwrap();

    let unpacked = updater::unpack::unpack(tar_gz, &dest, LIMITS);
    let scanned = scan(tar_gz, LIMITS);

    // Nothing new next to the slot or the component, the canary untouched
    // (not rewritten, not hard-linked).
    assert_eq!(names(tmp.path()), ["outside", "slot"]);
    assert_eq!(names(&slot), ["app"]);
    assert_eq!(names(&outside), ["canary"]);
    let canary = outside.join("canary");
    assert_eq!(fs::read(&canary).unwrap(), CANARY);
    assert_eq!(fs::symlink_metadata(&canary).unwrap().nlink(), 1);
    let canon = fs::canonicalize(&dest).unwrap();
    check_tree(&dest, &canon, &dest);

    // The builder's check (scan) and the device's unpack apply the same
    // rules: they agree, except that only unpack can hit a filesystem error.
    match (&unpacked, &scanned) {
        (Ok(u), Ok(s)) => {
            assert_eq!(u, s);
            assert!(u.unpacked_size <= LIMITS.max_unpacked);
            assert!(u.entries <= LIMITS.max_entries);
        }
        (Ok(_), Err(e)) => panic!("unpack accepted what scan refuses: {e}"),
        (Err(ArchiveError::Visit { .. }), _) => {}
        (Err(u), Ok(_)) => panic!("scan accepted what unpack refuses: {u}"),
        (Err(_), Err(_)) => {}
    }

    // Leave the tree removable (a directory mode without write permission).
    fn writable(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    writable(&e.path());
                }
            }
        }
    }
    writable(tmp.path());
});

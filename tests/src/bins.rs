//! Where the real binaries are. The tests run `manifest-builder`,
//! `manifest-server`, `updater` and `sample-app` as separate processes, exactly
//! as a device and a release engineer would, so they must be built first:
//! `cargo test --workspace` builds every workspace binary into `target/debug/`,
//! next to the `deps/` directory the test executable runs from.

use std::path::PathBuf;

/// `target/<profile>/NAME`, found from the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a parent").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "run `cargo build --workspace` first (missing target/debug/{name}, looked for {})",
        path.display()
    );
    path
}

pub fn manifest_builder() -> PathBuf {
    bin("manifest-builder")
}

pub fn manifest_server() -> PathBuf {
    bin("manifest-server")
}

pub fn updater() -> PathBuf {
    bin("updater")
}

/// This package's own binary (cargo builds it before the integration tests).
pub fn sample_app() -> PathBuf {
    bin("sample-app")
}

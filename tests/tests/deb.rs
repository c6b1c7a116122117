//! Debian packages (issue 7): `packaging/build-debs.sh` builds the three
//! packages and `packaging/check-deb.sh` installs them into a scratch root
//! with `dpkg --root`, checking files, config, units, the postinst without
//! systemd, that the binaries run, remove and purge.
//!
//! Runs only with `UPDATER_DEB_TEST=1` (it needs cargo-deb and dpkg);
//! otherwise it is skipped with a note. `UPDATER_DEB_PROFILE` picks the
//! cargo profile packaged (default `dist`, the release build: fat LTO, a
//! few minutes). CI sets `dev`, which packages the binaries `cargo test`
//! has just built (`NO_BUILD=1`: the ones the other tests run, not a
//! rebuild with other dependency features): the package layout is what is
//! checked, in seconds. Those binaries must exist, which `cargo test
//! --workspace` ensures (with `-p e2e-tests` alone, build them first).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn run(script: &str, profile: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let start = Instant::now();
    let status = Command::new("sh")
        .arg(root.join(script))
        .current_dir(&root)
        .env("PROFILE", profile)
        .env("NO_BUILD", if profile == "dev" { "1" } else { "0" })
        // A package for the host: the check runs its binaries.
        .env_remove("TARGET")
        .status()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(status.success(), "{script} failed: {status}");
    eprintln!("{script} ({profile}): {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn debian_packages_build_and_install_into_a_scratch_root() {
    if std::env::var_os("UPDATER_DEB_TEST").is_none_or(|v| v != "1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED: set UPDATER_DEB_TEST=1 to build the .debs (cargo-deb; \
             UPDATER_DEB_PROFILE=dist by default, dev on CI) and check them with \
             dpkg --root !!!!!!!!\n"
        );
        return;
    }
    let profile = std::env::var("UPDATER_DEB_PROFILE").unwrap_or_else(|_| "dist".into());
    run("packaging/build-debs.sh", &profile);
    run("packaging/check-deb.sh", &profile);
}

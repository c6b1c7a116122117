//! `systemd/updater.service` and `systemd/updater.timer` pass
//! `systemd-analyze verify`. systemd is not PID 1 here and the binary is not
//! installed, so both units are copied to a temp dir with `ExecStart`
//! pointing at the binary cargo built. `verify` exits 0 on many problems, so
//! the check is that no output line names our units; a deliberately broken
//! copy proves the check bites.

use std::path::Path;
use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");

fn complaints(dir: &Path, unit: &str) -> Vec<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join(unit))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.contains("updater."))
        .map(String::from)
        .collect()
}

fn copy_units(dir: &Path, service: &str) {
    let bin = env!("CARGO_BIN_EXE_updater");
    std::fs::write(
        dir.join("updater.service"),
        service.replace("/usr/bin/updater", bin),
    )
    .unwrap();
    std::fs::copy(Path::new(DIR).join("updater.timer"), dir.join("updater.timer")).unwrap();
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is required on CI (apt-get install systemd)"
        );
        eprintln!("note: systemd-analyze not found; units not verified");
        return;
    }
    let service = std::fs::read_to_string(Path::new(DIR).join("updater.service")).unwrap();
    let timer = std::fs::read_to_string(Path::new(DIR).join("updater.timer")).unwrap();
    for required in [
        "Type=oneshot",
        "SuccessExitStatus=10 11 12 13 16",
        "After=network-online.target time-sync.target",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/updater",
    ] {
        assert!(service.contains(required), "updater.service lacks {required}");
    }
    for required in [
        "OnBootSec=",
        "OnUnitActiveSec=",
        "RandomizedDelaySec=",
        "Persistent=true",
    ] {
        assert!(timer.contains(required), "updater.timer lacks {required}");
    }

    let dir = tempfile::tempdir().unwrap();
    copy_units(dir.path(), &service);
    for unit in ["updater.service", "updater.timer"] {
        let found = complaints(dir.path(), unit);
        assert!(
            found.is_empty(),
            "systemd-analyze verify {unit}:\n{}",
            found.join("\n")
        );
    }

    // The check must be able to fail.
    let broken = tempfile::tempdir().unwrap();
    copy_units(
        broken.path(),
        &service.replace("Type=oneshot", "Type=oneshot\nProtectSystem=sometimes"),
    );
    assert!(
        !complaints(broken.path(), "updater.service").is_empty(),
        "a broken unit went unnoticed"
    );
}

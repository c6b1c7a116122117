//! `systemd/updater.service` and `systemd/updater.timer` pass
//! `systemd-analyze verify`. systemd is not PID 1 here and the binary is not
//! installed, so both units are copied to a temp dir with `ExecStart`
//! pointing at the binary cargo built. `verify` exits 0 on many problems, so
//! the check is that no output line names our units; a deliberately broken
//! copy proves the check bites.
//!
//! `updater.service` must also pass `systemd-analyze security --offline=yes`
//! (the timer is not a service) at a threshold equal to its current exposure
//! score, with no warning about the unit: weakening the hardening fails.

use std::path::Path;

#[path = "../../tests/support/systemd_analyze.rs"]
mod systemd_analyze;
use systemd_analyze::{available_or_skip, complaints, security};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");

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
    if !available_or_skip("the units") {
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
        let found = complaints(&dir.path().join(unit), "updater.");
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
        !complaints(&broken.path().join("updater.service"), "updater.").is_empty(),
        "a broken unit went unnoticed"
    );
}

/// Exposure of `systemd/updater.service` as scored by systemd 252's
/// `systemd-analyze security --offline=yes`: 2.9 ("OK"), i.e. 29 on the
/// 0-100 scale of `--threshold`. It runs as root on purpose (see the unit),
/// which accounts for most of the score. Lower this when the unit gets
/// stricter; raising it needs a reason in the unit's comments.
const SECURITY_THRESHOLD: u32 = 29;

#[test]
fn service_passes_systemd_analyze_security() {
    if !available_or_skip("unit security") {
        return;
    }
    let service = std::fs::read_to_string(Path::new(DIR).join("updater.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_units(dir.path(), &service);
    let unit = dir.path().join("updater.service");
    let (ok, overall, warnings) = security(&unit, SECURITY_THRESHOLD);
    eprintln!("{overall}");
    assert!(
        ok && warnings.is_empty() && overall.contains("exposure level"),
        "systemd-analyze security updater.service over {SECURITY_THRESHOLD}: {overall}\n{}",
        warnings.join("\n")
    );

    // The check must be able to fail: a weaker unit scores over the
    // threshold, and a unit with a bad line is warned about.
    let weak = tempfile::tempdir().unwrap();
    copy_units(weak.path(), &service.replace("ProtectSystem=strict\n", ""));
    let (ok, overall, _) = security(&weak.path().join("updater.service"), SECURITY_THRESHOLD);
    assert!(!ok, "a weakened unit passed: {overall}");
    let bad = tempfile::tempdir().unwrap();
    copy_units(
        bad.path(),
        &service.replace("Type=oneshot", "Type=oneshot\nNoSuchDirective=1"),
    );
    let (_, _, warnings) = security(&bad.path().join("updater.service"), SECURITY_THRESHOLD);
    assert!(!warnings.is_empty(), "a warning went unnoticed");
}

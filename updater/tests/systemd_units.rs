//! `systemd/updater.service`, `systemd/updater.timer` and
//! `systemd/updater-daemon.service` pass `systemd-analyze verify`. systemd is
//! not PID 1 here and the binary is not installed, so the units are copied
//! to a temp dir with `ExecStart` pointing at the binary cargo built.
//! `verify` exits 0 on many problems, so the check is that no output line
//! names our units; a deliberately broken copy proves the check bites.
//!
//! Both services must also pass `systemd-analyze security --offline=yes`
//! (the timer is not a service) at a threshold equal to their current
//! exposure score, with no warning about the unit: weakening the hardening
//! fails.

use std::path::Path;

#[path = "../../tests/support/systemd_analyze.rs"]
mod systemd_analyze;
use systemd_analyze::{available_or_skip, complaints, security};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");

/// The two services, either of which a test may replace by a modified copy.
const SERVICES: [&str; 2] = ["updater.service", "updater-daemon.service"];

fn read_unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(name)).unwrap()
}

/// Copy the three units into `dir`, `name` with the text `service`, the
/// others as shipped; every `ExecStart` points at the binary cargo built.
fn copy_units(dir: &Path, name: &str, service: &str) {
    let bin = env!("CARGO_BIN_EXE_updater");
    for unit in SERVICES {
        let text = if unit == name {
            service.to_string()
        } else {
            read_unit(unit)
        };
        std::fs::write(dir.join(unit), text.replace("/usr/bin/updater", bin)).unwrap();
    }
    std::fs::copy(Path::new(DIR).join("updater.timer"), dir.join("updater.timer")).unwrap();
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !available_or_skip("the units") {
        return;
    }
    let service = read_unit("updater.service");
    let timer = read_unit("updater.timer");
    let daemon = read_unit("updater-daemon.service");
    for required in [
        "Type=oneshot",
        "SuccessExitStatus=10 11 12 13 15 16",
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
    // The daemon replaces the timer (it polls by itself), not the one-shot
    // service, and is hardened like it: same sandbox lines, in step.
    for required in [
        "ExecStart=/usr/bin/updater daemon",
        "Conflicts=updater.timer\n",
        "RestartPreventExitStatus=2\n",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            daemon.contains(required),
            "updater-daemon.service lacks {required}"
        );
    }
    let sandbox = |unit: &str| -> Vec<String> {
        let body = unit
            .split("# Filesystem.")
            .nth(1)
            .expect("a # Filesystem. section");
        body.lines()
            .take_while(|l| !l.starts_with('['))
            .filter(|l| l.contains('='))
            .map(String::from)
            .collect()
    };
    assert_eq!(sandbox(&service), sandbox(&daemon), "hardening differs");

    let dir = tempfile::tempdir().unwrap();
    copy_units(dir.path(), "updater.service", &service);
    for unit in ["updater.service", "updater.timer", "updater-daemon.service"] {
        let found = complaints(&dir.path().join(unit), "updater");
        assert!(
            found.is_empty(),
            "systemd-analyze verify {unit}:\n{}",
            found.join("\n")
        );
    }

    // The check must be able to fail.
    for (name, text, ty) in [
        ("updater.service", &service, "Type=oneshot"),
        ("updater-daemon.service", &daemon, "Type=exec"),
    ] {
        let broken = tempfile::tempdir().unwrap();
        copy_units(
            broken.path(),
            name,
            &text.replace(ty, &format!("{ty}\nProtectSystem=sometimes")),
        );
        assert!(
            !complaints(&broken.path().join(name), "updater").is_empty(),
            "a broken {name} went unnoticed"
        );
    }
}

/// Exposure of `systemd/updater.service` and `systemd/updater-daemon.service`
/// as scored by systemd 252's `systemd-analyze security --offline=yes`: 2.9
/// ("OK") for both, i.e. 29 on the 0-100 scale of `--threshold`. They run as
/// root on purpose (see the units), which accounts for most of the score.
/// Lower this when the units get stricter; raising it needs a reason in the
/// units' comments.
const SECURITY_THRESHOLD: u32 = 29;

fn passes_security(name: &str, ty: &str) {
    let service = read_unit(name);
    let dir = tempfile::tempdir().unwrap();
    copy_units(dir.path(), name, &service);
    let unit = dir.path().join(name);
    let (ok, overall, warnings) = security(&unit, SECURITY_THRESHOLD);
    eprintln!("{overall}");
    assert!(
        ok && warnings.is_empty() && overall.contains("exposure level"),
        "systemd-analyze security {name} over {SECURITY_THRESHOLD}: {overall}\n{}",
        warnings.join("\n")
    );

    // The check must be able to fail: a weaker unit scores over the
    // threshold, and a unit with a bad line is warned about.
    let weak = tempfile::tempdir().unwrap();
    copy_units(weak.path(), name, &service.replace("ProtectSystem=strict\n", ""));
    let (ok, overall, _) = security(&weak.path().join(name), SECURITY_THRESHOLD);
    assert!(!ok, "a weakened {name} passed: {overall}");
    let bad = tempfile::tempdir().unwrap();
    copy_units(
        bad.path(),
        name,
        &service.replace(ty, &format!("{ty}\nNoSuchDirective=1")),
    );
    let (_, _, warnings) = security(&bad.path().join(name), SECURITY_THRESHOLD);
    assert!(!warnings.is_empty(), "a warning about {name} went unnoticed");
}

#[test]
fn service_passes_systemd_analyze_security() {
    if !available_or_skip("unit security") {
        return;
    }
    passes_security("updater.service", "Type=oneshot");
}

#[test]
fn daemon_service_passes_systemd_analyze_security() {
    if !available_or_skip("unit security") {
        return;
    }
    passes_security("updater-daemon.service", "Type=exec");
}

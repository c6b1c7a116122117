//! `systemd-analyze` as the unit tests of several crates use it
//! (`updater/tests/systemd_units.rs`, `manifest-server/tests/systemd_unit.rs`),
//! included there with `#[path]`: one copy of the invocations and of the
//! parsing of their output.

use std::path::Path;
use std::process::Command;

/// Whether `systemd-analyze` can run. Missing, the caller skips with a
/// note, except on CI (`CI` set), where that is a failure.
pub fn available_or_skip(what: &str) -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is required on CI (apt-get install systemd)"
        );
        eprintln!("note: systemd-analyze not found; {what} not checked");
    }
    ok
}

/// `systemd-analyze verify UNIT`: the output lines that contain `needle`
/// (`verify` exits 0 on many problems, so its output is what counts).
pub fn complaints(unit: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// `systemd-analyze security --offline=yes --threshold=N` on `unit`: the
/// exit status, the "Overall exposure level" line and any stderr line about
/// the unit (unknown keys, bad values).
pub fn security(unit: &Path, threshold: u32) -> (bool, String, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={threshold}"))
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("")
        .to_string();
    let name = unit.file_name().unwrap().to_str().unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(name))
        .map(String::from)
        .collect();
    (out.status.success(), overall, warnings)
}

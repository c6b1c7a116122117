//! Fault injection on the device side (issue #6): the updater's own crash
//! seams (`UPDATER_TEST_FAILPOINT=<phase>` or `sync:<N>`, and the sync-point
//! log `UPDATER_TEST_SYNC_LOG`, see updater/src/failpoint.rs), a shutdown
//! (SIGTERM) at a chosen phase, and a small tmpfs as the state dir for the
//! disk-full cases.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::bins;
use crate::device::Device;
use crate::util::{wait_for, Run};

pub const FAILPOINT_ENV: &str = "UPDATER_TEST_FAILPOINT";
pub const SYNC_LOG_ENV: &str = "UPDATER_TEST_SYNC_LOG";

impl Run {
    /// Panic unless the run was SIGKILLed (by a failpoint named `what`).
    pub fn expect_killed(&self, what: &str) -> &Self {
        assert_eq!(
            self.signal,
            Some(libc::SIGKILL),
            "UPDATER_TEST_FAILPOINT={what} did not kill the run: it exited {}\n{}",
            self.describe(),
            self.output()
        );
        self
    }
}

/// The labels of a sync log, in order (line `N label` -> `label`); checks
/// that the numbers run 1, 2, 3…
pub fn read_sync_log(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let (n, label) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
            assert_eq!(n, (i + 1).to_string(), "{}: {text}", path.display());
            label.to_string()
        })
        .collect()
}

impl Device {
    /// `updater check` logging its sync points to `log`, and SIGKILLing
    /// itself before sync point `kill_at` when given.
    pub fn check_logging_syncs(&self, log: &Path, kill_at: Option<usize>) -> Run {
        let log = log.display().to_string();
        let failpoint = kill_at.map(|n| format!("sync:{n}"));
        let mut env = vec![(SYNC_LOG_ENV, log.as_str())];
        if let Some(f) = &failpoint {
            env.push((FAILPOINT_ENV, f.as_str()));
        }
        self.updater(&["check"], &env)
    }

    /// Temp files (`….tmp-…`) anywhere under the state dir, relative to it:
    /// what an interrupted write left behind.
    pub fn temp_files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_name().to_string_lossy().contains(".tmp-") {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state_dir, &self.state_dir, &mut out);
        out.sort();
        out
    }

    /// Start `updater check`, wait until its `state.json` says `phase`, then
    /// send SIGTERM (what systemd does on a planned reboot) and return how
    /// the run ended.
    pub fn check_terminated_in(&self, phase: &str) -> ExitStatus {
        self.check_terminated_when(phase, |s| s["phase"] == phase)
    }

    /// Like [`check_terminated_in`](Self::check_terminated_in), once `ready`
    /// holds for the parsed `state.json` (`what` names that moment). The
    /// state the previous run left may already look alike: make `ready`
    /// specific (e.g. the trial attempt number).
    pub fn check_terminated_when(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> ExitStatus {
        let mut run = Command::new(bins::updater())
            .args(["--config", &self.config_path.display().to_string(), "check"])
            .env_remove(FAILPOINT_ENV)
            .env_remove(SYNC_LOG_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let state = self.state_dir.join("state.json");
        let entered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                &format!("the run to reach {what}"),
                Duration::from_secs(60),
                || {
                    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&state).ok()?).ok()?;
                    ready(&doc).then_some(())
                },
            )
        }));
        if let Err(panic) = entered {
            let _ = run.kill();
            let _ = run.wait();
            std::panic::resume_unwind(panic);
        }
        // SAFETY: signalling our own, still running (or unreaped) child.
        unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
        wait_for("the run to stop", Duration::from_secs(30), || {
            run.try_wait().unwrap()
        })
    }
}

/// A tmpfs of a given size mounted on a directory; unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mount a `bytes`-sized tmpfs on `dir` (needs root). `None` when that
    /// is impossible: the caller skips loudly, or fails when `CI=true`
    /// (a CI runner that cannot mount must not pass this silently).
    pub fn mount_or_skip(dir: &Path, bytes: u64) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => {
                return Some(Tmpfs {
                    dir: dir.to_path_buf(),
                })
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        let msg = format!(
            "SKIPPED: needs root for tmpfs (mount -t tmpfs on {}: {why})",
            dir.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true, so this is a failure");
        }
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
        None
    }

    /// Change the size (`mount -o remount,size=…`): "free space".
    pub fn resize(&self, bytes: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes free on the tmpfs.
    pub fn available(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Take every free byte with `file` (allocated, not sparse); returns its
    /// path, to remove it again.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join(name);
        let mut f = fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // The last partial chunk may have left a page's worth: take it too.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        assert!(
            self.available() < 64 << 10,
            "{} still has {} bytes free",
            self.dir.display(),
            self.available()
        );
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something (an app started from the slot) still holds it: detach.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

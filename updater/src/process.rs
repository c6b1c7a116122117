//! Running external programs (restart command, busy command, hooks, unit
//! and command health checks) with a timeout: the process seam. A program
//! that does not finish in time is killed and reported as such.
//!
//! Each program runs in a process group of its own, and a timeout kills the
//! whole group: a hook is usually a shell script, and killing only the
//! shell would leave what it started (`sleep 300 &`, a stuck `curl`)
//! running with the updater's lock long released, piling up on every retry.
//! Only a timeout kills the group: what a program that finished in time
//! left in the background (a restart script starting the app) keeps running.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    Exited(i32),
    Signalled,
    TimedOut,
}

impl RunResult {
    pub fn success(&self) -> bool {
        *self == RunResult::Exited(0)
    }
    pub fn describe(&self) -> String {
        match self {
            RunResult::Exited(c) => format!("exited with status {c}"),
            RunResult::Signalled => "was killed by a signal".into(),
            RunResult::TimedOut => {
                "did not finish in time and was killed, with every process it started".into()
            }
        }
    }
}

/// Run `argv` (+ `extra` arguments) in `cwd` with `env`, waiting at most
/// `timeout`. Output goes to our stderr (the journal under systemd); stdin is
/// closed. On a timeout the program's process group is killed and the
/// program reaped. Async, so a shutdown signal ends the run while a hook or
/// check is running: dropping this future kills the group too (`Group`).
pub async fn run(
    argv: &[String],
    extra: &[&str],
    cwd: Option<&Path>,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<RunResult, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its own group (pgid = its pid), so a timeout can kill its children too.
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let result = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status.code().map_or(RunResult::Signalled, RunResult::Exited)),
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        Err(_) => {
            group.kill();
            // Reap it: until then its pid, the group's id, cannot be reused.
            let _ = child.kill().await;
            Ok(RunResult::TimedOut)
        }
    };
    // Finished (or killed and reaped): what it left in the background in
    // time (a restart script starting the app) keeps running.
    group.0 = None;
    result
}

/// A running program's process group, killed with SIGKILL when this is
/// dropped while the program runs: the run was stopped (a shutdown signal
/// dropped its future), and a hook's children must not outlive it. The
/// child is not reaped yet at that point, so its pid, which is the group's
/// id, cannot have been reused by a stranger.
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take().filter(|&p| p > 1) {
            // SAFETY: killpg(2) has no memory-safety preconditions.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Show a command line in messages.
pub fn show(argv: &[String], extra: &[&str]) -> String {
    argv.iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_and_timeouts() {
        assert_eq!(
            run(&sh("exit 0"), &[], None, &[], Duration::from_secs(5))
                .await
                .unwrap(),
            RunResult::Exited(0)
        );
        assert_eq!(
            run(&sh("exit 3"), &[], None, &[], Duration::from_secs(5))
                .await
                .unwrap(),
            RunResult::Exited(3)
        );
        let started = Instant::now();
        assert_eq!(
            run(&sh("sleep 5"), &[], None, &[], Duration::from_millis(200))
                .await
                .unwrap(),
            RunResult::TimedOut
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(run(
            &["/nonexistent/prog".into()],
            &[],
            None,
            &[],
            Duration::from_secs(1)
        )
        .await
        .is_err());
    }

    /// Live processes whose command line contains `marker` (a zombie's
    /// command line is empty: it is dead, just not reaped).
    fn alive_with(marker: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
        found
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_program_started_too() {
        // Unique per test process: `sleep 300.<pid>7` (sleep takes fractions).
        let marker = format!("300.{}7", std::process::id());
        let script = format!("sleep {marker} & sh -c 'sleep {marker}' & sleep {marker}; exit 0");
        let started = Instant::now();
        let result = run(&sh(&script), &[], None, &[], Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(result, RunResult::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        // SIGKILL is delivered before killpg returns, but a process dies
        // asynchronously: allow a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !alive_with(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(alive_with(&marker), Vec::<String>::new(), "left running");
    }

    #[tokio::test]
    async fn a_program_that_finishes_in_time_keeps_its_background_children() {
        // Only a timeout kills the group: a restart script may start a
        // service in the background and exit 0.
        let marker = format!("300.{}3", std::process::id());
        let script = format!("sleep {marker} >/dev/null 2>&1 & exit 0");
        let result = run(&sh(&script), &[], None, &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(result, RunResult::Exited(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive_with(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = alive_with(&marker);
        assert_eq!(left.len(), 1, "{left:?}");
        // Clean up by hand: that sleep is ours.
        let pid: i32 = left[0].split(':').next().unwrap().parse().unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    /// A shutdown signal drops the run's future while a hook runs: the hook
    /// and what it started go with it, instead of the signal waiting for
    /// the hook (up to `hook_timeout`) or the processes outliving the run.
    #[tokio::test]
    async fn a_run_dropped_midway_kills_what_it_started() {
        let marker = format!("300.{}9", std::process::id());
        let script = format!("sleep {marker} & sleep {marker}");
        let stopped = tokio::time::timeout(
            Duration::from_millis(300),
            run(&sh(&script), &[], None, &[], Duration::from_secs(120)),
        )
        .await;
        assert!(stopped.is_err(), "the run should still have been going");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !alive_with(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(alive_with(&marker), Vec::<String>::new(), "left running");
    }
}

//! Running external programs (restart command, busy command, hooks, unit
//! and command health checks) with a timeout: the process seam. A program
//! that does not finish in time is killed and reported as such.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
            RunResult::TimedOut => "did not finish in time and was killed".into(),
        }
    }
}

/// Run `argv` (+ `extra` arguments) in `cwd` with `env`, waiting at most
/// `timeout`. Output goes to our stderr (the journal under systemd); stdin is
/// closed. Polling `try_wait` keeps this free of threads and signals.
pub fn run(
    argv: &[String],
    extra: &[&str],
    cwd: Option<&Path>,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<RunResult, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(program);
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
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(status.code().map_or(RunResult::Signalled, RunResult::Exited));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(RunResult::TimedOut);
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
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

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_codes_and_timeouts() {
        assert_eq!(
            run(&sh("exit 0"), &[], None, &[], Duration::from_secs(5)).unwrap(),
            RunResult::Exited(0)
        );
        assert_eq!(
            run(&sh("exit 3"), &[], None, &[], Duration::from_secs(5)).unwrap(),
            RunResult::Exited(3)
        );
        let started = Instant::now();
        assert_eq!(
            run(&sh("sleep 5"), &[], None, &[], Duration::from_millis(200)).unwrap(),
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
        .is_err());
    }
}

//! Command line (docs/UPDATER.md): each subcommand resolves its flags and
//! calls the library; exit codes come from the run's `Outcome`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use manifest::Version;
use rand::Rng;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::paths::Paths;
use crate::run::{Agent, Report, RunError};
use crate::state::{exit_code, Outcome};
use crate::trust::TrustConfig;

#[derive(Parser)]
#[command(
    name = "updater",
    version,
    about = "Converge this device on its cohort's signed release (A/B, health-checked, rollback)"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "/etc/updater/updater.toml")]
    pub config: PathBuf,
    /// More detailed logs.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// One convergence run (what the timer calls).
    Check(CheckArgs),
    /// Run checks forever: poll interval with jitter, and install bundles dropped in inbox/.
    Daemon,
    /// Offline install from a bundle file (`manifest-builder bundle`), with the checks of `check`.
    Install(InstallArgs),
    /// Slots, versions, state, last check and its outcome.
    Status(JsonFlag),
    /// Past installs and rollbacks, with reasons and durations.
    History(JsonFlag),
    /// Go back to the previous release in the other slot (blocks the current one).
    Rollback(RollbackArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Shell completions and man page (packaging).
    #[command(subcommand, hide = true)]
    Generate(cli_generate::Generate),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Fetch, verify and decide, but change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct InstallArgs {
    /// The bundle file.
    pub bundle: PathBuf,
}

#[derive(Args)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The version expected in the other slot.
    #[arg(long)]
    pub to: Option<Version>,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print what it resolves to.
    Check,
}

/// Exit code 2: the configuration is unusable.
pub const EXIT_CONFIG: u8 = 2;

fn load(path: &std::path::Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        log::error!("configuration error: {e}");
        EXIT_CONFIG
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Cli {
    pub fn run(self) -> u8 {
        match self.command {
            Command::Generate(g) => match g.run::<Cli>() {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("generate: {e}");
                    1
                }
            },
            Command::Config(ConfigCommand::Check) => match load(&self.config) {
                Ok(c) => {
                    let missing = c.missing_programs();
                    if !missing.is_empty() {
                        for m in &missing {
                            log::error!("{}: {m}", self.config.display());
                        }
                        return 2;
                    }
                    println!("{} is valid", self.config.display());
                    println!("servers:   {}", c.servers.join(", "));
                    println!(
                        "product:   {}  cohort: {}  compatible: {}",
                        c.product, c.cohort, c.compatible
                    );
                    println!("device id: {}", c.device_id);
                    let (what, keys) = match &c.trust {
                        TrustConfig::Static(k) => ("keys:     ", k),
                        TrustConfig::Root(k) => ("root keys:", k),
                    };
                    let ids: Vec<String> = keys.key_ids().map(ToString::to_string).collect();
                    println!("{what} {} (threshold {})", ids.join(", "), keys.threshold());
                    println!("state dir: {}", c.state_dir.display());
                    0
                }
                Err(code) => code,
            },
            Command::Status(f) => {
                let config = match load(&self.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                match crate::status::status_json(&config, &Paths::new(&config.state_dir)) {
                    Ok(v) if f.json => {
                        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                        0
                    }
                    Ok(v) => {
                        print!("{}", crate::status::status_text(&v));
                        0
                    }
                    Err(e) => {
                        log::error!("{e}");
                        1
                    }
                }
            }
            Command::History(f) => {
                let config = match load(&self.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let paths = Paths::new(&config.state_dir);
                let out = if f.json {
                    crate::status::history_json(&paths)
                        .map(|v| serde_json::to_string_pretty(&v).expect("json") + "\n")
                } else {
                    crate::status::history_text(&paths)
                };
                match out {
                    Ok(text) => {
                        print!("{text}");
                        0
                    }
                    Err(e) => {
                        log::error!("{}: {e}", paths.history().display());
                        1
                    }
                }
            }
            Command::Check(a) => match load(&self.config) {
                Ok(config) => converge(config, |agent| {
                    Box::pin(async move { agent.check(a.dry_run).await })
                }),
                Err(code) => code,
            },
            Command::Install(a) => match load(&self.config) {
                Ok(config) => converge(config, |agent| {
                    Box::pin(async move { agent.install(&a.bundle).await })
                }),
                Err(code) => code,
            },
            Command::Rollback(a) => match load(&self.config) {
                Ok(config) => converge(config, |agent| {
                    Box::pin(async move { agent.manual_rollback(a.to.as_ref()).await })
                }),
                Err(code) => code,
            },
            Command::Daemon => {
                let config = match load(&self.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                runtime().block_on(daemon(config))
            }
        }
    }
}

/// Exit code 16: stopped by SIGTERM or SIGINT (a shutdown) in the middle of
/// a run. Every step was persisted before it happened, so nothing is lost:
/// the next run finishes or undoes what this one started.
pub const EXIT_INTERRUPTED: u8 = 16;

type Run<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Report, RunError>> + 'a>>;

/// One run (`check`, `install`, `rollback`): log its one line and map its
/// outcome to the exit code; a shutdown signal ends it at the next await.
fn converge(config: Config, run: impl for<'a> FnOnce(&'a Agent) -> Run<'a>) -> u8 {
    let cohort = config.cohort.to_string();
    let agent = Agent::new(config, Box::new(SystemClock));
    runtime().block_on(async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot handle SIGTERM: {e}");
                return exit_code(Outcome::Failed);
            }
        };
        let result = tokio::select! {
            result = run(&agent) => result,
            _ = term.recv() => return interrupted(&agent),
            _ = tokio::signal::ctrl_c() => return interrupted(&agent),
        };
        match result {
            Ok(report) => {
                crate::logging::report(&report, &cohort);
                report.exit_code()
            }
            Err(e) => {
                log::error!("failed: {e}; the device stays on its current slot");
                exit_code(Outcome::Failed)
            }
        }
    })
}

/// The run's future is already dropped here (its lock released).
fn interrupted(agent: &Agent) -> u8 {
    log::warn!("interrupted by a shutdown signal; nothing is lost: the next run finishes or undoes this one");
    agent.note_shutdown();
    EXIT_INTERRUPTED
}

/// Poll forever with jitter, so a fleet does not hit the server in step,
/// and install bundles dropped in `inbox/` (see `inbox`); stop cleanly on
/// SIGTERM/SIGINT between runs.
async fn daemon(config: Config) -> u8 {
    let cohort = config.cohort.to_string();
    let interval = config.daemon.poll_interval;
    let jitter = config.daemon.poll_jitter;
    let rescan = config.daemon.inbox_rescan;
    let agent = Agent::new(config, Box::new(SystemClock));
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot handle SIGTERM: {e}");
            return 1;
        }
    };
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = crate::inbox::watch(&agent.paths, rescan, tx);
    let mut seen = crate::inbox::Seen::new();
    let mut next_poll = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_poll {
            // A shutdown stops a run at its next await, as in `check`; for
            // a service, stopping is still a clean exit.
            let result = tokio::select! {
                result = agent.check(false) => result,
                _ = term.recv() => { interrupted(&agent); return 0 }
                _ = tokio::signal::ctrl_c() => { interrupted(&agent); return 0 }
            };
            match result {
                Ok(report) => crate::logging::report(&report, &cohort),
                Err(e) => log::error!("failed: {e}; the device stays on its current slot"),
            }
            let extra = if jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_millis(rand::thread_rng().gen_range(0..=jitter.as_millis() as u64))
            };
            next_poll = tokio::time::Instant::now() + interval + extra;
            // Bundles kept for later (deferred) are tried again each poll.
            seen.clear();
        }
        crate::inbox::process(&agent, &mut seen).await;
        tokio::select! {
            _ = tokio::time::sleep_until(next_poll) => {}
            _ = tokio::time::sleep(rescan) => {}
            Some(()) = events.recv() => {
                // Let a copy finish: wait until the inbox is quiet.
                while let Ok(Some(())) = tokio::time::timeout(crate::inbox::SETTLE, events.recv()).await {}
            }
            _ = term.recv() => return 0,
            _ = tokio::signal::ctrl_c() => return 0,
        }
    }
}

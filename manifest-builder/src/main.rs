use std::process::ExitCode;

use clap::Parser;
use manifest::Timestamp;
use manifest_builder::cli::Cli;

/// Exit codes: 0 success, 1 a problem was found or an operation failed,
/// 2 bad usage (clap), 3 `rollout advance|watch` halted or rolled back a
/// rollout (see `cli::Exit`).
fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    match cli.command.run(now) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

use std::process::ExitCode;

use clap::Parser;
use updater::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    updater::logging::init(cli.verbose);
    ExitCode::from(cli.run())
}

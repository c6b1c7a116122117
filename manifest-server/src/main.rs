//! `manifest-server --store DIR --listen ADDR [--keys FILE.pub ...]`: parse
//! the flags, set up logging, run the library until SIGTERM or SIGINT, and
//! map errors to the exit status documented in `--help`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use manifest_server::{Args, Config, Error};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    // Hidden: `manifest-server generate completions SHELL | man` (packaging).
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        return manifest_server::generate::main();
    }
    let args = Args::parse();
    // Before anything can log; --access-log is honoured whatever RUST_LOG says.
    manifest_server::logging::init(args.access_log);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let config = Config::from_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Serve)?;
    let result = runtime.block_on(async {
        // Install the handlers before announcing the address, so a signal
        // sent right after the line is seen is handled gracefully.
        let mut term = signal(SignalKind::terminate()).map_err(Error::Serve)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Serve)?;
        let shutdown = async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            log::info!("{name} received, shutting down");
        };
        manifest_server::run(config, shutdown, |addr| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{addr}");
            let _ = out.flush();
        })
        .await
    });
    // A download stuck in the blocking pool must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

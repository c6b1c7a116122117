//! `manifest-server generate ...` (completions, man page; see the
//! `cli-generate` crate). The server's CLI is a flat flag parser, so this is
//! dispatched from `main` on the first argument instead of a subcommand.

use cli_generate::Generate;

#[derive(clap::Parser, Debug)]
#[command(name = "manifest-server generate", hide = true)]
struct GenerateCli {
    #[command(subcommand)]
    what: Generate,
}

pub fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    let args = std::env::args_os().skip(1);
    let cli = GenerateCli::parse_from(args);
    match cli.what.run::<crate::Args>() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

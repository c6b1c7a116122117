//! Hidden `generate` command: shell completions and a man page from the clap
//! definitions, written to stdout (packaging/build-debs.sh installs them).

use std::io::Write;

use clap::{CommandFactory, Subcommand, ValueEnum};

#[derive(Subcommand, Debug, Clone)]
pub enum Generate {
    /// Shell completion script for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Man page (roff).
    Man,
}

/// The shells the packages ship completions for.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Generate {
    /// Write the requested file for the command `C` to stdout.
    pub fn run<C: CommandFactory>(&self) -> std::io::Result<()> {
        let mut cmd = C::command();
        let name = cmd.get_name().to_string();
        let mut out = std::io::stdout().lock();
        match self {
            Generate::Completions { shell } => {
                let shell = match shell {
                    Shell::Bash => clap_complete::Shell::Bash,
                    Shell::Zsh => clap_complete::Shell::Zsh,
                    Shell::Fish => clap_complete::Shell::Fish,
                };
                clap_complete::generate(shell, &mut cmd, name, &mut out);
            }
            Generate::Man => clap_mangen::Man::new(cmd).render(&mut out)?,
        }
        out.flush()
    }
}

/// `manifest-server generate ...`: the server's CLI is a flat flag parser,
/// so this is dispatched from `main` on the first argument instead.
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

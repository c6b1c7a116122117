//! The hidden `generate` command of all three programs: shell completions
//! and a man page from each program's clap definitions, written to stdout
//! (packaging/build-debs.sh installs them). One small crate so the programs
//! share it without depending on each other.

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

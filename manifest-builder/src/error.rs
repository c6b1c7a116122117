//! The builder's error type: every variant says which file or input failed
//! and why, so the one line the CLI prints is enough to act on.

use std::io;
use std::path::PathBuf;

use manifest::archive::ArchiveError;
use manifest::{DocumentError, MinisignError, NameError, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: MinisignError,
    },
    #[error("{}: {source}", path.display())]
    Document {
        path: PathBuf,
        #[source]
        source: DocumentError,
    },
    #[error("component {name}: {source}")]
    Archive {
        name: String,
        #[source]
        source: ArchiveError,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Name(#[from] NameError),
    /// The fleet summary could not be read (server, token, JSON).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error(transparent)]
    Policy(#[from] crate::rollout::PolicyError),
    #[error("{0}")]
    Invalid(String),
    /// The store already says otherwise (immutable release, lower version…).
    #[error("{0}")]
    Refused(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

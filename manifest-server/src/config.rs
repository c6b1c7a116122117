//! Command-line flags and the configuration they resolve to.
//!
//! `Args` is what clap parses; `Config` is what the server runs with. The
//! resolution step does every check that can fail before any socket is
//! opened: the store directory and its three subdirectories exist and are
//! real directories, and `keys/`, when present, is one too (not symlinks:
//! nothing is served or loaded through a link; the server enforces that at
//! every open, see `files::StoreRoot`, this only fails early with a clear
//! message), and every key file reads and parses
//! as a minisign public key, and with `--reports-db` the report tokens
//! read (the database itself is opened by `Server::bind`). Each failure is
//! one line naming the path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use manifest::store::{ARTIFACTS_DIR, COHORTS_DIR, RELEASES_DIR};
use manifest::{MinisignError, PublicKey, TrustError, TrustedKeys, KEYS_HISTORY_DIR};

use crate::reports::{Auth, ReportsConfig, TokenFileError};

/// Serve an update store (cohorts/, releases/, artifacts/) to a fleet over HTTP.
#[derive(Debug, clap::Parser)]
#[command(
    name = "manifest-server",
    version,
    after_help = "Exit status: 0 after SIGTERM/SIGINT, 1 on a runtime failure, 2 on a bad argument, \
store, key, token or reports database file, 3 when the address cannot be listened on."
)]
pub struct Args {
    /// The store directory: must hold cohorts/, releases/ and artifacts/.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,

    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port; the
    /// actual address is printed on stdout as `listening on http://ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Trusted minisign public key(s). With keys, a manifest is served only
    /// once its .minisig verifies; without, the store is served unverified.
    #[arg(long = "keys", value_name = "FILE.pub", num_args = 1..)]
    pub keys: Vec<PathBuf>,

    /// How many distinct trusted keys must have signed a manifest.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "keys")]
    pub threshold: usize,

    /// Log one line per request (peer, method, path, status, bytes, duration).
    #[arg(long)]
    pub access_log: bool,

    /// Accept device reports into this SQLite file (created if missing) and
    /// serve the fleet view: POST /v1/reports, GET /v1/fleet, GET / (see
    /// docs/REPORTS.md). Without it those paths are 404.
    #[arg(long, value_name = "FILE")]
    pub reports_db: Option<PathBuf>,

    /// Bearer tokens accepted for reports and the fleet view, one per line
    /// (# comments and empty lines ignored). Required with --reports-db
    /// unless --reports-open is given.
    #[arg(
        long,
        value_name = "FILE",
        requires = "reports_db",
        conflicts_with = "reports_open"
    )]
    pub report_token_file: Option<PathBuf>,

    /// Accept reports and show the fleet to anyone who can reach the server
    /// (no token; a warning is logged at start).
    #[arg(long, requires = "reports_db")]
    pub reports_open: bool,

    /// A device is "silent" when its latest report is older than this
    /// (e.g. 24h, 90min).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub silent_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("store {}: {source}", path.display())]
    StoreUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {}: not a directory", path.display())]
    StoreNotDirectory { path: PathBuf },
    #[error("store {}: missing {dir}/ (a store holds cohorts/, releases/ and artifacts/)", store.display())]
    SubdirMissing { store: PathBuf, dir: &'static str },
    #[error("store {}: {dir}/ is not a directory", store.display())]
    SubdirNotDirectory { store: PathBuf, dir: &'static str },
    #[error(
        "store {}: {dir}/ is a symbolic link; point --store at a tree whose {dir}/ is a real directory \
         (files are never served from outside the store)",
        store.display()
    )]
    SubdirIsSymlink { store: PathBuf, dir: &'static str },
    #[error("key file {}: {source}", path.display())]
    KeyUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {}: {source}", path.display())]
    KeyInvalid {
        path: PathBuf,
        #[source]
        source: MinisignError,
    },
    #[error("--keys/--threshold: {0}")]
    Trust(#[from] TrustError),
    #[error(transparent)]
    ReportTokens(#[from] TokenFileError),
    #[error(
        "--reports-db needs --report-token-file FILE (the devices' bearer tokens), or --reports-open \
         to accept reports from anyone"
    )]
    ReportsNeedAuth,
    #[error("--silent-after must be more than zero")]
    SilentAfterZero,
}

/// Everything the server needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store root, canonical (symlinks in the path itself are resolved once).
    pub store: PathBuf,
    pub listen: SocketAddr,
    /// `None`: serve manifests unverified (warned about at start).
    pub trust: Option<TrustedKeys>,
    pub access_log: bool,
    /// `None`: no reports, no fleet view.
    pub reports: Option<ReportsConfig>,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let store = check_store(&args.store)?;
        let trust = if args.keys.is_empty() {
            None
        } else {
            let keys = args
                .keys
                .iter()
                .map(|p| load_key(p))
                .collect::<Result<Vec<_>, _>>()?;
            Some(TrustedKeys::new(keys, args.threshold)?)
        };
        let reports = match args.reports_db {
            None => None,
            Some(db) => {
                let auth = match (&args.report_token_file, args.reports_open) {
                    (Some(file), _) => Auth::from_file(file)?,
                    (None, true) => Auth::Open,
                    (None, false) => return Err(ConfigError::ReportsNeedAuth),
                };
                if args.silent_after.is_zero() {
                    return Err(ConfigError::SilentAfterZero);
                }
                Some(ReportsConfig {
                    db,
                    auth,
                    silent_after: args.silent_after,
                })
            }
        };
        Ok(Self {
            store,
            listen: args.listen,
            trust,
            access_log: args.access_log,
            reports,
        })
    }
}

fn check_store(path: &Path) -> Result<PathBuf, ConfigError> {
    let root = path
        .canonicalize()
        .map_err(|source| ConfigError::StoreUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if !root.is_dir() {
        return Err(ConfigError::StoreNotDirectory {
            path: path.to_path_buf(),
        });
    }
    // keys/ (the root of trust's history) is optional: `keys init` makes it.
    for (dir, required) in [
        (COHORTS_DIR, true),
        (RELEASES_DIR, true),
        (ARTIFACTS_DIR, true),
        (KEYS_HISTORY_DIR, false),
    ] {
        // symlink_metadata: the subdirectory itself must not be a link, or
        // `artifacts/<hash>` could resolve anywhere on the machine.
        let meta = match std::fs::symlink_metadata(root.join(dir)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::SubdirMissing {
                    store: path.to_path_buf(),
                    dir,
                })
            }
            Err(source) => {
                return Err(ConfigError::StoreUnreadable {
                    path: root.join(dir),
                    source,
                })
            }
        };
        if meta.file_type().is_symlink() {
            return Err(ConfigError::SubdirIsSymlink {
                store: path.to_path_buf(),
                dir,
            });
        }
        if !meta.is_dir() {
            return Err(ConfigError::SubdirNotDirectory {
                store: path.to_path_buf(),
                dir,
            });
        }
    }
    Ok(root)
}

fn load_key(path: &Path) -> Result<PublicKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    PublicKey::parse(&text).map_err(|source| ConfigError::KeyInvalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in [COHORTS_DIR, RELEASES_DIR, ARTIFACTS_DIR] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        dir
    }

    fn parse(store: &Path, extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["manifest-server", "--listen", "127.0.0.1:0", "--store"];
        argv.push(store.to_str().unwrap());
        argv.extend_from_slice(extra);
        Config::from_args(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn names_the_missing_subdirectory() {
        let dir = store();
        std::fs::remove_dir(dir.path().join("releases")).unwrap();
        let err = parse(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("missing releases/"), "{err}");
    }

    #[test]
    fn refuses_a_symlinked_artifacts_dir() {
        let dir = store();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::remove_dir(dir.path().join("artifacts")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("artifacts")).unwrap();
        let err = parse(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("artifacts/ is a symbolic link"), "{err}");
    }

    #[test]
    fn keys_dir_is_optional_but_not_a_symlink() {
        let dir = store();
        parse(dir.path(), &[]).unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        parse(dir.path(), &[]).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::remove_dir(dir.path().join("keys")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("keys")).unwrap();
        let err = parse(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("keys/ is a symbolic link"), "{err}");
    }

    #[test]
    fn reports_need_a_token_file_or_an_explicit_open() {
        let dir = store();
        let db = dir.path().join("reports.db");
        let db = db.to_str().unwrap();
        assert!(parse(dir.path(), &[]).unwrap().reports.is_none());
        let err = parse(dir.path(), &["--reports-db", db]).unwrap_err();
        assert!(matches!(err, ConfigError::ReportsNeedAuth), "{err}");
        let open = parse(dir.path(), &["--reports-db", db, "--reports-open"]).unwrap();
        let reports = open.reports.unwrap();
        assert!(reports.auth.is_open());
        assert_eq!(reports.silent_after, Duration::from_secs(86_400));
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "a-long-enough-token-1234\n").unwrap();
        let tokens = tokens.to_str().unwrap();
        let config = parse(
            dir.path(),
            &[
                "--reports-db",
                db,
                "--report-token-file",
                tokens,
                "--silent-after",
                "90min",
            ],
        )
        .unwrap();
        let reports = config.reports.unwrap();
        assert!(!reports.auth.is_open());
        assert_eq!(reports.silent_after, Duration::from_secs(5400));
        let err = parse(
            dir.path(),
            &["--reports-db", db, "--report-token-file", "/nonexistent"],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("report token file /nonexistent: "),
            "{err}"
        );
        // Flags that only make sense with --reports-db.
        let argv = [
            "manifest-server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "x",
            "--reports-open",
        ];
        assert!(Args::try_parse_from(argv).is_err());
        let argv = [
            "manifest-server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "x",
            "--reports-db",
            db,
            "--reports-open",
            "--report-token-file",
            tokens,
        ];
        assert!(Args::try_parse_from(argv).is_err());
    }

    #[test]
    fn keys_are_loaded_and_checked() {
        let dir = store();
        let key = manifest::SecretKey::generate().public_key();
        let good = dir.path().join("k.pub");
        std::fs::write(&good, key.to_file_text()).unwrap();
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "not a key\n").unwrap();
        let good = good.to_str().unwrap();
        let config = parse(dir.path(), &["--keys", good]).unwrap();
        assert_eq!(config.trust.unwrap().threshold(), 1);
        let err = parse(dir.path(), &["--keys", bad.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().starts_with("key file "), "{err}");
        let err = parse(dir.path(), &["--keys", good, "--threshold", "2"]).unwrap_err();
        assert!(err.to_string().contains("threshold 2 cannot be met"), "{err}");
        let err = parse(dir.path(), &["--keys", "/nonexistent.pub"]).unwrap_err();
        assert!(matches!(err, ConfigError::KeyUnreadable { .. }), "{err}");
    }
}

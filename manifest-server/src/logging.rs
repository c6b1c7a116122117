//! Where log lines go: the systemd journal when stderr is connected to it
//! (`JOURNAL_STREAM` matches stderr, i.e. running as a unit), so levels and
//! fields survive; otherwise stderr through env_logger, level `info` unless
//! `RUST_LOG` says otherwise. stdout is kept for the one `listening on` line.
//!
//! The access log (`--access-log`) is asked for by its own flag, so the log
//! level does not turn it off: its target, `ACCESS_TARGET`, is enabled at
//! `info` whatever `RUST_LOG` says, on both paths. Going through the logger
//! (rather than writing to stderr directly) keeps one format, timestamps and
//! the journal's fields for every line.

use log::{LevelFilter, Log, Metadata, Record};

/// The target of access-log lines (see `http::AccessLine`).
pub const ACCESS_TARGET: &str = "manifest_server::access";

/// Install the logger; call once, first thing in `main`. `access_log`: the
/// `--access-log` flag.
pub fn init(access_log: bool) {
    if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                // A plain level in RUST_LOG (`debug`) is honoured here too.
                let level = std::env::var("RUST_LOG")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(LevelFilter::Info);
                let logger = WithAccess {
                    inner: journal,
                    level,
                    access_log,
                };
                let max = logger.max_level();
                match log::set_boxed_logger(Box::new(logger)) {
                    Ok(()) => {
                        log::set_max_level(max);
                        return;
                    }
                    Err(e) => {
                        eprintln!("manifest-server: cannot log to the journal ({e}); logging to stderr")
                    }
                }
            }
            // Fall through to stderr, which the journal collects anyway.
            Err(e) => eprintln!("manifest-server: cannot log to the journal ({e}); logging to stderr"),
        }
    }
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if access_log {
        // After RUST_LOG is parsed: replaces any directive it has for this
        // target, and the most specific directive wins over `warn` & co.
        builder.filter_module(ACCESS_TARGET, LevelFilter::Info);
    }
    builder.target(env_logger::Target::Stderr).init();
}

/// The journal logger with a level, except for access lines when asked for.
struct WithAccess<L> {
    inner: L,
    level: LevelFilter,
    access_log: bool,
}

impl<L> WithAccess<L> {
    fn max_level(&self) -> LevelFilter {
        if self.access_log {
            self.level.max(LevelFilter::Info)
        } else {
            self.level
        }
    }
}

impl<L: Log> Log for WithAccess<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if self.access_log && metadata.target() == ACCESS_TARGET {
            return metadata.level() <= LevelFilter::Info;
        }
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    struct Nothing;
    impl Log for Nothing {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, _: &Record<'_>) {}
        fn flush(&self) {}
    }

    fn meta(target: &str, level: Level) -> Metadata<'_> {
        Metadata::builder().target(target).level(level).build()
    }

    #[test]
    fn access_lines_pass_whatever_the_level_when_asked_for() {
        let on = WithAccess {
            inner: Nothing,
            level: LevelFilter::Warn,
            access_log: true,
        };
        assert_eq!(on.max_level(), LevelFilter::Info);
        assert!(on.enabled(&meta(ACCESS_TARGET, Level::Info)));
        assert!(!on.enabled(&meta("manifest_server::snapshot", Level::Info)));
        assert!(on.enabled(&meta("manifest_server::snapshot", Level::Warn)));
        let off = WithAccess {
            access_log: false,
            ..on
        };
        assert_eq!(off.max_level(), LevelFilter::Warn);
        assert!(!off.enabled(&meta(ACCESS_TARGET, Level::Info)));
    }
}

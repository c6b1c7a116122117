//! Where log lines go: the systemd journal when stderr is connected to it
//! (`JOURNAL_STREAM` matches stderr, i.e. running as a unit), so levels and
//! fields survive; otherwise stderr through env_logger, level `info` unless
//! `RUST_LOG` says otherwise. stdout is kept for the one `listening on` line.

/// Install the logger; call once, first thing in `main`.
pub fn init() {
    if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new().and_then(|j| {
            j.install()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::AlreadyExists, e))
        }) {
            Ok(()) => {
                // A plain level in RUST_LOG (`debug`) is honoured here too.
                let level = std::env::var("RUST_LOG")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(log::LevelFilter::Info);
                log::set_max_level(level);
                return;
            }
            // Fall through to stderr, which the journal collects anyway.
            Err(e) => eprintln!("manifest-server: cannot log to the journal ({e}); logging to stderr"),
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
}

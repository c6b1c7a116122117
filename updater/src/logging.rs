//! Logs go to journald with structured fields (VERSION, COHORT, OUTCOME…)
//! when the process runs under systemd, else to stderr.

use log::LevelFilter;

use crate::run::Report;
use crate::state::Outcome;

pub fn init(verbose: bool) {
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            let journal = journal.with_syslog_identifier("updater".to_string());
            if journal.install().is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp_secs()
        .format_target(false)
        .init();
}

/// The one line per run that tells an operator what happened and what to do.
pub fn report(report: &Report, cohort: &str) {
    let level = match report.outcome {
        Outcome::UpToDate
        | Outcome::Updated
        | Outcome::Deferred
        | Outcome::NotInRollout
        | Outcome::Locked => log::Level::Info,
        Outcome::Offline | Outcome::RolledBack | Outcome::Blocked => log::Level::Warn,
        Outcome::Refused | Outcome::Failed => log::Level::Error,
    };
    let version = report
        .version
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    log::log!(
        level,
        outcome = report.outcome.as_str(),
        version = version.as_str(),
        cohort = cohort;
        "{}: {}",
        report.outcome.as_str(),
        report.reason
    );
}

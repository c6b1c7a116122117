//! `history.jsonl`: one line per install and rollback (automatic or
//! manual), appended and synced. Read by `updater history`.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};

use manifest::{Timestamp, Version};
use serde::{Deserialize, Serialize};

use crate::paths::Paths;
use crate::state::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (also the id of its report): a line a crash made
    /// the updater write twice is recognised and skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub at: Timestamp,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Version>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
}

/// Keep the file bounded on devices that run for years.
const MAX_BYTES: u64 = 1 << 20;

/// Append `event` unless a line with its id is already there.
pub fn append_once(paths: &Paths, event: &Event) -> io::Result<()> {
    if event.id.is_some() && read(paths)?.iter().rev().any(|e| e.id == event.id) {
        return Ok(());
    }
    append(paths, event)
}

fn append(paths: &Paths, event: &Event) -> io::Result<()> {
    let path = paths.history();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_BYTES) {
        // Keep the newer half.
        let events = read(paths)?;
        let keep = &events[events.len() / 2..];
        let mut text = String::new();
        for e in keep {
            text.push_str(&serde_json::to_string(e).expect("serializes"));
            text.push('\n');
        }
        crate::durable::write_atomic(&path, text.as_bytes())?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let mut line = serde_json::to_vec(event).expect("serializes");
    line.push(b'\n');
    f.write_all(&line)?;
    crate::durable::sync_data(&f, "history.jsonl append")
}

pub fn read(paths: &Paths) -> io::Result<Vec<Event>> {
    let f = match std::fs::File::open(paths.history()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    // A torn last line (power cut mid-append) is skipped, not fatal.
    Ok(io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

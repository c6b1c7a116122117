//! The reports database (SQLite, `--reports-db FILE`): schema and its
//! migrations, the idempotent insert, and the queries behind `/v1/fleet`.
//!
//! Two tables, written in one transaction per report:
//! - `reports`: every report as received, keyed by its `id` (the device's
//!   idempotency key: a second copy is recognised and changes nothing), in
//!   receipt order (`seq`).
//! - `devices`: one row per device, its *latest* report by the report's own
//!   `at` (ties: the one received last). A report sent late from an outbox
//!   goes into `reports` but leaves a newer `devices` row alone.
//!
//! Routine reports (the heartbeats: up_to_date, not_in_rollout, blocked,
//! offline) are a device's every poll, ~100 a day each; nothing in the
//! fleet view reads them from `reports` (the heartbeat's content is in
//! `devices`), so they are deleted after `ROUTINE_RETENTION`. Events
//! (updated, rolled_back, failed, refused, deferred) are kept.
//!
//! Opened in WAL mode with `synchronous = FULL`: a report is on disk before
//! the device is told 201 and deletes its copy. The fleet queries run on a
//! second connection inside one read transaction, so they see one
//! consistent state and never wait for a write (see `reports::worker`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use manifest::Timestamp;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};

use crate::fleet::{self, AttemptRow, CountRow, DeviceRow, Failure, Fleet, FromRow, Rows};
use crate::reports::document::Report;

/// Routine reports older than this (by receipt) are deleted.
pub const ROUTINE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Schema versions, in order; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: reports and the per-device latest view.
    "CREATE TABLE reports (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        device_id TEXT NOT NULL,
        product TEXT NOT NULL,
        cohort TEXT NOT NULL,
        at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT,
        running_version TEXT,
        stage TEXT,
        reason TEXT NOT NULL,
        duration_secs INTEGER,
        dropped_reports INTEGER NOT NULL
    );
    -- Per target: first/last and the newest-first walk. `outcome` rides
    -- along so first/last read the index alone.
    CREATE INDEX reports_target ON reports (cohort, to_version, at, outcome)
        WHERE outcome IN ('updated', 'rolled_back', 'failed');
    CREATE INDEX reports_device ON reports (device_id, at);
    -- recent_failures: the newest 20.
    CREATE INDEX reports_failures ON reports (at) WHERE outcome IN ('rolled_back', 'failed');
    -- Retention of heartbeats.
    CREATE INDEX reports_routine ON reports (received_at)
        WHERE outcome IN ('up_to_date', 'not_in_rollout', 'blocked', 'offline', 'locked');
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        product TEXT NOT NULL,
        cohort TEXT NOT NULL,
        running_version TEXT,
        to_version TEXT,
        last_outcome TEXT NOT NULL,
        last_stage TEXT,
        last_reason TEXT NOT NULL,
        last_seen INTEGER NOT NULL,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 2: implausible device clocks and lost reports (docs/REPORTS.md).
    // `reports.at` becomes the time a report is *placed* at (the device's
    // `at`, or the receipt time when that clock was implausible);
    // `device_at` keeps the device's own `at` when it was replaced (NULL:
    // same as `at`). `devices.dropped_reports` is the running total of the
    // device's `dropped_reports` (each report carries those lost since the
    // previous delivered one), summed from what is stored so far.
    "ALTER TABLE reports ADD COLUMN device_at INTEGER;
    ALTER TABLE devices ADD COLUMN dropped_reports INTEGER NOT NULL DEFAULT 0;
    UPDATE devices SET dropped_reports = (
        SELECT COALESCE(SUM(r.dropped_reports), 0) FROM reports r WHERE r.device_id = devices.device_id
    );",
];

const ROUTINE_DELETE_BATCH: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "reports database {}: {source} (the file is created if missing; its directory must exist and be writable)",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "reports database {}: schema version {found} is newer than this server knows ({known}); run a newer manifest-server",
        path.display()
    )]
    TooNew { path: PathBuf, found: i64, known: usize },
    #[error("reports database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("reports database: cannot start its thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// First time this id was seen: stored and applied.
    New,
    /// Already stored: nothing changed.
    Duplicate,
}

/// One connection to the reports database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Open (creating it if missing) and bring the schema up to date: the
    /// writer's connection, opened first.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(open)?;
        // Writes happen here, so an unwritable file or directory shows now.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "reports database {}: journal mode is {mode}, not WAL (file system without shared memory?); \
                 fleet queries will wait for writes",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(open)?;
        let mut store = Self { conn };
        store.migrate(path).map_err(|e| match e {
            StoreError::Sql(source) => open(source),
            other => other,
        })?;
        Ok(store)
    }

    /// A second connection for reads, once `open` has made the schema.
    pub fn open_reader(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(Self { conn })
    }

    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            log::info!("reports database {}: schema version {}", path.display(), i + 1);
        }
        Ok(())
    }

    /// Store a report unless its id is known, and make it the device's
    /// latest state unless that is newer (module docs).
    pub fn insert(&mut self, r: &Report, received_at: Timestamp) -> Result<Inserted, StoreError> {
        let tx = self.conn.transaction()?;
        let from = r.from_version.as_ref().map(ToString::to_string);
        let to = r.to_version.as_ref().map(ToString::to_string);
        let running = r.running_version.as_ref().map(ToString::to_string);
        let (placed, replaced) = r.placed_at(received_at);
        let at = placed.unix() as i64;
        let device_at = replaced.then(|| r.at.unix().min(i64::MAX as u64) as i64);
        let dropped = r.dropped_reports.min(i64::MAX as u64) as i64;
        let added = tx
            .prepare_cached(
                "INSERT INTO reports (id, device_id, product, cohort, at, received_at, outcome,
                    from_version, to_version, running_version, stage, reason, duration_secs, dropped_reports,
                    device_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                r.id,
                r.device_id,
                r.product.as_str(),
                r.cohort.as_str(),
                at,
                received_at.unix() as i64,
                r.outcome.as_str(),
                from,
                to,
                running,
                r.stage,
                r.reason,
                r.duration_secs.map(|d| d.min(i64::MAX as u64) as i64),
                dropped,
                device_at,
            ])?;
        if added == 0 {
            return Ok(Inserted::Duplicate);
        }
        let seq = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO devices (device_id, product, cohort, running_version, to_version,
                last_outcome, last_stage, last_reason, last_seen, last_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (device_id) DO UPDATE SET
                product = excluded.product, cohort = excluded.cohort,
                running_version = excluded.running_version, to_version = excluded.to_version,
                last_outcome = excluded.last_outcome, last_stage = excluded.last_stage,
                last_reason = excluded.last_reason, last_seen = excluded.last_seen,
                last_seq = excluded.last_seq
             WHERE excluded.last_seen >= devices.last_seen",
        )?
        .execute(params![
            r.device_id,
            r.product.as_str(),
            r.cohort.as_str(),
            running,
            to,
            r.outcome.as_str(),
            r.stage,
            r.reason,
            at,
            seq,
        ])?;
        // Lost reports add up whether or not this report is the latest.
        if dropped > 0 {
            tx.prepare_cached(
                "UPDATE devices SET dropped_reports = min(dropped_reports + ?2, 9223372036854775807)
                 WHERE device_id = ?1",
            )?
            .execute(params![r.device_id, dropped])?;
        }
        tx.commit()?;
        Ok(Inserted::New)
    }

    /// Delete up to `limit` routine reports received before `before`, in
    /// short transactions so reports keep flowing; returns how many went.
    pub fn prune_routine(&mut self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        while total < limit {
            let n = self.conn.execute(
                "DELETE FROM reports WHERE seq IN (
                    SELECT seq FROM reports
                    WHERE outcome IN ('up_to_date', 'not_in_rollout', 'blocked', 'offline', 'locked')
                      AND received_at < ?1
                    LIMIT ?2)",
                params![
                    before.unix() as i64,
                    ROUTINE_DELETE_BATCH.min(limit - total) as i64
                ],
            )?;
            total += n;
            if n == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// How many reports are stored (for tests and the log).
    pub fn report_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))?)
    }

    /// The fleet summary at `now` (definitions in `fleet`).
    pub fn fleet(&mut self, now: Timestamp, silent_after: Duration) -> Result<Fleet, StoreError> {
        let tx = self.conn.transaction()?;
        let ts = |secs: i64| Timestamp::from_unix(secs.max(0) as u64);
        let devices = tx
            .prepare(
                "SELECT device_id, cohort, running_version, to_version, last_outcome, last_reason, last_seen,
                        dropped_reports
                 FROM devices",
            )?
            .query_map([], |r| {
                Ok(DeviceRow {
                    device_id: r.get(0)?,
                    cohort: r.get(1)?,
                    running_version: r.get(2)?,
                    to_version: r.get(3)?,
                    last_outcome: r.get(4)?,
                    last_reason: r.get(5)?,
                    last_seen: ts(r.get(6)?),
                    dropped_reports: r.get::<_, i64>(7)?.max(0) as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // Each device's latest attempt per (cohort, version), merged with
        // what devices run now: 0 = succeeded, 1 = rolled back, 2 = failed;
        // running the version wins over any attempt.
        let counts = tx
            .prepare(
                "WITH latest AS (
                    SELECT cohort, to_version AS version, device_id,
                           CASE outcome WHEN 'updated' THEN 0 WHEN 'rolled_back' THEN 1 ELSE 2 END AS o,
                           row_number() OVER (
                               PARTITION BY cohort, to_version, device_id ORDER BY at DESC, seq DESC
                           ) AS rn
                    FROM reports
                    WHERE outcome IN ('updated', 'rolled_back', 'failed') AND to_version IS NOT NULL
                 ),
                 merged AS (
                    SELECT cohort, version, device_id, MIN(o) AS o FROM (
                        SELECT cohort, version, device_id, o FROM latest WHERE rn = 1
                        UNION ALL
                        SELECT cohort, running_version, device_id, 0 FROM devices
                        WHERE running_version IS NOT NULL
                    ) GROUP BY cohort, version, device_id
                 )
                 SELECT cohort, version, SUM(o = 0), SUM(o = 1), SUM(o = 2)
                 FROM merged GROUP BY cohort, version",
            )?
            .query_map([], |r| {
                Ok(CountRow {
                    cohort: r.get(0)?,
                    version: r.get(1)?,
                    succeeded: r.get::<_, i64>(2)? as u64,
                    rolled_back: r.get::<_, i64>(3)? as u64,
                    failed: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // Where the devices came from: the `from_version` of each device's
        // latest attempt at (cohort, version).
        let from_versions = tx
            .prepare(
                "SELECT cohort, version, from_version, COUNT(*) FROM (
                    SELECT cohort, to_version AS version, from_version,
                           row_number() OVER (
                               PARTITION BY cohort, to_version, device_id ORDER BY at DESC, seq DESC
                           ) AS rn
                    FROM reports
                    WHERE outcome IN ('updated', 'rolled_back', 'failed') AND to_version IS NOT NULL
                 )
                 WHERE rn = 1 AND from_version IS NOT NULL AND from_version != version
                 GROUP BY cohort, version, from_version",
            )?
            .query_map([], |r| {
                Ok(FromRow {
                    cohort: r.get(0)?,
                    version: r.get(1)?,
                    from: r.get(2)?,
                    devices: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut attempts = tx
            .prepare(
                "SELECT cohort, to_version, MIN(at), MAX(at) FROM reports
                 WHERE outcome IN ('updated', 'rolled_back', 'failed') AND to_version IS NOT NULL
                 GROUP BY cohort, to_version",
            )?
            .query_map([], |r| {
                Ok(AttemptRow {
                    cohort: r.get(0)?,
                    version: r.get(1)?,
                    first: ts(r.get(2)?),
                    last: ts(r.get(3)?),
                    consecutive_failures: 0,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        {
            // Newest first down the index, stopping at the first success:
            // normally a handful of rows per target.
            let mut walk = tx.prepare(
                "SELECT device_id, outcome FROM reports
                 WHERE cohort = ?1 AND to_version = ?2 AND outcome IN ('updated', 'rolled_back', 'failed')
                 ORDER BY at DESC, seq DESC",
            )?;
            for a in &mut attempts {
                let mut rows = walk.query(params![a.cohort, a.version])?;
                let mut walked = Vec::new();
                while let Some(row) = rows.next()? {
                    let device: String = row.get(0)?;
                    let outcome: String = row.get(1)?;
                    let success = outcome == "updated";
                    walked.push((device, outcome));
                    if success {
                        break;
                    }
                }
                a.consecutive_failures = fleet::consecutive_failures(walked);
            }
        }
        let failures = tx
            .prepare(
                "SELECT device_id, cohort, at, to_version, outcome, stage, reason FROM reports
                 WHERE outcome IN ('rolled_back', 'failed')
                 ORDER BY at DESC, seq DESC LIMIT ?1",
            )?
            .query_map([fleet::RECENT_FAILURES as i64], |r| {
                Ok(Failure {
                    device_id: r.get(0)?,
                    cohort: r.get(1)?,
                    at: ts(r.get(2)?),
                    to_version: r.get(3)?,
                    outcome: r.get(4)?,
                    stage: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(Fleet::assemble(
            Rows {
                devices,
                counts,
                attempts,
                failures,
                from_versions,
            },
            now,
            silent_after,
        ))
    }

    /// The stored latest state of one device: (outcome, running version, at).
    pub fn device(&self, device_id: &str) -> Result<Option<(String, Option<String>, Timestamp)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_outcome, running_version, last_seen FROM devices WHERE device_id = ?1",
                [device_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        Timestamp::from_unix(r.get::<_, i64>(2)?.max(0) as u64),
                    ))
                },
            )
            .optional()?)
    }

    #[cfg(test)]
    fn plan(&self, sql: &str) -> String {
        let mut stmt = self.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::document::Outcome;
    use manifest::{CohortName, ProductName};

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(s: &str) -> Timestamp {
        let full = if s.len() == 5 {
            format!("2026-11-21T{s}:00Z")
        } else {
            s.to_string()
        };
        full.parse().unwrap()
    }

    fn now() -> Timestamp {
        t("12:00")
    }

    struct Builder {
        n: u32,
    }

    impl Builder {
        #[allow(clippy::too_many_arguments)]
        fn report(
            &mut self,
            device: &str,
            cohort: &str,
            at: &str,
            outcome: Outcome,
            to: Option<&str>,
            running: Option<&str>,
            stage: Option<&'static str>,
            reason: &str,
        ) -> Report {
            self.n += 1;
            Report {
                id: format!("{:032x}", self.n),
                device_id: device.into(),
                product: ProductName::new("neopro").unwrap(),
                cohort: CohortName::new(cohort).unwrap(),
                at: t(at),
                outcome,
                from_version: None,
                to_version: to.map(|v| Version::parse(v).unwrap()),
                running_version: running.map(|v| Version::parse(v).unwrap()),
                stage,
                reason: reason.into(),
                duration_secs: None,
                dropped_reports: 0,
            }
        }
    }

    use manifest::Version;
    use Outcome::*;

    /// The hand-built fleet of docs/REPORTS.md's definitions: stable is
    /// rolling out 2.0.0 over 1.0.0, canary 3.0.0 over 2.0.0.
    fn fleet_reports() -> Vec<Report> {
        let mut b = Builder { n: 0 };
        let v1 = Some("1.0.0");
        let v2 = Some("2.0.0");
        let v3 = Some("3.0.0");
        vec![
            b.report("s1", "stable", "10:00", Updated, v2, v2, None, "installed 2.0.0"),
            b.report("s1", "stable", "11:00", UpToDate, v2, v2, None, "running 2.0.0"),
            b.report(
                "s2",
                "stable",
                "09:00",
                Failed,
                v2,
                v1,
                Some("download"),
                "hash mismatch",
            ),
            b.report("s2", "stable", "10:30", Updated, v2, v2, None, "installed 2.0.0"),
            b.report(
                "s3",
                "stable",
                "10:40",
                RolledBack,
                v2,
                v1,
                Some("health"),
                "app did not start",
            ),
            b.report("s3", "stable", "11:30", Blocked, v2, v1, None, "2.0.0 is blocked"),
            b.report(
                "s4",
                "stable",
                "10:50",
                Failed,
                v2,
                v1,
                Some("stage"),
                "disk full",
            ),
            b.report(
                "s4",
                "stable",
                "11:05",
                Failed,
                v2,
                v1,
                Some("stage"),
                "disk full",
            ),
            b.report(
                "s5",
                "stable",
                "11:10",
                RolledBack,
                v2,
                v1,
                Some("health"),
                "crash loop",
            ),
            b.report(
                "s6",
                "stable",
                "11:20",
                NotInRollout,
                v2,
                v1,
                None,
                "bucket 80.00",
            ),
            b.report("s7", "stable", "11:40", UpToDate, v2, v2, None, "running 2.0.0"),
            b.report(
                "s8",
                "stable",
                "2026-11-19T12:00:00Z",
                UpToDate,
                v1,
                v1,
                None,
                "running 1.0.0",
            ),
            b.report("c1", "canary", "08:00", Updated, v3, v3, None, "installed 3.0.0"),
            b.report("c2", "canary", "08:10", Updated, v3, v3, None, "installed 3.0.0"),
            b.report(
                "c3",
                "canary",
                "08:20",
                RolledBack,
                v3,
                v2,
                Some("health"),
                "<script>x</script>",
            ),
            b.report(
                "c4",
                "canary",
                "08:30",
                Failed,
                None,
                v2,
                Some("fetch"),
                "cohort manifest: 500",
            ),
            b.report("c5", "canary", "08:40", Updated, v3, v3, None, "installed 3.0.0"),
            b.report(
                "c6",
                "canary",
                "08:50",
                Refused,
                v3,
                v2,
                Some("verify"),
                "bad signature",
            ),
            // Sent late from s1's outbox: older than s1's latest state.
            b.report(
                "s1",
                "stable",
                "09:30",
                Deferred,
                v2,
                v1,
                None,
                "outside the install window",
            ),
        ]
    }

    fn store_with(reports: &[Report]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("reports.db")).unwrap();
        for r in reports {
            assert_eq!(store.insert(r, now()).unwrap(), Inserted::New);
        }
        (dir, store)
    }

    #[test]
    fn the_fleet_numbers_follow_the_definitions() {
        let reports = fleet_reports();
        let (_dir, mut store) = store_with(&reports);
        // Every report again: duplicates change nothing.
        for r in &reports {
            assert_eq!(store.insert(r, now()).unwrap(), Inserted::Duplicate);
        }
        assert_eq!(store.report_count().unwrap(), reports.len() as u64);
        let fleet = store.fleet(now(), DAY).unwrap();
        assert_eq!(fleet.generated_at, now());
        assert_eq!(fleet.silent_after_secs, 86_400);
        let names: Vec<_> = fleet.cohorts.iter().map(|c| c.cohort.as_str()).collect();
        assert_eq!(names, ["canary", "stable"]);

        let stable = fleet.cohort("stable").unwrap();
        assert_eq!((stable.devices, stable.silent), (8, 1));
        assert_eq!(
            stable.versions,
            [("2.0.0".to_string(), 3), ("1.0.0".to_string(), 5)]
        );
        let versions: Vec<_> = stable.targets.iter().map(|t| t.version.as_str()).collect();
        assert_eq!(versions, ["2.0.0", "1.0.0"]);
        // s1, s2 updated; s7 runs it; s3, s5 rolled back; s4 failed (twice);
        // s6 was not selected. Newest first: s5 rb, s4 f, s4 f, s3 rb, s2 ok.
        assert_eq!(
            stable.target("2.0.0").unwrap(),
            &fleet::TargetSummary {
                version: "2.0.0".into(),
                on_target: 3,
                tried: 6,
                succeeded: 3,
                rolled_back: 2,
                failed: 1,
                consecutive_failures: 3,
                first_report_at: Some(t("09:00")),
                last_report_at: Some(t("11:10")),
                ..Default::default()
            }
        );
        // Nobody attempted 1.0.0 here; five devices run it.
        assert_eq!(
            stable.target("1.0.0").unwrap(),
            &fleet::TargetSummary {
                version: "1.0.0".into(),
                on_target: 5,
                tried: 5,
                succeeded: 5,
                ..Default::default()
            }
        );

        let canary = fleet.cohort("canary").unwrap();
        assert_eq!((canary.devices, canary.silent), (6, 0));
        assert_eq!(
            canary.versions,
            [("3.0.0".to_string(), 3), ("2.0.0".to_string(), 3)]
        );
        assert_eq!(canary.targets.len(), 1, "{:?}", canary.targets);
        assert_eq!(
            canary.target("3.0.0").unwrap(),
            &fleet::TargetSummary {
                version: "3.0.0".into(),
                on_target: 3,
                tried: 4,
                succeeded: 3,
                rolled_back: 1,
                failed: 0,
                consecutive_failures: 0,
                first_report_at: Some(t("08:00")),
                last_report_at: Some(t("08:40")),
                ..Default::default()
            }
        );

        // The late 09:30 report did not replace s1's 11:00 state.
        let s1 = fleet.devices.iter().find(|d| d.device_id == "s1").unwrap();
        assert_eq!(
            (s1.last_outcome.as_str(), s1.last_seen),
            ("up_to_date", t("11:00"))
        );
        assert_eq!(s1.running_version.as_deref(), Some("2.0.0"));
        let silent: Vec<_> = fleet
            .devices
            .iter()
            .filter(|d| d.silent)
            .map(|d| d.device_id.as_str())
            .collect();
        assert_eq!(silent, ["s8"]);
        assert_eq!(fleet.devices.len(), 14);
        assert_eq!(fleet.devices[0].device_id, "c1");

        let failures: Vec<_> = fleet
            .recent_failures
            .iter()
            .map(|f| (f.device_id.as_str(), f.outcome.as_str(), f.at))
            .collect();
        assert_eq!(
            failures,
            [
                ("s5", "rolled_back", t("11:10")),
                ("s4", "failed", t("11:05")),
                ("s4", "failed", t("10:50")),
                ("s3", "rolled_back", t("10:40")),
                ("s2", "failed", t("09:00")),
                ("c4", "failed", t("08:30")),
                ("c3", "rolled_back", t("08:20")),
            ]
        );
        assert_eq!(fleet.recent_failures[0].stage.as_deref(), Some("health"));
        assert_eq!(fleet.recent_failures[5].to_version, None);
    }

    #[test]
    fn in_progress_on_target_origins_and_lost_reports() {
        let v2 = Some("2.0.0");
        let v1 = Some("1.0.0");
        let mut b = Builder { n: 0 };
        let from = |mut r: Report, v: &str| {
            r.from_version = Some(Version::parse(v).unwrap());
            r
        };
        let mut lost = b.report("c", "stable", "09:25", UpToDate, v1, v1, None, "");
        lost.dropped_reports = 4;
        let reports = vec![
            from(
                b.report("a", "stable", "09:00", Updated, v2, v2, None, ""),
                "1.0.0",
            ),
            // b came from another cohort's version; then from 1.0.0 again.
            from(
                b.report("b", "stable", "09:05", Failed, v2, v1, Some("download"), ""),
                "1.5.0",
            ),
            from(
                b.report("b", "stable", "09:10", Updated, v2, v2, None, ""),
                "1.0.0",
            ),
            // c: staged, waiting for its window: in progress.
            from(
                b.report("c", "stable", "09:20", Deferred, v2, v1, None, "window"),
                "1.0.0",
            ),
            // d was deferred, then installed: on target, not in progress.
            b.report("d", "stable", "09:20", Deferred, v2, v1, None, "window"),
            from(
                b.report("d", "stable", "09:30", Updated, v2, v2, None, ""),
                "1.0.0",
            ),
            // e: not selected, so not in progress.
            b.report("e", "stable", "09:30", NotInRollout, v2, v1, None, ""),
        ];
        let (_dir, mut store) = store_with(&reports);
        let mut late = b.report("c", "stable", "09:30", Deferred, v2, v1, None, "window");
        late.dropped_reports = 2;
        store.insert(&late, now()).unwrap();
        let fleet = store.fleet(now(), DAY).unwrap();
        let stable = fleet.cohort("stable").unwrap();
        let t = stable.target("2.0.0").unwrap();
        assert_eq!((t.on_target, t.in_progress, t.tried), (3, 1, 3));
        assert_eq!(t.from_versions, [("1.0.0".to_string(), 3)]);
        // c's late heartbeat (older than its deferred) still adds its count.
        store.insert(&lost, now()).unwrap();
        let fleet = store.fleet(now(), DAY).unwrap();
        let c = fleet.devices.iter().find(|d| d.device_id == "c").unwrap();
        assert_eq!((c.dropped_reports, c.last_outcome.as_str()), (6, "deferred"));
        assert_eq!(fleet.cohort("stable").unwrap().dropped_reports, 6);
        // A duplicate adds nothing.
        assert_eq!(store.insert(&lost, now()).unwrap(), Inserted::Duplicate);
        assert_eq!(
            store
                .fleet(now(), DAY)
                .unwrap()
                .cohort("stable")
                .unwrap()
                .dropped_reports,
            6
        );
    }

    #[test]
    fn a_report_from_a_clock_far_ahead_is_kept_and_placed_at_receipt() {
        let mut b = Builder { n: 0 };
        let v2 = Some("2.0.0");
        let normal = b.report("a", "stable", "11:00", UpToDate, v2, v2, None, "");
        // Stamped tomorrow by a clock that ran ahead; received at 12:00.
        let ahead = b.report(
            "a",
            "stable",
            "2026-11-22T12:00:00Z",
            Failed,
            v2,
            v2,
            Some("health"),
            "x",
        );
        let (_dir, mut store) = store_with(&[normal, ahead.clone()]);
        // Placed at receipt: it is the latest, and does not stay so forever.
        let (outcome, _, at) = store.device("a").unwrap().unwrap();
        assert_eq!((outcome.as_str(), at), ("failed", now()));
        let later = b.report("a", "stable", "12:30", UpToDate, v2, v2, None, "");
        store.insert(&later, t("12:30")).unwrap();
        assert_eq!(store.device("a").unwrap().unwrap().0, "up_to_date");
        // The device's own at is stored as given.
        let (placed, given): (i64, Option<i64>) = store
            .conn
            .query_row(
                "SELECT at, device_at FROM reports WHERE id = ?1",
                [&ahead.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (placed, given),
            (now().unix() as i64, Some(ahead.at.unix() as i64))
        );
        let failures = store.fleet(t("12:30"), DAY).unwrap().recent_failures;
        assert_eq!(failures[0].at, now());
    }

    #[test]
    fn consecutive_failures_stop_at_a_success_and_count_devices_once() {
        let v = Some("2.0.0");
        let mut b = Builder { n: 0 };
        let mut reports = vec![
            b.report("a", "stable", "09:00", Failed, v, None, Some("download"), "x"),
            b.report("b", "stable", "09:10", Updated, v, v, None, "ok"),
            b.report("c", "stable", "09:20", RolledBack, v, None, Some("health"), "x"),
            b.report("d", "stable", "09:30", Failed, v, None, Some("stage"), "x"),
        ];
        let (_dir, mut store) = store_with(&reports);
        let target = |store: &mut Store| store.fleet(now(), DAY).unwrap().cohorts[0].targets[0].clone();
        assert_eq!(target(&mut store).consecutive_failures, 2);
        // The same device failing again is still one device.
        let again = b.report("d", "stable", "09:40", Failed, v, None, Some("stage"), "x");
        store.insert(&again, now()).unwrap();
        assert_eq!(target(&mut store).consecutive_failures, 2);
        // A late report of a success older than the failures changes nothing...
        let late = b.report("e", "stable", "09:15", Updated, v, v, None, "ok");
        store.insert(&late, now()).unwrap();
        assert_eq!(target(&mut store).consecutive_failures, 2);
        // ...a new success resets the run.
        let ok = b.report("c", "stable", "09:50", Updated, v, v, None, "retried by hand");
        store.insert(&ok, now()).unwrap();
        let t = target(&mut store);
        assert_eq!(t.consecutive_failures, 0);
        // c's latest attempt is now a success; a, d failed; b, e succeeded.
        assert_eq!((t.tried, t.succeeded, t.rolled_back, t.failed), (5, 3, 0, 2));
        reports.push(again);
        assert_eq!(store.report_count().unwrap(), 7);
    }

    #[test]
    fn an_equal_time_goes_to_the_report_received_last() {
        let mut b = Builder { n: 0 };
        let first = b.report(
            "a",
            "stable",
            "09:00",
            Deferred,
            Some("2.0.0"),
            Some("1.0.0"),
            None,
            "",
        );
        let second = b.report(
            "a",
            "stable",
            "09:00",
            Updated,
            Some("2.0.0"),
            Some("2.0.0"),
            None,
            "",
        );
        let older = b.report(
            "a",
            "stable",
            "08:59",
            Failed,
            Some("2.0.0"),
            Some("1.0.0"),
            None,
            "",
        );
        let (_dir, store) = store_with(&[first, second, older]);
        let (outcome, running, at) = store.device("a").unwrap().unwrap();
        assert_eq!(
            (outcome.as_str(), running.as_deref(), at),
            ("updated", Some("2.0.0"), t("09:00"))
        );
    }

    #[test]
    fn old_heartbeats_are_pruned_and_events_kept() {
        let mut b = Builder { n: 0 };
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("r.db")).unwrap();
        let long_ago = t("2026-11-01T00:00:00Z");
        for i in 0..30 {
            let r = b.report(
                "a",
                "stable",
                "09:00",
                UpToDate,
                Some("1.0.0"),
                Some("1.0.0"),
                None,
                "",
            );
            store.insert(&r, if i < 20 { long_ago } else { now() }).unwrap();
        }
        let event = b.report(
            "a",
            "stable",
            "09:00",
            RolledBack,
            Some("2.0.0"),
            Some("1.0.0"),
            None,
            "",
        );
        store.insert(&event, long_ago).unwrap();
        let before = store.fleet(now(), DAY).unwrap();
        assert_eq!(store.prune_routine(t("11:00"), 15).unwrap(), 15);
        assert_eq!(store.prune_routine(t("11:00"), 1000).unwrap(), 5);
        assert_eq!(store.report_count().unwrap(), 11);
        assert_eq!(store.fleet(now(), DAY).unwrap(), before);
    }

    #[test]
    fn the_schema_is_migrated_once_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let mut b = Builder { n: 0 };
        {
            let mut store = Store::open(&path).unwrap();
            let r = b.report(
                "a",
                "stable",
                "09:00",
                Updated,
                Some("2.0.0"),
                Some("2.0.0"),
                None,
                "",
            );
            store.insert(&r, now()).unwrap();
            let mode: String = store
                .conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.report_count().unwrap(), 1);
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
        let err = Store::open(&dir.path().join("missing/r.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "reports database {}/missing/r.db: ",
                dir.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn the_fleet_queries_use_the_indexes() {
        let (_dir, store) = store_with(&fleet_reports());
        let walk = store.plan(
            "SELECT device_id, outcome FROM reports
             WHERE cohort = 'a' AND to_version = 'b' AND outcome IN ('updated', 'rolled_back', 'failed')
             ORDER BY at DESC, seq DESC",
        );
        // Ties on `at` are sorted as they stream by ("LAST TERM"): the walk
        // still stops early.
        assert!(
            walk.contains("reports_target") && !walk.contains("TEMP B-TREE FOR ORDER BY"),
            "{walk}"
        );
        let failures = store.plan(
            "SELECT * FROM reports WHERE outcome IN ('rolled_back', 'failed') ORDER BY at DESC, seq DESC LIMIT 20",
        );
        assert!(
            failures.contains("reports_failures") && !failures.contains("TEMP B-TREE"),
            "{failures}"
        );
        let times = store.plan(
            "SELECT cohort, to_version, MIN(at), MAX(at) FROM reports
             WHERE outcome IN ('updated', 'rolled_back', 'failed') AND to_version IS NOT NULL
             GROUP BY cohort, to_version",
        );
        assert!(times.contains("COVERING INDEX reports_target"), "{times}");
    }
}

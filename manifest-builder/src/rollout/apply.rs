//! What rollout decisions do to the store. Every write goes through
//! [`crate::promote::promote`] (release re-verified, sequence + 1, signed,
//! written atomically) with the sequence that was read when deciding, so a
//! change made meanwhile by someone else is never overwritten.
//!
//! Steps of `advance`: read the cohort manifest; find the fleet's numbers for
//! its target; [`decide`]; then, unless it is a dry run, apply: a new
//! percentage (advance, halt) or a new target (rollback). When a rollback is
//! called for but the release the cohort ran before cannot be told (see
//! [`previous_target`]) or is no longer in the store, the cohort is halted
//! instead: stopping new installs is always possible and always safe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use manifest::store::{cohort_path, release_path, RELEASES_DIR};
use manifest::{CohortManifest, CohortName, Percent, PublicKey, SecretKey, Timestamp, Version};

use super::decide::{decide, Decision};
use super::policy::Policy;
use crate::error::{Error, Result};
use crate::fleet::{Fleet, FleetError};
use crate::promote::{promote, PromoteRequest};
use crate::store::Store;

/// The keys that sign the new cohort manifest, and any extra public keys the
/// release may be signed by (as `promote --trust`).
pub struct Signing {
    pub keys: Vec<SecretKey>,
    pub trusted: Vec<PublicKey>,
}

pub fn read_cohort(root: &Path, cohort: &CohortName) -> Result<CohortManifest> {
    let store = Store::open(root)?;
    let rel = cohort_path(cohort);
    let pair = store.read_pair(&rel)?.ok_or_else(|| {
        Error::Refused(format!(
            "cohort {cohort} has no manifest ({} is missing): start a rollout with `manifest-builder promote --percent 10`",
            store.path(&rel).display()
        ))
    })?;
    CohortManifest::parse(&pair.bytes).map_err(|source| Error::Document {
        path: store.path(&rel),
        source,
    })
}

/// Re-sign `current` with another target or percentage. The validity the
/// manifest had is kept (a cohort promoted with `--expires 7d` stays so).
fn resign(
    root: &Path,
    current: &CohortManifest,
    version: &Version,
    percent: Percent,
    allow_downgrade: bool,
    signing: &Signing,
    now: Timestamp,
) -> Result<CohortManifest> {
    promote(PromoteRequest {
        store: root.to_path_buf(),
        cohort: current.cohort.clone(),
        version: version.clone(),
        percent: Some(percent),
        expires: current.issued_at.until(current.expires_at),
        allow_downgrade,
        keys: &signing.keys,
        trusted: &signing.trusted,
        expect_sequence: Some(current.sequence),
        now,
    })
}

/// Same target, another percentage (advance and halt).
fn set_percent(
    root: &Path,
    current: &CohortManifest,
    percent: Percent,
    signing: &Signing,
    now: Timestamp,
) -> Result<CohortManifest> {
    resign(
        root,
        current,
        &current.target.version,
        percent,
        current.allow_downgrade,
        signing,
        now,
    )
}

pub fn zero() -> Percent {
    Percent::from_basis_points(0).expect("0 is a valid percent")
}

/// `rollout halt`: percent 0, so no device starts the target any more;
/// devices already on it stay. `None` when the cohort was already halted
/// (nothing is re-signed for nothing).
pub fn halt(
    root: &Path,
    cohort: &CohortName,
    signing: &Signing,
    now: Timestamp,
) -> Result<Option<CohortManifest>> {
    let current = read_cohort(root, cohort)?;
    if current.rollout.percent == zero() {
        return Ok(None);
    }
    set_percent(root, &current, zero(), signing, now).map(Some)
}

/// The release a cohort ran before its current target, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub version: Version,
    /// At least this many of the cohort's devices say so.
    pub devices: u64,
}

/// The version cohort `cohort` ran before `target`, from the fleet's reports.
///
/// Why the reports: the store keeps only the cohort's *current* manifest,
/// and nothing records the targets before it (`manifest-builder promote`
/// is also run by hand, so a record kept by `rollout` alone would miss the
/// very promotion being undone). "The highest release in the store below
/// the target" is not the answer either: a 2.5.0 published for `beta` only
/// would send `stable` to a release it never ran. The devices know: one
/// the rollout has not reached, or that rolled back, still *runs* the old
/// version (`versions`), and one that tried the target said what it came
/// *from* (`from_versions` of the target). Each lower version gets the
/// larger of the two counts (a device may be in both: a lower bound on
/// distinct devices); the most devices wins. Only versions below the
/// target count (a rollback goes back), and a tie or no evidence is
/// refused rather than guessed: `--to VERSION` names it.
pub fn previous_target(
    fleet: &Fleet,
    cohort: &CohortName,
    target: &Version,
) -> std::result::Result<Previous, String> {
    let stats = fleet.cohort(cohort.as_str());
    let mut votes: BTreeMap<Version, u64> = BTreeMap::new();
    let mut add = |counts: &BTreeMap<String, u64>| {
        for (v, n) in counts {
            if let Ok(v) = Version::parse(v) {
                if &v < target && *n > 0 {
                    let e = votes.entry(v).or_default();
                    *e = (*e).max(*n);
                }
            }
        }
    };
    if let Some(c) = stats {
        add(&c.versions);
    }
    if let Some(t) = fleet.target(cohort.as_str(), target) {
        add(&t.from_versions);
    }
    let mut ranked: Vec<(Version, u64)> = votes.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    match ranked.as_slice() {
        [] => Err(format!(
            "no device of cohort {cohort} reports running, or coming from, a release below {target}"
        )),
        [(a, n), (b, m), ..] if n == m => Err(format!(
            "the reports of cohort {cohort} do not tell: as many devices ({n}) run or came from {a} as {b}"
        )),
        [(v, n), ..] => Ok(Previous {
            version: v.clone(),
            devices: *n,
        }),
    }
}

pub struct RolledBack {
    pub doc: CohortManifest,
    pub from: Version,
    /// How the version was chosen without `--to`: from the fleet's reports.
    pub picked: Option<Previous>,
}

/// `rollout rollback`: a new manifest (sequence + 1) targeting `to`, or the
/// release the cohort ran before its target (from `fleet`, see
/// [`previous_target`]), at 100 % with `allow_downgrade`, so every device
/// that moved goes back (DESIGN: remote rollback).
pub fn rollback(
    root: &Path,
    cohort: &CohortName,
    to: Option<Version>,
    fleet: Option<&Fleet>,
    signing: &Signing,
    now: Timestamp,
) -> Result<RolledBack> {
    let current = read_cohort(root, cohort)?;
    let from = &current.target.version;
    let (to, picked) = match (to, fleet) {
        (Some(v), _) => (v, None),
        (None, None) => {
            return Err(Error::Refused(format!(
                "which release did cohort {cohort} run before {from}? The store does not say: pass --server URL \
                 (and --token-file FILE) so the fleet's reports tell, or name it with --to VERSION"
            )))
        }
        (None, Some(fleet)) => match previous_target(fleet, cohort, from) {
            Ok(p) => (p.version.clone(), Some(p)),
            Err(why) => {
                return Err(Error::Refused(format!(
                    "cannot tell which release cohort {cohort} ran before {from}: {why}; name it with --to VERSION"
                )))
            }
        },
    };
    let mut rb = rollback_from(root, &current, to, signing, now)?;
    rb.picked = picked;
    Ok(rb)
}

fn rollback_from(
    root: &Path,
    current: &CohortManifest,
    target: Version,
    signing: &Signing,
    now: Timestamp,
) -> Result<RolledBack> {
    let from = current.target.version.clone();
    if target >= from {
        return Err(Error::Refused(format!(
            "{target} is not lower than {from}, the current target of cohort {}: a rollback goes back (use `promote` to go forward)",
            current.cohort
        )));
    }
    let doc = resign(root, current, &target, Percent::ALL, true, signing, now)?;
    Ok(RolledBack {
        doc,
        from,
        picked: None,
    })
}

fn in_store(root: &Path, v: &Version) -> Result<bool> {
    Ok(Store::open(root)?.read_pair(&release_path(v))?.is_some())
}

/// What `advance` did about its decision.
pub enum Effect {
    /// Dry run, wait, done, or a halt of a cohort already at 0 %.
    Nothing,
    /// Advanced or halted: the new manifest.
    Resigned(CohortManifest),
    RolledBack(RolledBack),
    /// A rollback was called for but the release to go back to could not
    /// be told or is gone.
    HaltedInstead {
        doc: CohortManifest,
        why: String,
    },
}

pub struct Advanced {
    pub before: CohortManifest,
    pub decision: Decision,
    pub effect: Effect,
}

pub struct AdvanceRequest {
    pub store: PathBuf,
    pub cohort: CohortName,
    pub policy: Policy,
    pub signing: Signing,
    pub dry_run: bool,
}

/// One `rollout advance`: decide from `fleet` at `now`, then apply.
pub fn advance(req: &AdvanceRequest, fleet: &Fleet, now: Timestamp) -> Result<Advanced> {
    let before = read_cohort(&req.store, &req.cohort)?;
    let stats = fleet.target(req.cohort.as_str(), &before.target.version);
    let decision = decide(&before, stats, &req.policy, now);
    let effect = if req.dry_run {
        Effect::Nothing
    } else {
        match &decision {
            Decision::Wait { .. } | Decision::Done { .. } => Effect::Nothing,
            Decision::Advance { to_percent, .. } => {
                Effect::Resigned(set_percent(&req.store, &before, *to_percent, &req.signing, now)?)
            }
            Decision::Halt { .. } if before.rollout.percent == zero() => Effect::Nothing,
            Decision::Halt { .. } => {
                Effect::Resigned(set_percent(&req.store, &before, zero(), &req.signing, now)?)
            }
            Decision::Rollback { .. } => {
                let previous = previous_target(fleet, &req.cohort, &before.target.version)
                    .map_err(|why| format!("cannot tell which release to go back to: {why}"))
                    .and_then(|p| match in_store(&req.store, &p.version) {
                        Ok(true) => Ok(p),
                        Ok(false) => Err(format!(
                            "{}, which cohort {} ran before, is no longer in {}",
                            p.version,
                            req.cohort,
                            req.store.join(RELEASES_DIR).display()
                        )),
                        Err(e) => Err(e.to_string()),
                    });
                match previous {
                    Ok(p) => {
                        let mut rb =
                            rollback_from(&req.store, &before, p.version.clone(), &req.signing, now)?;
                        rb.picked = Some(p);
                        Effect::RolledBack(rb)
                    }
                    Err(why) => Effect::HaltedInstead {
                        doc: set_percent(&req.store, &before, zero(), &req.signing, now)?,
                        why,
                    },
                }
            }
        }
    };
    Ok(Advanced {
        before,
        decision,
        effect,
    })
}

/// How a `rollout watch` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The decision ended the rollout (done, halt or rollback).
    Finished(Decision),
    /// `--max-rounds` reached while still waiting or advancing.
    RoundsExhausted(u64),
}

/// The effects `watch` needs, so its loop is tested without a network or a
/// clock.
pub trait WatchIo {
    fn fetch(&mut self) -> std::result::Result<Fleet, FleetError>;
    fn now(&mut self) -> Timestamp;
    fn sleep(&mut self, d: Duration);
    fn round(&mut self, n: u64, outcome: &Advanced);
    fn transient(&mut self, n: u64, err: &FleetError);
}

/// `rollout watch`: `advance` every `interval` until the decision is done,
/// halt or rollback. An unreachable server is retried at the next round
/// (a release host's network blips too); any other error ends the watch.
///
/// The clock is read only here, and never allowed to run backwards: the
/// latest time seen is kept, so a clock stepped back cannot stretch a
/// stability period (STYLE: only the outer loop reads the clock).
pub fn watch(
    req: &AdvanceRequest,
    interval: Duration,
    max_rounds: Option<u64>,
    io: &mut dyn WatchIo,
) -> Result<WatchEnd> {
    let mut latest = Timestamp::EPOCH;
    let mut n = 0;
    loop {
        n += 1;
        match io.fetch() {
            Err(e) if e.is_transient() => io.transient(n, &e),
            Err(e) => return Err(e.into()),
            Ok(fleet) => {
                let clock = io.now();
                if clock < latest {
                    log::warn!("the clock went back from {latest} to {clock}; using {latest}");
                }
                latest = latest.max(clock);
                let outcome = advance(req, &fleet, latest)?;
                io.round(n, &outcome);
                match outcome.decision {
                    Decision::Advance { .. } | Decision::Wait { .. } => {}
                    finished => return Ok(WatchEnd::Finished(finished)),
                }
            }
        }
        if max_rounds.is_some_and(|max| n >= max) {
            return Ok(WatchEnd::RoundsExhausted(n));
        }
        io.sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{CohortStats, TargetStats};
    use crate::release::{release, ReleaseRequest};
    use manifest::{ComponentName, HardwareId, ProductName};
    use std::collections::VecDeque;

    const T0: u64 = 1_795_255_200;

    fn key_copy(key: &SecretKey) -> SecretKey {
        SecretKey::parse(&key.to_file_text()).unwrap()
    }

    /// A store with releases 1.0.0 and 2.0.0 and `stable` -> 2.0.0 at 10 %.
    fn store(dir: &Path, key: &SecretKey) -> PathBuf {
        let app = dir.join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("run"), "v").unwrap();
        let root = dir.join("store");
        for v in ["1.0.0", "2.0.0"] {
            release(ReleaseRequest {
                store: root.clone(),
                product: ProductName::new("neopro").unwrap(),
                version: Version::parse(v).unwrap(),
                compatible: vec![HardwareId::new("hw").unwrap()],
                components: vec![(ComponentName::new("app").unwrap(), app.clone())],
                keys: vec![key_copy(key)],
                post_stage: None,
                health: None,
                now: Timestamp::from_unix(T0),
            })
            .unwrap();
        }
        promote(PromoteRequest {
            store: root.clone(),
            cohort: CohortName::new("stable").unwrap(),
            version: Version::parse("2.0.0").unwrap(),
            percent: Some("10".parse().unwrap()),
            expires: Duration::from_secs(7 * 86400),
            allow_downgrade: false,
            keys: std::slice::from_ref(key),
            trusted: &[],
            expect_sequence: None,
            now: Timestamp::from_unix(T0),
        })
        .unwrap();
        root
    }

    fn fleet(tried: u64, succeeded: u64, consecutive_failures: u64) -> Fleet {
        Fleet {
            generated_at: None,
            cohorts: vec![CohortStats {
                cohort: "stable".into(),
                targets: vec![TargetStats {
                    version: "2.0.0".into(),
                    tried,
                    succeeded,
                    failed: tried - succeeded,
                    consecutive_failures,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    struct FakeIo {
        fleets: VecDeque<std::result::Result<Fleet, FleetError>>,
        clock: VecDeque<u64>,
        slept: Vec<Duration>,
        rounds: Vec<(u64, &'static str)>,
        transient: Vec<u64>,
    }

    impl WatchIo for FakeIo {
        fn fetch(&mut self) -> std::result::Result<Fleet, FleetError> {
            self.fleets.pop_front().expect("no more rounds scripted")
        }
        fn now(&mut self) -> Timestamp {
            Timestamp::from_unix(self.clock.pop_front().expect("no more times scripted"))
        }
        fn sleep(&mut self, d: Duration) {
            self.slept.push(d);
        }
        fn round(&mut self, n: u64, outcome: &Advanced) {
            self.rounds.push((n, outcome.decision.verb()));
        }
        fn transient(&mut self, n: u64, _: &FleetError) {
            self.transient.push(n);
        }
    }

    fn request(root: &Path, key: &SecretKey, on_failure: super::super::OnFailure) -> AdvanceRequest {
        AdvanceRequest {
            store: root.to_path_buf(),
            cohort: CohortName::new("stable").unwrap(),
            policy: Policy {
                on_failure,
                ..Policy::default()
            },
            signing: Signing {
                keys: vec![key_copy(key)],
                trusted: vec![],
            },
            dry_run: false,
        }
    }

    #[test]
    fn watch_waits_advances_survives_a_blip_and_stops_on_halt() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let root = store(dir.path(), &key);
        let req = request(&root, &key, super::super::OnFailure::Halt);
        let offline = FleetError::Unreachable {
            url: "http://x/v1/fleet".into(),
            reason: "refused".into(),
        };
        let mut io = FakeIo {
            fleets: VecDeque::from([
                Ok(fleet(0, 0, 0)),
                Err(offline),
                Ok(fleet(5, 5, 0)),
                Ok(fleet(9, 6, 3)),
            ]),
            // Round 3 is 31 minutes in; round 4's clock stepped back 1 h and
            // is taken as the latest time seen instead.
            clock: VecDeque::from([T0 + 60, T0 + 31 * 60, T0 - 3600]),
            slept: vec![],
            rounds: vec![],
            transient: vec![],
        };
        let end = watch(&req, Duration::from_secs(300), Some(10), &mut io).unwrap();
        assert!(
            matches!(&end, WatchEnd::Finished(Decision::Halt { .. })),
            "{end:?}"
        );
        assert_eq!(io.rounds, vec![(1, "wait"), (3, "advance"), (4, "halt")]);
        assert_eq!(io.transient, vec![2]);
        assert_eq!(io.slept, vec![Duration::from_secs(300); 3]);
        let doc = read_cohort(&root, &req.cohort).unwrap();
        assert_eq!((doc.sequence, doc.rollout.percent), (3, zero()));
        assert_eq!(
            doc.issued_at,
            Timestamp::from_unix(T0 + 31 * 60),
            "the clock never ran backwards"
        );
        assert_eq!(
            doc.issued_at.until(doc.expires_at),
            Duration::from_secs(7 * 86400),
            "the validity the cohort had is kept"
        );
    }

    #[test]
    fn watch_stops_after_max_rounds_and_on_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let root = store(dir.path(), &key);
        let req = request(&root, &key, super::super::OnFailure::Halt);
        let mut io = FakeIo {
            fleets: VecDeque::from([Ok(fleet(0, 0, 0)), Ok(fleet(0, 0, 0))]),
            clock: VecDeque::from([T0, T0]),
            slept: vec![],
            rounds: vec![],
            transient: vec![],
        };
        assert_eq!(
            watch(&req, Duration::from_secs(1), Some(2), &mut io).unwrap(),
            WatchEnd::RoundsExhausted(2)
        );
        assert_eq!(io.slept.len(), 1, "no sleep after the last round");
        let mut io = FakeIo {
            fleets: VecDeque::from([Err(FleetError::Unauthorized {
                url: "u".into(),
                hint: "h",
            })]),
            clock: VecDeque::new(),
            slept: vec![],
            rounds: vec![],
            transient: vec![],
        };
        let err = watch(&req, Duration::from_secs(1), None, &mut io).unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
    }

    /// A failing fleet whose devices ran (and came from) `previous`.
    fn failing_fleet(running: &[(&str, u64)], from: &[(&str, u64)]) -> Fleet {
        let mut f = fleet(3, 0, 3);
        let map = |pairs: &[(&str, u64)]| pairs.iter().map(|(v, n)| (v.to_string(), *n)).collect();
        f.cohorts[0].versions = map(running);
        f.cohorts[0].targets[0].from_versions = map(from);
        f
    }

    #[test]
    fn advance_rolls_back_to_what_the_cohort_ran_or_halts_when_it_cannot_tell() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let root = store(dir.path(), &key);
        let req = request(&root, &key, super::super::OnFailure::Rollback);
        let f = failing_fleet(&[("1.0.0", 7)], &[("1.0.0", 3)]);
        let out = advance(&req, &f, Timestamp::from_unix(T0 + 60)).unwrap();
        let Effect::RolledBack(rb) = out.effect else {
            panic!("not rolled back")
        };
        assert_eq!(rb.doc.target.version.to_string(), "1.0.0");
        assert_eq!(rb.picked.unwrap().devices, 7);
        assert!(rb.doc.allow_downgrade);
        assert_eq!((rb.doc.sequence, rb.doc.rollout.percent), (2, Percent::ALL));

        // No device says what ran before: halted, not guessed.
        let dir = tempfile::tempdir().unwrap();
        let root = store(dir.path(), &key);
        let req = request(&root, &key, super::super::OnFailure::Rollback);
        let out = advance(&req, &fleet(3, 0, 3), Timestamp::from_unix(T0 + 60)).unwrap();
        let Effect::HaltedInstead { doc, why } = out.effect else {
            panic!("not halted")
        };
        assert_eq!((doc.sequence, doc.rollout.percent), (2, zero()));
        assert!(why.contains("cannot tell which release to go back to"), "{why}");

        // The reports name 1.0.0, but it is gone from the store: halted.
        let dir = tempfile::tempdir().unwrap();
        let root = store(dir.path(), &key);
        std::fs::remove_file(root.join("releases/1.0.0.json")).unwrap();
        let req = request(&root, &key, super::super::OnFailure::Rollback);
        let out = advance(&req, &f, Timestamp::from_unix(T0 + 60)).unwrap();
        let Effect::HaltedInstead { doc, why } = out.effect else {
            panic!("not halted")
        };
        assert_eq!((doc.sequence, doc.rollout.percent), (2, zero()));
        assert!(
            why.contains("1.0.0, which cohort stable ran before, is no longer in"),
            "{why}"
        );
    }

    #[test]
    fn the_previous_target_is_what_the_cohort_ran_not_the_next_lower_release() {
        let stable = CohortName::new("stable").unwrap();
        let v3 = Version::parse("3.0.0").unwrap();
        let with = |running: &[(&str, u64)], from: &[(&str, u64)]| {
            let mut f = failing_fleet(running, from);
            f.cohorts[0].targets[0].version = "3.0.0".into();
            previous_target(&f, &stable, &v3)
        };
        // 2.5.0 was published for beta; one device moved over from beta.
        // Versions at or above the target never count.
        let p = with(
            &[("3.0.0", 4), ("2.5.0", 1), ("1.0.0", 15), ("4.0.0", 40)],
            &[("1.0.0", 4), ("2.5.0", 1)],
        )
        .unwrap();
        assert_eq!((p.version.to_string(), p.devices), ("1.0.0".into(), 15));
        // At 100 %: nobody runs the old one any more, the origins tell.
        let p = with(&[("3.0.0", 20)], &[("1.0.0", 19), ("2.5.0", 1)]).unwrap();
        assert_eq!((p.version.to_string(), p.devices), ("1.0.0".into(), 19));
        // A tie, or nothing: refused, never guessed.
        let err = with(&[("1.0.0", 2), ("2.5.0", 2)], &[]).unwrap_err();
        assert!(
            err.contains("do not tell") && err.contains("2.5.0") && err.contains("1.0.0"),
            "{err}"
        );
        let err = with(&[("3.0.0", 5)], &[]).unwrap_err();
        assert!(err.contains("no device of cohort stable"), "{err}");
        // Another cohort's numbers are not this one's.
        let mut f = failing_fleet(&[("1.0.0", 9)], &[]);
        f.cohorts[0].cohort = "beta".into();
        assert!(previous_target(&f, &stable, &v3).is_err());
    }

    #[test]
    fn a_dry_run_writes_nothing_and_a_concurrent_edit_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let root = store(dir.path(), &key);
        let mut req = request(&root, &key, super::super::OnFailure::Halt);
        req.dry_run = true;
        let before = std::fs::read(root.join("cohorts/stable.json")).unwrap();
        let out = advance(&req, &fleet(5, 5, 0), Timestamp::from_unix(T0 + 3600)).unwrap();
        assert!(matches!(out.decision, Decision::Advance { .. }) && matches!(out.effect, Effect::Nothing));
        assert_eq!(std::fs::read(root.join("cohorts/stable.json")).unwrap(), before);

        // Decided on sequence 1, but someone re-signed meanwhile.
        let stale = read_cohort(&root, &req.cohort).unwrap();
        halt(&root, &req.cohort, &req.signing, Timestamp::from_unix(T0 + 10)).unwrap();
        let err = set_percent(
            &root,
            &stale,
            Percent::ALL,
            &req.signing,
            Timestamp::from_unix(T0 + 20),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("changed while this ran"), "{err}");
    }
}

//! `manifest-builder rollout …`: flags resolved into a policy, keys and a
//! fleet source before any work, then one call into [`super::apply`] and one
//! line per outcome. Exit status: 0 (advanced, waiting, done, or a command
//! that did what it was asked), 1 (an error: one line naming the file or
//! URL), 3 (`advance`/`watch` halted or rolled back the rollout).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use manifest::{CohortName, Percent, Timestamp, Version};

use super::apply::{self, AdvanceRequest, Advanced, Effect, Signing, WatchEnd, WatchIo};
use super::decide::Decision;
use super::policy::{resolve, OnFailure, Policy, PolicyLayer};
use super::status;
use crate::cli::{load_keys, parse_duration, Exit};
use crate::error::Result;
use crate::fleet::{self, Fleet, FleetError};
use crate::keys::load_public_key;

#[derive(Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Per cohort: target, percent, step, time in step, reports, and what `advance` would do now.
    Status(StatusArgs),
    /// Apply the policy once: widen to the next step, wait, halt or roll back.
    Advance(AdvanceArgs),
    /// Stop new installs: percent 0, sequence + 1. Devices already on the target stay.
    Halt(HaltArgs),
    /// Point the cohort back at the release it ran before (or --to) with allow_downgrade, sequence + 1.
    Rollback(RollbackArgs),
    /// Repeat `advance` every --interval until the rollout is done, halted or rolled back.
    Watch(WatchArgs),
}

impl RolloutArgs {
    pub fn run(self, now: Timestamp) -> Result<Exit> {
        match self.command {
            RolloutCommand::Status(a) => a.run(now),
            RolloutCommand::Advance(a) => a.run(now),
            RolloutCommand::Halt(a) => a.run(now),
            RolloutCommand::Rollback(a) => a.run(now),
            RolloutCommand::Watch(a) => a.run(),
        }
    }
}

#[derive(Args)]
struct ServerArgs {
    /// Base URL of the manifest-server that keeps the reports (reads URL/v1/fleet).
    #[arg(long, value_name = "URL")]
    server: String,
    /// File holding the bearer token for /v1/fleet (first line that is not empty or a # comment;
    /// the server's --report-token-file works).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The fleet source, resolved (token read) before any request.
struct FleetSource {
    server: String,
    token: Option<String>,
}

impl ServerArgs {
    fn resolve(self) -> Result<FleetSource> {
        let token = self.token_file.as_deref().map(fleet::read_token).transpose()?;
        Ok(FleetSource {
            server: self.server,
            token,
        })
    }
}

impl FleetSource {
    fn fetch(&self) -> std::result::Result<Fleet, FleetError> {
        fleet::fetch(&self.server, self.token.as_deref())
    }
}

#[derive(Args)]
struct PolicyArgs {
    /// TOML file with any of: steps, stability, threshold, max_consecutive_failures,
    /// min_reports, on_failure. Flags override it.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Rollout steps in percent, increasing [default: 10,25,50,75,100].
    #[arg(long, value_delimiter = ',', value_name = "P,P,…")]
    steps: Option<Vec<Percent>>,
    /// Minimum time at a step before it is judged or widened [default: 30m].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    stability: Option<Duration>,
    /// Minimum success rate, in percent, among devices that tried the target [default: 95].
    #[arg(long, value_name = "PERCENT")]
    threshold: Option<Percent>,
    /// Failure reports in a row that fail the rollout at once [default: 3].
    #[arg(long, value_name = "N")]
    max_consecutive_failures: Option<u64>,
    /// Devices that must have tried the target before its rate is judged [default: 3].
    #[arg(long, value_name = "N")]
    min_reports: Option<u64>,
    /// What a failed rollout gets: rollback (to the release the cohort ran before, from the
    /// fleet's reports; halted instead when that cannot be told) or halt (percent 0 only)
    /// [default: rollback].
    #[arg(long, value_enum)]
    on_failure: Option<OnFailure>,
}

impl PolicyArgs {
    fn resolve(self) -> Result<Policy> {
        let flags = PolicyLayer {
            steps: self.steps,
            stability: self.stability,
            threshold: self.threshold,
            max_consecutive_failures: self.max_consecutive_failures,
            min_reports: self.min_reports,
            on_failure: self.on_failure,
        };
        Ok(resolve(self.policy.as_deref(), flags)?)
    }
}

#[derive(Args)]
struct SigningArgs {
    /// Secret key to sign the cohort manifest with (repeatable).
    #[arg(long = "key", required = true, value_name = "KEY")]
    keys: Vec<PathBuf>,
    /// Extra public keys the release may be signed by (as `promote --trust`).
    #[arg(long = "trust", value_name = "FILE.pub")]
    trusted: Vec<PathBuf>,
}

impl SigningArgs {
    fn resolve(self) -> Result<Signing> {
        Ok(Signing {
            keys: load_keys(&self.keys)?,
            trusted: self
                .trusted
                .iter()
                .map(|p| load_public_key(p))
                .collect::<Result<_>>()?,
        })
    }
}

#[derive(Args)]
struct StatusArgs {
    /// The store directory (cohorts/, releases/, artifacts/).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    fn run(self, now: Timestamp) -> Result<Exit> {
        let policy = self.policy.resolve()?;
        let source = self.server.resolve()?;
        // Open the store before the request, so a wrong --store says so first.
        crate::store::Store::open(&self.store)?;
        let fleet = source.fetch()?;
        let rows = status::rows(&self.store, &fleet, &policy, now)?;
        if self.json {
            let doc = serde_json::json!({
                "now": now.to_string(),
                "fleet_generated_at": fleet.generated_at,
                "cohorts": rows.iter().map(status::Row::json).collect::<Vec<_>>(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("JSON values serialize")
            );
            return Ok(Exit::Success);
        }
        println!("policy: {}", policy.summary());
        if rows.is_empty() {
            println!("no cohorts in {}", self.store.display());
        }
        for row in &rows {
            println!("{}", row.text(&policy));
        }
        Ok(Exit::Success)
    }
}

#[derive(Args)]
struct AdvanceCore {
    /// The store directory (cohorts/, releases/, artifacts/).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// The cohort to act on (STORE/cohorts/COHORT.json).
    #[arg(long)]
    cohort: CohortName,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

impl AdvanceCore {
    fn resolve(self, dry_run: bool) -> Result<(AdvanceRequest, FleetSource)> {
        let policy = self.policy.resolve()?;
        let signing = self.signing.resolve()?;
        let source = self.server.resolve()?;
        crate::store::Store::open(&self.store)?;
        Ok((
            AdvanceRequest {
                store: self.store,
                cohort: self.cohort,
                policy,
                signing,
                dry_run,
            },
            source,
        ))
    }
}

#[derive(Args)]
struct AdvanceArgs {
    #[command(flatten)]
    core: AdvanceCore,
    /// Print the decision; write nothing.
    #[arg(long)]
    dry_run: bool,
}

impl AdvanceArgs {
    fn run(self, now: Timestamp) -> Result<Exit> {
        let (req, source) = self.core.resolve(self.dry_run)?;
        let fleet = source.fetch()?;
        let outcome = apply::advance(&req, &fleet, now)?;
        println!("{}", describe(&outcome));
        Ok(exit_for(&outcome.decision, req.dry_run))
    }
}

/// 3 when a rollout was stopped for real (a dry run only says so).
fn exit_for(decision: &Decision, dry_run: bool) -> Exit {
    match decision {
        Decision::Halt { .. } | Decision::Rollback { .. } if !dry_run => Exit::RolloutStopped,
        _ => Exit::Success,
    }
}

/// One line: the cohort, what happened, why.
fn describe(a: &Advanced) -> String {
    let c = &a.before;
    let (name, version, percent) = (&c.cohort, &c.target.version, c.rollout.percent);
    let why = a.decision.why();
    match (&a.effect, &a.decision) {
        (Effect::Nothing, Decision::Advance { to_percent, .. }) => {
            format!("{name}: would advance {version} from {percent} % to {to_percent} % (dry run): {why}")
        }
        (Effect::Nothing, Decision::Wait { .. }) => format!("{name}: waiting at {percent} %: {why}"),
        (Effect::Nothing, Decision::Done { .. }) => format!("{name}: done: {why}"),
        (Effect::Nothing, Decision::Halt { .. }) if percent == apply::zero() => {
            format!("{name}: halted: {why}")
        }
        (Effect::Nothing, Decision::Halt { .. }) => format!("{name}: would halt {version} (dry run): {why}"),
        (Effect::Nothing, Decision::Rollback { .. }) => {
            format!("{name}: would roll back from {version} (dry run): {why}")
        }
        (Effect::Resigned(doc), Decision::Advance { .. }) => format!(
            "{name}: advanced {version} from {percent} % to {} % (sequence {}): {why}",
            doc.rollout.percent, doc.sequence
        ),
        (Effect::Resigned(doc), _) => format!(
            "{name}: HALTED {version} at 0 %: no new installs (sequence {}): {why}",
            doc.sequence
        ),
        (Effect::RolledBack(rb), _) => format!("{name}: ROLLED BACK: {}: {why}", rolled_back_text(rb)),
        (Effect::HaltedInstead { doc, why: cannot }, _) => format!(
            "{name}: HALTED {version} at 0 %: no new installs (sequence {}): {why}; not rolled back: {cannot}",
            doc.sequence
        ),
    }
}

fn rolled_back_text(rb: &apply::RolledBack) -> String {
    let d = &rb.doc;
    let how = match &rb.picked {
        Some(p) => format!(
            " ({} is what cohort {} ran before {}: {} device(s) run it or came from it)",
            d.target.version, d.cohort, rb.from, p.devices
        ),
        None => String::new(),
    };
    format!(
        "cohort {} -> {} at {} % with allow_downgrade, from {}{how} (sequence {})",
        d.cohort, d.target.version, d.rollout.percent, rb.from, d.sequence
    )
}

#[derive(Args)]
struct HaltArgs {
    /// The store directory (cohorts/, releases/, artifacts/).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// The cohort to act on (STORE/cohorts/COHORT.json).
    #[arg(long)]
    cohort: CohortName,
    #[command(flatten)]
    signing: SigningArgs,
}

impl HaltArgs {
    fn run(self, now: Timestamp) -> Result<Exit> {
        let signing = self.signing.resolve()?;
        match apply::halt(&self.store, &self.cohort, &signing, now)? {
            None => println!("cohort {} is already halted (0 %): nothing written", self.cohort),
            Some(doc) => println!(
                "cohort {} halted: {} at 0 %, no new installs; devices already on it stay (sequence {})",
                doc.cohort, doc.target.version, doc.sequence
            ),
        }
        Ok(Exit::Success)
    }
}

#[derive(Args)]
struct RollbackArgs {
    /// The store directory (cohorts/, releases/, artifacts/).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// The cohort to act on (STORE/cohorts/COHORT.json).
    #[arg(long)]
    cohort: CohortName,
    #[command(flatten)]
    signing: SigningArgs,
    /// The release to go back to. Default: the one the cohort ran before its current target, as
    /// its devices report it (needs --server); refused when the reports do not tell.
    #[arg(long, value_name = "VERSION")]
    to: Option<Version>,
    /// Base URL of the manifest-server that keeps the reports, to find the release the cohort
    /// ran before (not needed with --to).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File holding the bearer token for /v1/fleet (as for `rollout status`).
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
}

impl RollbackArgs {
    fn run(self, now: Timestamp) -> Result<Exit> {
        let signing = self.signing.resolve()?;
        // With --to the fleet is not needed, and not asked: a rollback must
        // work while the report server is down.
        let fleet = match (&self.to, self.server) {
            (None, Some(server)) => Some(
                ServerArgs {
                    server,
                    token_file: self.token_file,
                }
                .resolve()?
                .fetch()?,
            ),
            _ => None,
        };
        let rb = apply::rollback(&self.store, &self.cohort, self.to, fleet.as_ref(), &signing, now)?;
        println!("rolled back: {}", rolled_back_text(&rb));
        Ok(Exit::Success)
    }
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    core: AdvanceCore,
    /// Time between two rounds.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this many rounds even if the rollout goes on (exit 0).
    #[arg(long, value_name = "N")]
    max_rounds: Option<u64>,
}

struct RealIo {
    source: FleetSource,
    interval: Duration,
}

impl WatchIo for RealIo {
    fn fetch(&mut self) -> std::result::Result<Fleet, FleetError> {
        self.source.fetch()
    }
    fn now(&mut self) -> Timestamp {
        Timestamp::from_system_time(std::time::SystemTime::now())
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d)
    }
    fn round(&mut self, n: u64, outcome: &Advanced) {
        println!("[round {n}] {}", describe(outcome));
    }
    fn transient(&mut self, n: u64, err: &FleetError) {
        println!(
            "[round {n}] warning: {err}; trying again in {}",
            humantime::format_duration(self.interval)
        );
    }
}

impl WatchArgs {
    fn run(self) -> Result<Exit> {
        let (req, source) = self.core.resolve(false)?;
        let mut io = RealIo {
            source,
            interval: self.interval,
        };
        match apply::watch(&req, self.interval, self.max_rounds, &mut io)? {
            WatchEnd::Finished(decision) => Ok(exit_for(&decision, false)),
            WatchEnd::RoundsExhausted(n) => {
                println!("stopped after {n} round(s) (--max-rounds); the rollout goes on");
                Ok(Exit::Success)
            }
        }
    }
}

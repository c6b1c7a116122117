//! Command-line surface: one `Args` struct per subcommand, each with a
//! `run()` that resolves flags into a request and calls the library.
//! Subcommand names are part of the product (DESIGN: Workspace layout).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use manifest::{CohortName, ComponentName, HardwareId, Percent, ProductName, SecretKey, Timestamp, Version};

use crate::error::{Error, Result};
use crate::keys::{keygen, load_public_key, load_secret_key};

#[derive(Parser)]
#[command(
    name = "manifest-builder",
    version,
    about = "Build, sign, promote and verify releases in a static update store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a signing key pair (minisign format): NAME.key (0600) and NAME.pub.
    Keygen(KeygenArgs),
    /// Pack components into artifacts and publish a signed release manifest.
    Release(ReleaseArgs),
    /// Point a cohort at a release (new signed cohort manifest, sequence + 1).
    Promote(PromoteArgs),
    /// Validate and sign a hand-edited manifest (bumps a cohort's sequence).
    Sign(SignArgs),
    /// Audit a store: signatures, references, artifact hashes, expiry.
    Verify(VerifyArgs),
    /// One line per cohort: version, rollout percent, sequence, expiry.
    Status(StatusArgs),
    /// Canary rollouts gated on device reports: status, advance, halt, rollback, watch.
    Rollout(crate::rollout::cli::RolloutArgs),
    /// The root of trust: keys.json (init, rotate, revoke, show).
    Keys(crate::root::KeysArgs),
    /// Package a cohort's signed manifests and artifacts into one offline bundle file.
    Bundle(BundleArgs),
    /// Shell completions and man page (packaging).
    #[command(subcommand, hide = true)]
    Generate(cli_generate::Generate),
}

/// How a run that did not fail with an error ends; [`Exit::code`] is the one
/// place that maps it to the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Success,
    /// 1: the run worked and found problems (e.g. `verify`).
    Problems,
    /// 3: `rollout advance|watch` stopped a rollout (halt or rollback).
    RolloutStopped,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Problems => 1,
            Exit::RolloutStopped => 3,
        }
    }
}

impl From<bool> for Exit {
    fn from(ok: bool) -> Self {
        if ok {
            Exit::Success
        } else {
            Exit::Problems
        }
    }
}

impl Command {
    pub fn run(self, now: Timestamp) -> Result<Exit> {
        match self {
            Command::Keygen(a) => a.run().map(Exit::from),
            Command::Release(a) => a.run(now).map(Exit::from),
            Command::Promote(a) => a.run(now).map(Exit::from),
            Command::Sign(a) => a.run(now).map(Exit::from),
            Command::Verify(a) => a.run(now).map(Exit::from),
            Command::Status(a) => a.run(now).map(Exit::from),
            Command::Rollout(a) => a.run(now),
            Command::Bundle(a) => a.run().map(Exit::from),
            Command::Keys(a) => a.run(now).map(Exit::from),
            Command::Generate(g) => g
                .run::<Cli>()
                .map(|()| Exit::Success)
                .map_err(|source| Error::Io {
                    path: "<stdout>".into(),
                    source,
                }),
        }
    }
}

pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30d, 12h, 90days)"))
}

pub(crate) fn load_keys(paths: &[PathBuf]) -> Result<Vec<SecretKey>> {
    let keys: Vec<SecretKey> = paths.iter().map(|p| load_secret_key(p)).collect::<Result<_>>()?;
    let mut ids: Vec<_> = keys.iter().map(|k| k.id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != keys.len() {
        return Err(Error::Invalid("the same key was given twice".into()));
    }
    Ok(keys)
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Path prefix: writes PREFIX.key and PREFIX.pub.
    #[arg(long)]
    out: PathBuf,
}

impl KeygenArgs {
    fn run(self) -> Result<bool> {
        let (secret, public, key) = keygen(&self.out)?;
        println!("key id {}", key.id);
        println!("secret key: {} (keep it offline; mode 0600)", secret.display());
        println!(
            "public key: {} (install on devices in /etc/updater/keys/)",
            public.display()
        );
        Ok(true)
    }
}

#[derive(Args)]
pub struct ReleaseArgs {
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    product: ProductName,
    #[arg(long)]
    version: Version,
    /// Hardware string a device must be configured with (repeatable).
    #[arg(long, required = true)]
    compatible: Vec<HardwareId>,
    /// NAME=PATH, PATH a directory (packed deterministically) or a .tar.gz (repeatable).
    #[arg(long = "component", required = true, value_parser = crate::pack::parse_component_arg)]
    components: Vec<(String, PathBuf)>,
    /// Secret key to sign with (repeatable, one signature per key).
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Program run in the staged slot before the switch, e.g. app/bin/post-stage.
    #[arg(long)]
    post_stage: Option<String>,
    /// JSON file with the release's health section ({"checks": [...]}).
    #[arg(long)]
    health: Option<PathBuf>,
}

impl ReleaseArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let components = self
            .components
            .into_iter()
            .map(|(n, p)| Ok((ComponentName::new(n)?, p)))
            .collect::<Result<Vec<_>>>()?;
        let version = self.version.clone();
        let outcome = crate::release::release(crate::release::ReleaseRequest {
            store: self.store,
            product: self.product,
            version: self.version,
            compatible: self.compatible,
            components,
            keys: load_keys(&self.keys)?,
            post_stage: self.post_stage,
            health: self.health,
            // Reproducible builds pin the creation time.
            now: source_date_epoch().unwrap_or(now),
        })?;
        match outcome {
            crate::release::ReleaseOutcome::AlreadyPublished(_) => {
                println!("release {version} is already published with identical content: nothing to do");
            }
            crate::release::ReleaseOutcome::Created(doc) => {
                println!(
                    "release {} ({}), {} bytes to download:",
                    doc.version,
                    doc.product,
                    doc.total_size()
                );
                for c in &doc.components {
                    println!(
                        "  {:<12} {} {:>12} bytes ({} unpacked)",
                        c.name, c.sha256, c.size, c.unpacked_size
                    );
                }
            }
        }
        Ok(true)
    }
}

fn source_date_epoch() -> Option<Timestamp> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()?
        .parse()
        .ok()
        .map(Timestamp::from_unix)
}

#[derive(Args)]
pub struct PromoteArgs {
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    cohort: CohortName,
    #[arg(long)]
    version: Version,
    /// Rollout percentage, 0-100 with up to two decimals (default: 100 for a
    /// new version, unchanged when re-promoting the same version).
    #[arg(long)]
    percent: Option<Percent>,
    /// How long devices accept this manifest if it is never re-signed.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    expires: Duration,
    /// Allow devices to move to this lower version (remote rollback).
    #[arg(long)]
    allow_downgrade: bool,
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Extra public keys the release may be signed by.
    #[arg(long = "trust")]
    trusted: Vec<PathBuf>,
}

impl PromoteArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let trusted: Vec<_> = self
            .trusted
            .iter()
            .map(|p| load_public_key(p))
            .collect::<Result<_>>()?;
        let keys = load_keys(&self.keys)?;
        let doc = crate::promote::promote(crate::promote::PromoteRequest {
            store: self.store,
            cohort: self.cohort,
            version: self.version,
            percent: self.percent,
            expires: self.expires,
            allow_downgrade: self.allow_downgrade,
            keys: &keys,
            trusted: &trusted,
            expect_sequence: None,
            now,
        })?;
        println!(
            "cohort {} -> {} at {}% (sequence {}, expires {}{})",
            doc.cohort,
            doc.target.version,
            doc.rollout.percent,
            doc.sequence,
            doc.expires_at,
            if doc.allow_downgrade {
                ", downgrade allowed"
            } else {
                ""
            }
        );
        Ok(true)
    }
}

#[derive(Args)]
pub struct SignArgs {
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// New validity from now (default: keep the manifest's previous validity).
    #[arg(long, value_parser = parse_duration)]
    expires: Option<Duration>,
    /// Keep the bytes and add this key's signature to the existing ones (co-signing).
    #[arg(long)]
    append: bool,
    file: PathBuf,
}

impl SignArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let file = self.file.clone();
        let signed = crate::sign::sign(crate::sign::SignRequest {
            file: self.file,
            keys: load_keys(&self.keys)?,
            expires: self.expires,
            append: self.append,
            now,
        })?;
        match signed.sequence {
            Some(seq) => println!("signed {} (sequence {seq})", file.display()),
            None => println!("signed {}", file.display()),
        }
        Ok(true)
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    store: PathBuf,
    /// Trusted public keys (repeatable).
    #[arg(long = "keys", required = true, num_args = 1..)]
    keys: Vec<PathBuf>,
    /// Distinct trusted keys each manifest needs.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
}

impl VerifyArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|p| load_public_key(p))
            .collect::<Result<_>>()?;
        let trust =
            manifest::TrustedKeys::new(keys, self.threshold).map_err(|e| Error::Invalid(e.to_string()))?;
        let report = crate::verify::verify_store(&self.store, &trust, now)?;
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for p in &report.problems {
            eprintln!("error: {p}");
        }
        let counts = format!(
            "{} cohort(s), {} release(s), {} artifact(s)",
            report.cohorts, report.releases, report.artifacts
        );
        if report.is_ok() {
            println!("store OK: {counts} checked");
        } else {
            println!("{} problem(s) in {counts}", report.problems.len());
        }
        Ok(report.is_ok())
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    store: PathBuf,
}

impl StatusArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let lines = crate::status::status_lines(&self.store, now)?;
        if lines.is_empty() {
            println!("no cohorts in {}", self.store.display());
        }
        for line in lines {
            println!("{line}");
        }
        Ok(true)
    }
}

#[derive(Args)]
pub struct BundleArgs {
    #[arg(long)]
    store: PathBuf,
    /// The cohort whose current target is packaged.
    #[arg(long)]
    cohort: CohortName,
    /// The bundle file to write (by convention NAME.bundle).
    #[arg(long)]
    out: PathBuf,
}

impl BundleArgs {
    fn run(self) -> Result<bool> {
        let s = crate::bundle::bundle(&self.store, &self.cohort, &self.out)?;
        println!(
            "{}: cohort {} -> {}, {} files, {} bytes",
            self.out.display(),
            self.cohort,
            s.version,
            s.files,
            s.bytes
        );
        Ok(true)
    }
}

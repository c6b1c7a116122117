//! `manifest-builder keys`: the store's root of trust (DESIGN: Root of
//! trust; manifest::keys). `init` writes the first `keys.json`, `rotate`
//! changes roles, thresholds or expiry, `revoke` removes a key for good;
//! each new document has version + 1 and is signed by the root keys given,
//! which must meet the threshold of the current roots *and* of the new ones
//! (exactly what devices will check), or nothing is written.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use manifest::document::to_pretty_bytes;
use manifest::keys::{parse_key_id, Role};
use manifest::{
    keys_history_path, Anchor, KeyId, KeyRing, KeysDocument, PublicKey, SecretKey, Timestamp, TrustedKeys,
    KEYS_HISTORY_DIR, KEYS_PATH,
};

use crate::cli::{load_keys, parse_duration};
use crate::error::{Error, IoContext, Result};
use crate::keys::load_public_key;
use crate::store::{sign_with, Store};

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write the store's first keys.json, signed by the root keys.
    Init(InitArgs),
    /// Change roles, thresholds or expiry: keys.json version + 1.
    Rotate(RotateArgs),
    /// Remove a compromised key from every role, for good: keys.json version + 1.
    Revoke(RevokeArgs),
    /// Print the store's keys.json: version, expiry, roles, revoked keys.
    Show(ShowArgs),
}

#[derive(Args)]
struct InitArgs {
    #[arg(long)]
    store: PathBuf,
    /// Root public keys (repeatable): the ones devices pin in root_keys_dir.
    #[arg(long = "root", required = true)]
    roots: Vec<PathBuf>,
    #[arg(long, default_value_t = 1)]
    root_threshold: usize,
    /// Keys that sign release manifests (repeatable).
    #[arg(long = "release", required = true)]
    release: Vec<PathBuf>,
    #[arg(long, default_value_t = 1)]
    release_threshold: usize,
    /// Keys that sign cohort manifests: promotions, rollout steps (repeatable).
    #[arg(long = "ops", required = true)]
    ops: Vec<PathBuf>,
    #[arg(long, default_value_t = 1)]
    ops_threshold: usize,
    /// Validity; devices refuse every manifest once keys.json expired.
    #[arg(long, value_parser = parse_duration, default_value = "365d")]
    expires: Duration,
    /// Root secret keys to sign with (repeatable; enough to meet the threshold).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
}

#[derive(Args)]
struct RotateArgs {
    #[arg(long)]
    store: PathBuf,
    #[arg(long = "add-root")]
    add_root: Vec<PathBuf>,
    /// Key id (16 hex digits) or public key file.
    #[arg(long = "remove-root")]
    remove_root: Vec<String>,
    #[arg(long)]
    root_threshold: Option<usize>,
    #[arg(long = "add-release")]
    add_release: Vec<PathBuf>,
    #[arg(long = "remove-release")]
    remove_release: Vec<String>,
    #[arg(long)]
    release_threshold: Option<usize>,
    #[arg(long = "add-ops")]
    add_ops: Vec<PathBuf>,
    #[arg(long = "remove-ops")]
    remove_ops: Vec<String>,
    #[arg(long)]
    ops_threshold: Option<usize>,
    /// New validity from now (default: the current document's).
    #[arg(long, value_parser = parse_duration)]
    expires: Option<Duration>,
    /// Root secret keys to sign with: a threshold of the current roots and
    /// of the new ones (repeatable).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
}

#[derive(Args)]
struct RevokeArgs {
    /// Key ids (16 hex digits) or public key files to revoke (repeatable).
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
    #[command(flatten)]
    rotate: RotateArgs,
}

#[derive(Args)]
struct ShowArgs {
    #[arg(long)]
    store: PathBuf,
}

impl KeysArgs {
    pub fn run(self, now: Timestamp) -> Result<bool> {
        match self.command {
            KeysCommand::Init(a) => a.run(now),
            KeysCommand::Rotate(a) => a.run(now, &[]),
            KeysCommand::Revoke(a) => {
                let ids = a.keys.iter().map(|k| key_ref(k)).collect::<Result<Vec<_>>>()?;
                a.rotate.run(now, &ids)
            }
            KeysCommand::Show(a) => a.run(now),
        }
    }
}

fn public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    paths.iter().map(|p| load_public_key(p)).collect()
}

/// A key named by id (`ABCD…`, 16 hex digits) or by its `.pub` file.
fn key_ref(s: &str) -> Result<KeyId> {
    if let Some(id) = parse_key_id(&s.to_ascii_uppercase()) {
        return Ok(id);
    }
    Ok(load_public_key(std::path::Path::new(s))?.id)
}

/// Read and parse the store's current keys.json (its signatures are
/// checked by [`write`] through the chain rule).
fn current(store: &Store) -> Result<(KeysDocument, Vec<u8>, Vec<u8>)> {
    let pair = store.read_pair(KEYS_PATH)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no {KEYS_PATH}: create it with `manifest-builder keys init`",
            store.path("").display()
        ))
    })?;
    let sig = pair
        .signature
        .ok_or_else(|| Error::Invalid(format!("{KEYS_PATH} has no signature file")))?;
    let doc = KeysDocument::parse(&pair.bytes).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((doc, pair.bytes, sig))
}

/// The release role's keys of the store's keys.json (none without one),
/// for checking a release before promoting it.
pub fn release_keys(store: &Store) -> Result<Vec<PublicKey>> {
    if !store.path(KEYS_PATH).exists() {
        return Ok(vec![]);
    }
    let (doc, bytes, sig) = current(store)?;
    KeyRing::reload(&bytes, &sig).map_err(|e| Error::Invalid(e.to_string()))?;
    doc.release
        .public_keys("release")
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Sign `doc` with `signers`, check it exactly as a device would against
/// `anchor`, and only then write it to the store.
fn write(
    store: &Store,
    doc: &KeysDocument,
    signers: &[SecretKey],
    anchor: Anchor<'_>,
    now: Timestamp,
) -> Result<()> {
    let bytes = to_pretty_bytes(doc);
    let sig = sign_with(signers, &bytes, KEYS_PATH, now)?;
    KeyRing::verify(anchor, &bytes, sig.as_bytes()).map_err(|e| {
        Error::Refused(format!(
            "{e}\nnothing was written: sign with enough root keys (--sign, repeatable)"
        ))
    })?;
    // The history first (immutable, what devices that missed a rotation
    // step through), then the current document.
    let history = keys_history_path(doc.version);
    std::fs::create_dir_all(store.path(KEYS_HISTORY_DIR)).at(store.path(KEYS_HISTORY_DIR))?;
    store.write_signed(&history, &bytes, &sig)?;
    store.write_signed(KEYS_PATH, &bytes, &sig)
}

impl InitArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let store = Store::create(&self.store)?;
        if store.path(KEYS_PATH).exists() {
            return Err(Error::Refused(format!(
                "{} already exists: use `keys rotate` to change it",
                store.path(KEYS_PATH).display()
            )));
        }
        let roots = public_keys(&self.roots)?;
        let doc = KeysDocument {
            schema: manifest::SCHEMA,
            kind: "keys".into(),
            version: 1,
            issued_at: now,
            expires_at: now.saturating_add(self.expires),
            root: Role::new(&roots, self.root_threshold),
            release: Role::new(&public_keys(&self.release)?, self.release_threshold),
            ops: Role::new(&public_keys(&self.ops)?, self.ops_threshold),
            revoked: vec![],
        };
        doc.trust().map_err(|e| Error::Invalid(e.to_string()))?;
        let pinned =
            TrustedKeys::new(roots, self.root_threshold).map_err(|e| Error::Invalid(e.to_string()))?;
        write(
            &store,
            &doc,
            &load_keys(&self.sign)?,
            Anchor::Pinned(&pinned),
            now,
        )?;
        print_doc(&doc, now);
        println!("devices: put the root public keys in root_keys_dir (/etc/updater/root-keys/)");
        Ok(true)
    }
}

/// Apply additions, removals and a threshold to one role.
fn edit_role(
    role: &mut Role,
    name: &'static str,
    add: &[PathBuf],
    remove: &[String],
    revoke: &[KeyId],
    threshold: Option<usize>,
) -> Result<()> {
    let remove: Vec<KeyId> = remove
        .iter()
        .map(|k| key_ref(k))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .chain(revoke.iter().copied())
        .collect();
    let mut keys = role
        .public_keys(name)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    keys.retain(|k| !remove.contains(&k.id));
    for k in public_keys(add)? {
        if !keys.iter().any(|have| have.id == k.id) {
            keys.push(k);
        }
    }
    *role = Role::new(&keys, threshold.unwrap_or(role.threshold));
    Ok(())
}

impl RotateArgs {
    fn run(self, now: Timestamp, revoke: &[KeyId]) -> Result<bool> {
        let store = Store::open(&self.store)?;
        let (old, bytes, sig) = current(&store)?;
        let ring = KeyRing::reload(&bytes, &sig).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut doc = old.clone();
        doc.version = old.version + 1;
        doc.issued_at = now;
        doc.expires_at = now.saturating_add(
            self.expires
                .unwrap_or_else(|| old.issued_at.until(old.expires_at)),
        );
        edit_role(
            &mut doc.root,
            "root",
            &self.add_root,
            &self.remove_root,
            revoke,
            self.root_threshold,
        )?;
        edit_role(
            &mut doc.release,
            "release",
            &self.add_release,
            &self.remove_release,
            revoke,
            self.release_threshold,
        )?;
        edit_role(
            &mut doc.ops,
            "ops",
            &self.add_ops,
            &self.remove_ops,
            revoke,
            self.ops_threshold,
        )?;
        for id in revoke {
            let id = id.to_string();
            if !doc.revoked.contains(&id) {
                doc.revoked.push(id);
            }
        }
        doc.trust().map_err(|e| {
            Error::Invalid(format!(
                "{e}\nnothing was written (a role left without enough keys needs --add-<role> in the same step)"
            ))
        })?;
        write(&store, &doc, &load_keys(&self.sign)?, Anchor::Ring(&ring), now)?;
        print_doc(&doc, now);
        Ok(true)
    }
}

impl ShowArgs {
    fn run(self, now: Timestamp) -> Result<bool> {
        let store = Store::open(&self.store)?;
        let (doc, bytes, sig) = current(&store)?;
        print_doc(&doc, now);
        match KeyRing::reload(&bytes, &sig) {
            Ok(_) if doc.expires_at > now => Ok(true),
            Ok(_) => {
                eprintln!(
                    "error: {KEYS_PATH} expired at {}: run `keys rotate` to renew it",
                    doc.expires_at
                );
                Ok(false)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(false)
            }
        }
    }
}

fn print_doc(doc: &KeysDocument, now: Timestamp) {
    let days = now.until(doc.expires_at).as_secs() / 86_400;
    println!(
        "{KEYS_PATH} version {}, expires {} (in {days} days)",
        doc.version, doc.expires_at
    );
    for (name, role) in [("root", &doc.root), ("release", &doc.release), ("ops", &doc.ops)] {
        let ids: Vec<String> = role
            .public_keys("role")
            .map(|keys| keys.iter().map(|k| k.id.to_string()).collect())
            .unwrap_or_default();
        println!("  {name:<8} {} of [{}]", role.threshold, ids.join(", "));
    }
    if !doc.revoked.is_empty() {
        println!("  revoked  {}", doc.revoked.join(", "));
    }
}

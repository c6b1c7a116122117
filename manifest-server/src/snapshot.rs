//! The in-memory snapshot of manifests and the reloader that keeps it
//! current (DESIGN: manifest-server, Signatures).
//!
//! Cohort and release manifests are small and are what every device polls,
//! so they are served from memory, never from disk: a manifest and its
//! `.minisig` are held together as one `Pair` with one strong ETag, and a
//! request can only ever see both halves of the same pair. The snapshot is an
//! `Arc` swapped under a lock held for a pointer copy, so readers never wait
//! for a reload.
//!
//! A reload rescans `keys.json`, `keys/`, `cohorts/` and `releases/` and,
//! for each `<name>.json`:
//! 1. reads the manifest and its signature (regular files only, size-capped,
//!    opened below the store root with no symlink on the way: a directory
//!    replaced by a link is refused like a linked file, see
//!    `files::StoreRoot`), then checks the manifest is still the same file,
//!    re-reading both (a few times at most) if it was replaced meanwhile;
//! 2. keeps the pair already served when the bytes are unchanged;
//! 3. otherwise verifies it with the trusted keys (when `--keys` is set):
//!    signature threshold, document validity, the name inside matching the
//!    file name, and for cohorts a `sequence` no lower than the one served
//!    (devices would refuse it: DESIGN, Cohort manifest);
//! 4. publishes the pairs that passed. A pair that fails is *suspect*, not
//!    yet refused: a writer replaces the manifest and then its signature, two
//!    renames apart, and a scan can fall between them. After a short settle
//!    it is read again; if it is still the same bytes and still fails, it is
//!    refused: one error line, one count in `/metrics`, and the last good
//!    pair stays served (a manifest that never had one stays a 404). The
//!    refused state is remembered so later scans do not report it again. If
//!    it changed meanwhile, the change produced a watch event and the next
//!    scan judges the new bytes.
//!
//! A manifest deleted from disk stops being served.
//!
//! Without `--keys` every pair on disk is served as it is (the server warns
//! once at start), but still only as a pair that was on disk together: with
//! nothing to verify, the writer's order tells. A writer puts the manifest in
//! place and then its signature, and a rename sets the file's change time,
//! so a signature changed *after* the manifest belongs to it (the manifest
//! was re-checked after the signature was read: no later pair can have slipped
//! in). Anything else (the signature older, the same timestamp tick, no
//! signature) may be a writer between its two renames: it is a suspect as
//! above, and after the settle, if still the same bytes, it is served as it
//! is, since that is what unverified mode serves. The cost is the settle
//! time on such publishes; the order check assumes the clock did not step
//! back between the two renames.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use http::HeaderValue;
use manifest::store::{COHORTS_DIR, RELEASES_DIR, SIGNATURE_SUFFIX};
use manifest::{keys_history_path, KeysDocument, KEYS_HISTORY_DIR, KEYS_PATH};
use manifest::{CohortName, TrustedKeys, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES};
use sha2::{Digest, Sha256};

use crate::files::{FileVersion, OpenError, StoreDir, StoreRoot};
use crate::metrics::Metrics;

/// A manifest and its signature, as served together.
#[derive(Debug)]
pub struct Pair {
    pub manifest: Bytes,
    /// Always present when verifying; may be missing when serving unverified.
    pub signature: Option<Bytes>,
    /// Strong ETag shared by both files: changes whenever either changes, so
    /// `If-Match` on the signature request detects a pair that moved on.
    pub etag: HeaderValue,
    /// The cohort manifest's sequence, once verified and parsed.
    pub sequence: Option<u64>,
}

impl Pair {
    fn new(manifest: Bytes, signature: Option<Bytes>, sequence: Option<u64>) -> Self {
        let etag = pair_etag(&manifest, signature.as_deref());
        Self {
            manifest,
            signature,
            etag,
            sequence,
        }
    }

    fn same_bytes(&self, manifest: &[u8], signature: Option<&[u8]>) -> bool {
        self.manifest == manifest && self.signature.as_deref() == signature
    }

    fn size(&self) -> usize {
        self.manifest.len() + self.signature.as_ref().map_or(0, Bytes::len)
    }
}

/// `"<sha256(len(manifest) || manifest || signature)>"`: the length prefix
/// keeps the boundary between the two files unambiguous.
fn pair_etag(manifest: &[u8], signature: Option<&[u8]>) -> HeaderValue {
    let mut h = Sha256::new();
    h.update((manifest.len() as u64).to_le_bytes());
    h.update(manifest);
    if let Some(sig) = signature {
        h.update(sig);
    }
    let tag = format!("\"{}\"", hex::encode(h.finalize()));
    HeaderValue::from_str(&tag).expect("hex is a valid header value")
}

/// Every manifest served, keyed by its store path (`cohorts/stable.json`).
#[derive(Debug, Default)]
pub struct Snapshot {
    pairs: HashMap<String, Arc<Pair>>,
}

impl Snapshot {
    pub fn get(&self, manifest_path: &str) -> Option<&Arc<Pair>> {
        self.pairs.get(manifest_path)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.pairs.values().map(|p| p.size()).sum()
    }
}

/// The snapshot currently served, shared by the HTTP handlers and the reloader.
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshot(Arc<RwLock<Arc<Snapshot>>>);

impl SharedSnapshot {
    /// The pair for `manifest_path`; the lock is held for one hash lookup.
    pub fn pair(&self, manifest_path: &str) -> Option<Arc<Pair>> {
        self.read().get(manifest_path).cloned()
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Arc<Snapshot>> {
        // A poisoned lock only means a reloader panicked mid-swap, and the
        // swap is a single assignment: the value inside is still whole.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, snapshot: Snapshot) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}

/// What a scan found on disk for one manifest path.
#[derive(Debug)]
enum OnDisk {
    /// The manifest is gone (deleted between the listing and the read).
    Gone,
    Files {
        manifest: Bytes,
        signature: Option<Bytes>,
        /// The signature was put in place after the manifest, and the
        /// manifest did not change while it was read: the two were written
        /// as a pair. Only consulted without `--keys` (with keys, the
        /// signature itself says whether they belong together).
        settled: bool,
    },
    /// Present but not servable as a file (a symlink, unreadable, not a file).
    Broken(String),
}

impl OnDisk {
    /// Identifies the exact state, so a refused state is reported once.
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        match self {
            OnDisk::Gone => h.update(b"gone"),
            OnDisk::Files {
                manifest, signature, ..
            } => {
                h.update(b"files");
                h.update((manifest.len() as u64).to_le_bytes());
                h.update(manifest);
                if let Some(sig) = signature {
                    h.update(sig);
                }
            }
            OnDisk::Broken(reason) => {
                h.update(b"broken");
                h.update(reason.as_bytes());
            }
        }
        h.finalize().into()
    }
}

/// Keeps the shared snapshot in step with the store. Used from one thread.
pub struct Loader {
    root: StoreRoot,
    trust: Option<TrustedKeys>,
    shared: SharedSnapshot,
    metrics: Arc<Metrics>,
    settle: Duration,
    /// Fingerprint of the state last refused, per manifest path.
    refused: HashMap<String, [u8; 32]>,
    /// File names already warned about as not being manifest names.
    ignored: HashSet<String>,
    /// Directories already reported as symbolic links.
    linked_dirs: HashSet<&'static str>,
    loaded_once: bool,
}

/// How long a failing pair is given to become consistent before it is refused.
pub const SETTLE: Duration = Duration::from_millis(300);

impl Loader {
    pub fn new(
        root: StoreRoot,
        trust: Option<TrustedKeys>,
        shared: SharedSnapshot,
        metrics: Arc<Metrics>,
        settle: Duration,
    ) -> Self {
        Self {
            root,
            trust,
            shared,
            metrics,
            settle,
            refused: HashMap::new(),
            ignored: HashSet::new(),
            linked_dirs: HashSet::new(),
            loaded_once: false,
        }
    }

    /// Rescan the store and publish what changed. Blocking: reads files and
    /// may sleep for the settle time; call it from a thread of its own.
    pub fn reload(&mut self) {
        let current = self.shared.load();
        let paths = self.list_manifests(&current);
        // Forget refusals of files that are gone, so a file re-created later
        // with the same bad bytes is reported again.
        self.refused.retain(|path, _| paths.contains(path));
        let mut next = HashMap::with_capacity(paths.len());
        let mut suspects = Vec::new();
        for path in paths {
            let disk = read_pair(&self.root, &path);
            let served = current.get(&path);
            if let Some(pair) = self.judge_unchanged(&path, &disk, served) {
                if let Some(pair) = pair {
                    next.insert(path, pair);
                }
                continue;
            }
            match self.evaluate(&path, &disk, served.map(Arc::as_ref), false) {
                Ok(pair) => {
                    self.accepted(&path, &pair, served.is_some());
                    next.insert(path, Arc::new(pair));
                }
                Err(_) => {
                    if let Some(pair) = served {
                        next.insert(path.clone(), pair.clone());
                    }
                    suspects.push((path, disk.fingerprint()));
                }
            }
        }
        for path in current.pairs.keys().filter(|p| !next.contains_key(*p)) {
            if self.loaded_once {
                log::info!("{path}: removed from the store, no longer served");
            }
        }
        self.publish(next, &current);

        if suspects.is_empty() {
            return;
        }
        // A writer may be between its two renames: give it time, then judge
        // the pairs that still fail with the same bytes.
        std::thread::sleep(self.settle);
        let current = self.shared.load();
        let mut next = current.pairs.clone();
        for (path, first) in suspects {
            let disk = read_pair(&self.root, &path);
            let served = current.get(&path);
            if matches!(disk, OnDisk::Gone) {
                continue; // deleted meanwhile: the pending watch event rescans
            }
            if disk.fingerprint() == first {
                // The same bytes after the settle: no writer is between its
                // renames any more, so this is what the store holds.
                match self.evaluate(&path, &disk, served.map(Arc::as_ref), true) {
                    Ok(pair) => {
                        self.accepted(&path, &pair, served.is_some());
                        next.insert(path, Arc::new(pair));
                    }
                    Err(reason) => self.refuse(&path, first, &reason, served.map(Arc::as_ref)),
                }
                continue;
            }
            // Changed during the settle: take it if it is now good; if not,
            // the change left a watch event behind and the next scan judges it.
            if let Ok(pair) = self.evaluate(&path, &disk, served.map(Arc::as_ref), false) {
                self.accepted(&path, &pair, served.is_some());
                next.insert(path, Arc::new(pair));
            }
        }
        self.publish(next, &current);
    }

    /// `Some(kept)` when nothing needs judging: the bytes are the pair being
    /// served (kept), or the state already refused (the old pair, if any).
    #[allow(clippy::option_option)]
    fn judge_unchanged(
        &mut self,
        path: &str,
        disk: &OnDisk,
        served: Option<&Arc<Pair>>,
    ) -> Option<Option<Arc<Pair>>> {
        match disk {
            OnDisk::Gone => return Some(None),
            OnDisk::Files {
                manifest, signature, ..
            } => {
                if let Some(pair) = served.filter(|p| p.same_bytes(manifest, signature.as_deref())) {
                    // Back to the served bytes: a later identical bad edit
                    // deserves a report of its own.
                    self.refused.remove(path);
                    return Some(Some(pair.clone()));
                }
            }
            OnDisk::Broken(_) => {}
        }
        if self.refused.get(path) == Some(&disk.fingerprint()) {
            return Some(served.cloned());
        }
        None
    }

    fn accepted(&mut self, path: &str, pair: &Pair, replaces: bool) {
        self.refused.remove(path);
        let what = match (pair.sequence, &self.trust) {
            (Some(seq), _) => format!("verified, sequence {seq}"),
            (None, Some(_)) => "verified".to_string(),
            (None, None) => "unverified".to_string(),
        };
        if self.loaded_once {
            let verb = if replaces { "now serving" } else { "serving new" };
            log::info!("{path}: {verb} version ({what}, etag {})", etag_str(&pair.etag));
        } else {
            log::debug!("{path}: serving ({what})");
        }
    }

    fn refuse(&mut self, path: &str, fingerprint: [u8; 32], reason: &str, served: Option<&Pair>) {
        self.refused.insert(path.to_string(), fingerprint);
        self.metrics.manifest_rejected();
        let keeping = match served {
            Some(Pair {
                sequence: Some(seq), ..
            }) => format!("still serving the last good version (sequence {seq})"),
            Some(_) => "still serving the last good version".to_string(),
            None => "not served until a valid version is in place".to_string(),
        };
        log::error!("refused {path}: {reason}; {keeping}");
    }

    fn publish(&mut self, next: HashMap<String, Arc<Pair>>, current: &Snapshot) {
        let unchanged = next.len() == current.pairs.len()
            && next
                .iter()
                .all(|(k, v)| current.pairs.get(k).is_some_and(|c| Arc::ptr_eq(c, v)));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if unchanged && self.loaded_once {
            // Still a reload: the timestamp shows the watcher is alive.
            self.metrics.snapshot_loaded(now, current.len(), current.bytes());
            return;
        }
        let snapshot = Snapshot { pairs: next };
        self.metrics
            .snapshot_loaded(now, snapshot.len(), snapshot.bytes());
        if !self.loaded_once {
            log::info!(
                "loaded {} manifest(s) from {} ({} bytes)",
                snapshot.len(),
                self.root.path().display(),
                snapshot.bytes()
            );
            self.loaded_once = true;
        }
        self.shared.store(snapshot);
    }

    /// The manifest paths to consider: `<dir>/<name>.json` whose name is a
    /// valid cohort name or version. For a directory that cannot be listed,
    /// the paths served from it (a transient error must not empty the store).
    fn list_manifests(&mut self, current: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        // symlink_metadata: a linked keys.json is listed, and then refused.
        if self.root.path().join(KEYS_PATH).symlink_metadata().is_ok()
            || current.pairs.contains_key(KEYS_PATH)
        {
            out.push(KEYS_PATH.to_string());
        }
        for dir in [COHORTS_DIR, RELEASES_DIR, KEYS_HISTORY_DIR] {
            let dir_path = self.root.path().join(dir);
            // Only to report it once and list nothing through it: what
            // guarantees that nothing is read through a link is the open
            // (`read_pair`), which a swap after this check cannot fool.
            if dir_path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                if self.linked_dirs.insert(dir) {
                    log::error!(
                        "{dir}/ in the store is a symbolic link: nothing is loaded through it \
                         until it is a real directory again"
                    );
                }
                // Its manifests already served are judged one by one: each
                // is refused, and its last good pair kept.
                let prefix = format!("{dir}/");
                out.extend(current.pairs.keys().filter(|k| k.starts_with(&prefix)).cloned());
                continue;
            }
            self.linked_dirs.remove(dir);
            let entries = match std::fs::read_dir(&dir_path) {
                Ok(entries) => entries,
                // A store without a root of trust has no keys/ history.
                Err(e) if dir == KEYS_HISTORY_DIR && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Its manifests are judged one by one below: kept while
                    // they cannot be read, unserved once they are gone.
                    log::error!("cannot list {dir}/ in the store: {e}");
                    let prefix = format!("{dir}/");
                    out.extend(current.pairs.keys().filter(|k| k.starts_with(&prefix)).cloned());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let Some(stem) = name.strip_suffix(".json") else {
                    continue; // signatures, temp files, anything else
                };
                if stem.starts_with('.') {
                    continue; // editors' and sync tools' temp files
                }
                let valid = match dir {
                    COHORTS_DIR => CohortName::new(stem).is_ok(),
                    KEYS_HISTORY_DIR => stem.parse::<u64>().is_ok_and(|v| v.to_string() == stem),
                    _ => manifest::parse_version(stem).is_ok(),
                };
                let path = format!("{dir}/{name}");
                if valid {
                    out.push(path);
                } else if self.ignored.insert(path.clone()) {
                    let what = match dir {
                        COHORTS_DIR => "a cohort name",
                        KEYS_HISTORY_DIR => "a keys.json version number",
                        _ => "a version",
                    };
                    log::warn!("{path}: not served: {stem:?} is not {what}");
                }
            }
        }
        out
    }

    /// Decide whether what is on disk may be served, and build its pair.
    /// `waited`: the same bytes were read again after the settle time, so a
    /// pair not known to be settled is taken as it is (unverified mode).
    fn evaluate(
        &self,
        path: &str,
        disk: &OnDisk,
        served: Option<&Pair>,
        waited: bool,
    ) -> Result<Pair, String> {
        let (manifest, signature, settled) = match disk {
            OnDisk::Files {
                manifest,
                signature,
                settled,
            } => (manifest, signature, *settled),
            OnDisk::Broken(reason) => return Err(reason.clone()),
            OnDisk::Gone => return Err(format!("{path}: gone")),
        };
        let Some(trust) = &self.trust else {
            if manifest.len() > MAX_MANIFEST_BYTES {
                return Err(format!(
                    "{path}: {} bytes is over the {MAX_MANIFEST_BYTES}-byte limit for a manifest",
                    manifest.len()
                ));
            }
            // A path served for the first time (a new release) cannot be
            // mixed with an older signature of its own: with both files in
            // place it is taken at once, so a release is never held back
            // behind the cohort manifest that names it.
            let first_pair = served.is_none() && signature.is_some();
            if !settled && !waited && !first_pair {
                return Err(format!(
                    "{path}: its signature may not be in place yet; judged again in {} ms",
                    self.settle.as_millis()
                ));
            }
            return Ok(Pair::new(manifest.clone(), signature.clone(), None));
        };
        let Some(signature) = signature else {
            return Err(format!("{path}{SIGNATURE_SUFFIX}: missing"));
        };
        let stem = path
            .split_once('/')
            .and_then(|(_, name)| name.strip_suffix(".json"))
            .unwrap_or_default();
        let sequence = if path == KEYS_PATH || path.starts_with(&format!("{KEYS_HISTORY_DIR}/")) {
            // Devices check the chain from their own trusted keys.json; here
            // it is enough that trusted keys (give the root keys in --keys)
            // signed a well-formed document.
            trust
                .verify_bytes(path, manifest, signature)
                .map_err(|e| e.to_string())?;
            let doc = KeysDocument::parse(manifest).map_err(|e| e.to_string())?;
            if path != KEYS_PATH && path != keys_history_path(doc.version) {
                return Err(format!("{path}: the document is version {}", doc.version));
            }
            if let Some(prev) = served.and_then(|p| p.sequence) {
                if doc.version < prev {
                    return Err(format!(
                        "{path}: version {} is lower than {prev}, the one being served (devices would refuse it)",
                        doc.version
                    ));
                }
            }
            Some(doc.version)
        } else if path.starts_with(COHORTS_DIR) {
            let doc = trust
                .verify_cohort(path, manifest, signature)
                .map_err(|e| e.to_string())?;
            if doc.cohort.as_str() != stem {
                return Err(format!(
                    "{path}: the manifest is for cohort {:?}, not {stem:?}",
                    doc.cohort.as_str()
                ));
            }
            if let Some(prev) = served.and_then(|p| p.sequence) {
                if doc.sequence < prev {
                    return Err(format!(
                        "{path}: sequence {} is lower than {prev}, the one being served \
                         (devices would refuse it: raise the sequence and re-sign)",
                        doc.sequence
                    ));
                }
                if doc.sequence == prev && served.is_some_and(|p| p.manifest != *manifest) {
                    return Err(format!(
                        "{path}: sequence {prev} is the one being served, with other bytes \
                         (devices that have it would refuse this one: raise the sequence and re-sign)"
                    ));
                }
            }
            Some(doc.sequence)
        } else {
            let doc = trust
                .verify_release(path, manifest, signature)
                .map_err(|e| e.to_string())?;
            if doc.version.to_string() != stem {
                return Err(format!(
                    "{path}: the manifest is for version {}, not {stem}",
                    doc.version
                ));
            }
            None
        };
        Ok(Pair::new(manifest.clone(), Some(signature.clone()), sequence))
    }
}

fn etag_str(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("?")
}

/// How many times a pair is read again when its manifest was replaced while
/// its signature was being read, before the pair is left to the settle.
const PAIR_READ_ATTEMPTS: usize = 3;

/// Read `path` and its signature from the same directory, opened below the
/// store root without following any link.
fn read_pair(root: &StoreRoot, path: &str) -> OnDisk {
    let (dir_path, name) = path.rsplit_once('/').unwrap_or(("", path));
    let sig_name = format!("{name}{SIGNATURE_SUFFIX}");
    let dir = match root.open_dir(dir_path) {
        Ok(dir) => dir,
        Err(OpenError::Missing) => return OnDisk::Gone,
        Err(e) => return OnDisk::Broken(describe(path, e)),
    };
    let mut last = None;
    for _ in 0..PAIR_READ_ATTEMPTS {
        let (manifest, version) = match read_capped(&dir, name, MAX_MANIFEST_BYTES) {
            Ok(Some(read)) => read,
            Ok(None) => return OnDisk::Gone,
            Err(e) => return OnDisk::Broken(describe(path, e)),
        };
        let signature = match read_capped(&dir, &sig_name, MAX_SIGNATURE_BYTES) {
            Ok(sig) => sig,
            Err(e) => return OnDisk::Broken(describe(&format!("{path}{SIGNATURE_SUFFIX}"), e)),
        };
        // Still the same manifest once the signature is read: the signature
        // was in place while this manifest was, so no later pair was mixed in.
        let unchanged = matches!(dir.open_file(name), Ok((_, meta)) if FileVersion::of(&meta) == version);
        // And put in place after it (strictly: one timestamp tick can hold
        // both renames of a writer, or the end of one pair and the start of
        // the next).
        let settled = unchanged
            && signature
                .as_ref()
                .is_some_and(|(_, sig)| sig.ctime() > version.ctime());
        let files = OnDisk::Files {
            manifest,
            signature: signature.map(|(bytes, _)| bytes),
            settled,
        };
        if unchanged {
            return files;
        }
        last = Some(files);
    }
    last.expect("PAIR_READ_ATTEMPTS is not zero")
}

/// The reason for a `Broken` state: link errors name their own path.
fn describe(path: &str, e: OpenError) -> String {
    match e {
        OpenError::Symlink(_) | OpenError::NotDirectory(_) => e.to_string(),
        e => format!("{path}: {e}"),
    }
}

/// Read the regular file `name` in `dir`, reading at most `limit + 1` bytes
/// so an oversized file is reported as such by the verifier without being
/// loaded. `Ok(None)` when the file does not exist.
fn read_capped(
    dir: &StoreDir<'_>,
    name: &str,
    limit: usize,
) -> Result<Option<(Bytes, FileVersion)>, OpenError> {
    let (file, meta) = match dir.open_file(name) {
        Ok(opened) => opened,
        Err(OpenError::Missing) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::with_capacity((meta.len() as usize).min(limit + 1));
    (&file as &File).take(limit as u64 + 1).read_to_end(&mut buf)?;
    Ok(Some((Bytes::from(buf), FileVersion::of(&meta))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifest::minisign::signatures_to_text;
    use manifest::SecretKey;

    fn cohort(seq: u64) -> Vec<u8> {
        format!(
            r#"{{"schema": 1, "kind": "cohort", "product": "neopro", "cohort": "stable", "sequence": {seq},
  "issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-12-21T10:00:00Z",
  "target": {{"version": "1.3.0", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 812}},
  "rollout": {{"percent": 10}}}}
"#
        )
        .into_bytes()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        key: SecretKey,
        loader: Loader,
        shared: SharedSnapshot,
        metrics: Arc<Metrics>,
    }

    impl Fixture {
        fn new() -> Self {
            Self::with(true, Duration::ZERO)
        }

        fn with(verifying: bool, settle: Duration) -> Self {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["cohorts", "releases", "artifacts"] {
                std::fs::create_dir(dir.path().join(sub)).unwrap();
            }
            let key = SecretKey::generate();
            let trust = TrustedKeys::new([key.public_key()], 1).unwrap();
            let shared = SharedSnapshot::default();
            let metrics = Arc::new(Metrics::default());
            let loader = Loader::new(
                StoreRoot::open(dir.path()).unwrap(),
                verifying.then_some(trust),
                shared.clone(),
                metrics.clone(),
                settle,
            );
            Self {
                dir,
                key,
                loader,
                shared,
                metrics,
            }
        }

        fn write(&self, path: &str, body: &[u8], signed: Option<&[u8]>) {
            std::fs::write(self.dir.path().join(path), body).unwrap();
            if let Some(signed) = signed {
                let block = self.key.sign(signed, "timestamp:0\tfile:x").unwrap();
                std::fs::write(
                    self.dir.path().join(format!("{path}.minisig")),
                    signatures_to_text(&[block]),
                )
                .unwrap();
            }
        }

        fn served(&self, path: &str) -> Option<Bytes> {
            self.shared.pair(path).map(|p| p.manifest.clone())
        }

        fn sig(&self, signed: &[u8]) -> String {
            signatures_to_text(&[self.key.sign(signed, "timestamp:0\tfile:x").unwrap()])
        }

        fn root(&self) -> StoreRoot {
            StoreRoot::open(self.dir.path()).unwrap()
        }
    }

    /// Past one timestamp tick (1-10 ms), so change times differ.
    fn next_tick() {
        std::thread::sleep(Duration::from_millis(20));
    }

    #[test]
    fn nothing_is_loaded_through_a_linked_directory() {
        // Unverified: whatever is read is served, so a leak would show.
        let mut f = Fixture::with(false, Duration::ZERO);
        let outside = tempfile::tempdir().unwrap();
        for name in [
            "1.json",
            "1.json.minisig",
            "stable.json",
            "stable.json.minisig",
            "beta.json",
        ] {
            std::fs::write(outside.path().join(name), b"outside").unwrap();
        }
        f.write("cohorts/stable.json", &cohort(1), Some(&cohort(1)));
        std::os::unix::fs::symlink(outside.path(), f.dir.path().join("keys")).unwrap();
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(1));
        assert!(f.served("keys/1.json").is_none());

        // cohorts/ swapped for a link after the first load.
        let cohorts = f.dir.path().join("cohorts");
        std::fs::rename(&cohorts, f.dir.path().join("cohorts.old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &cohorts).unwrap();
        f.loader.reload();
        f.loader.reload();
        assert_eq!(
            f.served("cohorts/stable.json").unwrap(),
            cohort(1),
            "last good kept"
        );
        assert!(f.served("cohorts/beta.json").is_none());
        assert_eq!(f.metrics.rejected(), 1);
        let OnDisk::Broken(reason) = read_pair(&f.root(), "cohorts/stable.json") else {
            panic!("read through a link");
        };
        assert!(reason.contains("cohorts/ is a symbolic link"), "{reason}");
    }

    #[test]
    fn a_pair_is_settled_only_when_the_signature_came_after_the_manifest() {
        let f = Fixture::new();
        let settled = |f: &Fixture| match read_pair(&f.root(), "cohorts/stable.json") {
            OnDisk::Files { settled, .. } => settled,
            other => panic!("{other:?}"),
        };
        f.write("cohorts/stable.json", &cohort(1), None);
        assert!(!settled(&f), "no signature");
        next_tick();
        // One tick apart: the same tick would be ambiguous (see `read_pair`).
        std::fs::write(
            f.dir.path().join("cohorts/stable.json.minisig"),
            f.sig(&cohort(1)),
        )
        .unwrap();
        assert!(settled(&f), "signature after the manifest");
        next_tick();
        // A writer between its two renames: new manifest, old signature.
        std::fs::write(f.dir.path().join("cohorts/stable.json"), cohort(2)).unwrap();
        assert!(!settled(&f), "signature older than the manifest");
        next_tick();
        std::fs::write(
            f.dir.path().join("cohorts/stable.json.minisig"),
            f.sig(&cohort(2)),
        )
        .unwrap();
        assert!(settled(&f), "the writer finished");
    }

    #[test]
    fn without_keys_a_half_written_pair_waits_for_the_settle() {
        let settle = Duration::from_millis(500);
        let mut f = Fixture::with(false, settle);
        f.write("cohorts/stable.json", &cohort(1), Some(&cohort(1)));
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(1));
        next_tick();
        std::fs::write(f.dir.path().join("cohorts/stable.json"), cohort(2)).unwrap();
        let (loader, shared) = (&mut f.loader, f.shared.clone());
        std::thread::scope(|scope| {
            let reload = scope.spawn(|| loader.reload());
            std::thread::sleep(settle / 2);
            // During the settle: still the old, whole pair.
            let pair = shared.pair("cohorts/stable.json").unwrap();
            assert_eq!(pair.manifest, cohort(1));
            reload.join().unwrap();
        });
        // Unchanged after the settle: what the store holds is served.
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(2));
        assert_eq!(f.metrics.rejected(), 0);
    }

    #[test]
    fn bad_edit_keeps_the_last_good_pair_and_is_counted_once() {
        let mut f = Fixture::new();
        f.write("cohorts/stable.json", &cohort(1), Some(&cohort(1)));
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(1));
        let etag = f.shared.pair("cohorts/stable.json").unwrap().etag.clone();

        f.write("cohorts/stable.json", &cohort(2), None);
        f.loader.reload();
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(1));
        assert_eq!(f.metrics.rejected(), 1);

        f.write("cohorts/stable.json", &cohort(2), Some(&cohort(2)));
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(2));
        assert_ne!(f.shared.pair("cohorts/stable.json").unwrap().etag, etag);
    }

    #[test]
    fn lower_or_reused_sequence_is_refused() {
        let mut f = Fixture::new();
        f.write("cohorts/stable.json", &cohort(5), Some(&cohort(5)));
        f.loader.reload();
        f.write("cohorts/stable.json", &cohort(4), Some(&cohort(4)));
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(5));
        let mut same_seq = cohort(5);
        same_seq.extend_from_slice(b"\n");
        f.write("cohorts/stable.json", &same_seq, Some(&same_seq));
        f.loader.reload();
        assert_eq!(f.served("cohorts/stable.json").unwrap(), cohort(5));
        assert_eq!(f.metrics.rejected(), 2);
    }

    #[test]
    fn unsigned_new_manifest_is_not_served_and_deletion_unserves() {
        let mut f = Fixture::new();
        f.write("cohorts/stable.json", &cohort(1), None);
        f.loader.reload();
        assert!(f.served("cohorts/stable.json").is_none());
        f.write("cohorts/stable.json", &cohort(1), Some(&cohort(1)));
        f.loader.reload();
        assert!(f.served("cohorts/stable.json").is_some());
        std::fs::remove_file(f.dir.path().join("cohorts/stable.json")).unwrap();
        f.loader.reload();
        assert!(f.served("cohorts/stable.json").is_none());
    }

    #[test]
    fn wrong_cohort_name_and_symlinks_are_refused() {
        let mut f = Fixture::new();
        f.write("cohorts/beta.json", &cohort(1), Some(&cohort(1)));
        let outside = f.dir.path().join("outside.json");
        std::fs::write(&outside, cohort(1)).unwrap();
        std::os::unix::fs::symlink(&outside, f.dir.path().join("cohorts/stable.json")).unwrap();
        f.loader.reload();
        assert!(f.served("cohorts/beta.json").is_none());
        assert!(f.served("cohorts/stable.json").is_none());
        assert_eq!(f.metrics.rejected(), 2);
    }

    #[test]
    fn etag_covers_both_files() {
        let a = pair_etag(b"ab", Some(b"c"));
        assert_ne!(a, pair_etag(b"a", Some(b"bc")));
        assert_ne!(a, pair_etag(b"ab", Some(b"d")));
        assert_eq!(a, pair_etag(b"ab", Some(b"c")));
        assert!(a.to_str().unwrap().starts_with('"'));
    }
}

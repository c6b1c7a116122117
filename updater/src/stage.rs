//! Staging a release into the inactive slot (DESIGN: One run, step 5).
//!
//! Per component: copy it from the active slot when the hash matches (no
//! download), else download and unpack it in one streaming pass. The
//! download loop appends to `downloads/<sha256>.partial` (kept across runs
//! for `Range` resume) and feeds the same bytes, through a bounded channel,
//! to an unpack thread; the SHA-256 is computed on the way. Network,
//! hashing and inflating+writing thus overlap on two cores, and memory stays
//! bounded by the channel (a few hundred KiB) whatever the artifact size.
//! Nothing in the slot counts until `slot.json` is written, after the hash
//! matched, the hook ran and the filesystem was synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

use bytes::Bytes;
use manifest::archive::{ArchiveError, Limits};
use manifest::store::artifact_path;
use manifest::{Component, ReleaseManifest, Sha256Hex};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::durable::{available_space, remove_tree, syncfs};
use crate::fetch::{FetchError, Transport};
use crate::paths::Paths;
use crate::process;
use crate::state::{Slot, SlotInfo};
use crate::unpack::{copy_tree, unpack};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Network trouble: the partial download is kept for the next run.
    #[error(transparent)]
    Network(FetchError),
    /// The server's bytes are wrong or unsafe: a verdict on content.
    #[error("{0}")]
    Refused(String),
    #[error("not enough space in {dir}: {need} bytes needed, {have} available; free space or enlarge the data partition")]
    NoSpace { dir: String, need: u64, have: u64 },
    /// The server's copy of an artifact changed under a resumed download
    /// (its ETag differs from the one the partial began with): the partial
    /// is dropped and the component downloaded again from the start.
    #[error("{0}")]
    Restart(String),
    #[error("post_stage hook {hook} {result}; the release was not installed")]
    Hook { hook: String, result: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What staging cost, for logs and reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageStats {
    pub downloaded: u64,
    pub reused: u64,
}

pub struct Stager<'a> {
    pub config: &'a Config,
    pub paths: &'a Paths,
    pub transport: &'a Transport,
}

/// Bytes in flight between download and unpack: chunks are cut to at most
/// `PIECE` bytes and the channel holds `CHANNEL_PIECES` of them, so the
/// pipeline holds well under 1 MiB however large hyper's reads get (they
/// grow to hundreds of KiB on a fast link), and both sides stay busy.
const PIECE: usize = 64 * 1024;
const CHANNEL_PIECES: usize = 8;

impl Stager<'_> {
    /// Stage `release` into `slot`, reusing components found in `active`.
    pub async fn stage(
        &self,
        release: &ReleaseManifest,
        release_sha256: Sha256Hex,
        slot: Slot,
        active: Option<Slot>,
    ) -> Result<StageStats, StageError> {
        let slot_dir = self.paths.slot(slot);
        // Invalid first: drop the marker, then the old contents.
        remove_tree(&slot_dir).map_err(io_at(&slot_dir))?;
        fs::create_dir_all(&slot_dir).map_err(io_at(&slot_dir))?;
        let active_info = active.and_then(|s| SlotInfo::load(&self.paths.slot(s)).map(|i| (s, i)));
        let reusable = |c: &Component| {
            active_info
                .as_ref()
                .filter(|(_, info)| info.components.get(&c.name) == Some(&c.sha256))
                .map(|(s, _)| self.paths.slot(*s).join(c.name.as_str()))
        };

        self.drop_stale_partials(release);
        self.check_space(release, &reusable)?;

        let mut stats = StageStats::default();
        for c in &release.components {
            let dest = slot_dir.join(c.name.as_str());
            match reusable(c) {
                Some(src) => {
                    stats.reused += copy_tree(&src, &dest).map_err(io_at(&dest))?;
                    log::info!(
                        "component {} unchanged ({}): copied from the active slot",
                        c.name,
                        c.sha256
                    );
                }
                None => {
                    fs::create_dir_all(&dest).map_err(io_at(&dest))?;
                    stats.downloaded += self.fetch_component(c, &dest).await?;
                }
            }
        }

        if let Some(hook) = release.hooks.as_ref().and_then(|h| h.post_stage.as_deref()) {
            self.run_hook(hook, &slot_dir, release).await?;
        }
        syncfs(&slot_dir).map_err(io_at(&slot_dir))?;
        let info = SlotInfo {
            version: release.version.clone(),
            release_sha256,
            components: release
                .components
                .iter()
                .map(|c| (c.name.clone(), c.sha256))
                .collect(),
            health: release.health.clone(),
        };
        info.store(&slot_dir).map_err(io_at(&slot_dir))?;
        Ok(stats)
    }

    /// Partial downloads of artifacts this release does not need belong to
    /// targets that were abandoned: they would only fill the SD card.
    fn drop_stale_partials(&self, release: &ReleaseManifest) {
        let keep: Vec<String> = release
            .components
            .iter()
            .flat_map(|c| [format!("{}.partial", c.sha256), format!("{}.validator", c.sha256)])
            .collect();
        let Ok(entries) = fs::read_dir(self.paths.downloads()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                log::info!("removing stale partial download {name}");
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn check_space(
        &self,
        release: &ReleaseManifest,
        reusable: &dyn Fn(&Component) -> Option<std::path::PathBuf>,
    ) -> Result<(), StageError> {
        // Saturating: signed sizes near 2^64 must read as "too big", never
        // wrap to a few MiB (a fuzzing finding, docs/FUZZING.md).
        let mut need = 0u64;
        for c in &release.components {
            need = need.saturating_add(c.unpacked_size);
            if reusable(c).is_none() {
                let have = fs::metadata(self.paths.partial(&c.sha256))
                    .map(|m| m.len())
                    .unwrap_or(0);
                need = need.saturating_add(c.size.saturating_sub(have));
            }
        }
        // Room for directories, inodes and filesystem overhead.
        need = need.saturating_add(need / 20).saturating_add(1 << 20);
        let have = available_space(&self.paths.root).map_err(io_at(&self.paths.root))?;
        if have < need {
            return Err(StageError::NoSpace {
                dir: self.paths.root.display().to_string(),
                need,
                have,
            });
        }
        Ok(())
    }

    async fn run_hook(
        &self,
        hook: &str,
        slot_dir: &Path,
        release: &ReleaseManifest,
    ) -> Result<(), StageError> {
        let program = slot_dir.join(hook);
        let argv = vec![program.display().to_string()];
        let env = [
            ("UPDATER_SLOT", slot_dir.display().to_string()),
            ("UPDATER_VERSION", release.version.to_string()),
        ];
        let result = process::run(&argv, &[], Some(slot_dir), &env, self.config.install.hook_timeout)
            .await
            .map_err(|e| StageError::Hook {
                hook: hook.to_string(),
                result: e,
            })?;
        if !result.success() {
            // Name the limit, so the fix (a faster hook or a longer
            // `install.hook_timeout`) is obvious from the one log line.
            let result = match result {
                process::RunResult::TimedOut => format!(
                    "did not finish within install.hook_timeout ({}) and was killed, with every process it started",
                    humantime::format_duration(self.config.install.hook_timeout)
                ),
                other => other.describe(),
            };
            return Err(StageError::Hook {
                hook: hook.to_string(),
                result,
            });
        }
        Ok(())
    }

    /// Download (resuming) and unpack one component; returns bytes fetched
    /// over the network in this run. A download whose artifact changed on
    /// the server under it starts over once.
    async fn fetch_component(&self, c: &Component, dest: &Path) -> Result<u64, StageError> {
        match self.fetch_component_once(c, dest).await {
            Err(StageError::Restart(why)) => {
                log::warn!("{why}");
                self.fetch_component_once(c, dest).await
            }
            result => result,
        }
    }

    /// Remove a partial download and the validator it began with.
    fn forget_partial(&self, c: &Component) {
        let _ = fs::remove_file(self.paths.partial(&c.sha256));
        let _ = fs::remove_file(self.paths.partial_validator(&c.sha256));
    }

    async fn fetch_component_once(&self, c: &Component, dest: &Path) -> Result<u64, StageError> {
        let partial = self.paths.partial(&c.sha256);
        let (tx, rx) = sync_channel::<Bytes>(CHANNEL_PIECES);
        let limits = Limits::unpacked(c.unpacked_size);
        let unpack_dest = dest.to_path_buf();
        let unpacker = std::thread::spawn(move || unpack(ChannelReader::new(rx), &unpack_dest, limits));

        let fed = self.feed(c, &partial, tx).await;
        let unpacked = unpacker.join().unwrap_or_else(|_| {
            Err(ArchiveError::Corrupt(io::Error::other(
                "the unpack thread panicked",
            )))
        });
        let (hash, fetched) = match fed {
            Ok(v) => v,
            Err(e) => {
                remove_tree(dest).map_err(io_at(dest))?;
                return Err(e);
            }
        };
        let artifact = format!("artifact {} of component {}", c.sha256, c.name);
        if hash != c.sha256 {
            self.forget_partial(c);
            remove_tree(dest).map_err(io_at(dest))?;
            return Err(StageError::Refused(format!(
                "{artifact}: downloaded bytes hash to {hash}, not to the sha256 in the signed manifest \
                 (tampered or corrupted on the server); re-publish the artifact"
            )));
        }
        match unpacked {
            Ok(summary) => {
                self.forget_partial(c);
                log::info!(
                    "component {} downloaded and unpacked ({} bytes fetched, {} files bytes)",
                    c.name,
                    fetched,
                    summary.unpacked_size
                );
                Ok(fetched)
            }
            Err(ArchiveError::Visit { path, source }) => {
                remove_tree(dest).map_err(io_at(dest))?;
                Err(StageError::Io {
                    path: dest.join(path).display().to_string(),
                    source,
                })
            }
            Err(e) => {
                self.forget_partial(c);
                remove_tree(dest).map_err(io_at(dest))?;
                Err(StageError::Refused(format!(
                    "{artifact} is signed but unsafe to unpack: {e}"
                )))
            }
        }
    }

    /// Feed the partial file, then the network, to the unpacker, appending
    /// new bytes to the partial file. Returns the hash of everything fed and
    /// the bytes fetched in this run. If the unpacker stops early (bad
    /// archive) the rest is still fetched, bounded by the signed size, so the
    /// verdict can say whether the bytes or the archive were at fault.
    async fn feed(
        &self,
        c: &Component,
        partial: &Path,
        tx: SyncSender<Bytes>,
    ) -> Result<(Sha256Hex, u64), StageError> {
        let mut hasher = Sha256::new();
        let mut tx = Some(tx);
        let bar = progress_bar(c);
        let mut send = |mut chunk: Bytes, hasher: &mut Sha256| {
            hasher.update(&chunk);
            bar.inc(chunk.len() as u64);
            while !chunk.is_empty() {
                let piece = chunk.split_to(chunk.len().min(PIECE));
                if let Some(sender) = &tx {
                    if sender.send(piece).is_err() {
                        tx = None; // the unpacker finished or failed; keep hashing
                    }
                }
            }
        };

        // 1. What earlier runs already fetched.
        let mut have = 0u64;
        if let Ok(mut f) = File::open(partial) {
            let len = f.metadata().map_err(io_at(partial))?.len();
            if len > c.size {
                drop(f);
                fs::remove_file(partial).map_err(io_at(partial))?;
                let _ = fs::remove_file(self.paths.partial_validator(&c.sha256));
            } else {
                let mut buf = vec![0u8; PIECE];
                loop {
                    let n = f.read(&mut buf).map_err(io_at(partial))?;
                    if n == 0 {
                        break;
                    }
                    send(Bytes::copy_from_slice(&buf[..n]), &mut hasher);
                    have += n as u64;
                }
                if have > 0 {
                    log::info!("resuming download of {} at byte {have} of {}", c.sha256, c.size);
                }
            }
        }

        // 2. The rest from the network, with bounded retries.
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(io_at(partial))?;
        let rel = artifact_path(&c.sha256);
        let mut fetched = 0u64;
        let mut attempt = 0u32;
        let validator = Validator {
            path: self.paths.partial_validator(&c.sha256),
            url: self.transport.url(&rel),
        };
        while have < c.size {
            let result = self
                .fetch_range(
                    &rel,
                    c.size,
                    &mut have,
                    &mut fetched,
                    &mut out,
                    partial,
                    &validator,
                    &mut |b| send(b, &mut hasher),
                )
                .await;
            match result {
                Ok(()) => {}
                Err(StageError::Network(e)) if e.is_transient() && attempt < self.config.network.retries => {
                    attempt += 1;
                    let delay = backoff(self.config.network.backoff_initial, attempt);
                    log::warn!(
                        "{e}; retry {attempt}/{} in {} ms",
                        self.config.network.retries,
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    if matches!(e, StageError::Network(_)) {
                        // Kept for the next run to resume: make it durable,
                        // so a power cut before then cannot leave junk that
                        // would fail the hash and be taken for tampering.
                        let _ = crate::durable::sync_data(&out, "download partial");
                    }
                    return Err(e);
                }
            }
        }
        out.flush().map_err(io_at(partial))?;
        bar.finish_and_clear();
        Ok((Sha256Hex::from_bytes(hasher.finalize().into()), fetched))
    }

    /// One request: from `have` to the end or until the connection fails.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_range(
        &self,
        rel: &str,
        size: u64,
        have: &mut u64,
        fetched: &mut u64,
        out: &mut File,
        partial: &Path,
        validator: &Validator,
        send: &mut dyn FnMut(Bytes),
    ) -> Result<(), StageError> {
        let began_with = if *have > 0 { validator.load() } else { None };
        let mut dl = self
            .transport
            .open_download(rel, *have, began_with.as_deref())
            .await
            .map_err(StageError::Network)?;
        match (&began_with, &dl.etag) {
            (Some(then), Some(now)) if then != now => {
                let _ = fs::remove_file(partial);
                let _ = fs::remove_file(&validator.path);
                return Err(StageError::Restart(format!(
                    "{}: the artifact changed on the server since this download began (ETag {then}, now {now}); \
                     downloading it again from the start",
                    dl.url
                )));
            }
            _ if *have == 0 => validator.store(dl.etag.as_deref()),
            _ => {}
        }
        if let Some(total) = dl.total.filter(|_| dl.start != u64::MAX) {
            if total != size {
                let _ = fs::remove_file(partial);
                let _ = fs::remove_file(&validator.path);
                return Err(StageError::Refused(format!(
                    "{}: the server has {total} bytes, the signed manifest says {size} (wrong size)",
                    dl.url
                )));
            }
        }
        // Bytes the server re-sends that we already have (it ignored Range,
        // or a 416 told us our partial is unusable) are skipped, not re-fed.
        let mut skip = match dl.start {
            u64::MAX => {
                return Err(StageError::Refused(format!(
                    "{}: the server refused byte range {have}- of a {size}-byte artifact (wrong size)",
                    dl.url
                )))
            }
            start => *have - start.min(*have),
        };
        if skip > 0 {
            log::warn!(
                "{}: the server ignored the Range request; re-fetching {skip} bytes",
                dl.url
            );
        }
        while let Some(mut chunk) = dl.chunk().await.map_err(StageError::Network)? {
            *fetched += chunk.len() as u64;
            if skip > 0 {
                let n = skip.min(chunk.len() as u64) as usize;
                let _ = chunk.split_to(n);
                skip -= n as u64;
                if chunk.is_empty() {
                    continue;
                }
            }
            if *have + chunk.len() as u64 > size {
                let _ = fs::remove_file(partial);
                let _ = fs::remove_file(&validator.path);
                return Err(StageError::Refused(format!(
                    "{}: the server sent more than the {size} bytes the signed manifest says (wrong size)",
                    dl.url
                )));
            }
            out.write_all(&chunk).map_err(io_at(partial))?;
            *have += chunk.len() as u64;
            send(chunk);
        }
        if *have < size {
            return Err(StageError::Network(FetchError::Offline {
                url: dl.url,
                reason: format!("connection closed after {have} of {size} bytes"),
            }));
        }
        Ok(())
    }
}

/// A download bar on a terminal (someone ran `updater check` by hand),
/// nothing under systemd or in pipes.
fn progress_bar(c: &Component) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    indicatif::ProgressBar::new(c.size)
        .with_style(
            indicatif::ProgressStyle::with_template(
                "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
        .with_message(c.name.to_string())
}

/// Exponential backoff with full jitter, capped at a minute.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    let max = initial
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(60));
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}

/// A `Read` over chunks arriving on a channel; EOF when the sender is gone.
struct ChannelReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
/// The ETag a partial download's first bytes came with, and from which URL
/// (`downloads/<sha256>.validator`). A resume from the same URL sends it as
/// `If-Range` and accepts the bytes only under the same ETag. From another
/// server (a mirror) it is not sent: ETags differ between servers for the
/// same bytes, the path is content-addressed, and the final SHA-256 check
/// is the arbiter either way.
struct Validator {
    path: PathBuf,
    url: String,
}

impl Validator {
    fn load(&self) -> Option<String> {
        let text = fs::read_to_string(&self.path).ok()?;
        let (url, etag) = text.trim_end().split_once(' ')?;
        (url == self.url).then(|| etag.to_string())
    }

    /// Best effort: without it a resume is still checked by the hash.
    fn store(&self, etag: Option<&str>) {
        let result = match etag {
            Some(etag) => fs::write(&self.path, format!("{} {etag}\n", self.url)),
            None => fs::remove_file(&self.path).or(Ok(())),
        };
        if let Err(e) = result {
            log::debug!("{}: {e}", self.path.display());
        }
    }
}

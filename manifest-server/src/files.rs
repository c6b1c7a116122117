//! What a URL path may name, the HTTP validators and ranges, opening files
//! below the store root, and artifact streaming (DESIGN: The store,
//! manifest-server).
//!
//! Path rule: a servable path is exactly `/<top>/<name>` with `<top>` one of
//! `cohorts`, `releases`, `artifacts`, `keys` (the root of trust's history,
//! `keys/<n>.json`), or exactly `/keys.json` (the root of trust), each
//! manifest also with its `.minisig`; built only from the characters that
//! store names can contain (`A-Za-z0-9._+-`), and `<name>` not starting with
//! a dot. The check runs on the raw, undecoded path, so `%2e%2e`, `%2f`,
//! `%5c`, `%00` (any `%`), `..`, `//`, backslashes and dotfiles are all
//! refused by construction, without decoding anything that could be decoded
//! twice. Directories are never named by such a path, so there are no
//! listings. Artifact names must also be 64 lowercase hex digits.
//!
//! Every file under the store, artifact or manifest, is opened through
//! `StoreRoot`: relative to a descriptor of the store directory taken once at
//! start, one path component at a time, each with `O_NOFOLLOW`, so neither a
//! symlink planted as the file nor a directory (`artifacts/`, `keys/`, ...)
//! replaced by a symlink after start can lead outside the store. The check
//! is made by the kernel at open time, not once at start (`config` checks
//! the layout at start only to fail early with a clear message). Files must
//! be regular files.
//!
//! Artifacts are streamed in `CHUNK`s, never read whole: from the page cache
//! on the worker thread when the data is cached, from the blocking pool when
//! it is not (see `ArtifactReader`). The open itself is done inline, as nginx
//! does: two short metadata syscalls (the directory, then the file).
//!
//! Conditional requests follow RFC 9110 section 13.2.2: `If-Match` (strong
//! comparison) first, then `If-None-Match` (weak), then `Range` with
//! `If-Range`. `Last-Modified` is not sent, so date validators never match.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::future::Future as _;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::header::{IF_MATCH, IF_NONE_MATCH, IF_RANGE, RANGE};
use http::HeaderMap;
use manifest::store::{ARTIFACTS_DIR, COHORTS_DIR, RELEASES_DIR, SIGNATURE_SUFFIX};
use manifest::Sha256Hex;
use manifest::{KEYS_HISTORY_DIR, KEYS_PATH};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

use crate::metrics::{Metrics, PathClass};

/// Bytes read per chunk of an artifact body. Measured (docs/BENCHMARKS.md):
/// 1 MiB downloads cost 150 us of CPU each with 256 KiB chunks, 340 us with
/// 128 KiB and 370 us with 64 KiB (more writes, and glibc serves 128 KiB
/// buffers with a fresh mmap each time). The price is memory: up to two
/// chunks (512 KiB) per download in flight.
pub const CHUNK: usize = 256 << 10;

/// What a request path names in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A manifest (`signature: false`) or its `.minisig`, by the manifest's
    /// store path (`cohorts/stable.json`), the snapshot key.
    Manifest {
        path: &'a str,
        signature: bool,
        class: PathClass,
    },
    /// `artifacts/<name>`, `name` being 64 lowercase hex digits.
    Artifact { name: &'a str },
}

/// Classify a raw (still percent-encoded) request path; `None` is a 404.
pub fn classify(raw: &str) -> Option<Target<'_>> {
    let rel = raw.strip_prefix('/')?;
    if !rel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'/'))
    {
        return None;
    }
    if rel.strip_suffix(SIGNATURE_SUFFIX).unwrap_or(rel) == KEYS_PATH {
        // The root of trust: revalidated on every poll, like a cohort.
        let signature = rel != KEYS_PATH;
        return Some(Target::Manifest {
            path: KEYS_PATH,
            signature,
            class: if signature {
                PathClass::Signature
            } else {
                PathClass::Cohort
            },
        });
    }
    let (top, name) = rel.split_once('/')?;
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return None;
    }
    match top {
        ARTIFACTS_DIR => {
            name.parse::<Sha256Hex>().ok()?;
            Some(Target::Artifact { name })
        }
        COHORTS_DIR | RELEASES_DIR | KEYS_HISTORY_DIR => {
            let (path, signature) = match rel.strip_suffix(SIGNATURE_SUFFIX) {
                Some(manifest) => (manifest, true),
                None => (rel, false),
            };
            if !path.ends_with(".json") || path.len() == top.len() + 1 + ".json".len() {
                return None;
            }
            let class = match (signature, top) {
                (true, _) => PathClass::Signature,
                (false, COHORTS_DIR) => PathClass::Cohort,
                (false, _) => PathClass::Release,
            };
            Some(Target::Manifest {
                path,
                signature,
                class,
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- validators

/// The entity tags of a list header (`If-Match`, `If-None-Match`): yields
/// `(weak, opaque-tag-with-quotes)`, or `None` for `*`. Parsing stops at the
/// first malformed element, which then matches nothing.
fn entity_tags(value: &str) -> impl Iterator<Item = Option<(bool, &str)>> {
    let mut rest = value;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        if let Some(after) = rest.strip_prefix('*') {
            rest = after;
            return Some(None);
        }
        let (weak, tagged) = match rest.strip_prefix("W/") {
            Some(t) => (true, t),
            None => (false, rest),
        };
        let body = tagged.strip_prefix('"')?;
        let end = body.find('"')?;
        let tag = &tagged[..end + 2];
        rest = &body[end + 1..];
        Some(Some((weak, tag)))
    })
}

/// Does any value of header `name` match `etag` (with its quotes)? Strong
/// comparison refuses weak tags on either side; ours are always strong.
fn header_matches(headers: &HeaderMap, name: http::header::HeaderName, etag: &str, strong: bool) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            entity_tags(v).any(|t| match t {
                None => true,
                Some((weak, tag)) => tag == etag && !(strong && weak),
            })
        })
    })
}

/// The outcome of a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the representation (maybe partially).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed: the client holds another version.
    Failed,
}

pub fn evaluate_preconditions(headers: &HeaderMap, etag: &str) -> Precondition {
    if headers.contains_key(IF_MATCH) && !header_matches(headers, IF_MATCH, etag, true) {
        return Precondition::Failed;
    }
    if headers.contains_key(IF_NONE_MATCH) && header_matches(headers, IF_NONE_MATCH, etag, false) {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// What to send for a (GET) request's `Range` against a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole body: no Range, a stale `If-Range`, several ranges (RFC 9110
    /// allows ignoring those), or a header we do not understand.
    Full,
    /// Bytes `start..=end`, both inside the body.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

pub fn decide_range(headers: &HeaderMap, etag: &str, len: u64) -> RangeDecision {
    let Some(range) = headers.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeDecision::Full;
    };
    if let Some(if_range) = headers.get(IF_RANGE) {
        // Only our current strong ETag validates; a weak tag or a date (we
        // send no Last-Modified) means "send me everything".
        if if_range.as_bytes().trim_ascii() != etag.as_bytes() {
            return RangeDecision::Full;
        }
    }
    parse_range(range, len)
}

/// Parse a single `bytes=` range: `a-b`, `a-` or `-n`.
pub fn parse_range(value: &str, len: u64) -> RangeDecision {
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return RangeDecision::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match digits(last) {
            None => RangeDecision::Full,
            Some(0) => RangeDecision::Unsatisfiable,
            Some(_) if len == 0 => RangeDecision::Unsatisfiable,
            Some(n) => RangeDecision::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        // `a-` or `a-b`.
        (false, _) => {
            let Some(start) = digits(first) else {
                return RangeDecision::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match digits(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeDecision::Full, // invalid: ignore the header
                }
            };
            if start >= len {
                RangeDecision::Unsatisfiable
            } else {
                RangeDecision::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (true, true) => RangeDecision::Full,
    }
}

// ---------------------------------------------------------------- the store

/// Why a file below the store root could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("missing")]
    Missing,
    /// `{0}` is the store path of the link (`keys/`, `cohorts/stable.json`).
    #[error("{0} is a symbolic link; nothing is served or loaded through a link")]
    Symlink(String),
    #[error("{0} is not a directory")]
    NotDirectory(String),
    #[error("is not a regular file")]
    NotRegular,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The store directory, opened once at start; every file below it is opened
/// relative to it, component by component, refusing symlinks at each step.
///
/// Why a walk with `openat(O_NOFOLLOW)` rather than the alternatives:
/// `O_NOFOLLOW` on a whole path only protects its last component; checking
/// each directory with `lstat` before opening by path leaves a window in
/// which the directory can be swapped for a link; `openat2` with
/// `RESOLVE_NO_SYMLINKS` does it in one call but needs Linux 5.6 and is
/// missing from older seccomp allow-lists (`SystemCallFilter=`), so it would
/// need this walk as a fallback anyway. Store paths have at most two
/// components, so the walk costs one extra `openat` per file, and each step
/// is decided by the kernel on the very inode that is then used.
#[derive(Debug, Clone)]
pub struct StoreRoot {
    fd: Arc<OwnedFd>,
    path: Arc<Path>,
}

/// A directory below (or at) the store root, opened without following links.
pub struct StoreDir<'a> {
    root: &'a StoreRoot,
    /// `None`: the root itself.
    fd: Option<OwnedFd>,
    /// Store path of the directory, with its trailing `/` (empty for the root).
    prefix: String,
}

/// Flags for every step: never follow a link, never leak the descriptor
/// into a child process.
const STEP_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl StoreRoot {
    /// Open the store directory (`path` is canonical: see `config`).
    pub fn open(path: &Path) -> io::Result<Self> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self {
            fd: Arc::new(dir.into()),
            path: path.into(),
        })
    }

    /// The store directory's path, for messages and listings.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the directory at store path `rel` (`"cohorts"`; `""` is the root).
    pub fn open_dir(&self, rel: &str) -> Result<StoreDir<'_>, OpenError> {
        let mut dir = StoreDir {
            root: self,
            fd: None,
            prefix: String::new(),
        };
        for name in rel.split('/').filter(|c| !c.is_empty()) {
            let stored = format!("{}{name}/", dir.prefix);
            let fd = match openat(dir.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing),
                // O_NOFOLLOW | O_DIRECTORY on a link is ENOTDIR, like a file:
                // ask which one it is, for the message only.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                    // Without the trailing `/`, which would resolve the link.
                    let is_link = std::fs::symlink_metadata(self.path.join(&stored[..stored.len() - 1]))
                        .is_ok_and(|m| m.file_type().is_symlink());
                    return Err(if is_link {
                        OpenError::Symlink(stored)
                    } else {
                        OpenError::NotDirectory(stored)
                    });
                }
                Err(e) => return Err(e.into()),
            };
            dir.fd = Some(fd);
            dir.prefix = stored;
        }
        Ok(dir)
    }

    /// Open the regular file at store path `rel` (`"artifacts/<sha256>"`,
    /// `"keys.json"`) with no link anywhere below the root.
    pub fn open_file(&self, rel: &str) -> Result<(File, Metadata), OpenError> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        self.open_dir(dir)?.open_file(name)
    }
}

impl StoreDir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => self.root.fd.as_fd(),
        }
    }

    /// Open the regular file `name` in this directory.
    pub fn open_file(&self, name: &str) -> Result<(File, Metadata), OpenError> {
        // NONBLOCK: a FIFO must not hang the caller (regular files ignore it).
        let file = match openat(self.as_fd(), name, libc::O_RDONLY | libc::O_NONBLOCK) {
            Ok(fd) => File::from(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(OpenError::Symlink(format!("{}{name}", self.prefix)))
            }
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(OpenError::NotRegular);
        }
        Ok((file, meta))
    }
}

/// `openat(dir, name, flags | STEP_FLAGS)` for one path component.
fn openat(dir: BorrowedFd<'_>, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    // One component, and never one that climbs: callers pass validated
    // names, this is the last line of defence.
    if matches!(name, "" | "." | "..") || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    let c_name = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `dir` is a live descriptor for the duration of the call and
    // `c_name` a NUL-terminated string that outlives it.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), flags | STEP_FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What identifies one version of a file: a replaced file (a rename over
/// it) has another inode, an edited one another size or change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
}

impl FileVersion {
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// When the file was last put in place (a rename sets it) or changed.
    pub fn ctime(&self) -> (i64, i64) {
        self.ctime
    }
}

// ---------------------------------------------------------------- artifacts

/// Set once `artifacts/` was found to be a link, so the error is logged
/// once, not per request; cleared when an artifact opens again.
static ARTIFACTS_DIR_REFUSED: AtomicBool = AtomicBool::new(false);

/// Open `artifacts/<name>` for reading; `Ok(None)` when there is nothing
/// servable by that name (missing, a symlink, not a regular file, or
/// `artifacts/` itself not a real directory).
pub fn open_artifact(root: &StoreRoot, name: &str) -> io::Result<Option<(File, u64)>> {
    match root.open_file(&format!("{ARTIFACTS_DIR}/{name}")) {
        Ok((file, meta)) => {
            if ARTIFACTS_DIR_REFUSED.load(Ordering::Relaxed) {
                ARTIFACTS_DIR_REFUSED.store(false, Ordering::Relaxed);
            }
            Ok(Some((file, meta.len())))
        }
        Err(OpenError::Missing | OpenError::NotRegular) => Ok(None),
        Err(e @ (OpenError::Symlink(_) | OpenError::NotDirectory(_))) => {
            let dir_refused =
                matches!(&e, OpenError::Symlink(p) | OpenError::NotDirectory(p) if p.ends_with('/'));
            if dir_refused && !ARTIFACTS_DIR_REFUSED.swap(true, Ordering::Relaxed) {
                log::error!("{e}: no artifact is served until it is a real directory again");
            }
            Ok(None)
        }
        Err(OpenError::Io(e)) => Err(e),
    }
}

/// Called once when a streamed body ends or is dropped, with the bytes sent.
pub type OnDone = Box<dyn FnOnce(u64) + Send>;

/// The body for `len` bytes of `file` from `start`, streamed in `CHUNK`s.
pub fn stream_body(file: File, start: u64, len: u64, metrics: Arc<Metrics>, on_done: Option<OnDone>) -> Body {
    let reader = Counted {
        inner: ArtifactReader::new(file, start, len, NOWAIT_SUPPORTED.load(Ordering::Relaxed)),
        sent: 0,
        metrics,
        on_done,
    };
    Body::from_stream(ReaderStream::with_capacity(reader, CHUNK))
}

/// Whether `preadv2(RWF_NOWAIT)` works here (Linux >= 4.14 on most file
/// systems); cleared for good the first time the kernel says it does not.
static NOWAIT_SUPPORTED: AtomicBool = AtomicBool::new(true);

/// Reads a byte range of an artifact without ever blocking a runtime worker
/// on the disk, and without a trip to the blocking pool when it need not.
///
/// Fast path: `preadv2(..., RWF_NOWAIT)` copies straight from the page cache
/// into the body's buffer, on the worker; a popular artifact that a fleet is
/// downloading is always cached, so this is the common case, and it costs one
/// copy and no thread hand-off (tokio's `File` costs a hand-off per read
/// and an extra copy through its own buffer). Slow path: when the data is
/// not cached (`EAGAIN`), one positional read of up to `CHUNK` runs on the
/// blocking pool, which also starts the kernel's read-ahead for what follows.
struct ArtifactReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    /// Try `RWF_NOWAIT` reads first (see `NOWAIT_SUPPORTED`).
    nowait: bool,
    pending: Option<JoinHandle<io::Result<Vec<u8>>>>,
    /// What a blocking read returned beyond what the caller's buffer took.
    leftover: Vec<u8>,
}

impl ArtifactReader {
    fn new(file: File, start: u64, len: u64, nowait: bool) -> Self {
        Self {
            file: Arc::new(file),
            pos: start,
            end: start + len,
            nowait,
            pending: None,
            leftover: Vec::new(),
        }
    }

    /// One non-blocking read into `buf`: `Some(result)` when it completed
    /// (bytes read, or an error), `None` when the data is not in memory.
    fn read_nowait(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        if !self.nowait {
            return None;
        }
        let want = (self.end - self.pos).min(buf.remaining() as u64) as usize;
        // SAFETY: the iovec covers `want` bytes of the buffer's unfilled
        // (possibly uninitialised) part, which the kernel only writes to;
        // exactly the `n` bytes it reports are then marked initialised.
        let n = unsafe {
            let dst = buf.unfilled_mut();
            let iov = libc::iovec {
                iov_base: dst.as_mut_ptr().cast(),
                iov_len: want,
            };
            libc::preadv2(
                self.file.as_raw_fd(),
                &iov,
                1,
                self.pos as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n > 0 {
            let n = n as usize;
            // SAFETY: the kernel wrote `n` bytes at the start of `unfilled`.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            self.pos += n as u64;
            return Some(Ok(()));
        }
        if n == 0 {
            return Some(Err(shrank()));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => None,
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                log::debug!("preadv2(RWF_NOWAIT) unsupported ({err}): reading on the blocking pool");
                NOWAIT_SUPPORTED.store(false, Ordering::Relaxed);
                self.nowait = false;
                None
            }
            _ => Some(Err(err)),
        }
    }

    fn take_leftover(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.leftover.len().min(buf.remaining());
        buf.put_slice(&self.leftover[..n]);
        self.leftover.drain(..n);
    }
}

fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")
}

impl AsyncRead for ArtifactReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.leftover.is_empty() {
            this.take_leftover(buf);
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(pending) = this.pending.as_mut() {
                let read = match Pin::new(pending).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(joined) => joined.map_err(io::Error::other).and_then(|r| r),
                };
                this.pending = None;
                let data = read?;
                if data.is_empty() {
                    return Poll::Ready(Err(shrank()));
                }
                this.pos += data.len() as u64;
                this.leftover = data;
                this.take_leftover(buf);
                return Poll::Ready(Ok(()));
            }
            if this.pos >= this.end || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(done) = this.read_nowait(buf) {
                return Poll::Ready(done);
            }
            let (file, pos) = (this.file.clone(), this.pos);
            let want = (this.end - this.pos).min(CHUNK as u64) as usize;
            this.pending = Some(tokio::task::spawn_blocking(move || {
                let mut data = vec![0; want];
                let n = file.read_at(&mut data, pos)?;
                data.truncate(n);
                Ok(data)
            }));
        }
    }
}

/// Counts the bytes handed to the network, for `/metrics` as they flow and
/// for the access log once the body is finished or abandoned.
struct Counted<R> {
    inner: R,
    sent: u64,
    metrics: Arc<Metrics>,
    on_done: Option<OnDone>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.sent += n;
            self.metrics.bytes_sent(n);
        }
        res
    }
}

impl<R> Drop for Counted<R> {
    fn drop(&mut self) {
        if let Some(done) = self.on_done.take() {
            done(self.sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn classifies_store_paths() {
        assert_eq!(
            classify("/cohorts/stable.json"),
            Some(Target::Manifest {
                path: "cohorts/stable.json",
                signature: false,
                class: PathClass::Cohort
            })
        );
        assert_eq!(
            classify("/releases/1.3.0+b2.json.minisig"),
            Some(Target::Manifest {
                path: "releases/1.3.0+b2.json",
                signature: true,
                class: PathClass::Signature
            })
        );
        assert_eq!(
            classify(&format!("/artifacts/{HASH}")),
            Some(Target::Artifact { name: HASH })
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "/",
            "",
            "cohorts/stable.json",
            "/cohorts",
            "/cohorts/",
            "/cohorts/.json",
            "/cohorts/.hidden.json",
            "/cohorts/../etc/passwd",
            "/cohorts/%2e%2e/x.json",
            "/cohorts%2fstable.json",
            "/cohorts/a%00.json",
            "/cohorts/a\\b.json",
            "//etc/passwd",
            "/cohorts//stable.json",
            "/cohorts/sub/stable.json",
            "/cohorts/stable.txt",
            "/cohorts/stable.json.2.minisig",
            "/etc/passwd",
            "/keys/release.pub",
            "/artifacts/ABCDEF",
            &format!("/artifacts/{}", HASH.to_uppercase()),
            &format!("/artifacts/{HASH}.partial"),
            &format!("/artifacts/.{}", &HASH[1..]),
        ] {
            assert_eq!(classify(bad), None, "{bad:?} accepted");
        }
    }

    fn headers(pairs: &[(http::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn preconditions_follow_rfc_9110_order() {
        let etag = "\"abc\"";
        use Precondition::*;
        assert_eq!(evaluate_preconditions(&headers(&[]), etag), Proceed);
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_NONE_MATCH, "\"x\", W/\"abc\"")]), etag),
            NotModified
        );
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_NONE_MATCH, "*")]), etag),
            NotModified
        );
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_NONE_MATCH, "\"x\"")]), etag),
            Proceed
        );
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_MATCH, "\"abc\"")]), etag),
            Proceed
        );
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_MATCH, "W/\"abc\"")]), etag),
            Failed
        );
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_MATCH, "\"old\"")]), etag),
            Failed
        );
        assert_eq!(
            evaluate_preconditions(&headers(&[(IF_MATCH, "garbage")]), etag),
            Failed
        );
        // If-Match is judged before If-None-Match.
        assert_eq!(
            evaluate_preconditions(
                &headers(&[(IF_MATCH, "\"old\""), (IF_NONE_MATCH, "\"abc\"")]),
                etag
            ),
            Failed
        );
        // Several header lines form one list.
        assert_eq!(
            evaluate_preconditions(
                &headers(&[(IF_NONE_MATCH, "\"x\""), (IF_NONE_MATCH, "\"abc\"")]),
                etag
            ),
            NotModified
        );
    }

    #[test]
    fn parses_single_ranges() {
        use RangeDecision::*;
        assert_eq!(parse_range("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=90-1000", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(parse_range("Bytes = 5-5", 100), Partial { start: 5, end: 5 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("bytes=9-1", 100), Full);
        assert_eq!(parse_range("bytes=+1-2", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=-", 100), Full);
        assert_eq!(parse_range("bytes=99999999999999999999-", 100), Full);
    }

    async fn read_range(file: &Path, start: u64, len: u64, nowait: bool, step: usize) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        let mut reader = ArtifactReader::new(File::open(file)?, start, len, nowait);
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn artifact_reader_returns_exact_ranges_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let data: Vec<u8> = (0..(CHUNK * 3 + 1234) as u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        for nowait in [true, false] {
            for (start, count, step) in [
                (0, len, 64 << 10),
                (0, len, CHUNK * 2),
                (1, 10, 3),
                (CHUNK as u64 - 5, CHUNK as u64 + 10, 4096),
                (len - 1, 1, 7),
                (len, 0, 16),
            ] {
                let got = read_range(&path, start, count, nowait, step).await.unwrap();
                let want = &data[start as usize..(start + count) as usize];
                assert!(got == want, "nowait {nowait}, {start}+{count} in steps of {step}");
            }
        }
    }

    #[tokio::test]
    async fn a_file_that_shrinks_mid_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, vec![1u8; 1000]).unwrap();
        for nowait in [true, false] {
            // Promise more than the file holds, as if it was truncated after open.
            let err = read_range(&path, 0, 2000, nowait, 4096).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "nowait {nowait}");
        }
    }

    #[test]
    fn if_range_needs_the_current_strong_etag() {
        let etag = "\"abc\"";
        let partial = RangeDecision::Partial { start: 0, end: 0 };
        assert_eq!(decide_range(&headers(&[(RANGE, "bytes=0-0")]), etag, 10), partial);
        assert_eq!(
            decide_range(&headers(&[(RANGE, "bytes=0-0"), (IF_RANGE, "\"abc\"")]), etag, 10),
            partial
        );
        for stale in ["\"old\"", "W/\"abc\"", "Tue, 15 Nov 1994 08:12:31 GMT"] {
            assert_eq!(
                decide_range(&headers(&[(RANGE, "bytes=0-0"), (IF_RANGE, stale)]), etag, 10),
                RangeDecision::Full,
                "{stale}"
            );
        }
    }
}

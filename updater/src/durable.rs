//! Crash-safe filesystem primitives (STYLE: Durability): atomic replace
//! (temp + fsync + rename + directory fsync), the symlink flip, syncfs.
//!
//! Every durable sync of the updater (fsync, fdatasync, directory fsync,
//! syncfs) goes through this module, and each one first calls
//! [`crate::failpoint::before_sync`] with a label naming the point, so the
//! crash tests can kill the process before any of them
//! (`UPDATER_TEST_FAILPOINT=sync:<N>`; docs/SECURITY.md, "Crash points
//! (fsync)"). Do not call `sync_all`/`sync_data` anywhere else.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::failpoint::before_sync;

/// `fsync` a file (data and metadata).
pub fn sync_file(f: &File, label: impl FnOnce() -> String) -> io::Result<()> {
    before_sync(label);
    f.sync_all()
}

/// `fdatasync` a file (enough for an append: the size is data).
pub fn sync_data(f: &File, label: &str) -> io::Result<()> {
    before_sync(|| label.to_string());
    f.sync_data()
}

/// `fsync` a directory, so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    sync_dir_as(dir, || format!("sync_dir {}", short(dir)))
}

fn sync_dir_as(dir: &Path, label: impl FnOnce() -> String) -> io::Result<()> {
    let f = File::open(dir)?;
    before_sync(label);
    f.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `parent/name`, for sync-point labels.
fn short(path: &Path) -> String {
    match path.parent().map(file_name).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}/{}", file_name(path)),
        None => file_name(path),
    }
}

/// Temp files are named `….tmp-<pid>…`, so that one left by a killed run
/// (SIGKILL or power cut: no destructor ran) can be told from one being
/// written right now by a live process.
const TMP_MARK: &str = ".tmp-";

/// The pid in a temp file name made by this module; `None` for another name.
fn temp_owner(name: &str) -> Option<Option<u32>> {
    if !name.starts_with('.') {
        return None;
    }
    let rest = &name[name.rfind(TMP_MARK)? + TMP_MARK.len()..];
    let digits = rest.split('-').next().unwrap_or("");
    // A name from an older build (`.tmp-XXXXXX`, random) has no pid.
    Some(digits.parse().ok())
}

fn is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Remove temp files in `dir` left by processes that died mid-write. Every
/// writer runs under the run lock, so a temp file whose writer is gone can
/// never be renamed into place any more; a live writer's (ours included) is
/// left alone. Best effort: a failure only leaves garbage behind.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = match temp_owner(&name) {
            None => false,
            Some(None) => true,
            Some(Some(pid)) => pid != me && !is_alive(pid),
        };
        if stale && entry.file_type().is_ok_and(|t| !t.is_dir()) {
            log::info!("removing {name}, left in {} by an interrupted run", dir.display());
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Replace `path` with `bytes` so a crash leaves the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    remove_stale_temps(dir);
    let name = file_name(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_MARK}{}-", std::process::id()))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    sync_file(tmp.as_file(), || format!("write_atomic {name}"))?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir_as(dir, || format!("write_atomic {name} (dir)"))
}

/// Point the symlink `link` at `target` in one rename: readers see the old
/// target or the new one, never a missing link.
pub fn flip_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let dir = parent(link);
    let name = file_name(link);
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link)?;
    sync_dir_as(dir, || format!("flip_symlink {name} (dir)"))
}

/// Flush everything written to the filesystem holding `dir` (one syscall
/// instead of an fsync per unpacked file; what `sync -f DIR` does).
pub fn syncfs(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    before_sync(|| format!("syncfs {}", short(dir)));
    // SAFETY: plain syscall on a valid, owned file descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn available_space(dir: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Remove a directory tree if it exists.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
    }
}

/// Committed slots are read-only; give the owner write access back on
/// directories so the tree can be replaced.
fn make_writable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))?;
        }
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                make_writable(&entry.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_replaces_the_link_atomically() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("a")).unwrap();
        fs::create_dir(d.path().join("b")).unwrap();
        let link = d.path().join("current");
        flip_symlink(&link, Path::new("a")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("a"));
        flip_symlink(&link, Path::new("b")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("b"));
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            3,
            "no temp link left behind"
        );
        assert!(available_space(d.path()).unwrap() > 0);
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        // A pid that cannot exist (above pid_max's hard limit of 2^22).
        let dead = 5_000_000u32;
        let mine = std::process::id();
        for name in [
            format!(".tmp-{dead}-abc"),
            format!(".current.tmp-{dead}"),
            ".tmp-Xy12zQ".to_string(),
            format!(".tmp-{mine}-abc"),
            "state.json".to_string(),
            "tmp-1-not-hidden".to_string(),
        ] {
            fs::write(d.path().join(name), b"x").unwrap();
        }
        write_atomic(&d.path().join("state.json"), b"new").unwrap();
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!(".tmp-{mine}-abc"),
                "state.json".into(),
                "tmp-1-not-hidden".into()
            ]
        );
        assert_eq!(fs::read(d.path().join("state.json")).unwrap(), b"new");
    }
}

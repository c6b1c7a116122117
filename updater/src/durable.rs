//! Crash-safe filesystem primitives (STYLE: Durability): atomic replace
//! (temp + fsync + rename + directory fsync), the symlink flip, syncfs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Replace `path` with `bytes` so a crash leaves the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Point the symlink `link` at `target` in one rename: readers see the old
/// target or the new one, never a missing link.
pub fn flip_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let dir = parent(link);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        link.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link)?;
    sync_dir(dir)
}

/// Flush everything written to the filesystem holding `dir` (one syscall
/// instead of an fsync per unpacked file; what `sync -f DIR` does).
pub fn syncfs(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
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
}

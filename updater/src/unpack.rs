//! Writing a component archive into a fresh directory, entry by entry, under
//! the shared safe-unpack rules (`manifest::archive`). The rules guarantee no
//! entry is written through a link; `O_NOFOLLOW | O_EXCL` on every file is a
//! second guard, so even a bug in the rules could not write outside `dest`.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use manifest::archive::{self, ArchiveError, EntryKind, Limits, SafeEntry, Summary};

pub fn unpack(tar_gz: impl Read, dest: &Path, limits: Limits) -> Result<Summary, ArchiveError> {
    let mut dir_modes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let summary = archive::walk(tar_gz, limits, |entry: &SafeEntry, data: &mut dyn Read| {
        let path = dest.join(&entry.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        match &entry.kind {
            EntryKind::Directory => {
                fs::create_dir_all(&path)?;
                // Applied at the end: a read-only directory must still be
                // writable while its contents are unpacked.
                dir_modes.push((path, entry.mode | 0o500));
            }
            EntryKind::File { .. } => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(entry.mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                loop {
                    let n = data.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&buf[..n])?;
                }
                // create_new applies the umask; the archive's mode is what we want.
                f.set_permissions(fs::Permissions::from_mode(entry.mode))?;
            }
            EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &path)?,
            EntryKind::HardLink { target } => fs::hard_link(dest.join(target), &path)?,
        }
        Ok(())
    })?;
    for (path, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|source| {
            ArchiveError::Visit {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(summary)
}

/// Copy a component tree from the active slot (its hash matched): files,
/// directories and symlinks, with their modes.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<u64> {
    let mut copied = 0;
    fs::create_dir_all(dst)?;
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            copied += copy_tree(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.permissions().mode() | 0o500))?;
        } else if ft.is_file() {
            copied += fs::copy(&from, &to)?;
        }
    }
    Ok(copied)
}

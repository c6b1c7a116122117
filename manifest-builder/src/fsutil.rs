//! Durable file writes: temp file in the same directory, `sync_all`,
//! `rename`, then fsync the directory (STYLE: Durability), so a crash leaves
//! either the old file or the new one, never a torn one.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// fsync a directory so a rename inside it survives power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Everything in a store is public (served by any static web server), so
/// files are world-readable; secret keys are written elsewhere, 0600.
pub const PUBLIC_FILE_MODE: u32 = 0o644;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(PUBLIC_FILE_MODE))
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(bytes).at(tmp.path().to_path_buf())?;
    tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
    tmp.persist(path).map_err(|e| e.error).at(path)?;
    sync_dir(dir)
}

/// Read a whole file, refusing anything over `limit` bytes (manifests are
/// small; a huge file there is a mistake or an attack).
pub fn read_capped(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let file = File::open(path).at(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).at(path)?;
    if bytes.len() > limit {
        return Err(crate::error::Error::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")),
        });
    }
    Ok(bytes)
}

/// Like `read_capped`, but a missing file is `None`.
pub fn read_optional(path: &Path, limit: usize) -> Result<Option<Vec<u8>>> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        _ => read_capped(path, limit).map(Some),
    }
}

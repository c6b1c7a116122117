//! Turning a component input (a directory or an existing `.tar.gz`) into a
//! content-addressed artifact in the store.
//!
//! Directories are packed deterministically: entries sorted by name,
//! mtime 0, uid/gid 0, no user or group names, modes normalised to 0755
//! (directories and executables) or 0644, gzip header without a time or a
//! name. So the same tree always gives the same bytes, and a component that
//! did not change between two releases has the same hash, which lets devices
//! copy it from their active slot instead of downloading it. (The bytes also
//! depend on the compressor: a builder built with another flate2 backend may
//! produce other hashes; devices then simply download the component again.)
//!
//! Every artifact, packed or imported, is then checked with the device's own
//! safe-unpack rules (`manifest::archive`), so the store never carries an
//! archive a device would refuse.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use manifest::archive::{self, Limits};
use manifest::Sha256Hex;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::sync_dir;

/// What a component became in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub sha256: Sha256Hex,
    pub size: u64,
    pub unpacked_size: u64,
}

/// Writes through while hashing and counting.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    progress: indicatif::ProgressBar,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        self.progress.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Pack a directory into `out` as a deterministic tar.gz.
pub fn pack_dir(src: &Path, out: impl Write) -> Result<()> {
    let meta = fs::metadata(src).at(src)?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", src.display())));
    }
    let gz = GzBuilder::new().mtime(0).write(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    append_dir_contents(&mut tar, src, Path::new(""))?;
    let gz = tar.into_inner().at(src)?;
    gz.finish().at(src)?.flush().at(src)?;
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir_contents<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .at(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .at(dir)?;
    // Byte order, independent of the filesystem's and the locale's.
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let path = dir.join(&name);
        let rel_path = rel.join(&name);
        let meta = fs::symlink_metadata(&path).at(&path)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, &rel_path, io::empty()).at(&path)?;
            append_dir_contents(tar, &path, &rel_path)?;
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let mut h = header(tar::EntryType::Regular, mode, meta.len());
            let file = File::open(&path).at(&path)?;
            // Exactly the size in the header, even if the file grows meanwhile.
            let mut data = file.take(meta.len());
            tar.append_data(&mut h, &rel_path, &mut data).at(&path)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).at(&path)?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            tar.append_link(&mut h, &rel_path, &target).at(&path)?;
        } else {
            return Err(Error::Invalid(format!(
                "{}: only files, directories and symlinks can be packed (found a device, FIFO or socket)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Pack or import one component into `<store>/artifacts/<sha256>`.
pub fn store_component(name: &str, input: &Path, artifacts_dir: &Path) -> Result<Artifact> {
    let meta = fs::metadata(input).at(input)?;
    let tmp = tempfile::Builder::new()
        .prefix(".incoming-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(
            crate::fsutil::PUBLIC_FILE_MODE,
        ))
        .tempfile_in(artifacts_dir)
        .at(artifacts_dir)?;
    let progress;
    let mut writer = HashingWriter {
        inner: BufWriter::with_capacity(1 << 16, tmp.as_file().try_clone().at(tmp.path().to_path_buf())?),
        hasher: Sha256::new(),
        written: 0,
        progress: indicatif::ProgressBar::hidden(),
    };
    if meta.is_dir() {
        progress = crate::progress::bytes(None, &format!("packing {name}"));
        writer.progress = progress.clone();
        pack_dir(input, &mut writer)?;
    } else if is_tar_gz(input) {
        progress = crate::progress::bytes(Some(meta.len()), &format!("hashing {name}"));
        writer.progress = progress.clone();
        let mut src = File::open(input).at(input)?;
        io::copy(&mut src, &mut writer).at(input)?;
    } else {
        return Err(Error::Invalid(format!(
            "component {name}: {} is neither a directory nor a .tar.gz file",
            input.display()
        )));
    }
    writer.flush().at(tmp.path().to_path_buf())?;
    progress.finish_and_clear();
    let HashingWriter {
        hasher,
        written,
        inner,
        ..
    } = writer;
    drop(inner);
    let sha256 = Sha256Hex::from_bytes(hasher.finalize().into());

    // The device's rules, applied to the bytes exactly as stored.
    let check = crate::progress::bytes(Some(written), &format!("checking {name}"));
    let reader = check.wrap_read(BufReader::with_capacity(
        1 << 16,
        File::open(tmp.path()).at(tmp.path().to_path_buf())?,
    ));
    let summary = archive::scan(reader, Limits::unpacked(u64::MAX)).map_err(|source| Error::Archive {
        name: name.to_string(),
        source,
    })?;
    check.finish_and_clear();

    let dest = artifacts_dir.join(sha256.to_hex());
    if dest.exists() {
        // Content-addressed: the same name means the same bytes already stored.
        drop(tmp);
    } else {
        tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
        tmp.persist(&dest).map_err(|e| e.error).at(&dest)?;
        sync_dir(artifacts_dir)?;
    }
    Ok(Artifact {
        sha256,
        size: written,
        unpacked_size: summary.unpacked_size,
    })
}

fn is_tar_gz(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Hash a file streaming, returning its digest and length.
pub fn hash_file(path: &Path) -> Result<(Sha256Hex, u64)> {
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let bar = crate::progress::bytes(Some(len), "verifying");
    let mut reader = bar.wrap_read(BufReader::with_capacity(1 << 16, file));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    bar.finish_and_clear();
    Ok((Sha256Hex::from_bytes(hasher.finalize().into()), total))
}

/// Parse `NAME=PATH` from the command line.
pub fn parse_component_arg(arg: &str) -> std::result::Result<(String, PathBuf), String> {
    let (name, path) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got {arg:?}"))?;
    manifest::ComponentName::new(name).map_err(|e| e.to_string())?;
    if path.is_empty() {
        return Err(format!("component {name}: empty path"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_deterministic_and_passes_the_device_rules() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("bin")).unwrap();
        fs::write(a.path().join("bin/app"), "#!/bin/sh\necho hi\n").unwrap();
        fs::write(a.path().join("readme"), "hello").unwrap();
        std::os::unix::fs::symlink("readme", a.path().join("link")).unwrap();
        let mut one = Vec::new();
        pack_dir(a.path(), &mut one).unwrap();
        let mut two = Vec::new();
        pack_dir(a.path(), &mut two).unwrap();
        assert_eq!(one, two);
        let summary = archive::scan(&one[..], Limits::unpacked(1000)).unwrap();
        assert_eq!(summary.unpacked_size, 23);
    }

    #[test]
    fn refuses_symlinks_that_leave_the_component() {
        let a = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.path().join("evil")).unwrap();
        let err = store_component("app", a.path(), store.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
        // Nothing half-written is left in the store.
        assert_eq!(fs::read_dir(store.path()).unwrap().count(), 0);
    }
}

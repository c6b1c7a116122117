//! The safe-unpack rules for component archives, shared by the builder (which
//! refuses to publish an archive a device would refuse) and the updater
//! (which applies them while unpacking). DESIGN: One run, step 5.
//!
//! `walk` streams a `tar.gz`, checks every entry against the rules and hands
//! each accepted entry to a visitor, which may write it somewhere. The rules:
//! - paths are relative, without `..`, and never pass through an earlier
//!   symlink or file (so nothing is ever written through a link);
//! - only regular files, directories, symlinks and hard links; no devices,
//!   FIFOs, sparse files or anything else;
//! - no setuid or setgid bits; other permission bits are kept as `mode & 0o755`;
//! - symlink targets are relative, may climb only with leading `..` and no
//!   higher than the component root, then descend; hard links point at an
//!   earlier regular file of the same archive;
//! - no duplicate paths; the regular files' sizes add up to at most the
//!   declared `unpacked_size`; at most `max_entries` entries;
//! - the size counted is the one the tar reader will read (a PAX `size`
//!   record overrides the header's), and an entry whose PAX `size` differs
//!   from its header's is refused; only regular files carry data, and the
//!   visitor cannot read past the size counted.
//!
//! - metadata entries (PAX `x`/`g` records, GNU long names `L`/`K`) are at
//!   most `MAX_METADATA_ENTRY` bytes: the tar reader holds them in memory
//!   whole before any rule sees them ([`MetadataCap`]).
//!
//! Symlinks that climb only at the start and never above the root, in an
//! archive where nothing is written through a link, cannot resolve outside
//! the root: every prefix walk is over real directories inside it.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive is not a valid tar.gz: {0}")]
    Corrupt(#[source] io::Error),
    #[error("archive entry {path:?} refused: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("archive unpacks to more than the declared {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("writing archive entry {path:?}: {source}")]
    Visit {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn refused(path: &Path, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Bounds for one archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of regular files' sizes (a component's `unpacked_size`).
    pub max_unpacked: u64,
    pub max_entries: u64,
}

impl Limits {
    pub const DEFAULT_MAX_ENTRIES: u64 = 1 << 20;

    pub fn unpacked(max_unpacked: u64) -> Self {
        Self {
            max_unpacked,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File {
        size: u64,
    },
    /// Relative target, already checked to stay inside the root.
    Symlink {
        target: PathBuf,
    },
    /// Normalised path of an earlier regular file in the same archive.
    HardLink {
        target: PathBuf,
    },
}

/// An entry that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeEntry {
    /// Relative, normalised (no `.`, no `..`, never empty).
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits, `mode & 0o755`.
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub entries: u64,
    pub unpacked_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    ImplicitDir,
    Dir,
    File,
    Link,
}

/// Normalise an entry path: relative, `Normal` components only after `.` is
/// dropped. `None` for the root itself (`./`).
fn normalise(path: &Path) -> Result<Option<PathBuf>, ArchiveError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(path, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(refused(path, "absolute path")),
        }
    }
    if out.as_os_str().len() > 4096 {
        return Err(refused(path, "path longer than 4096 bytes"));
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// A symlink target may climb with leading `..` (no higher than the root),
/// then only descend.
fn check_symlink_target(entry: &Path, target: &Path) -> Result<PathBuf, ArchiveError> {
    if target.as_os_str().is_empty() {
        return Err(refused(entry, "symlink with an empty target"));
    }
    let depth = entry.components().count() - 1; // directories above the link
    let mut climbs = 0;
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::ParentDir if !descended => climbs += 1,
            Component::ParentDir => {
                return Err(refused(
                    entry,
                    format!("symlink target {target:?} uses '..' after a name"),
                ))
            }
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(entry, format!("symlink target {target:?} is absolute")))
            }
        }
    }
    if climbs > depth {
        return Err(refused(
            entry,
            format!("symlink target {target:?} leaves the component"),
        ));
    }
    Ok(target.to_path_buf())
}

/// The number of data bytes the tar reader will hand out for `entry`:
/// `Entry::size`, which a PAX `size` record overrides. An entry whose PAX
/// `size` disagrees with its header is refused: other tar readers may trust
/// the header, so the same bytes would unpack differently, and a header
/// saying 0 could hide gigabytes.
///
/// Writers need a PAX `size` only when the size does not fit the header's
/// 11 octal digits: GNU tar `--format=posix` (create.c) writes one, with 0
/// in the header, only for files over 8 GiB - 1 byte, and so does bsdtar's
/// pax format; GNU tar's default format and the `tar` crate (our packer) use
/// a base-256 header field instead and never write one. Such files are not
/// refused anywhere else (nothing bounds a component below 8 GiB), so an
/// *imported* pax archive holding a file of 8 GiB or more is refused here;
/// pack it from its directory instead.
fn checked_data_size<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<u64, ArchiveError> {
    let header_size = entry.header().entry_size().map_err(ArchiveError::Corrupt)?;
    if let Some(extensions) = entry.pax_extensions().map_err(ArchiveError::Corrupt)? {
        // Every `size` record, not just the first the tar crate uses: a
        // reader that takes the last one must not see another size either.
        for extension in extensions {
            let extension = extension.map_err(ArchiveError::Corrupt)?;
            if extension.key_bytes() != b"size" {
                continue;
            }
            // Unparsable is refused too: the tar crate then falls back to
            // the header, other readers might not.
            let pax_size = std::str::from_utf8(extension.value_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| refused(path, "a PAX size record that is not a number"))?;
            if pax_size != header_size {
                return Err(refused(
                    path,
                    format!(
                        "its PAX size ({pax_size} bytes) differs from its header size ({header_size} bytes)"
                    ),
                ));
            }
        }
    }
    let size = entry.size();
    if size != header_size {
        // Unreachable after the check above; kept so a change in how the
        // tar crate sizes entries cannot silently reopen the hole.
        return Err(refused(
            path,
            format!("the tar reader sees {size} bytes, its header says {header_size}"),
        ));
    }
    Ok(size)
}

/// Stream `tar_gz` through the rules, calling `visit` for every accepted entry
/// with a reader over its contents (empty for anything but files).
pub fn walk<R: Read>(
    tar_gz: R,
    limits: Limits,
    mut visit: impl FnMut(&SafeEntry, &mut dyn Read) -> io::Result<()>,
) -> Result<Summary, ArchiveError> {
    let mut archive = tar::Archive::new(MetadataCap::new(flate2::read::GzDecoder::new(tar_gz)));
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut summary = Summary::default();
    for entry in archive.entries().map_err(ArchiveError::Corrupt)? {
        let mut entry = entry.map_err(ArchiveError::Corrupt)?;
        summary.entries += 1;
        if summary.entries > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = entry.path().map_err(ArchiveError::Corrupt)?.into_owned();
        let Some(path) = normalise(&raw_path)? else {
            // The archive's root directory (`./`): nothing to create.
            if entry.header().entry_type().is_dir() {
                if checked_data_size(&mut entry, &raw_path)? != 0 {
                    return Err(refused(&raw_path, "a directory entry carrying data"));
                }
                continue;
            }
            return Err(refused(&raw_path, "a non-directory entry for the root"));
        };
        let header_mode = entry.header().mode().map_err(ArchiveError::Corrupt)?;
        if header_mode & 0o6000 != 0 {
            return Err(refused(&path, "setuid or setgid bit"));
        }
        let mode = header_mode & 0o755;

        // Every ancestor must be a directory (explicit or implied), never a
        // file or link: nothing is written through a link.
        let mut ancestor = PathBuf::new();
        let parents: Vec<_> = path
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for part in parents {
            ancestor.push(part);
            match seen.get(&ancestor) {
                None => {
                    seen.insert(ancestor.clone(), Seen::ImplicitDir);
                }
                Some(Seen::Dir | Seen::ImplicitDir) => {}
                Some(Seen::File | Seen::Link) => {
                    return Err(refused(
                        &path,
                        format!("its parent {ancestor:?} is not a directory"),
                    ))
                }
            }
        }

        let entry_type = entry.header().entry_type();
        let is_file = entry_type.is_file() || entry_type == tar::EntryType::Continuous;
        if !(is_file || entry_type.is_dir() || entry_type.is_symlink() || entry_type.is_hard_link()) {
            // Refused before its data is looked at: a stray extension header
            // (`g`, or `x` in a pre-ustar header) is all data.
            return Err(refused(
                &path,
                format!(
                    "unsupported entry type {entry_type:?} (devices, FIFOs and sparse files are not allowed)"
                ),
            ));
        }
        let data_size = checked_data_size(&mut entry, &path)?;
        if !is_file && data_size != 0 {
            // Our packer writes none; data here would be read (and
            // decompressed) without counting towards `unpacked_size`.
            return Err(refused(
                &path,
                format!("a {entry_type:?} entry carrying {data_size} bytes of data"),
            ));
        }
        let (kind, record) = if entry_type.is_dir() {
            (EntryKind::Directory, Seen::Dir)
        } else if is_file {
            summary.unpacked_size = summary.unpacked_size.saturating_add(data_size);
            if summary.unpacked_size > limits.max_unpacked {
                return Err(ArchiveError::TooLarge {
                    limit: limits.max_unpacked,
                });
            }
            (EntryKind::File { size: data_size }, Seen::File)
        } else if entry_type.is_symlink() {
            let target = entry
                .link_name()
                .map_err(ArchiveError::Corrupt)?
                .ok_or_else(|| refused(&path, "symlink without a target"))?;
            let target = check_symlink_target(&path, &target)?;
            (EntryKind::Symlink { target }, Seen::Link)
        } else {
            let target = entry
                .link_name()
                .map_err(ArchiveError::Corrupt)?
                .ok_or_else(|| refused(&path, "hard link without a target"))?;
            let target = normalise(&target)?.ok_or_else(|| refused(&path, "hard link to the root"))?;
            if seen.get(&target) != Some(&Seen::File) {
                return Err(refused(
                    &path,
                    format!("hard link to {target:?}, which is not an earlier regular file"),
                ));
            }
            (EntryKind::HardLink { target }, Seen::File)
        };

        match seen.get(&path) {
            None => {}
            Some(Seen::ImplicitDir) if record == Seen::Dir => {}
            Some(_) => return Err(refused(&path, "duplicate entry")),
        }
        seen.insert(path.clone(), record);

        let safe = SafeEntry { path, kind, mode };
        // The tar reader already stops at `data_size`; `take` makes that a
        // property of this function, so whatever the visitor writes is
        // bounded by what was counted against `max_unpacked`.
        let mut data = (&mut entry).take(data_size);
        visit(&safe, &mut data).map_err(|source| ArchiveError::Visit {
            path: safe.path.clone(),
            source,
        })?;
    }
    // Read to the end of the gzip stream so its CRC and length are checked;
    // bounded, so trailing garbage cannot keep us busy.
    let mut rest = archive.into_inner().take(1 << 20);
    io::copy(&mut rest, &mut io::sink()).map_err(ArchiveError::Corrupt)?;
    Ok(summary)
}

/// Check an archive without writing anything.
/// The largest metadata entry (PAX `x`/`g` extended header, GNU long name
/// or long link `L`/`K`) an archive may carry. Real ones are a few hundred
/// bytes; the path rules allow nothing near this long.
pub const MAX_METADATA_ENTRY: u64 = 64 * 1024;

const BLOCK: usize = 512;

/// A reader of a tar stream that fails as soon as a header announces a
/// metadata entry larger than [`MAX_METADATA_ENTRY`]. The tar crate reads
/// such an entry into memory whole before handing out the entry it
/// describes, and the stream is unpacked while it downloads (before its
/// hash can be checked), so without this a gzip-compressed gigabyte of
/// "extended header" from a hostile mirror would exhaust a Pi's memory.
///
/// It follows the 512-byte block structure as the bytes pass: each header's
/// size field says how many data blocks to skip to the next header. An
/// archive whose data length is not its header's (a PAX `size` override) is
/// refused by `walk` at that entry, before its data is read.
pub struct MetadataCap<R> {
    inner: R,
    header: [u8; BLOCK],
    filled: usize,
    /// Data (and padding) bytes before the next header.
    skip: u64,
}

impl<R> MetadataCap<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            header: [0; BLOCK],
            filled: 0,
            skip: 0,
        }
    }

    /// Look at one complete header block; set how much data follows.
    fn inspect(&mut self) -> io::Result<()> {
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            return Ok(()); // end-of-archive marker
        }
        let size = header_size(&h[124..136]);
        if matches!(h[156], b'x' | b'g' | b'L' | b'K') {
            let too_big = size.is_none_or(|n| n > MAX_METADATA_ENTRY);
            if too_big {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a metadata entry (PAX header or GNU long name, type '{}') of {} bytes; at most {MAX_METADATA_ENTRY} are allowed",
                        h[156] as char,
                        size.map_or("an unreadable number of".to_string(), |n| n.to_string())
                    ),
                ));
            }
        }
        // An unreadable size is the tar reader's to report.
        self.skip = size.map_or(0, |n| n.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64));
        Ok(())
    }
}

/// A tar header's size field: octal digits, or base-256 when the first
/// byte's high bit is set (GNU, for sizes of 8 GiB and more).
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let digits = std::str::from_utf8(field).ok()?;
    let digits = digits.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

impl<R: Read> Read for MetadataCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut i = 0;
        while i < n {
            if self.skip > 0 {
                let k = self.skip.min((n - i) as u64) as usize;
                self.skip -= k as u64;
                i += k;
                continue;
            }
            let k = (BLOCK - self.filled).min(n - i);
            self.header[self.filled..self.filled + k].copy_from_slice(&buf[i..i + k]);
            self.filled += k;
            i += k;
            if self.filled == BLOCK {
                self.filled = 0;
                self.inspect()?;
            }
        }
        Ok(n)
    }
}

pub fn scan<R: Read>(tar_gz: R, limits: Limits) -> Result<Summary, ArchiveError> {
    walk(tar_gz, limits, |_, data| {
        io::copy(data, &mut io::sink()).map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, type, mode, contents, link target)
    type RawEntry<'a> = (&'a str, tar::EntryType, u32, &'a [u8], Option<&'a str>);

    /// Build a tar.gz from raw headers so tests can express what `tar::Builder`
    /// would refuse to write (`..`, absolute paths).
    fn archive(entries: &[RawEntry]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (path, kind, mode, data, link) in entries {
            let mut h = tar::Header::new_ustar();
            h.as_mut_bytes()[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            if let Some(link) = link {
                h.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            tar.extend_from_slice(h.as_bytes());
            tar.extend_from_slice(data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.extend_from_slice(&[0; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    use tar::EntryType as T;

    fn check(entries: &[RawEntry]) -> Result<Summary, ArchiveError> {
        scan(&archive(entries)[..], Limits::unpacked(1 << 20))
    }

    #[test]
    fn accepts_a_normal_tree() {
        let s = check(&[
            ("./", T::Directory, 0o755, b"", None),
            ("bin/", T::Directory, 0o755, b"", None),
            ("bin/app", T::Regular, 0o755, b"#!/bin/sh\n", None),
            ("share/data.txt", T::Regular, 0o644, b"hello", None),
            ("share/link", T::Symlink, 0o777, b"", Some("data.txt")),
            ("share/up", T::Symlink, 0o777, b"", Some("../bin/app")),
            ("share/hard", T::Link, 0o644, b"", Some("share/data.txt")),
        ])
        .unwrap();
        assert_eq!(s.unpacked_size, 15);
    }

    #[test]
    fn refuses_every_escape() {
        let cases: &[(&[RawEntry], &str)] = &[
            (&[("../evil", T::Regular, 0o644, b"x", None)], "'..'"),
            (&[("a/../../evil", T::Regular, 0o644, b"x", None)], "'..'"),
            (&[("/etc/passwd", T::Regular, 0o644, b"x", None)], "absolute"),
            (&[("l", T::Symlink, 0o777, b"", Some("/etc"))], "absolute"),
            (&[("l", T::Symlink, 0o777, b"", Some(".."))], "leaves"),
            (&[("a/l", T::Symlink, 0o777, b"", Some("../../x"))], "leaves"),
            (
                &[("l", T::Symlink, 0o777, b"", Some("a/../../x"))],
                "after a name",
            ),
            (
                &[
                    ("l", T::Symlink, 0o777, b"", Some("sub")),
                    ("l/x", T::Regular, 0o644, b"x", None),
                ],
                "not a directory",
            ),
            (&[("h", T::Link, 0o644, b"", Some("/etc/shadow"))], "absolute"),
            (
                &[("h", T::Link, 0o644, b"", Some("missing"))],
                "not an earlier regular file",
            ),
            (&[("dev", T::Char, 0o644, b"", None)], "unsupported"),
            (&[("dev", T::Block, 0o644, b"", None)], "unsupported"),
            (&[("fifo", T::Fifo, 0o644, b"", None)], "unsupported"),
            (&[("suid", T::Regular, 0o4755, b"x", None)], "setuid"),
            (&[("sgid", T::Regular, 0o2755, b"x", None)], "setuid"),
            (
                &[
                    ("f", T::Regular, 0o644, b"x", None),
                    ("f", T::Regular, 0o644, b"y", None),
                ],
                "duplicate",
            ),
        ];
        for (entries, want) in cases {
            let err = check(entries).unwrap_err().to_string();
            assert!(err.contains(want), "{entries:?}: {err}");
        }
    }

    /// One raw 512-byte header block plus padded data.
    fn raw_entry(tar: &mut Vec<u8>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }

    fn gzip(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn long_name_extensions_cannot_smuggle_a_traversal() {
        // GNU long name ('L'): the real path is in the extension's data.
        let mut gnu = Vec::new();
        raw_entry(
            &mut gnu,
            "././@LongLink",
            T::GNULongName,
            b"../../etc/cron.d/evil\0",
        );
        raw_entry(&mut gnu, "harmless", T::Regular, b"x");
        let err = scan(&gzip(gnu)[..], Limits::unpacked(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'..'"), "{err}");

        // PAX extended header ('x') overriding the path.
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let mut pax = Vec::new();
        raw_entry(
            &mut pax,
            "PaxHeader",
            T::XHeader,
            record("path", "/etc/passwd").as_bytes(),
        );
        raw_entry(&mut pax, "harmless", T::Regular, b"x");
        let err = scan(&gzip(pax)[..], Limits::unpacked(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");

        // A PAX linkpath pointing out of the component.
        let mut link = Vec::new();
        raw_entry(
            &mut link,
            "PaxHeader",
            T::XHeader,
            record("linkpath", "../../../etc").as_bytes(),
        );
        raw_entry(&mut link, "l", T::Symlink, b"");
        let err = scan(&gzip(link)[..], Limits::unpacked(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves the component"), "{err}");
    }

    #[test]
    fn a_huge_metadata_entry_is_refused_before_it_is_read() {
        // 64 MiB of "extended header" compresses to ~64 KiB: the tar reader
        // would hold it all in memory before any rule sees the entry.
        for kind in [T::XHeader, T::XGlobalHeader, T::GNULongName, T::GNULongLink] {
            let mut tar = Vec::new();
            raw_entry(&mut tar, "big", kind, &vec![b'a'; 64 << 20]);
            raw_entry(&mut tar, "f", T::Regular, b"x");
            let err = scan(&gzip(tar)[..], Limits::unpacked(1 << 30))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("metadata entry") && err.contains("67108864"),
                "{kind:?}: {err}"
            );
        }
        // A real long name (here 300 bytes) passes, within the cap.
        let long = format!("{}/f", "d".repeat(296));
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            "././@LongLink",
            T::GNULongName,
            format!("{long}\0").as_bytes(),
        );
        raw_entry(&mut tar, "ignored", T::Regular, b"x");
        let summary = scan(&gzip(tar)[..], Limits::unpacked(1)).unwrap();
        assert_eq!(summary.unpacked_size, 1);
    }

    #[test]
    fn header_sizes_octal_and_base_256() {
        assert_eq!(header_size(b"00000001000\0"), Some(512));
        assert_eq!(header_size(b"        \0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(header_size(&big), Some(513));
        assert_eq!(header_size(b"12x45678901\0"), None);
    }

    #[test]
    fn a_symlink_cannot_be_replaced_by_a_directory_of_the_same_name() {
        let err = check(&[
            ("d", T::Symlink, 0o777, b"", Some("sub")),
            ("d", T::Directory, 0o755, b"", None),
            ("d/x", T::Regular, 0o644, b"x", None),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("duplicate"), "{err}");
    }

    #[test]
    fn stops_at_the_declared_size() {
        let big = vec![b'x'; 2000];
        let err = scan(
            &archive(&[("f", T::Regular, 0o644, &big, None)])[..],
            Limits::unpacked(1999),
        )
        .unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { limit: 1999 }));
        let many: Vec<_> = (0..5).map(|i| format!("f{i}")).collect();
        let entries: Vec<_> = many
            .iter()
            .map(|n| (n.as_str(), T::Regular, 0o644, &b""[..], None))
            .collect();
        let limits = Limits {
            max_unpacked: 10,
            max_entries: 4,
        };
        assert!(matches!(
            scan(&archive(&entries)[..], limits),
            Err(ArchiveError::TooManyEntries { .. })
        ));
    }

    /// A tar.gz of a PAX extended header (`x`) carrying `records`, then a
    /// regular file `f` whose header says `header_size` and whose `data`
    /// follows: written with `tar::Builder::append`, which copies the data
    /// whatever the header says.
    fn pax_then_file(records: &[(&str, &str)], header_size: u64, data: &[u8]) -> Vec<u8> {
        let mut pax = String::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            pax.push_str(&format!("{len}{body}"));
        }
        let mut tar = tar::Builder::new(Vec::new());
        let mut x = tar::Header::new_ustar();
        x.set_path("PaxHeaders/f").unwrap();
        x.set_entry_type(T::XHeader);
        x.set_mode(0o644);
        x.set_size(pax.len() as u64);
        x.set_cksum();
        tar.append(&x, pax.as_bytes()).unwrap();
        let mut file = tar::Header::new_ustar();
        file.set_path("f").unwrap();
        file.set_entry_type(T::Regular);
        file.set_mode(0o644);
        file.set_size(header_size);
        file.set_cksum();
        tar.append(&file, data).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_pax_size_cannot_smuggle_data_past_a_header_saying_zero() {
        // The tar crate reads 64 KiB for `f`; the header says 0. Counted by
        // the header, this passed a 1 KiB limit.
        let data = vec![b'x'; 64 << 10];
        let lying = pax_then_file(&[("size", &data.len().to_string())], 0, &data);
        let err = scan(&lying[..], Limits::unpacked(1 << 10)).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Refused { reason, .. } if reason.contains("PAX size (65536 bytes) differs from its header size (0 bytes)")),
            "{err}"
        );
        // The other way round, and an unparsable record, are refused too.
        let short = pax_then_file(&[("size", "1")], data.len() as u64, &data);
        assert!(scan(&short[..], Limits::unpacked(1 << 20)).is_err());
        let garbage = pax_then_file(&[("size", "12x")], 0, b"");
        let err = scan(&garbage[..], Limits::unpacked(1 << 20))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
        // A PAX size that agrees with the header is harmless and counted.
        let twice = pax_then_file(&[("size", "0"), ("size", "5")], 0, b"");
        assert!(scan(&twice[..], Limits::unpacked(1 << 20)).is_err());
        let honest = pax_then_file(&[("size", "5"), ("mtime", "0")], 5, b"hello");
        let summary = scan(&honest[..], Limits::unpacked(5)).unwrap();
        assert_eq!(summary.unpacked_size, 5);
    }

    #[test]
    fn only_regular_files_carry_data() {
        for kind in [T::Directory, T::Symlink] {
            let err = check(&[("d", kind, 0o755, b"hidden", Some("x"))])
                .unwrap_err()
                .to_string();
            assert!(err.contains("carrying 6 bytes of data"), "{kind:?}: {err}");
        }
        let err = check(&[("./", T::Directory, 0o755, b"hidden", None)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("carrying data"), "{err}");
    }

    #[test]
    fn the_visitor_reads_exactly_the_counted_bytes() {
        let mut read = 0;
        let summary = walk(
            &archive(&[
                ("a", T::Regular, 0o644, b"hello", None),
                ("b", T::Regular, 0o644, b"world!", None),
            ])[..],
            Limits::unpacked(11),
            |_, data| {
                read += io::copy(data, &mut io::sink())?;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!((summary.unpacked_size, read), (11, 11));
    }

    #[test]
    fn refuses_truncated_and_garbage_input() {
        let good = archive(&[("f", T::Regular, 0o644, b"hello world", None)]);
        assert!(scan(&good[..good.len() - 10], Limits::unpacked(100)).is_err());
        assert!(scan(&b"not gzip at all"[..], Limits::unpacked(100)).is_err());
    }
}

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
//!   declared `unpacked_size`; at most `max_entries` entries.
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

/// Stream `tar_gz` through the rules, calling `visit` for every accepted entry
/// with a reader over its contents (empty for anything but files).
pub fn walk<R: Read>(
    tar_gz: R,
    limits: Limits,
    mut visit: impl FnMut(&SafeEntry, &mut dyn Read) -> io::Result<()>,
) -> Result<Summary, ArchiveError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
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
        let (kind, record) = if entry_type.is_dir() {
            (EntryKind::Directory, Seen::Dir)
        } else if entry_type.is_file() || entry_type == tar::EntryType::Continuous {
            let size = entry.header().size().map_err(ArchiveError::Corrupt)?;
            summary.unpacked_size = summary.unpacked_size.saturating_add(size);
            if summary.unpacked_size > limits.max_unpacked {
                return Err(ArchiveError::TooLarge {
                    limit: limits.max_unpacked,
                });
            }
            (EntryKind::File { size }, Seen::File)
        } else if entry_type.is_symlink() {
            let target = entry
                .link_name()
                .map_err(ArchiveError::Corrupt)?
                .ok_or_else(|| refused(&path, "symlink without a target"))?;
            let target = check_symlink_target(&path, &target)?;
            (EntryKind::Symlink { target }, Seen::Link)
        } else if entry_type.is_hard_link() {
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
        } else {
            return Err(refused(
                &path,
                format!(
                    "unsupported entry type {entry_type:?} (devices, FIFOs and sparse files are not allowed)"
                ),
            ));
        };

        match seen.get(&path) {
            None => {}
            Some(Seen::ImplicitDir) if record == Seen::Dir => {}
            Some(_) => return Err(refused(&path, "duplicate entry")),
        }
        seen.insert(path.clone(), record);

        let safe = SafeEntry { path, kind, mode };
        visit(&safe, &mut entry).map_err(|source| ArchiveError::Visit {
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

    #[test]
    fn refuses_truncated_and_garbage_input() {
        let good = archive(&[("f", T::Regular, 0o644, b"hello world", None)]);
        assert!(scan(&good[..good.len() - 10], Limits::unpacked(100)).is_err());
        assert!(scan(&b"not gzip at all"[..], Limits::unpacked(100)).is_err());
    }
}

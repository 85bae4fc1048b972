//! Unpacking a tarball into staging: every entry is fed to the
//! [`StagingWriter`], which applies the hostile-tree rules of SPEC §4;
//! this module bounds the stream itself, so that an archive over the cap
//! or a decompression bomb stops at the cap.
//!
//! `tar::Archive::unpack` is never used: it follows its own rules (it would
//! create symlinks and hard links). Entries are iterated and fed here.
//!
//! Limits, all checked as bytes flow (never from what a header claims):
//! * the writer charges regular files' bytes before writing them, so disk
//!   use never exceeds `max_bytes`, and counts entries;
//! * data carried by entries that are not files (a directory claiming
//!   gigabytes) is charged to its own [`SizeBudget`] of `max_bytes`;
//! * the whole decompressed stream is bounded by `max_bytes` plus
//!   [`METADATA_ALLOWANCE`] (headers, padding, long names), which bounds the
//!   CPU a bomb made of empty entries can burn and the number of entries;
//! * what the tar crate reads on its own between two entries (headers, pax
//!   records, GNU long names, which it buffers in memory) is bounded by
//!   [`METADATA_WINDOW`], so a pax header claiming gigabytes cannot exhaust
//!   memory;
//! * `limits.cancel` is polled on every read of the stream.
//!
//! Depends on the tar, flate2 and zstd crates and on the domain's staging
//! rules; no async, no network.

use std::cell::Cell;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use tar::EntryType;

use super::writer::StagingWriter;
use crate::domain::source::ArchiveFormat;
use crate::domain::staging::{SizeBudget, check_entry_path};
use crate::ports::resolver::{FetchError, FetchLimits};
use crate::ports::staging::WrittenTree;

const CHUNK: usize = 64 * 1024;

/// Decompressed bytes allowed beyond `max_bytes` for tar's own framing
/// (512-byte headers, padding, long names): about 64k entries' worth.
pub const METADATA_ALLOWANCE: u64 = 64 * 1024 * 1024;

/// What the tar crate may read between two entries (header, pax records,
/// GNU long name/link), all of which it holds in memory.
pub const METADATA_WINDOW: u64 = 1024 * 1024;

/// The 422 text for an archive that is corrupt, truncated, or not the
/// compressed tarball its extension names. The archive matched its pinned
/// digest, so this is the publisher's fault, not a transient one.
pub const INVALID_ARCHIVE_MESSAGE: &str =
    "archive is not a valid tarball (corrupt, truncated, or not compressed as its extension says)";

/// What an unpacked archive looked like at its top level, and what was
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedRoot {
    /// The name of the archive's only top-level entry when that entry is a
    /// directory. Its contents have then been moved up, so `dest` holds the
    /// plugin's files directly, and this name is the plugin's name (SPEC §3).
    pub single_dir: Option<String>,
    /// The staged tree, paths relative to `dest` (after the move up).
    pub tree: WrittenTree,
}

/// Unpacks a compressed tarball (`format`) from `reader` into `dest`; see
/// [`unpack_tar`]. Decompression is streamed: nothing is inflated ahead of
/// the writer.
pub fn unpack_archive<R: Read>(
    reader: R,
    format: ArchiveFormat,
    dest: &Path,
    limits: &FetchLimits,
) -> Result<UnpackedRoot, FetchError> {
    match format {
        // Multi-member gzip is valid gzip (RFC 1952 §2.2); reading only the
        // first member would silently drop the rest of the archive.
        ArchiveFormat::TarGz => unpack_tar(flate2::read::MultiGzDecoder::new(reader), dest, limits),
        ArchiveFormat::TarZst => {
            let decoder = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| FetchError::Other(Box::new(e)))?;
            unpack_tar(decoder, dest, limits)
        }
    }
}

/// Unpacks the (decompressed) tar stream `reader` into the existing, empty
/// directory `dest`.
///
/// Errors:
/// * [`FetchError::Unsafe`]: a path with `..`, absolute, not UTF-8 or with
///   a control character, or a duplicate or conflicting entry
///   (`UnsafeEntry::Path`); a symlink (`Symlink`); a hard link, device,
///   FIFO, sparse file or any other type (`SpecialFile`);
/// * [`FetchError::TooLarge`]: regular files over `limits.max_bytes`, or a
///   stream over the bounds in the module docs;
/// * [`FetchError::TooManyEntries`]: more than `limits.max_entries` files
///   and directories;
/// * [`FetchError::Cancelled`]: `limits.cancel` was raised;
/// * [`FetchError::Refused`] with [`INVALID_ARCHIVE_MESSAGE`]: the stream is
///   not a well-formed (compressed) tarball, truncated included;
/// * [`FetchError::Other`]: writing to `dest` failed.
///
/// On error, `dest` may hold part of the tree: the caller removes it.
pub fn unpack_tar<R: Read>(
    reader: R,
    dest: &Path,
    limits: &FetchLimits,
) -> Result<UnpackedRoot, FetchError> {
    let meter = Meter {
        limits,
        read: Cell::new(0),
        cap: limits.max_bytes.saturating_add(METADATA_ALLOWANCE),
        window: Cell::new(None),
        tripped: Cell::new(None),
    };
    // A single top-level directory is moved away, not staged: while
    // writing, one entry more is allowed, and the cap is checked exactly
    // once the top level is known.
    let mut writing = limits.clone();
    writing.max_entries = limits.max_entries.saturating_add(1);
    let result = unpack_entries(
        Metered {
            inner: reader,
            meter: &meter,
        },
        dest,
        &writing,
        &meter,
    );
    // A limit tripped inside the stream surfaces from the tar crate as an
    // opaque io::Error; the meter knows what really happened.
    let (top, mut tree) = match (result, meter.tripped.get()) {
        (Err(_), Some(trip)) => return Err(trip.into()),
        (result, _) => result?,
    };
    match top.single_dir() {
        Some(name) => {
            hoist(dest, &name).map_err(other)?;
            let prefix = format!("{name}/");
            for file in &mut tree.files {
                if let Some(rest) = file.path.strip_prefix(&prefix) {
                    file.path = rest.to_owned();
                }
            }
            // The top directory itself is gone.
            tree.entries = tree.entries.saturating_sub(1);
            Ok(UnpackedRoot {
                single_dir: Some(name),
                tree,
            })
        }
        None if tree.entries > limits.max_entries => Err(FetchError::TooManyEntries),
        None => Ok(UnpackedRoot {
            single_dir: None,
            tree,
        }),
    }
}

fn other(e: io::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

fn invalid_archive(e: io::Error) -> FetchError {
    tracing::debug!(error = %e, "archive is not a valid tarball");
    FetchError::Refused(INVALID_ARCHIVE_MESSAGE.to_owned())
}

#[derive(Debug, Clone, Copy)]
enum Trip {
    Cancelled,
    TooLarge,
}

impl From<Trip> for FetchError {
    fn from(trip: Trip) -> Self {
        match trip {
            Trip::Cancelled => FetchError::Cancelled,
            Trip::TooLarge => FetchError::TooLarge,
        }
    }
}

/// Counts and bounds the decompressed stream (see the module docs).
struct Meter<'a> {
    limits: &'a FetchLimits,
    read: Cell<u64>,
    cap: u64,
    /// `Some(left)` while the tar crate reads between two entries.
    window: Cell<Option<u64>>,
    tripped: Cell<Option<Trip>>,
}

impl Meter<'_> {
    fn trip(&self, trip: Trip) -> io::Error {
        self.tripped.set(Some(trip));
        io::Error::other(match trip {
            Trip::Cancelled => "unpacking cancelled",
            Trip::TooLarge => "archive stream over its limits",
        })
    }
}

struct Metered<'a, R> {
    inner: R,
    meter: &'a Meter<'a>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let meter = self.meter;
        if let Some(trip) = meter.tripped.get() {
            return Err(meter.trip(trip));
        }
        if meter.limits.cancel.is_cancelled() {
            return Err(meter.trip(Trip::Cancelled));
        }
        let n = self.inner.read(buf)?;
        let read = meter.read.get().saturating_add(n as u64);
        meter.read.set(read);
        if read > meter.cap {
            return Err(meter.trip(Trip::TooLarge));
        }
        if let Some(left) = meter.window.get() {
            match left.checked_sub(n as u64) {
                Some(left) => meter.window.set(Some(left)),
                None => return Err(meter.trip(Trip::TooLarge)),
            }
        }
        Ok(n)
    }
}

/// The archive's top level, as seen so far.
#[derive(Default)]
struct TopLevel {
    first: Option<(String, bool)>,
    several: bool,
}

impl TopLevel {
    fn see(&mut self, clean: &str, is_dir: bool) {
        let (top, nested) = match clean.split_once('/') {
            Some((top, _)) => (top, true),
            None => (clean, false),
        };
        let is_dir = is_dir || nested;
        match &mut self.first {
            None => self.first = Some((top.to_owned(), is_dir)),
            Some((name, dir)) if name == top => *dir |= is_dir,
            Some(_) => self.several = true,
        }
    }

    fn single_dir(self) -> Option<String> {
        match self.first {
            Some((name, true)) if !self.several => Some(name),
            _ => None,
        }
    }
}

fn unpack_entries<R: Read>(
    reader: R,
    dest: &Path,
    limits: &FetchLimits,
    meter: &Meter<'_>,
) -> Result<(TopLevel, WrittenTree), FetchError> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(invalid_archive)?;
    let mut writer = StagingWriter::new(dest, limits);
    let mut carried = SizeBudget::new(limits.max_bytes);
    let mut top = TopLevel::default();
    loop {
        if limits.cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        meter.window.set(Some(METADATA_WINDOW));
        let next = entries.next();
        meter.window.set(None);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(invalid_archive)?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Archive-wide pax defaults (mtime, charset…): nothing to
            // write, but their bytes still count.
            drain(&mut entry, &mut carried)?;
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        match kind {
            EntryType::Directory => {
                writer.dir(&raw)?;
                see(&mut top, &raw, true);
                drain(&mut entry, &mut carried)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
                let declared = entry.size();
                let written = writer.file(&raw, executable, &mut entry, invalid_archive)?;
                // The tar crate reports a stream that ends inside an entry
                // as a short entry, not an error.
                if written != declared {
                    return Err(invalid_archive(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "archive ends inside an entry",
                    )));
                }
                see(&mut top, &raw, false);
            }
            EntryType::Symlink => return Err(writer.symlink(&raw)),
            _ => return Err(writer.special(&raw)),
        }
    }
    Ok((top, writer.finish()?))
}

/// Records an entry the writer accepted (so its path is safe).
fn see(top: &mut TopLevel, raw: &[u8], is_dir: bool) {
    if let Ok(Some(clean)) = check_entry_path(raw) {
        top.see(&clean, is_dir);
    }
}

/// Reads what is left of a non-file entry's data, charging it like file
/// bytes: a directory entry claiming gigabytes of data is a bomb too.
fn drain<R: Read>(entry: &mut R, budget: &mut SizeBudget) -> Result<(), FetchError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = entry.read(&mut buf).map_err(invalid_archive)?;
        if n == 0 {
            return Ok(());
        }
        budget.charge(n as u64).map_err(|_| FetchError::TooLarge)?;
    }
}

/// Moves the contents of `dest/<name>` up into `dest`. The directory is
/// first renamed to a name none of its children has, so a child named like
/// its parent (`foo/foo/…`) cannot collide.
fn hoist(dest: &Path, name: &str) -> io::Result<()> {
    let top = dest.join(name);
    let mut n = 0u32;
    let parked = loop {
        let candidate = format!(".unpack-{n}");
        if fs::symlink_metadata(top.join(&candidate)).is_err() {
            break dest.join(candidate);
        }
        n += 1;
    };
    fs::rename(&top, &parked)?;
    for child in fs::read_dir(&parked)? {
        let child = child?;
        fs::rename(child.path(), dest.join(child.file_name()))?;
    }
    fs::remove_dir(&parked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::staging::UnsafeEntry;
    use proptest::prelude::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn limits(max_bytes: u64) -> FetchLimits {
        FetchLimits::new(max_bytes, 100_000)
    }

    /// A raw ustar header: the tar crate's builder refuses hostile names,
    /// so hostile archives are assembled by hand.
    fn header(path: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0001750\0");
        h[116..124].copy_from_slice(b"0001750\0");
        if size < 0o77777777777 {
            h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        } else {
            // GNU base-256 for sizes past 8 GiB.
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        if kind == b'S' {
            // GNU sparse files exist only in GNU headers.
            h[257..265].copy_from_slice(b"ustar  \0");
            h[483..495].copy_from_slice(b"00000000000\0");
        } else {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn tar(entries: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, data) in entries {
            out.extend_from_slice(&header(path, *kind, data.len() as u64, b""));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            }
            out.push(path);
        }
        out
    }

    #[test]
    fn unpacks_files_and_dirs_keeping_only_the_executable_bit() {
        let dest = tempfile::tempdir().unwrap();
        let archive = tar(&[
            (b"plugin.yaml", b'0', b"name: x\n"),
            (b"./rules/", b'5', b""),
            (b"rules/a.md", b'0', b"A"),
            (b"bin/run.sh", b'0', b"#!/bin/sh"),
        ]);
        let mut bytes = archive;
        // Make bin/run.sh executable: patch its mode and checksum.
        let mut h = header(b"bin/run.sh", b'0', 9, b"");
        h[100..108].copy_from_slice(b"0000700\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        bytes[512 * 5..512 * 6].copy_from_slice(&h);
        let root = unpack_tar(&bytes[..], dest.path(), &limits(1000)).unwrap();
        assert_eq!(root.single_dir, None);
        assert_eq!(
            fs::read_to_string(dest.path().join("rules/a.md")).unwrap(),
            "A"
        );
        let mode = |p: &str| {
            fs::metadata(dest.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bin/run.sh"), 0o755);
        assert_eq!(mode("plugin.yaml") & 0o111, 0);
    }

    #[test]
    fn a_single_top_level_directory_is_the_plugin_root() {
        let dest = tempfile::tempdir().unwrap();
        let archive = tar(&[
            (b"my-plugin/", b'5', b""),
            (b"my-plugin/plugin.yaml", b'0', b"x"),
            (b"my-plugin/my-plugin/nested.md", b'0', b"n"),
            (b"my-plugin/.unpack-0", b'0', b"decoy"),
        ]);
        let root = unpack_tar(&archive[..], dest.path(), &limits(1000)).unwrap();
        assert_eq!(root.single_dir.as_deref(), Some("my-plugin"));
        let mut names: Vec<String> = fs::read_dir(dest.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".unpack-0", "my-plugin", "plugin.yaml"]);
        assert!(dest.path().join("my-plugin/nested.md").is_file());
        let mut written: Vec<_> = root.tree.files.iter().map(|f| f.path.as_str()).collect();
        written.sort();
        assert_eq!(written, [".unpack-0", "my-plugin/nested.md", "plugin.yaml"]);
        assert_eq!(root.tree.entries, 4, "the hoisted directory is gone");
    }

    #[test]
    fn a_top_level_file_or_second_directory_means_no_single_root() {
        for archive in [
            tar(&[(b"a/x", b'0', b"1"), (b"b/y", b'0', b"2")]),
            tar(&[(b"a/x", b'0', b"1"), (b"README.md", b'0', b"2")]),
            tar(&[(b"only-file", b'0', b"1")]),
        ] {
            let dest = tempfile::tempdir().unwrap();
            let root = unpack_tar(&archive[..], dest.path(), &limits(1000)).unwrap();
            assert_eq!(root.single_dir, None);
        }
    }

    #[test]
    fn hostile_entries_are_refused_with_their_kind() {
        let cases: &[(&[u8], u8, &str)] = &[
            (b"../x", b'0', "plugin contains an unsafe path: ../x"),
            (b"/etc/x", b'0', "plugin contains an unsafe path: /etc/x"),
            (b"a\x01b", b'0', "plugin contains an unsafe path: a\\u{1}b"),
            (b"\xff", b'0', "plugin contains an unsafe path: \\xff"),
            (b"link", b'2', "plugin contains a symlink: link"),
            (b"hard", b'1', "plugin contains a special file: hard"),
            (b"chr", b'3', "plugin contains a special file: chr"),
            (b"blk", b'4', "plugin contains a special file: blk"),
            (b"fifo", b'6', "plugin contains a special file: fifo"),
            (b"sparse", b'S', "plugin contains a special file: sparse"),
            (b".", b'0', "plugin contains an unsafe path: ."),
        ];
        for (path, kind, message) in cases {
            let dest = tempfile::tempdir().unwrap();
            let archive = tar(&[(path, *kind, b"")]);
            let err = unpack_tar(&archive[..], dest.path(), &limits(1000)).unwrap_err();
            assert!(matches!(err, FetchError::Unsafe(_)), "{path:?}: {err}");
            assert_eq!(err.to_string(), *message);
        }
    }

    #[test]
    fn duplicates_and_conflicts_are_refused_not_overwritten() {
        for archive in [
            tar(&[(b"a", b'0', b"first"), (b"a", b'0', b"second")]),
            tar(&[(b"a", b'0', b"file"), (b"a/b", b'0', b"under a file")]),
            tar(&[(b"a/b", b'0', b"x"), (b"a", b'0', b"over a dir")]),
        ] {
            let dest = tempfile::tempdir().unwrap();
            let err = unpack_tar(&archive[..], dest.path(), &limits(1000)).unwrap_err();
            assert!(
                matches!(err, FetchError::Unsafe(UnsafeEntry::Path(_))),
                "{err}"
            );
        }
        let dest = tempfile::tempdir().unwrap();
        let archive = tar(&[(b"a", b'0', b"first"), (b"a", b'0', b"second")]);
        let _ = unpack_tar(&archive[..], dest.path(), &limits(1000));
        assert_eq!(fs::read_to_string(dest.path().join("a")).unwrap(), "first");
    }

    #[test]
    fn the_cap_stops_a_stream_that_claims_more_than_it_may_write() {
        // A header claiming 10 GiB, then an endless stream of zeros.
        let head = header(b"bomb", b'0', 10 << 30, b"");
        let stream = head.as_slice().chain(io::repeat(0));
        let dest = tempfile::tempdir().unwrap();
        let err = unpack_tar(stream, dest.path(), &limits(1 << 20)).unwrap_err();
        assert!(matches!(err, FetchError::TooLarge), "{err}");
        let len = fs::metadata(dest.path().join("bomb")).unwrap().len();
        assert!(len <= 1 << 20, "disk use stays under the cap: {len}");
    }

    #[test]
    fn empty_entries_stop_at_the_entry_cap() {
        let names: Vec<String> = (0..50).map(|i| format!("d{i}/")).collect();
        let entries: Vec<(&[u8], u8, &[u8])> = names
            .iter()
            .map(|n| (n.as_bytes(), b'5', b"".as_slice()))
            .collect();
        let dest = tempfile::tempdir().unwrap();
        let l = FetchLimits::new(1 << 20, 20);
        let err = unpack_tar(&tar(&entries)[..], dest.path(), &l).unwrap_err();
        assert!(matches!(err, FetchError::TooManyEntries), "{err}");
        assert!(fs::read_dir(dest.path()).unwrap().count() <= 21);
        // Exactly at the cap, wrapped in a top-level directory or not.
        let at_cap = |top: &str| {
            let names: Vec<String> = (0..20).map(|i| format!("{top}d{i}/")).collect();
            let entries: Vec<(&[u8], u8, &[u8])> = names
                .iter()
                .map(|n| (n.as_bytes(), b'5', b"".as_slice()))
                .collect();
            let dest = tempfile::tempdir().unwrap();
            unpack_tar(&tar(&entries)[..], dest.path(), &l).map(|root| root.tree.entries)
        };
        assert_eq!(at_cap("").unwrap(), 20);
        assert_eq!(at_cap("top/").unwrap(), 20);
        let names: Vec<String> = (0..21).map(|i| format!("d{i}/")).collect();
        let entries: Vec<(&[u8], u8, &[u8])> = names
            .iter()
            .map(|n| (n.as_bytes(), b'5', b"".as_slice()))
            .collect();
        let dest = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack_tar(&tar(&entries)[..], dest.path(), &l),
            Err(FetchError::TooManyEntries)
        ));
    }

    #[test]
    fn a_pax_header_claiming_gigabytes_is_not_buffered() {
        let head = header(b"PaxHeaders/x", b'x', 4 << 30, b"");
        let stream = head.as_slice().chain(io::repeat(b'a'));
        let dest = tempfile::tempdir().unwrap();
        let err = unpack_tar(stream, dest.path(), &limits(1 << 30)).unwrap_err();
        assert!(matches!(err, FetchError::TooLarge), "{err}");
    }

    #[test]
    fn a_truncated_or_garbage_stream_is_an_invalid_archive() {
        let full = tar(&[(b"a", b'0', &[7u8; 2000])]);
        for bytes in [&full[..1024], b"not a tarball at all, just text".as_slice()] {
            let dest = tempfile::tempdir().unwrap();
            let err = unpack_tar(bytes, dest.path(), &limits(1 << 20)).unwrap_err();
            assert_eq!(err.to_string(), INVALID_ARCHIVE_MESSAGE, "{err:?}");
        }
        let dest = tempfile::tempdir().unwrap();
        let err = unpack_archive(
            &b"\x1f\x8b garbage"[..],
            ArchiveFormat::TarGz,
            dest.path(),
            &limits(100),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), INVALID_ARCHIVE_MESSAGE);
    }

    #[test]
    fn a_cancelled_unpack_stops() {
        let l = limits(1 << 20);
        l.cancel.cancel();
        let dest = tempfile::tempdir().unwrap();
        let archive = tar(&[(b"a", b'0', b"x")]);
        assert!(matches!(
            unpack_tar(&archive[..], dest.path(), &l),
            Err(FetchError::Cancelled)
        ));
    }

    #[test]
    fn gzip_and_zstd_archives_unpack_the_same_tree() {
        let archive = tar(&[(b"p/plugin.yaml", b'0', b"name: p\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&archive).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&archive[..], 3).unwrap();
        for (bytes, format) in [(gz, ArchiveFormat::TarGz), (zst, ArchiveFormat::TarZst)] {
            let dest = tempfile::tempdir().unwrap();
            let root = unpack_archive(&bytes[..], format, dest.path(), &limits(100)).unwrap();
            assert_eq!(root.single_dir.as_deref(), Some("p"));
            assert!(dest.path().join("plugin.yaml").is_file());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the entry names, nothing is written outside `dest`.
        #[test]
        fn random_entry_names_never_escape_dest(
            names in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![
                        Just(b'/'), Just(b'.'), Just(b'a'), Just(b'\\'),
                        Just(0u8), Just(0xffu8), any::<u8>(),
                    ],
                    1..40,
                ),
                1..6,
            ),
            kinds in prop::collection::vec(prop_oneof![Just(b'0'), Just(b'5')], 6),
        ) {
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("dest");
            fs::create_dir(&dest).unwrap();
            let entries: Vec<(&[u8], u8, &[u8])> = names
                .iter()
                .zip(&kinds)
                .map(|(n, k)| {
                    let n = &n[..n.len().min(99)];
                    (n, *k, if *k == b'0' { b"x".as_slice() } else { b"".as_slice() })
                })
                .collect();
            let archive = tar(&entries);
            let _ = unpack_tar(&archive[..], &dest, &limits(1 << 20));
            let outside: Vec<_> = fs::read_dir(outer.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != "dest")
                .collect();
            prop_assert!(outside.is_empty(), "{outside:?}");
            for path in files_under(&dest) {
                prop_assert!(path.starts_with(&dest));
                let meta = fs::symlink_metadata(&path).unwrap();
                prop_assert!(meta.is_dir() || meta.is_file());
            }
        }
    }
}

//! The one staging writer (SPEC §4 "Hostile trees"). Every resolver —
//! the local directory copy, the tarball unpacker, the git tree walk —
//! feeds the entries of what it fetched to a [`StagingWriter`]: a
//! directory, a regular file with its executable bit and its content, a
//! link, a special file. The writer alone decides what lands in the
//! staging directory and how a refusal reads:
//!
//! * every path passes [`check_entry_path`] (no `..`, not absolute, valid
//!   UTF-8, no control character, no `\`) → `plugin contains an unsafe
//!   path: <path as the source spelled it, escaped>`;
//! * a link → `plugin contains a symlink: <clean path, escaped>`; a hard
//!   link, device, FIFO, socket or anything else → `… a special file: …`;
//! * only directories and regular files are created, files with
//!   `create_new` (never over an earlier entry: a duplicate or a file where
//!   a directory is reads as an unsafe path), mode 0755 or 0644;
//! * regular files' bytes are charged to the size cap and the fetch's disk
//!   allowance before they are written (413 `staged plugin exceeds size
//!   limit`), and every file and directory created to the entry cap (413
//!   `staged plugin has too many entries`), so a bomb stops at the cap;
//! * the cancellation flag is polled on every entry and every chunk;
//! * the staging root itself is never (re)created: a directory removed
//!   under a late writer (deadline) stays removed.
//!
//! The writer records what it wrote ([`WrittenTree`]); the staging area
//! hashes from that record, never by walking the directory again.
//!
//! A local tree can also be staged in place ([`StagingWriter::in_place`]):
//! the same walk and the same rules, nothing written; its files are hashed
//! where they lie, opened exactly as a copy would open them, their
//! digests taken from a [`DigestMemo`] where their inode is unchanged.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::memo::DigestMemo;
use super::parallel::map_items;
use crate::domain::staging::{SizeBudget, UnsafeEntry, check_entry_path, escape_path};
use crate::ports::resolver::{FetchError, FetchLimits};
use crate::ports::staging::{WrittenFile, WrittenTree};

const CHUNK: usize = 64 * 1024;

/// Files copied in the kernel are copied in slices this big, so a
/// cancelled fetch does not copy on.
const COPY_SLICE: u64 = 8 << 20;

fn other(e: io::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

/// Creates a new file of a staged plugin. Plugin files keep only their
/// executable bit: 0755 or 0644, whatever the umask. `create_new`, so an
/// entry can never overwrite an earlier one.
fn create_plugin_file(path: &Path, executable: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// A regular file of a local tree, checked and charged, to be copied by
/// [`StagingWriter::finish`].
struct PlannedCopy {
    from: PathBuf,
    clean: String,
    executable: bool,
    /// Bytes charged for it: exactly this many are copied.
    len: u64,
}

/// Writes one staged tree under the hostile-tree rules (module docs).
pub struct StagingWriter<'a> {
    root: PathBuf,
    limits: &'a FetchLimits,
    bytes: SizeBudget,
    entries: u64,
    /// Directories this writer created (clean paths): anything else that
    /// already exists under the root is an earlier file.
    dirs: HashSet<String>,
    files: Vec<WrittenFile>,
    planned: Vec<PlannedCopy>,
    /// Nothing is written: planned files are hashed where they lie.
    in_place: bool,
    /// Digests of files hashed in place before.
    memo: Option<Arc<DigestMemo>>,
}

impl<'a> StagingWriter<'a> {
    /// A writer into the existing, empty directory `root`.
    pub fn new(root: &Path, limits: &'a FetchLimits) -> Self {
        Self {
            root: root.to_path_buf(),
            limits,
            bytes: SizeBudget::new(limits.max_bytes),
            entries: 0,
            dirs: HashSet::new(),
            files: Vec::new(),
            planned: Vec::new(),
            in_place: false,
            memo: None,
        }
    }

    /// A writer that writes nothing: a local tree fed to it with
    /// [`StagingWriter::dir`] and [`StagingWriter::plan_copy`] is checked,
    /// counted and charged to the size cap under the same rules, and
    /// [`StagingWriter::finish`] hashes its files where they lie instead
    /// of copying them (the fetch's disk allowance is not charged: nothing
    /// lands on disk).
    pub fn in_place(limits: &'a FetchLimits) -> Self {
        let mut writer = Self::new(Path::new(""), limits);
        writer.in_place = true;
        writer
    }

    /// Files hashed in place take their digests from `memo` where it has
    /// them, and leave theirs there.
    pub fn with_memo(mut self, memo: Arc<DigestMemo>) -> Self {
        self.memo = Some(memo);
        self
    }

    /// The refusal of `raw` as an unsafe path.
    pub fn unsafe_path(raw: &[u8]) -> FetchError {
        FetchError::Unsafe(UnsafeEntry::Path(escape_path(raw)))
    }

    fn poll_cancel(&self) -> Result<(), FetchError> {
        Self::check_cancel(self.limits)
    }

    fn check_cancel(limits: &FetchLimits) -> Result<(), FetchError> {
        if limits.cancel.is_cancelled() {
            Err(FetchError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The entry's clean path, or `None` for the root itself.
    fn check(&self, raw: &[u8]) -> Result<Option<String>, FetchError> {
        self.poll_cancel()?;
        check_entry_path(raw).map_err(FetchError::Unsafe)
    }

    fn count_entry(&mut self) -> Result<(), FetchError> {
        if self.entries >= self.limits.max_entries {
            return Err(FetchError::TooManyEntries);
        }
        self.entries += 1;
        Ok(())
    }

    fn charge(&mut self, bytes: u64) -> Result<(), FetchError> {
        self.bytes.charge(bytes).map_err(|_| FetchError::TooLarge)?;
        if self.in_place {
            return Ok(());
        }
        self.limits
            .disk
            .charge(bytes)
            .map_err(|_| FetchError::TooLarge)
    }

    /// Fails when `bytes` more could not be written, without charging
    /// them: lets a source refuse a file before reading it into memory.
    pub fn check_room(&self, bytes: u64) -> Result<(), FetchError> {
        let mut probe = self.bytes;
        probe.charge(bytes).map_err(|_| FetchError::TooLarge)?;
        let left = self
            .limits
            .disk
            .cap()
            .saturating_sub(self.limits.disk.used());
        if bytes > left {
            return Err(FetchError::TooLarge);
        }
        Ok(())
    }

    /// Creates the directory `clean` and its missing parents; an existing
    /// one this writer made is fine (archives list a directory after its
    /// files), anything else there is an earlier file.
    fn create_dirs(&mut self, clean: &str, raw: &[u8]) -> Result<(), FetchError> {
        if self.dirs.contains(clean) {
            return Ok(());
        }
        let mut prefix = String::with_capacity(clean.len());
        for part in clean.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.dirs.contains(&prefix) {
                continue;
            }
            self.count_entry()?;
            if !self.in_place {
                fs::create_dir(self.root.join(&prefix)).map_err(|e| conflict(e, raw))?;
            }
            self.dirs.insert(prefix.clone());
        }
        Ok(())
    }

    fn create_parents(&mut self, clean: &str, raw: &[u8]) -> Result<(), FetchError> {
        match clean.rsplit_once('/') {
            Some((parent, _)) => self.create_dirs(parent, raw),
            None => Ok(()),
        }
    }

    /// A directory entry (`raw` as the source spells it). The root itself
    /// (`./`) is accepted and ignored.
    pub fn dir(&mut self, raw: &[u8]) -> Result<(), FetchError> {
        match self.check(raw)? {
            Some(clean) => self.create_dirs(&clean, raw),
            None => Ok(()),
        }
    }

    /// A regular file: `content` is streamed into it, charged before each
    /// chunk is written and hashed on the way. Returns the bytes written.
    /// Errors reading `content` become `read_error(e)`.
    pub fn file(
        &mut self,
        raw: &[u8],
        executable: bool,
        content: impl Read,
        read_error: impl Fn(io::Error) -> FetchError,
    ) -> Result<u64, FetchError> {
        if self.in_place {
            return Err(other(io::Error::other(
                "a tree staged in place has no streamed files",
            )));
        }
        let clean = self.check(raw)?.ok_or_else(|| Self::unsafe_path(raw))?;
        self.create_parents(&clean, raw)?;
        self.count_entry()?;
        let mut output = create_plugin_file(&self.root.join(&clean), executable)
            .map_err(|e| conflict(e, raw))?;
        let mut hasher = Sha256::new();
        let limits = self.limits;
        let written = Self::for_each_chunk(limits, content, read_error, |chunk| {
            self.charge(chunk.len() as u64)?;
            output.write_all(chunk).map_err(other)?;
            hasher.update(chunk);
            Ok(())
        })?;
        self.files.push(WrittenFile {
            path: clean,
            len: written,
            sha256: Some(hasher.finalize().into()),
        });
        Ok(written)
    }

    /// A regular file of a local tree, copied from `from` by
    /// [`StagingWriter::finish`]: checked, counted and its `len` charged
    /// now, so an oversized tree fails before any file is written.
    pub fn plan_copy(
        &mut self,
        raw: &[u8],
        executable: bool,
        len: u64,
        from: PathBuf,
    ) -> Result<(), FetchError> {
        let clean = self.check(raw)?.ok_or_else(|| Self::unsafe_path(raw))?;
        self.create_parents(&clean, raw)?;
        self.count_entry()?;
        self.charge(len)?;
        self.planned.push(PlannedCopy {
            from,
            clean,
            executable,
            len,
        });
        Ok(())
    }

    /// The refusal of a link named `raw` (the path rule first).
    pub fn symlink(&self, raw: &[u8]) -> FetchError {
        match self.check(raw) {
            Err(e) => e,
            Ok(clean) => FetchError::Unsafe(UnsafeEntry::Symlink(shown(clean))),
        }
    }

    /// The refusal of a hard link, device, FIFO, socket or any other
    /// entry that is neither a directory nor a regular file.
    pub fn special(&self, raw: &[u8]) -> FetchError {
        match self.check(raw) {
            Err(e) => e,
            Ok(clean) => FetchError::Unsafe(UnsafeEntry::SpecialFile(shown(clean))),
        }
    }

    /// Copies the planned files (in the kernel, on a few threads for large
    /// trees), or hashes them where they lie for a writer staging in place,
    /// and returns the record of the tree. The caller of an in-place writer
    /// sets the record's `in_place`.
    pub fn finish(mut self) -> Result<WrittenTree, FetchError> {
        let planned = std::mem::take(&mut self.planned);
        let total = planned.iter().map(|p| p.len).sum();
        let done = if self.in_place {
            map_items(&planned, total, |p| self.hash_in_place(p))?
        } else {
            map_items(&planned, total, |p| self.copy(p))?
        };
        self.files.extend(done);
        Ok(WrittenTree {
            files: self.files,
            entries: self.entries,
            in_place: None,
        })
    }

    /// Opens a planned file without following a symlink and without
    /// blocking on a FIFO, and checks it again once open: an entry swapped
    /// since the walk is refused, never followed.
    fn open_planned(file: &PlannedCopy) -> Result<(fs::File, fs::Metadata), FetchError> {
        let shown = || escape_path(file.clean.as_bytes());
        let input = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&file.from)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => FetchError::Unsafe(UnsafeEntry::Symlink(shown())),
                _ => other(e),
            })?;
        let meta = input.metadata().map_err(other)?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(FetchError::Unsafe(UnsafeEntry::SpecialFile(shown())));
        }
        Ok((input, meta))
    }

    /// The digest of exactly the charged bytes of a planned file where it
    /// lies: from the memo when the file as opened is all of them and is
    /// unchanged since it was memoised, else hashed. One that shrank is an
    /// error, as for a copy.
    fn hash_in_place(&self, file: &PlannedCopy) -> Result<WrittenFile, FetchError> {
        let (input, meta) = Self::open_planned(file)?;
        let sha256 = match &self.memo {
            Some(memo) if meta.len() == file.len => memo.sha256(
                &meta,
                || self.hash_open(&input, file.len),
                || input.metadata().ok(),
            )?,
            _ => self.hash_open(&input, file.len)?,
        };
        Ok(WrittenFile {
            path: file.clean.clone(),
            len: file.len,
            sha256: Some(sha256),
        })
    }

    /// Reads `content` to its end in chunks, checking for cancellation
    /// before each, and hands every chunk to
    /// `each`; the bytes read.
    fn for_each_chunk(
        limits: &FetchLimits,
        mut content: impl Read,
        read_error: impl Fn(io::Error) -> FetchError,
        mut each: impl FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<u64, FetchError> {
        let mut buf = vec![0u8; CHUNK];
        let mut read = 0u64;
        loop {
            Self::check_cancel(limits)?;
            let n = match content.read(&mut buf) {
                Ok(0) => return Ok(read),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            each(&buf[..n])?;
            read += n as u64;
        }
    }

    /// Hashes the first `len` bytes of `input`, which must have them.
    fn hash_open(&self, input: &fs::File, len: u64) -> Result<[u8; 32], FetchError> {
        let mut hasher = Sha256::new();
        let read = Self::for_each_chunk(self.limits, input.take(len), other, |chunk| {
            hasher.update(chunk);
            Ok(())
        })?;
        if read != len {
            return Err(other(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a registry file shrank while being hashed",
            )));
        }
        Ok(hasher.finalize().into())
    }

    /// Copies one planned file. Exactly the charged bytes are copied: a
    /// file that grew meanwhile is staged as it was, one that shrank is an
    /// error.
    fn copy(&self, file: &PlannedCopy) -> Result<WrittenFile, FetchError> {
        let (input, _) = Self::open_planned(file)?;
        let mut output = create_plugin_file(&self.root.join(&file.clean), file.executable)
            .map_err(|e| conflict(e, file.clean.as_bytes()))?;
        let mut copied = 0;
        while copied < file.len {
            self.poll_cancel()?;
            // `io::copy` between files stays in the kernel (copy_file_range)
            // where it can.
            let slice = (file.len - copied).min(COPY_SLICE);
            let n = io::copy(&mut (&input).take(slice), &mut output).map_err(other)?;
            if n == 0 {
                return Err(other(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a registry file shrank while being copied",
                )));
            }
            copied += n;
        }
        Ok(WrittenFile {
            path: file.clean.clone(),
            len: file.len,
            sha256: None,
        })
    }
}

/// How a refused link or special file is named: its clean path, escaped
/// (`.` for the root itself), whatever the source's spelling.
fn shown(clean: Option<String>) -> String {
    match clean {
        Some(clean) => escape_path(clean.as_bytes()),
        None => ".".to_owned(),
    }
}

/// An entry that collides with an earlier one (a file where a directory
/// is, a duplicate file, a file under a file) is refused as an unsafe
/// path, never overwritten.
fn conflict(e: io::Error, raw: &[u8]) -> FetchError {
    match e.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
            StagingWriter::unsafe_path(raw)
        }
        _ => other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::resolver::DiskAllowance;
    use std::os::unix::fs::PermissionsExt;

    fn limits(max_bytes: u64, max_entries: u64) -> FetchLimits {
        FetchLimits::new(max_bytes, max_entries)
    }

    fn no_read_error(e: io::Error) -> FetchError {
        other(e)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_directories_and_files_with_only_the_executable_bit_and_records_them() {
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100, 100);
        let mut w = StagingWriter::new(dest.path(), &l);
        w.dir(b"./").unwrap();
        w.dir(b"rules/").unwrap();
        w.file(b"rules/a.md", false, &b"rule"[..], no_read_error)
            .unwrap();
        w.file(b"./bin/run.sh", true, &b"#!/bin/sh"[..], no_read_error)
            .unwrap();
        w.dir(b"bin").unwrap();
        let tree = w.finish().unwrap();
        assert_eq!(tree.entries, 4, "rules, rules/a.md, bin, bin/run.sh");
        let paths: Vec<_> = tree.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["rules/a.md", "bin/run.sh"]);
        assert_eq!(
            tree.files[0].sha256,
            Some(crate::domain::digest::sha256(b"rule"))
        );
        assert_eq!(mode(&dest.path().join("bin/run.sh")), 0o755);
        assert_eq!(mode(&dest.path().join("rules/a.md")), 0o644);
    }

    #[test]
    fn refusals_read_the_same_whoever_feeds_the_entry() {
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100, 100);
        let w = StagingWriter::new(dest.path(), &l);
        let cases = [
            (
                w.symlink(b"./rules/link"),
                "plugin contains a symlink: rules/link",
            ),
            (w.symlink(b"."), "plugin contains a symlink: ."),
            (
                w.special(b"a//pipe"),
                "plugin contains a special file: a/pipe",
            ),
            (w.special(b"../x"), "plugin contains an unsafe path: ../x"),
            (w.symlink(b"a\nb"), "plugin contains an unsafe path: a\\nb"),
        ];
        for (err, message) in cases {
            assert!(matches!(err, FetchError::Unsafe(_)), "{err:?}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn duplicates_and_conflicts_are_unsafe_paths_never_overwrites() {
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100, 100);
        let mut w = StagingWriter::new(dest.path(), &l);
        w.file(b"a", false, &b"first"[..], no_read_error).unwrap();
        for (raw, is_dir) in [(&b"a"[..], false), (b"a/b", false), (b"a/", true)] {
            let err = if is_dir {
                w.dir(raw).unwrap_err()
            } else {
                w.file(raw, false, &b"second"[..], no_read_error)
                    .unwrap_err()
            };
            assert!(
                matches!(err, FetchError::Unsafe(UnsafeEntry::Path(_))),
                "{raw:?}: {err:?}"
            );
        }
        w.dir(b"d").unwrap();
        let err = w
            .file(b"d", false, &b"over a dir"[..], no_read_error)
            .unwrap_err();
        assert_eq!(err.to_string(), "plugin contains an unsafe path: d");
        assert_eq!(fs::read_to_string(dest.path().join("a")).unwrap(), "first");
    }

    #[test]
    fn the_byte_cap_and_the_disk_allowance_stop_a_file_before_its_bytes_are_written() {
        let dest = tempfile::tempdir().unwrap();
        let l = limits(10, 100);
        let mut w = StagingWriter::new(dest.path(), &l);
        w.file(b"a", false, &[1u8; 10][..], no_read_error).unwrap();
        assert!(matches!(w.check_room(1), Err(FetchError::TooLarge)));
        let err = w
            .file(b"b", false, &[1u8; 1][..], no_read_error)
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge), "{err:?}");
        assert_eq!(fs::metadata(dest.path().join("b")).unwrap().len(), 0);

        let dest = tempfile::tempdir().unwrap();
        let mut l = limits(1000, 100);
        l.disk = DiskAllowance::new(5);
        let mut w = StagingWriter::new(dest.path(), &l);
        let err = w
            .file(b"a", false, &[1u8; 6][..], no_read_error)
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge), "{err:?}");
        assert_eq!(l.disk.used(), 0);
    }

    #[test]
    fn every_file_and_directory_counts_against_the_entry_cap() {
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100, 3);
        let mut w = StagingWriter::new(dest.path(), &l);
        // Implicit parents count too: a/ and a/b/ and the file make three.
        w.file(b"a/b/c", false, &b""[..], no_read_error).unwrap();
        w.dir(b"a/b").unwrap();
        let err = w.dir(b"d").unwrap_err();
        assert!(matches!(err, FetchError::TooManyEntries), "{err:?}");
        assert_eq!(err.to_string(), "staged plugin has too many entries");
        assert!(!dest.path().join("d").exists());
    }

    #[test]
    fn a_read_error_is_the_sources_to_name() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("corrupt"))
            }
        }
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100, 100);
        let mut w = StagingWriter::new(dest.path(), &l);
        let err = w
            .file(b"a", false, Broken, |_| FetchError::Refused("bad".into()))
            .unwrap_err();
        assert!(matches!(err, FetchError::Refused(m) if m == "bad"));
    }

    #[test]
    fn a_cancelled_writer_stops() {
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100, 100);
        l.cancel.cancel();
        let mut w = StagingWriter::new(dest.path(), &l);
        assert!(matches!(w.dir(b"a"), Err(FetchError::Cancelled)));
        assert!(matches!(
            w.file(b"b", false, &b"x"[..], no_read_error),
            Err(FetchError::Cancelled)
        ));
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_planned_copy_swapped_for_a_symlink_or_fifo_is_refused_not_followed() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(src.path().join("fifo"))
            .status()
            .unwrap();
        assert!(status.success());
        let l = limits(100, 100);
        for (name, message) in [
            ("link", "plugin contains a symlink: link"),
            // Opening a FIFO for reading would block until a writer came.
            ("fifo", "plugin contains a special file: fifo"),
        ] {
            let mut w = StagingWriter::new(dest.path(), &l);
            w.plan_copy(name.as_bytes(), false, 10, src.path().join(name))
                .unwrap();
            assert_eq!(w.finish().unwrap_err().to_string(), message);
        }
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_tree_staged_in_place_is_checked_counted_and_hashed_where_it_lies_writing_nothing() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "alpha").unwrap();
        fs::write(src.path().join("b"), vec![7u8; 200]).unwrap();
        let l = limits(300, 3);
        let mut w = StagingWriter::in_place(&l);
        w.dir(b"d").unwrap();
        w.plan_copy(b"d/a", false, 5, src.path().join("a")).unwrap();
        w.plan_copy(b"b", true, 200, src.path().join("b")).unwrap();
        let tree = w.finish().unwrap();
        assert_eq!(tree.entries, 3);
        let files: Vec<_> = tree
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.len, f.sha256))
            .collect();
        let sha = crate::domain::digest::sha256;
        assert_eq!(
            files,
            [
                ("d/a", 5, Some(sha(b"alpha"))),
                ("b", 200, Some(sha(&[7u8; 200])))
            ]
        );
        assert_eq!(
            l.disk.used(),
            0,
            "nothing lands on disk, so no disk is charged"
        );
        assert!(!Path::new("d").exists(), "no directory is created anywhere");

        // The caps and refusals are the copy's.
        let mut w = StagingWriter::in_place(&l);
        assert!(matches!(
            w.plan_copy(b"big", false, 301, src.path().join("b")),
            Err(FetchError::TooLarge)
        ));
        let mut w = StagingWriter::in_place(&l);
        w.dir(b"x/y/z").unwrap();
        assert!(matches!(w.dir(b"w"), Err(FetchError::TooManyEntries)));
        let w = StagingWriter::in_place(&l);
        assert_eq!(
            w.symlink(b"./link").to_string(),
            "plugin contains a symlink: link"
        );
        let mut w = StagingWriter::in_place(&l);
        assert!(
            w.file(b"f", false, &b"x"[..], no_read_error).is_err(),
            "a tree staged in place has no streamed files"
        );
    }

    #[test]
    fn a_file_staged_in_place_swapped_or_shrunk_since_the_walk_is_refused_as_a_copy_would_be() {
        let src = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(src.path().join("fifo"))
            .status()
            .unwrap();
        assert!(status.success());
        fs::write(src.path().join("short"), "abc").unwrap();
        let l = limits(100, 100);
        for (name, message) in [
            ("link", "plugin contains a symlink: link"),
            ("fifo", "plugin contains a special file: fifo"),
            ("short", "fetch failed"),
        ] {
            let mut w = StagingWriter::in_place(&l);
            w.plan_copy(name.as_bytes(), false, 10, src.path().join(name))
                .unwrap();
            assert_eq!(w.finish().unwrap_err().to_string(), message, "{name}");
        }
    }

    #[test]
    fn the_root_is_never_recreated_under_a_late_writer() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("stage");
        fs::create_dir(&dest).unwrap();
        let l = limits(100, 100);
        let mut w = StagingWriter::new(&dest, &l);
        fs::remove_dir(&dest).unwrap();
        assert!(w.dir(b"a/b").is_err());
        assert!(w.file(b"c", false, &b"x"[..], no_read_error).is_err());
        assert!(!dest.exists());
    }
}

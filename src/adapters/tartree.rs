//! Deterministic tarballs of a local tree: what the container engine
//! receives on install and what a download serves (SPEC §5 Download step
//! 6). Directories and regular files only, sorted, owned by the agent.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::domain::layout::{AGENT_GID, AGENT_UID};
use crate::ports::staging::TreeCheck;

const CHUNK: usize = 64 * 1024;

/// Why an archive of a tree read in place failed: the tree changed while
/// it was being read.
pub(crate) const TREE_CHANGED: &str = "the tree changed while it was being read";

/// One entry of a local tree, relative to its root (`""` is the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    pub rel: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File { executable: bool },
}

/// Why a local tree cannot be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    #[error("local tree contains a symlink: {0}")]
    Symlink(String),
    #[error("local tree contains a special file: {0}")]
    SpecialFile(String),
    #[error("reading the local tree: {0}")]
    Io(#[from] io::Error),
}

/// Lists the tree at `root` (directories and regular files only), sorted
/// by path, parents before children. Staging already refuses symlinks and
/// special files, so meeting one here is an error rather than something to
/// skip: a copy must never silently differ from what was staged.
pub(crate) fn plan_tree(root: &Path) -> Result<Vec<TreeEntry>, TreeError> {
    let meta = fs::symlink_metadata(root)?;
    if !meta.is_dir() {
        return Err(TreeError::SpecialFile(root.display().to_string()));
    }
    let mut entries = vec![TreeEntry {
        rel: PathBuf::new(),
        kind: EntryKind::Dir,
    }];
    plan_dir(root, Path::new(""), &mut entries)?;
    Ok(entries)
}

fn plan_dir(root: &Path, rel: &Path, out: &mut Vec<TreeEntry>) -> Result<(), TreeError> {
    let mut children = fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let rel_path = rel.join(child.file_name());
        let kind = child.file_type()?;
        if kind.is_symlink() {
            return Err(TreeError::Symlink(rel_path.display().to_string()));
        }
        if kind.is_dir() {
            out.push(TreeEntry {
                rel: rel_path.clone(),
                kind: EntryKind::Dir,
            });
            plan_dir(root, &rel_path, out)?;
        } else if kind.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = child.metadata()?.permissions().mode();
            out.push(TreeEntry {
                rel: rel_path,
                kind: EntryKind::File {
                    executable: mode & 0o111 != 0,
                },
            });
        } else {
            return Err(TreeError::SpecialFile(rel_path.display().to_string()));
        }
    }
    Ok(())
}

/// Writes `entries` of the tree at `root` as a tar: under the top-level
/// directory `top`, or (None) with paths relative to the root and no entry
/// for the root itself. Every header is owned by the agent (1000:1000, no
/// user or group names, so an engine keeps the numbers), mode 0755 for
/// directories and executable files, 0644 otherwise: the same tree and
/// `mtime` always give the same bytes.
///
/// An empty regular file named `seal` is appended as the last entry when
/// given: a reader that finds the seal knows it read
/// the whole archive (a cut stream can end on a valid entry boundary).
/// `check` (a tree read in place) runs once every file has been read,
/// before the seal: a tree that changed meanwhile fails the archive, which
/// then never gets its seal.
pub(crate) fn write_tree_tar<W: Write>(
    out: W,
    root: &Path,
    top: Option<&str>,
    entries: &[TreeEntry],
    mtime: u64,
    seal: Option<&str>,
    check: Option<&dyn TreeCheck>,
) -> io::Result<W> {
    let mut builder = tar::Builder::new(BufWriter::with_capacity(
        CHUNK,
        Cuttable {
            inner: out,
            cut: false,
        },
    ));
    if let Err(e) = append_tree(&mut builder, root, top, entries, mtime, seal, check) {
        // Dropped, the builder would end the archive and flush it: a
        // failed archive is cut where it failed instead, so no reader ever
        // takes it for a whole one, and nothing is written after the error.
        builder.get_mut().get_mut().cut = true;
        return Err(e);
    }
    let mut buffered = builder.into_inner()?;
    buffered.flush()?;
    buffered
        .into_inner()
        .map(|cuttable| cuttable.inner)
        .map_err(|e| e.into_error())
}

fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    top: Option<&str>,
    entries: &[TreeEntry],
    mtime: u64,
    seal: Option<&str>,
    check: Option<&dyn TreeCheck>,
) -> io::Result<()> {
    // Files are opened beneath this descriptor with no symlink anywhere on
    // the way: a tree read in place (the registry) can have a directory
    // swapped for a symlink after it was planned, and O_NOFOLLOW guards
    // only the last component.
    let root_dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)?;
    for entry in entries {
        let is_root = entry.rel.as_os_str().is_empty();
        let name = match (top, is_root) {
            (Some(top), true) => PathBuf::from(top),
            (Some(top), false) => Path::new(top).join(&entry.rel),
            (None, true) => continue,
            (None, false) => entry.rel.clone(),
        };
        let mut header = agent_header(mtime);
        match entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &name, io::empty())?;
            }
            EntryKind::File { executable } => {
                // Never follows a symlink nor blocks on a FIFO swapped in
                // since the plan (a tree read in place can change).
                let file = open_beneath(&root_dir, &entry.rel)?;
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(io::Error::other(format!(
                        "{} is no longer a regular file",
                        entry.rel.display()
                    )));
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if executable { 0o755 } else { 0o644 });
                header.set_size(meta.len());
                // A file that shrank while being read would leave the
                // header lying about its size: count what was sent. A file
                // the check cannot vouch for by its metadata is hashed as
                // it is sent.
                let expected = check.and_then(|c| c.expected_sha256(&entry.rel.to_string_lossy()));
                let mut counted = Counted {
                    inner: file.take(meta.len()),
                    count: 0,
                    hasher: expected.map(|_| Sha256::new()),
                };
                builder.append_data(&mut header, &name, &mut counted)?;
                if counted.count != meta.len() {
                    return Err(io::Error::other(format!(
                        "{} changed while being read",
                        entry.rel.display()
                    )));
                }
                if let (Some(expected), Some(hasher)) = (expected, counted.hasher)
                    && <[u8; 32]>::from(hasher.finalize()) != expected
                {
                    return Err(io::Error::other(TREE_CHANGED));
                }
            }
        }
    }
    if let Some(check) = check {
        match check.unchanged() {
            Ok(true) => {}
            Ok(false) => return Err(io::Error::other(TREE_CHANGED)),
            Err(e) => return Err(io::Error::other(e)),
        }
    }
    if let Some(seal) = seal {
        let mut header = agent_header(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        builder.append_data(&mut header, seal, io::empty())?;
    }
    Ok(())
}

/// The archive's output, which takes nothing more once `cut`.
struct Cuttable<W> {
    inner: W,
    cut: bool,
}

impl<W: Write> Write for Cuttable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cut {
            return Err(io::Error::other("archive cut after an error"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.cut {
            return Ok(());
        }
        self.inner.flush()
    }
}

struct Counted<R> {
    inner: R,
    count: u64,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Opens the regular file `rel` beneath `dir` for reading, refusing a
/// symlink in any component and a path that leaves `dir`, and never
/// blocking on a FIFO.
fn open_beneath(dir: &fs::File, rel: &Path) -> io::Result<fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
    let fd = openat2(
        dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )?;
    Ok(fs::File::from(fd))
}

fn agent_header(mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_uid(AGENT_UID);
    header.set_gid(AGENT_GID);
    header.set_mtime(mtime);
    header
}

//! Deterministic tarballs of a local tree: what the container engine
//! receives on install and what a download serves (SPEC §5 Download step
//! 6). Directories and regular files only, sorted, owned by the agent.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::domain::layout::{AGENT_GID, AGENT_UID};

const CHUNK: usize = 64 * 1024;

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
pub(crate) fn write_tree_tar<W: Write>(
    out: W,
    root: &Path,
    top: Option<&str>,
    entries: &[TreeEntry],
    mtime: u64,
) -> io::Result<W> {
    write_tree_tar_sealed(out, root, top, entries, mtime, None)
}

/// [`write_tree_tar`], with an empty regular file named `seal` appended as
/// the last entry when given: a reader that finds the seal knows it read
/// the whole archive (a cut stream can end on a valid entry boundary).
pub(crate) fn write_tree_tar_sealed<W: Write>(
    out: W,
    root: &Path,
    top: Option<&str>,
    entries: &[TreeEntry],
    mtime: u64,
    seal: Option<&str>,
) -> io::Result<W> {
    let mut builder = tar::Builder::new(BufWriter::with_capacity(CHUNK, out));
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
                let file = fs::File::open(root.join(&entry.rel))?;
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
                // header lying about its size: count what was sent.
                let mut counted = Counted {
                    inner: file.take(meta.len()),
                    count: 0,
                };
                builder.append_data(&mut header, &name, &mut counted)?;
                if counted.count != meta.len() {
                    return Err(io::Error::other(format!(
                        "{} changed while being read",
                        entry.rel.display()
                    )));
                }
            }
        }
    }
    if let Some(seal) = seal {
        let mut header = agent_header(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        builder.append_data(&mut header, seal, io::empty())?;
    }
    let mut buffered = builder.into_inner()?;
    buffered.flush()?;
    buffered.into_inner().map_err(|e| e.into_error())
}

struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

fn agent_header(mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_uid(AGENT_UID);
    header.set_gid(AGENT_GID);
    header.set_mtime(mtime);
    header
}

//! Copying a directory tree into staging under the hostile-tree rules of
//! SPEC §4: only directories and regular files, relative safe paths, and the
//! size cap charged before writing.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::parallel::map_items;
use crate::domain::staging::{SizeBudget, UnsafeEntry, check_entry_path, escape_path};
use crate::ports::resolver::{FetchError, FetchLimits};

const COPY_SLICE: u64 = 8 << 20;

/// Copies the tree at `src` into the existing directory `dest`. Symlinks,
/// hard links, devices, FIFOs and sockets are refused, never followed.
///
/// Two phases: a walk that checks every entry, creates the directories and
/// charges every file's size against the cap (so an oversized tree fails
/// before any file is written), then the file copies, spread over a few
/// threads for large trees.
pub fn copy_tree(src: &Path, dest: &Path, limits: &FetchLimits) -> Result<(), FetchError> {
    let mut budget = SizeBudget::new(limits.max_bytes);
    let mut files = Vec::new();
    plan_dir(src, dest, Path::new(""), &mut budget, &mut files, limits)?;
    map_items(&files, budget.used(), |file| copy_file(file, limits))?;
    Ok(())
}

fn io(e: std::io::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

/// A regular file to copy, as the walk saw it.
struct FileCopy {
    from: PathBuf,
    to: PathBuf,
    /// The entry's path as the error messages show it.
    shown: String,
    executable: bool,
    /// Bytes charged for it: exactly this many are copied.
    len: u64,
}

fn plan_dir(
    src: &Path,
    dest: &Path,
    rel: &Path,
    budget: &mut SizeBudget,
    files: &mut Vec<FileCopy>,
    limits: &FetchLimits,
) -> Result<(), FetchError> {
    let mut entries = fs::read_dir(src.join(rel))
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if limits.cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        let rel_path = rel.join(entry.file_name());
        let raw = rel_path.as_os_str().as_bytes();
        let Some(clean) = check_entry_path(raw).map_err(FetchError::Unsafe)? else {
            continue;
        };
        let meta = fs::symlink_metadata(entry.path()).map_err(io)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(FetchError::Unsafe(UnsafeEntry::Symlink(escape_path(raw))));
        }
        if kind.is_dir() {
            fs::create_dir(dest.join(&clean)).map_err(io)?;
            plan_dir(src, dest, &rel_path, budget, files, limits)?;
        } else if kind.is_file() && meta.nlink() == 1 {
            budget
                .charge(meta.len())
                .map_err(|_| FetchError::TooLarge)?;
            files.push(FileCopy {
                from: entry.path(),
                to: dest.join(&clean),
                shown: escape_path(raw),
                executable: meta.mode() & 0o111 != 0,
                len: meta.len(),
            });
        } else {
            return Err(FetchError::Unsafe(UnsafeEntry::SpecialFile(escape_path(
                raw,
            ))));
        }
    }
    Ok(())
}

/// Copies one planned file. It is opened without following a symlink and
/// without blocking on a FIFO, and checked again once open: an entry
/// swapped since the walk is refused, never followed. Exactly the charged
/// bytes are copied: a file that grew meanwhile is staged as it was.
fn copy_file(file: &FileCopy, limits: &FetchLimits) -> Result<(), FetchError> {
    let input = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&file.from)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FetchError::Unsafe(UnsafeEntry::Symlink(file.shown.clone())),
            _ => io(e),
        })?;
    let meta = input.metadata().map_err(io)?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(FetchError::Unsafe(UnsafeEntry::SpecialFile(
            file.shown.clone(),
        )));
    }
    let mut output = super::create_plugin_file(&file.to, file.executable).map_err(io)?;
    let mut copied = 0;
    while copied < file.len {
        if limits.cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        // `io::copy` between files stays in the kernel (copy_file_range)
        // where it can; slices keep a cancelled fetch from copying on.
        let slice = (file.len - copied).min(COPY_SLICE);
        let n = std::io::copy(&mut (&input).take(slice), &mut output).map_err(io)?;
        if n == 0 {
            break;
        }
        copied += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::resolver::Cancellation;

    fn limits(max_bytes: u64) -> FetchLimits {
        FetchLimits {
            max_bytes,
            cancel: Cancellation::new(),
        }
    }

    #[test]
    fn copies_directories_and_regular_files_with_the_executable_bit() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("a/b")).unwrap();
        fs::write(src.path().join("a/b/c.txt"), "hello").unwrap();
        fs::write(src.path().join("run.sh"), "#!/bin/sh").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        let dest = tempfile::tempdir().unwrap();
        copy_tree(src.path(), dest.path(), &limits(100)).unwrap();
        assert_eq!(
            fs::read_to_string(dest.path().join("a/b/c.txt")).unwrap(),
            "hello"
        );
        let mode = fs::metadata(dest.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn an_oversized_tree_fails_before_any_file_is_written() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), vec![0u8; 60]).unwrap();
        fs::write(src.path().join("b"), vec![0u8; 60]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert!(matches!(
            copy_tree(src.path(), dest.path(), &limits(100)),
            Err(FetchError::TooLarge)
        ));
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0);
        let exact = tempfile::tempdir().unwrap();
        copy_tree(src.path(), exact.path(), &limits(120)).unwrap();
    }

    #[test]
    fn a_large_tree_is_copied_whole_on_several_threads() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        let files: Vec<(String, Vec<u8>)> = (0..10u8)
            .map(|i| {
                let len = (1 << 20) + usize::from(i) * 7919;
                (
                    format!("d/f{i}"),
                    (0..len).map(|j| (j % 251) as u8 ^ i).collect(),
                )
            })
            .collect();
        for (rel, content) in &files {
            fs::write(src.path().join(rel), content).unwrap();
        }
        let dest = tempfile::tempdir().unwrap();
        copy_tree(src.path(), dest.path(), &limits(64 << 20)).unwrap();
        for (rel, content) in &files {
            assert!(
                fs::read(dest.path().join(rel)).unwrap() == *content,
                "{rel}"
            );
        }
    }

    #[test]
    fn an_entry_swapped_for_a_symlink_or_fifo_after_the_walk_is_refused_not_followed() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(src.path().join("fifo"))
            .status()
            .unwrap();
        assert!(status.success());
        let planned = |name: &str| FileCopy {
            from: src.path().join(name),
            to: dest.path().join(name),
            shown: name.to_owned(),
            executable: false,
            len: 10,
        };
        let err = copy_file(&planned("link"), &limits(100)).unwrap_err();
        assert_eq!(err.to_string(), "plugin contains a symlink: link");
        // Opening a FIFO for reading would block until a writer came.
        let err = copy_file(&planned("fifo"), &limits(100)).unwrap_err();
        assert!(
            matches!(err, FetchError::Unsafe(UnsafeEntry::SpecialFile(_))),
            "{err}"
        );
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0);
    }

    #[test]
    fn symlinks_hard_links_and_fifos_are_refused() {
        type Make = fn(&Path);
        let cases: [(&str, Make); 4] = [
            ("link", |p| {
                std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap()
            }),
            ("sub/loop", |p| {
                fs::create_dir(p.join("sub")).unwrap();
                std::os::unix::fs::symlink("loop", p.join("sub/loop")).unwrap()
            }),
            ("hard", |p| {
                fs::write(p.join("orig"), "x").unwrap();
                fs::hard_link(p.join("orig"), p.join("hard")).unwrap()
            }),
            ("fifo", |p| {
                let status = std::process::Command::new("mkfifo")
                    .arg(p.join("fifo"))
                    .status()
                    .unwrap();
                assert!(status.success());
            }),
        ];
        for (path, make) in cases {
            let src = tempfile::tempdir().unwrap();
            make(src.path());
            let dest = tempfile::tempdir().unwrap();
            let err = copy_tree(src.path(), dest.path(), &limits(100)).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, FetchError::Unsafe(_)), "{path}: {message}");
            assert!(
                message.ends_with(path) || message.contains("hard") || message.contains("orig"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_cancelled_copy_stops() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "x").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100);
        l.cancel.cancel();
        assert!(matches!(
            copy_tree(src.path(), dest.path(), &l),
            Err(FetchError::Cancelled)
        ));
    }
}

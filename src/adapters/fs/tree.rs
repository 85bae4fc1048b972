//! Copying a local directory tree (the registry's plugin) into staging:
//! the walk feeds every entry to the [`StagingWriter`], which applies the
//! hostile-tree rules.
//!
//! Two phases: the walk, which creates the directories and checks, counts
//! and charges every file (so an oversized tree fails before any file is
//! written), then the file copies, in the kernel and spread over a few
//! threads for large trees ([`StagingWriter::finish`]).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::writer::StagingWriter;
use crate::ports::resolver::FetchError;
use crate::ports::staging::WrittenTree;

fn io(e: std::io::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

/// Copies the tree at `src` through `writer`. Symlinks, hard links,
/// devices, FIFOs and sockets are refused, never followed.
pub fn copy_tree(src: &Path, mut writer: StagingWriter<'_>) -> Result<WrittenTree, FetchError> {
    walk(src, Path::new(""), &mut writer)?;
    writer.finish()
}

fn walk(src: &Path, rel: &Path, writer: &mut StagingWriter<'_>) -> Result<(), FetchError> {
    let mut entries = fs::read_dir(src.join(rel))
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_path = rel.join(entry.file_name());
        let raw = rel_path.as_os_str().as_bytes();
        let meta = fs::symlink_metadata(entry.path()).map_err(io)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(writer.symlink(raw));
        }
        if kind.is_dir() {
            writer.dir(raw)?;
            walk(src, &rel_path, writer)?;
        } else if kind.is_file() && meta.nlink() == 1 {
            writer.plan_copy(raw, meta.mode() & 0o111 != 0, meta.len(), entry.path())?;
        } else {
            return Err(writer.special(raw));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::staging::UnsafeEntry;
    use crate::ports::resolver::FetchLimits;

    fn limits(max_bytes: u64) -> FetchLimits {
        FetchLimits::new(max_bytes, 1000)
    }

    fn copy(src: &Path, dest: &Path, limits: &FetchLimits) -> Result<WrittenTree, FetchError> {
        copy_tree(src, StagingWriter::new(dest, limits))
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
        let tree = copy(src.path(), dest.path(), &limits(100)).unwrap();
        assert_eq!(
            fs::read_to_string(dest.path().join("a/b/c.txt")).unwrap(),
            "hello"
        );
        let mode = fs::metadata(dest.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(tree.entries, 4);
        let mut paths: Vec<_> = tree
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.len))
            .collect();
        paths.sort();
        assert_eq!(paths, [("a/b/c.txt", 5), ("run.sh", 9)]);
    }

    #[test]
    fn an_oversized_tree_fails_before_any_file_is_written() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), vec![0u8; 60]).unwrap();
        fs::write(src.path().join("b"), vec![0u8; 60]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert!(matches!(
            copy(src.path(), dest.path(), &limits(100)),
            Err(FetchError::TooLarge)
        ));
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0);
        let exact = tempfile::tempdir().unwrap();
        copy(src.path(), exact.path(), &limits(120)).unwrap();
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
        copy(src.path(), dest.path(), &limits(64 << 20)).unwrap();
        for (rel, content) in &files {
            assert!(
                fs::read(dest.path().join(rel)).unwrap() == *content,
                "{rel}"
            );
        }
    }

    #[test]
    fn symlinks_hard_links_and_fifos_are_refused() {
        type Make = fn(&Path);
        let cases: [(&str, Make); 4] = [
            ("plugin contains a symlink: link", |p| {
                std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap()
            }),
            ("plugin contains a symlink: sub/loop", |p| {
                fs::create_dir(p.join("sub")).unwrap();
                std::os::unix::fs::symlink("loop", p.join("sub/loop")).unwrap()
            }),
            ("plugin contains a special file: hard", |p| {
                fs::write(p.join("orig"), "x").unwrap();
                fs::hard_link(p.join("orig"), p.join("hard")).unwrap()
            }),
            ("plugin contains a special file: fifo", |p| {
                let status = std::process::Command::new("mkfifo")
                    .arg(p.join("fifo"))
                    .status()
                    .unwrap();
                assert!(status.success());
            }),
        ];
        for (message, make) in cases {
            let src = tempfile::tempdir().unwrap();
            make(src.path());
            let dest = tempfile::tempdir().unwrap();
            let err = copy(src.path(), dest.path(), &limits(100)).unwrap_err();
            assert!(matches!(err, FetchError::Unsafe(_)), "{message}: {err}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn hostile_names_are_unsafe_paths() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a\nb"), "x").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = copy(src.path(), dest.path(), &limits(100)).unwrap_err();
        assert!(matches!(err, FetchError::Unsafe(UnsafeEntry::Path(p)) if p == "a\\nb"));
    }

    #[test]
    fn a_cancelled_copy_stops() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "x").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100);
        l.cancel.cancel();
        assert!(matches!(
            copy(src.path(), dest.path(), &l),
            Err(FetchError::Cancelled)
        ));
    }
}

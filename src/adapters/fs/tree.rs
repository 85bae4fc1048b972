//! Copying a directory tree into staging under the hostile-tree rules of
//! SPEC §4: only directories and regular files, relative safe paths, and the
//! size cap charged while writing.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::domain::staging::{SizeBudget, UnsafeEntry, check_entry_path, escape_path};
use crate::ports::resolver::{FetchError, FetchLimits};

const CHUNK: usize = 64 * 1024;

/// Copies the tree at `src` into the existing directory `dest`. Symlinks,
/// hard links, devices, FIFOs and sockets are refused, never followed.
pub fn copy_tree(src: &Path, dest: &Path, limits: &FetchLimits) -> Result<(), FetchError> {
    let mut budget = SizeBudget::new(limits.max_bytes);
    copy_dir(src, dest, Path::new(""), &mut budget, limits)
}

fn io(e: std::io::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

fn copy_dir(
    src: &Path,
    dest: &Path,
    rel: &Path,
    budget: &mut SizeBudget,
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
            copy_dir(src, dest, &rel_path, budget, limits)?;
        } else if kind.is_file() && meta.nlink() == 1 {
            copy_file(
                &entry.path(),
                &dest.join(&clean),
                meta.mode(),
                budget,
                limits,
            )?;
        } else {
            return Err(FetchError::Unsafe(UnsafeEntry::SpecialFile(escape_path(
                raw,
            ))));
        }
    }
    Ok(())
}

fn copy_file(
    from: &Path,
    to: &Path,
    mode: u32,
    budget: &mut SizeBudget,
    limits: &FetchLimits,
) -> Result<(), FetchError> {
    let mut input = fs::File::open(from).map_err(io)?;
    let mut output = super::create_plugin_file(to, mode & 0o111 != 0).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        // Charged before writing, so the staged bytes never exceed the cap.
        budget.charge(n as u64).map_err(|_| FetchError::TooLarge)?;
        output.write_all(&buf[..n]).map_err(io)?;
        if limits.cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
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
    fn the_cap_is_enforced_while_copying() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), vec![0u8; 60]).unwrap();
        fs::write(src.path().join("b"), vec![0u8; 60]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert!(matches!(
            copy_tree(src.path(), dest.path(), &limits(100)),
            Err(FetchError::TooLarge)
        ));
        let written: u64 = ["a", "b"]
            .iter()
            .filter_map(|f| fs::metadata(dest.path().join(f)).ok())
            .map(|m| m.len())
            .sum();
        assert!(written <= 100, "never more than the cap on disk: {written}");
        let exact = tempfile::tempdir().unwrap();
        copy_tree(src.path(), exact.path(), &limits(120)).unwrap();
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

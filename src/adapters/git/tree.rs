//! Writing a commit's tree into staging under the hostile-tree rules of
//! SPEC §4, the same rules `copy_tree` applies to the local registry: only
//! directories and regular files, safe relative paths, the executable bit
//! kept and nothing else, the size cap charged before a blob is written.

use std::fs;
use std::io::Write;
use std::path::Path;

use git2::{Oid, Repository, Tree};

use crate::adapters::fs::create_plugin_file;
use crate::domain::staging::{SizeBudget, UnsafeEntry, check_entry_path, escape_path};
use crate::ports::resolver::{FetchError, FetchLimits};

/// Git's object-type bits of a tree entry's mode.
const TYPE_MASK: i32 = 0o170000;
const TYPE_TREE: i32 = 0o040000;
const TYPE_BLOB: i32 = 0o100000;
const TYPE_SYMLINK: i32 = 0o120000;

fn io(e: std::io::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

fn git(e: git2::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

/// Writes `root` into the existing, empty directory `dest`.
///
/// Iterative, so a maliciously deep tree cannot overflow the stack. Only
/// `create_dir` and `create_new` are used: if the caller removed `dest`
/// (deadline), writes fail instead of re-creating it.
pub fn write_tree(
    repo: &Repository,
    root: &Tree<'_>,
    dest: &Path,
    limits: &FetchLimits,
) -> Result<(), FetchError> {
    let mut budget = SizeBudget::new(limits.max_bytes);
    let odb = repo.odb().map_err(git)?;
    // (tree, its raw path relative to the root: empty for the root).
    let mut pending: Vec<(Oid, Vec<u8>)> = vec![(root.id(), Vec::new())];
    while let Some((tree_id, prefix)) = pending.pop() {
        let tree = repo.find_tree(tree_id).map_err(git)?;
        for entry in tree.iter() {
            if limits.cancel.is_cancelled() {
                return Err(FetchError::Cancelled);
            }
            let mut raw = prefix.clone();
            if !raw.is_empty() {
                raw.push(b'/');
            }
            raw.extend_from_slice(entry.name_bytes());
            // A tree entry's name is one component, never empty or `/`-split;
            // git itself refuses `.git` in a tree, in any case.
            let name = entry.name_bytes();
            if name.is_empty()
                || name == b"."
                || name.contains(&b'/')
                || name.eq_ignore_ascii_case(b".git")
            {
                return Err(FetchError::Unsafe(UnsafeEntry::Path(escape_path(&raw))));
            }
            let Some(clean) = check_entry_path(&raw).map_err(FetchError::Unsafe)? else {
                return Err(FetchError::Unsafe(UnsafeEntry::Path(escape_path(&raw))));
            };
            let mode = entry.filemode_raw();
            let target = dest.join(&clean);
            match mode & TYPE_MASK {
                TYPE_TREE => {
                    fs::create_dir(&target).map_err(io)?;
                    pending.push((entry.id(), raw));
                }
                TYPE_BLOB => {
                    write_blob(repo, &odb, entry.id(), &target, mode, &mut budget)?;
                }
                TYPE_SYMLINK => {
                    return Err(FetchError::Unsafe(UnsafeEntry::Symlink(escape_path(&raw))));
                }
                // Submodules (TYPE_GITLINK) and anything git does not define.
                _ => {
                    return Err(FetchError::Unsafe(UnsafeEntry::SpecialFile(escape_path(
                        &raw,
                    ))));
                }
            }
        }
    }
    Ok(())
}

fn write_blob(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    id: Oid,
    target: &Path,
    mode: i32,
    budget: &mut SizeBudget,
) -> Result<(), FetchError> {
    // Charged from the header, before the blob is inflated into memory or
    // written, so the staged bytes never exceed the cap.
    let (size, _) = odb.read_header(id).map_err(git)?;
    budget
        .charge(size as u64)
        .map_err(|_| FetchError::TooLarge)?;
    let blob = repo.find_blob(id).map_err(git)?;
    let mut file = create_plugin_file(target, mode & 0o111 != 0).map_err(io)?;
    file.write_all(blob.content()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::resolver::Cancellation;
    use git2::ObjectType;
    use std::os::unix::fs::PermissionsExt;

    fn limits(max_bytes: u64) -> FetchLimits {
        FetchLimits {
            max_bytes,
            cancel: Cancellation::new(),
        }
    }

    /// A tree object written raw, bypassing libgit2's name checks, as a
    /// hostile server could send it.
    fn raw_tree(repo: &Repository, entries: &[(&str, &[u8], Oid)]) -> Oid {
        let mut bytes = Vec::new();
        for (mode, name, id) in entries {
            bytes.extend_from_slice(mode.as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(id.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
    }

    fn write(
        repo: &Repository,
        tree: Oid,
        max_bytes: u64,
    ) -> (tempfile::TempDir, Result<(), FetchError>) {
        let dest = tempfile::tempdir().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let result = write_tree(repo, &tree, dest.path(), &limits(max_bytes));
        (dest, result)
    }

    #[test]
    fn hostile_entry_names_are_refused_with_escaped_text() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        let cases: [(&[u8], &str); 6] = [
            (b"..", ".."),
            (b".", "."),
            (b".git", ".git"),
            (b".GiT", ".GiT"),
            (b"a\nb", "a\\nb"),
            (b"\xff", "\\xff"),
        ];
        for (name, shown) in cases {
            let tree = raw_tree(&repo, &[("100644", name, blob)]);
            let (_dest, result) = write(&repo, tree, 100);
            match result {
                Err(FetchError::Unsafe(UnsafeEntry::Path(path))) => assert_eq!(path, shown),
                other => panic!("{shown}: {other:?}"),
            }
        }
        let inner = raw_tree(&repo, &[("100644", b"..", blob)]);
        let tree = raw_tree(&repo, &[("40000", b"sub", inner)]);
        let (_dest, result) = write(&repo, tree, 100);
        assert!(
            matches!(&result, Err(FetchError::Unsafe(UnsafeEntry::Path(p))) if p == "sub/.."),
            "{result:?}"
        );
    }

    #[test]
    fn modes_are_normalized_and_a_blob_past_the_cap_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let small = repo.blob(b"12345").unwrap();
        let big = repo.blob(&[7u8; 100]).unwrap();
        let sub = raw_tree(&repo, &[("100755", b"run", small)]);
        let tree = raw_tree(
            &repo,
            &[
                ("100664", b"a", small),
                ("40000", b"bin", sub),
                ("100644", b"z", big),
            ],
        );
        let (dest, result) = write(&repo, tree, 104);
        assert!(matches!(result, Err(FetchError::TooLarge)), "{result:?}");
        assert!(!dest.path().join("z").exists(), "refused before writing");
        let (dest, result) = write(&repo, tree, 110);
        result.unwrap();
        let mode = |p: &str| {
            fs::metadata(dest.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("bin/run"), 0o755);
        assert_eq!(fs::read(dest.path().join("z")).unwrap(), [7u8; 100]);
    }

    #[test]
    fn a_cancelled_write_stops() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        let tree = repo
            .find_tree(raw_tree(&repo, &[("100644", b"a", blob)]))
            .unwrap();
        let dest = tempfile::tempdir().unwrap();
        let l = limits(100);
        l.cancel.cancel();
        assert!(matches!(
            write_tree(&repo, &tree, dest.path(), &l),
            Err(FetchError::Cancelled)
        ));
        assert!(!dest.path().join("a").exists());
    }
}

//! Feeding a commit's tree, object by object, to the [`StagingWriter`],
//! which applies the hostile-tree rules of SPEC §4 as it does for every
//! source. What is git's own here: a tree entry's name is one component
//! (never empty, `.`, `/`-split or `.git`, which git itself refuses), the
//! object type decides the kind of entry (tree, blob, symlink; a submodule
//! or anything else is a special file), and a blob's size is checked from
//! its header before the blob is inflated into memory.
//!
//! A tree that repeats one subtree (a "git bomb": a few KB of objects that
//! expand to billions of entries) stops at the writer's entry cap, since
//! every repetition is written and counted.

use std::path::Path;

use git2::{Oid, Repository, Tree};

use crate::adapters::fs::StagingWriter;
use crate::ports::resolver::{FetchError, FetchLimits};
use crate::ports::staging::WrittenTree;

/// Git's object-type bits of a tree entry's mode.
const TYPE_MASK: i32 = 0o170000;
const TYPE_TREE: i32 = 0o040000;
const TYPE_BLOB: i32 = 0o100000;
const TYPE_SYMLINK: i32 = 0o120000;

fn git(e: git2::Error) -> FetchError {
    FetchError::Other(Box::new(e))
}

/// Writes `root` into the existing, empty directory `dest`.
///
/// Iterative, so a maliciously deep tree cannot overflow the stack; the
/// pending list holds at most one level's entries per level (the entry cap
/// bounds both).
pub fn write_tree(
    repo: &Repository,
    root: &Tree<'_>,
    dest: &Path,
    limits: &FetchLimits,
) -> Result<WrittenTree, FetchError> {
    let mut writer = StagingWriter::new(dest, limits);
    let odb = repo.odb().map_err(git)?;
    // (tree, its raw path relative to the root: empty for the root).
    let mut pending: Vec<(Oid, Vec<u8>)> = vec![(root.id(), Vec::new())];
    while let Some((tree_id, prefix)) = pending.pop() {
        let tree = repo.find_tree(tree_id).map_err(git)?;
        for entry in tree.iter() {
            let mut raw = prefix.clone();
            if !raw.is_empty() {
                raw.push(b'/');
            }
            raw.extend_from_slice(entry.name_bytes());
            let name = entry.name_bytes();
            if name.is_empty()
                || name == b"."
                || name.contains(&b'/')
                || name.eq_ignore_ascii_case(b".git")
            {
                return Err(StagingWriter::unsafe_path(&raw));
            }
            let mode = entry.filemode_raw();
            match mode & TYPE_MASK {
                TYPE_TREE => {
                    writer.dir(&raw)?;
                    pending.push((entry.id(), raw));
                }
                TYPE_BLOB => {
                    // Sized from the header, before the blob is inflated
                    // into memory.
                    let (size, _) = odb.read_header(entry.id()).map_err(git)?;
                    writer.check_room(size as u64)?;
                    let blob = repo.find_blob(entry.id()).map_err(git)?;
                    writer.file(&raw, mode & 0o111 != 0, blob.content(), |e| {
                        FetchError::Other(Box::new(e))
                    })?;
                }
                TYPE_SYMLINK => return Err(writer.symlink(&raw)),
                // Submodules (gitlinks) and anything git does not define.
                _ => return Err(writer.special(&raw)),
            }
        }
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::staging::UnsafeEntry;
    use git2::ObjectType;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn limits(max_bytes: u64) -> FetchLimits {
        FetchLimits::new(max_bytes, 10_000)
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
    ) -> (tempfile::TempDir, Result<WrittenTree, FetchError>) {
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
        let written = result.unwrap();
        assert_eq!(written.entries, 4);
        assert_eq!(written.files.len(), 3);
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
    fn a_repeated_subtree_is_written_and_counted_every_time_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(b"").unwrap();
        let names: Vec<Vec<u8>> = (0..10).map(|i| format!("e{i}").into_bytes()).collect();
        let mut level = raw_tree(
            &repo,
            &names
                .iter()
                .map(|n| ("100644", n.as_slice(), blob))
                .collect::<Vec<_>>(),
        );
        // 10 levels of 10 references to the level below: 10^10 files.
        for _ in 0..10 {
            level = raw_tree(
                &repo,
                &names
                    .iter()
                    .map(|n| ("40000", n.as_slice(), level))
                    .collect::<Vec<_>>(),
            );
        }
        let dest = tempfile::tempdir().unwrap();
        let l = FetchLimits::new(1 << 20, 500);
        let tree = repo.find_tree(level).unwrap();
        let started = std::time::Instant::now();
        let err = write_tree(&repo, &tree, dest.path(), &l).unwrap_err();
        assert!(matches!(err, FetchError::TooManyEntries), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
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

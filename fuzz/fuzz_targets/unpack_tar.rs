//! Tar unpacking into staging (SPEC §4 hostile-tree rules) on arbitrary
//! bytes: never a panic, nothing written outside the destination, and only
//! directories and regular files inside it.
//!
//! Thin on purpose: one call to the crate's public unpack function, so the
//! target follows when the staging writer changes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use workspace_plugins::adapters::fs::unpack_tar;
use workspace_plugins::ports::resolver::FetchLimits;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("a temporary directory");
    // Nested, so that an entry escaping with `..` lands inside `root`,
    // where the walk below sees it.
    let dest = root.path().join("a/b/c/d/dest");
    std::fs::create_dir_all(&dest).expect("the destination directory");
    let limits = FetchLimits::new(1024 * 1024, 10_000);

    let _ = unpack_tar(data, &dest, &limits);

    assert_only_dest(root.path(), &dest);
});

/// Everything under `root` is `dest`, one of its ancestors, or a directory
/// or regular file inside `dest`.
fn assert_only_dest(root: &Path, dest: &Path) {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            let kind = std::fs::symlink_metadata(&path)
                .expect("metadata")
                .file_type();
            if path.starts_with(dest) && path != dest {
                assert!(
                    kind.is_dir() || kind.is_file(),
                    "{path:?} is neither a directory nor a regular file"
                );
            } else {
                assert!(
                    dest.starts_with(&path),
                    "{path:?} was written outside the destination"
                );
            }
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
}

//! Drift (SPEC §11 `verify`): the installed tree as re-read from the
//! container, compared with what its receipt says was installed; and the
//! same file-level comparison between a receipt and a staged tree (§11
//! `update`).

use std::collections::BTreeMap;

use crate::domain::digest::{FileDigest, TreeDigest, tree_digest};

/// Each path list of a [`Drift`] holds at most this many paths.
pub const MAX_DRIFT_PATHS: usize = 100;

/// A plugin directory as read back from the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledTree {
    /// Every regular file read, with its SHA-256.
    pub files: Vec<FileDigest>,
    /// Entries that are neither regular files nor directories (symlinks,
    /// FIFOs, devices, hard links): never read, never followed.
    pub others: Vec<String>,
    /// False when the read stopped at a bound (bytes, entries): the tree
    /// is larger than any staged plugin, and what was not read is unknown.
    pub complete: bool,
}

/// What the receipt says was installed.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub digest: &'a TreeDigest,
    /// `None` on a receipt from before files were recorded: only the
    /// digests can be compared then.
    pub files: Option<&'a [FileDigest]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftStatus {
    /// The directory holds exactly the files the receipt names.
    Ok,
    /// The directory differs from the receipt.
    Modified,
    /// A receipt, no directory.
    Missing,
    /// A directory, no receipt.
    Untracked,
}

impl DriftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Modified => "modified",
            Self::Missing => "missing",
            Self::Untracked => "untracked",
        }
    }
}

/// The answer of `verify`: path lists sorted (bytewise), at most
/// [`MAX_DRIFT_PATHS`] each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub status: DriftStatus,
    pub expected_digest: Option<TreeDigest>,
    /// The `h1` digest of the tree read; `None` when there is no
    /// directory, or it was not read whole, or it holds entries a staged
    /// plugin cannot hold (then it has no `h1` digest).
    pub actual_digest: Option<TreeDigest>,
    /// Paths in the directory the receipt does not name.
    pub added: Vec<String>,
    /// Paths the receipt names that the directory does not hold.
    pub removed: Vec<String>,
    /// Paths in both whose content differs, or that are no longer
    /// regular files.
    pub changed: Vec<String>,
    /// A path list was cut at [`MAX_DRIFT_PATHS`], or the tree was not
    /// read whole (then `removed` is unknown and left empty).
    pub truncated: bool,
}

/// Compares the receipt with the directory; `None` when there is neither
/// (the plugin is not installed at all).
pub fn compare_installed(
    expected: Option<Expected<'_>>,
    actual: Option<&InstalledTree>,
) -> Option<Drift> {
    let actual_digest = actual
        .filter(|tree| tree.complete && tree.others.is_empty())
        .map(|tree| tree_digest(&tree.files));
    let mut drift = Drift {
        status: DriftStatus::Ok,
        expected_digest: expected.map(|e| e.digest.clone()),
        actual_digest,
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        truncated: false,
    };
    let (expected, actual) = match (expected, actual) {
        (None, None) => return None,
        (Some(_), None) => {
            drift.status = DriftStatus::Missing;
            return Some(drift);
        }
        (None, Some(_)) => {
            drift.status = DriftStatus::Untracked;
            return Some(drift);
        }
        (Some(expected), Some(actual)) => (expected, actual),
    };
    match expected.files {
        Some(files) => diff_paths(files, actual, &mut drift),
        // An old receipt: only whether the digests agree is known.
        None => drift.truncated = !actual.complete,
    }
    let same = drift.actual_digest.as_ref() == Some(expected.digest)
        && drift.added.is_empty()
        && drift.removed.is_empty()
        && drift.changed.is_empty();
    if !same {
        drift.status = DriftStatus::Modified;
    }
    Some(drift)
}

fn diff_paths(expected: &[FileDigest], actual: &InstalledTree, drift: &mut Drift) {
    let diff = diff_trees(expected, &actual.files, &actual.others, actual.complete);
    drift.added = diff.added;
    drift.removed = diff.removed;
    drift.changed = diff.changed;
    drift.truncated = diff.truncated;
}

/// The paths two trees differ by: sorted (bytewise), at most
/// [`MAX_DRIFT_PATHS`] each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathDiff {
    /// Paths only the second tree holds.
    pub added: Vec<String>,
    /// Paths only the first tree holds.
    pub removed: Vec<String>,
    /// Paths in both whose content differs (or that are no longer
    /// regular files).
    pub changed: Vec<String>,
    /// A list was cut at [`MAX_DRIFT_PATHS`], or the second tree was not
    /// read whole (then `removed` is unknown and left empty).
    pub truncated: bool,
}

/// The file-level diff from `before` to `after` (an update's: the
/// receipt's files against the staged tree's).
pub fn diff_files(before: &[FileDigest], after: &[FileDigest]) -> PathDiff {
    diff_trees(before, after, &[], true)
}

/// The one comparison rule: `expected` files against the files read
/// (`others`: entries that are not regular files; `complete`: whether the
/// read got everything).
fn diff_trees(
    expected: &[FileDigest],
    files: &[FileDigest],
    others: &[String],
    complete: bool,
) -> PathDiff {
    let mut wanted: BTreeMap<&str, &[u8; 32]> = expected
        .iter()
        .map(|f| (f.path.as_str(), &f.sha256))
        .collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for file in files {
        match wanted.remove(file.path.as_str()) {
            None => added.push(file.path.clone()),
            Some(sha) if *sha != file.sha256 => changed.push(file.path.clone()),
            Some(_) => {}
        }
    }
    for other in others {
        match wanted.remove(other.as_str()) {
            None => added.push(other.clone()),
            Some(_) => changed.push(other.clone()),
        }
    }
    // What was not read is unknown, not removed.
    let removed: Vec<String> = if complete {
        wanted.into_keys().map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    let mut truncated = !complete;
    PathDiff {
        added: capped(added, &mut truncated),
        removed: capped(removed, &mut truncated),
        changed: capped(changed, &mut truncated),
        truncated,
    }
}

fn capped(mut paths: Vec<String>, truncated: &mut bool) -> Vec<String> {
    paths.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    paths.dedup();
    if paths.len() > MAX_DRIFT_PATHS {
        paths.truncate(MAX_DRIFT_PATHS);
        *truncated = true;
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::sha256;

    fn file(path: &str, content: &str) -> FileDigest {
        FileDigest {
            path: path.into(),
            sha256: sha256(content.as_bytes()),
        }
    }

    fn tree(files: &[FileDigest]) -> InstalledTree {
        InstalledTree {
            files: files.to_vec(),
            others: Vec::new(),
            complete: true,
        }
    }

    fn installed() -> Vec<FileDigest> {
        vec![
            file("plugin.yaml", "v1"),
            file("rules/a.md", "a"),
            file("z", "z"),
        ]
    }

    fn check(files: &[FileDigest], actual: &InstalledTree) -> Drift {
        let digest = tree_digest(files);
        compare_installed(
            Some(Expected {
                digest: &digest,
                files: Some(files),
            }),
            Some(actual),
        )
        .unwrap()
    }

    #[test]
    fn the_same_files_in_any_order_are_ok_with_equal_digests() {
        let files = installed();
        let mut reversed = files.clone();
        reversed.reverse();
        let drift = check(&files, &tree(&reversed));
        assert_eq!(drift.status, DriftStatus::Ok);
        assert_eq!(drift.actual_digest, drift.expected_digest);
        assert!(drift.added.is_empty() && drift.removed.is_empty() && drift.changed.is_empty());
        assert!(!drift.truncated);
    }

    #[test]
    fn an_edited_an_added_and_a_removed_file_are_each_named() {
        let files = installed();
        let actual = tree(&[
            file("plugin.yaml", "edited"),
            file("rules/a.md", "a"),
            file("rules/new.md", "n"),
        ]);
        let drift = check(&files, &actual);
        assert_eq!(drift.status, DriftStatus::Modified);
        assert_eq!(drift.changed, ["plugin.yaml"]);
        assert_eq!(drift.added, ["rules/new.md"]);
        assert_eq!(drift.removed, ["z"]);
        assert_ne!(drift.actual_digest, drift.expected_digest);
        assert_eq!(drift.actual_digest, Some(tree_digest(&actual.files)));
    }

    #[test]
    fn an_edited_root_manifest_json_is_a_change_though_the_digest_ignores_it() {
        let mut files = installed();
        files.push(file("manifest.json", "{}"));
        let mut actual = installed();
        actual.push(file("manifest.json", "{\"x\":1}"));
        let drift = check(&files, &tree(&actual));
        assert_eq!(drift.actual_digest, drift.expected_digest);
        assert_eq!(drift.status, DriftStatus::Modified);
        assert_eq!(drift.changed, ["manifest.json"]);
    }

    #[test]
    fn a_symlink_or_fifo_is_never_a_file_and_leaves_no_digest() {
        let files = installed();
        let actual = InstalledTree {
            files: vec![file("plugin.yaml", "v1"), file("rules/a.md", "a")],
            others: vec!["z".into(), "link".into()],
            complete: true,
        };
        let drift = check(&files, &actual);
        assert_eq!(drift.status, DriftStatus::Modified);
        assert_eq!(drift.changed, ["z"]);
        assert_eq!(drift.added, ["link"]);
        assert!(drift.removed.is_empty());
        assert_eq!(drift.actual_digest, None);
    }

    #[test]
    fn a_tree_read_only_in_part_is_modified_truncated_and_names_no_removal() {
        let files = installed();
        let actual = InstalledTree {
            files: vec![file("plugin.yaml", "v1"), file("huge", "…")],
            others: Vec::new(),
            complete: false,
        };
        let drift = check(&files, &actual);
        assert_eq!(drift.status, DriftStatus::Modified);
        assert!(drift.truncated);
        assert_eq!(drift.added, ["huge"]);
        assert!(drift.removed.is_empty(), "unknown, not removed");
        assert_eq!(drift.actual_digest, None);
    }

    #[test]
    fn path_lists_are_sorted_bytewise_and_cut_at_one_hundred() {
        let actual: Vec<FileDigest> = (0..150)
            .rev()
            .map(|i| file(&format!("f{i:03}"), "x"))
            .collect();
        let drift = check(&[], &tree(&actual));
        assert_eq!(drift.added.len(), MAX_DRIFT_PATHS);
        assert_eq!(drift.added.first().map(String::as_str), Some("f000"));
        assert_eq!(drift.added.last().map(String::as_str), Some("f099"));
        assert!(drift.truncated);
        let mut upper = vec![file("B", "x"), file("a", "x")];
        upper.reverse();
        assert_eq!(check(&[], &tree(&upper)).added, ["B", "a"]);
    }

    #[test]
    fn receipt_without_directory_is_missing_and_directory_without_receipt_untracked() {
        let files = installed();
        let digest = tree_digest(&files);
        let expected = Expected {
            digest: &digest,
            files: Some(&files),
        };
        let missing = compare_installed(Some(expected), None).unwrap();
        assert_eq!(missing.status, DriftStatus::Missing);
        assert_eq!(
            (missing.expected_digest, missing.actual_digest),
            (Some(digest.clone()), None)
        );
        let untracked = compare_installed(None, Some(&tree(&files))).unwrap();
        assert_eq!(untracked.status, DriftStatus::Untracked);
        assert_eq!(untracked.actual_digest, Some(digest));
        assert_eq!(untracked.expected_digest, None);
        assert_eq!(compare_installed(None, None), None);
    }

    #[test]
    fn an_update_diff_names_added_removed_and_changed_files_between_two_trees() {
        let before = installed();
        let after = vec![
            file("plugin.yaml", "v2"),
            file("rules/a.md", "a"),
            file("rules/b.md", "b"),
        ];
        let diff = diff_files(&before, &after);
        assert_eq!(diff.added, ["rules/b.md"]);
        assert_eq!(diff.removed, ["z"]);
        assert_eq!(diff.changed, ["plugin.yaml"]);
        assert!(!diff.truncated);
        assert_eq!(diff_files(&after, &after), PathDiff::default());
    }

    #[test]
    fn an_old_receipt_without_files_compares_digests_only() {
        let files = installed();
        let digest = tree_digest(&files);
        let old = Expected {
            digest: &digest,
            files: None,
        };
        let same = compare_installed(Some(old), Some(&tree(&files))).unwrap();
        assert_eq!(same.status, DriftStatus::Ok);
        let edited = compare_installed(Some(old), Some(&tree(&[file("z", "other")]))).unwrap();
        assert_eq!(edited.status, DriftStatus::Modified);
        assert!(edited.added.is_empty() && edited.removed.is_empty() && edited.changed.is_empty());
    }
}

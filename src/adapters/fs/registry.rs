//! `PLUGINS_DIR` as a [`PluginRegistry`] and a `local://` [`SourceResolver`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::adapters::fs::memo::{DigestMemo, RECENT, changed_at};
use crate::adapters::fs::tree::copy_tree;
use crate::adapters::fs::writer::StagingWriter;
use crate::domain::manifest::{MANIFEST_MAX_BYTES, Manifest};
use crate::domain::name::PluginName;
use crate::domain::source::{SpecError, parse_local_spec};
use crate::ports::BoxError;
use crate::ports::resolver::{
    Cancellation, FetchError, FetchLimits, Fetched, RevisionNow, SourceResolver, SpecCheck,
};
use crate::ports::staging::{InPlace, TreeCheck, WrittenFile};

/// The local registry: one directory per plugin under `root`.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    root: PathBuf,
}

impl LocalRegistry {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where plugin `name`'s directory is (or would be).
    pub fn plugin_dir(&self, name: &PluginName) -> PathBuf {
        self.root.join(name.as_str())
    }
}

/// Reads `plugin.yaml` of a plugin directory, bounded; any failure means
/// "no manifest" (SPEC §2 leniency).
pub(crate) fn read_manifest(dir: &Path, name: PluginName) -> Manifest {
    let path = dir.join("plugin.yaml");
    let bytes = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() <= MANIFEST_MAX_BYTES as u64 => {
            std::fs::read(&path).ok()
        }
        _ => None,
    };
    Manifest::from_yaml(name, bytes.as_deref())
}

/// What the registry directory holds: its plugins, sorted, and the
/// entries that are not plugins, each with why it was skipped.
pub(super) struct RegistryDir {
    pub plugins: Vec<PluginName>,
    pub skipped: Vec<(String, &'static str)>,
}

/// Reads the registry directory; `Ok(None)` when it is missing or not a
/// directory (a registry that is not there holds no plugins, SPEC §5).
/// Symlinked directories, files, hidden entries, names that are not UTF-8
/// and invalid plugin names are not plugins.
pub(super) fn read_registry_dir(root: &Path) -> std::io::Result<Option<RegistryDir>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut dir = RegistryDir {
        plugins: Vec::new(),
        skipped: Vec::new(),
    };
    for entry in entries {
        let entry = entry?;
        let raw_name = entry.file_name();
        let Some(name) = raw_name.to_str() else {
            dir.skipped.push((
                raw_name.to_string_lossy().into_owned(),
                "its name is not UTF-8",
            ));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // `file_type` does not follow symlinks: a symlinked directory is skipped.
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => {}
            Ok(_) => {
                dir.skipped.push((name.to_owned(), "it is not a directory"));
                continue;
            }
            Err(_) => {
                dir.skipped.push((name.to_owned(), "it cannot be read"));
                continue;
            }
        }
        match PluginName::parse_registry(name) {
            Ok(plugin) => dir.plugins.push(plugin),
            Err(_) => dir
                .skipped
                .push((name.to_owned(), "it is not a valid plugin name")),
        }
    }
    dir.plugins.sort();
    Ok(Some(dir))
}

/// What identifies a file's content without reading it: its device,
/// inode, mode, size, and modification and change times (nanoseconds).
pub(super) type FileStamp = (u64, u64, u32, u64, i64, i64, i64, i64);

pub(super) fn file_stamp(meta: &std::fs::Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    (
        meta.dev(),
        meta.ino(),
        meta.mode(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// A plugin directory as a walk of its metadata finds it.
pub(super) struct Survey {
    /// Hashes every entry's relative path, kind, size, mtime and ctime
    /// (nanoseconds) and inode, in walk order; symlinks and special files
    /// count too, so adding one changes the fingerprint (and staging then
    /// refuses it).
    pub fingerprint: String,
    /// The latest inode change time in the tree, the directories included.
    pub last_change: SystemTime,
}

pub(super) fn fingerprint_blocking(dir: &Path) -> std::io::Result<Option<String>> {
    Ok(survey_blocking(dir)?.map(|survey| survey.fingerprint))
}

/// Walks `dir` (never following a symlink); `None` when it is not a
/// directory.
pub(super) fn survey_blocking(dir: &Path) -> std::io::Result<Option<Survey>> {
    use sha2::{Digest as _, Sha256};
    let root = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    fn walk(
        dir: &Path,
        rel: &Path,
        hasher: &mut Sha256,
        last_change: &mut SystemTime,
    ) -> std::io::Result<()> {
        let mut children = std::fs::read_dir(dir.join(rel))?.collect::<Result<Vec<_>, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let rel_path = rel.join(child.file_name());
            let meta = std::fs::symlink_metadata(child.path())?;
            hasher.update(rel_path.as_os_str().as_encoded_bytes());
            // The inode change time is set by the kernel on every write,
            // rename or `utimes`: a rewrite that restores size and mtime
            // still changes the fingerprint.
            hasher.update(format!("\0{:?}\n", file_stamp(&meta)));
            *last_change = (*last_change).max(changed_at(&meta));
            if meta.is_dir() {
                walk(dir, &rel_path, hasher, last_change)?;
            }
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    let mut last_change = changed_at(&root);
    walk(dir, Path::new(""), &mut hasher, &mut last_change)?;
    Ok(Some(Survey {
        fingerprint: hex::encode(hasher.finalize()),
        last_change,
    }))
}

/// A registry plugin staged in place is unchanged while its fingerprint
/// (what downloads trust to skip re-hashing) is the one taken before it
/// was walked, and its recently changed files still hash as they did.
pub(super) struct Unchanged {
    dir: PathBuf,
    fingerprint: String,
    /// Files changed within [`RECENT`] of the fingerprint, with the
    /// SHA-256 staging found.
    recent: HashMap<String, [u8; 32]>,
}

impl Unchanged {
    /// The check that `dir` still has `fingerprint`, for a tree whose
    /// digest was remembered by it (so settled when remembered).
    pub(super) fn since(dir: PathBuf, fingerprint: &str) -> Self {
        Self {
            dir,
            fingerprint: fingerprint.to_owned(),
            recent: HashMap::new(),
        }
    }
}

impl TreeCheck for Unchanged {
    fn unchanged(&self) -> Result<bool, BoxError> {
        Ok(fingerprint_blocking(&self.dir)?.as_ref() == Some(&self.fingerprint))
    }

    fn expected_sha256(&self, path: &str) -> Option<[u8; 32]> {
        self.recent.get(path).copied()
    }

    fn settled(&self) -> bool {
        self.recent.is_empty()
    }
}

/// The files of `dir` whose inode changed within [`RECENT`] before
/// `fingerprinted` (or since), with their staged SHA-256: such a file may
/// have had a write in flight then, stamped before the fingerprint with
/// its bytes landing after, which no later fingerprint shows. A file that
/// can no longer be looked at has changed, which the fingerprint shows.
fn recent_files(
    dir: &Path,
    files: &[WrittenFile],
    fingerprinted: SystemTime,
) -> HashMap<String, [u8; 32]> {
    let since = fingerprinted.checked_sub(RECENT).unwrap_or(UNIX_EPOCH);
    files
        .iter()
        .filter_map(|file| {
            let meta = std::fs::symlink_metadata(dir.join(&file.path)).ok()?;
            (changed_at(&meta) >= since).then_some((file.path.clone(), file.sha256?))
        })
        .collect()
}

/// `local://<name>`: a copy of `<plugins-dir>/<name>/`, or (when the caller
/// reads trees in place) the directory itself, checked and hashed where it
/// lies, each file's digest memoised while its inode is unchanged.
#[derive(Debug, Clone)]
pub struct LocalResolver {
    registry: LocalRegistry,
    memo: Arc<DigestMemo>,
}

impl LocalResolver {
    pub fn new(registry: LocalRegistry) -> Self {
        Self::with_memo(registry, Arc::default())
    }

    /// A resolver whose trees staged in place use `memo`.
    pub fn with_memo(registry: LocalRegistry, memo: Arc<DigestMemo>) -> Self {
        Self { registry, memo }
    }
}

#[async_trait]
impl SourceResolver for LocalResolver {
    fn scheme(&self) -> &'static str {
        "local"
    }

    /// A registry directory has no revision: its content tells.
    async fn revision_now(
        &self,
        spec: &str,
        _cancel: &Cancellation,
    ) -> Result<RevisionNow, FetchError> {
        parse_local_spec(spec).map_err(|e| FetchError::Other(Box::new(e)))?;
        Ok(RevisionNow::ContentOnly)
    }

    fn check_spec(&self, spec: &str) -> Result<SpecCheck, SpecError> {
        parse_local_spec(spec).map(|_| SpecCheck { pinned: true })
    }

    async fn fetch(
        &self,
        spec: &str,
        dest: &Path,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let name = parse_local_spec(spec).map_err(|e| FetchError::Other(Box::new(e)))?;
        let src = self.registry.root.join(name.as_str());
        let dest = dest.to_path_buf();
        let limits = limits.clone();
        let memo = Arc::clone(&self.memo);
        tokio::task::spawn_blocking(move || {
            let writer = if limits.in_place {
                StagingWriter::in_place(&limits).with_memo(memo)
            } else {
                StagingWriter::new(&dest, &limits)
            };
            // The plugin directory itself must be a real directory: a symlink
            // here would stage files from anywhere on the host.
            match std::fs::symlink_metadata(&src) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => return Err(writer.symlink(b".")),
                Ok(_) => return Err(FetchError::NotFound),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(FetchError::NotFound);
                }
                Err(e) => return Err(FetchError::Other(Box::new(e))),
            }
            if !limits.in_place {
                return Ok(Fetched {
                    name: name.as_str().to_owned(),
                    tree: copy_tree(&src, writer)?,
                    revision: None,
                });
            }
            // Fingerprinted before the walk: any change from here on (to
            // what is walked, hashed, or later read by a delivery) shows in
            // the fingerprint the check takes after reading.
            let fingerprinted = SystemTime::now();
            let fingerprint = fingerprint_blocking(&src)
                .map_err(|e| FetchError::Other(Box::new(e)))?
                .ok_or(FetchError::NotFound)?;
            let mut tree = copy_tree(&src, writer)?;
            let recent = recent_files(&src, &tree.files, fingerprinted);
            tree.in_place = Some(InPlace {
                dir: src.clone(),
                check: Arc::new(Unchanged {
                    dir: src,
                    fingerprint,
                    recent,
                }),
            });
            Ok(Fetched {
                name: name.as_str().to_owned(),
                tree,
                revision: None,
            })
        })
        .await
        .map_err(|e| FetchError::Other(Box::new(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn registry_with(entries: &[&str]) -> (tempfile::TempDir, LocalRegistry) {
        let dir = tempfile::tempdir().unwrap();
        for entry in entries {
            let path = dir.path().join(entry);
            if entry.ends_with(".txt") {
                fs::write(&path, "not a plugin").unwrap();
            } else {
                fs::create_dir_all(&path).unwrap();
            }
        }
        let registry = LocalRegistry::new(dir.path());
        (dir, registry)
    }

    #[test]
    fn the_registry_directory_holds_valid_plugin_directories_only() {
        let (dir, _) = registry_with(&["zeta", "alpha", "Bad-Case", ".hidden", "file.txt"]);
        std::os::unix::fs::symlink(dir.path().join("alpha"), dir.path().join("linked")).unwrap();
        let found = read_registry_dir(dir.path()).unwrap().unwrap();
        let names: Vec<&str> = found.plugins.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        let mut skipped = found.skipped.clone();
        skipped.sort();
        assert_eq!(
            skipped,
            [
                ("Bad-Case".to_owned(), "it is not a valid plugin name"),
                ("file.txt".to_owned(), "it is not a directory"),
                ("linked".to_owned(), "it is not a directory"),
            ]
        );
    }

    #[test]
    fn the_fingerprint_changes_with_content_and_is_none_for_missing_plugins() {
        let (dir, _) = registry_with(&["demo/rules"]);
        fs::write(dir.path().join("demo/plugin.yaml"), "a").unwrap();
        let demo = dir.path().join("demo");
        let first = fingerprint_blocking(&demo).unwrap().unwrap();
        assert_eq!(
            fingerprint_blocking(&demo).unwrap(),
            Some(first.clone()),
            "stable"
        );
        fs::write(dir.path().join("demo/rules/new.md"), "b").unwrap();
        assert_ne!(fingerprint_blocking(&demo).unwrap(), Some(first));
        assert_eq!(
            fingerprint_blocking(&dir.path().join("missing")).unwrap(),
            None
        );
    }

    #[test]
    fn a_survey_reports_the_latest_change_anywhere_in_the_tree() {
        let (dir, _) = registry_with(&["demo/rules"]);
        let demo = dir.path().join("demo");
        let before = survey_blocking(&demo).unwrap().unwrap().last_change;
        // Past the clock tick of the first writes, so the next one is later.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(demo.join("rules/deep.md"), "x").unwrap();
        let after = survey_blocking(&demo).unwrap().unwrap().last_change;
        let written = changed_at(&fs::symlink_metadata(demo.join("rules/deep.md")).unwrap());
        assert!(after > before && after >= written, "{before:?} {after:?}");
    }

    #[test]
    fn a_missing_registry_directory_is_none() {
        assert!(
            read_registry_dir(Path::new("/nonexistent/plugins-dir"))
                .unwrap()
                .is_none()
        );
        let (dir, _) = registry_with(&["file.txt"]);
        assert!(
            read_registry_dir(&dir.path().join("file.txt"))
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_local_resolver_copies_a_plugin_and_returns_its_name() {
        let (dir, registry) = registry_with(&["demo/rules"]);
        fs::write(dir.path().join("demo/plugin.yaml"), "version: 1.0.0\n").unwrap();
        fs::write(dir.path().join("demo/rules/a.md"), "rule").unwrap();
        let resolver = LocalResolver::new(registry);
        assert_eq!(resolver.check_spec("demo"), Ok(SpecCheck { pinned: true }));
        assert_eq!(resolver.check_spec("Demo"), Err(SpecError::InvalidName));
        let dest = tempfile::tempdir().unwrap();
        let limits = FetchLimits::new(1024, 100);
        let fetched = resolver.fetch("demo", dest.path(), &limits).await.unwrap();
        assert_eq!(fetched.name, "demo");
        assert_eq!(fetched.tree.entries, 3);
        assert_eq!(
            fs::read_to_string(dest.path().join("rules/a.md")).unwrap(),
            "rule"
        );
        let missing = resolver.fetch("nope", dest.path(), &limits).await;
        assert!(matches!(missing, Err(FetchError::NotFound)));
    }

    fn in_place_limits(max_bytes: u64, max_entries: u64) -> FetchLimits {
        FetchLimits {
            in_place: true,
            ..FetchLimits::new(max_bytes, max_entries)
        }
    }

    #[tokio::test]
    async fn a_plugin_staged_in_place_is_hashed_where_it_lies_and_its_check_sees_any_change() {
        let (dir, registry) = registry_with(&["demo/rules"]);
        fs::write(dir.path().join("demo/plugin.yaml"), "version: 1.0.0\n").unwrap();
        fs::write(dir.path().join("demo/rules/a.md"), "rule").unwrap();
        let resolver = LocalResolver::new(registry);
        let dest = tempfile::tempdir().unwrap();
        let fetched = resolver
            .fetch("demo", dest.path(), &in_place_limits(1024, 100))
            .await
            .unwrap();
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0, "no copy");
        assert_eq!(fetched.tree.entries, 3);
        let place = fetched.tree.in_place.clone().unwrap();
        assert_eq!(place.dir, dir.path().join("demo"));
        let rule = fetched
            .tree
            .files
            .iter()
            .find(|f| f.path == "rules/a.md")
            .unwrap();
        assert_eq!(rule.sha256, Some(crate::domain::digest::sha256(b"rule")));
        assert!(place.check.unchanged().unwrap());
        // Written just now: a write could still have been in flight when
        // it was fingerprinted, so its bytes are what vouches for it.
        assert_eq!(
            place.check.expected_sha256("rules/a.md"),
            Some(crate::domain::digest::sha256(b"rule"))
        );
        assert_eq!(place.check.expected_sha256("rules/none.md"), None);

        // Rewritten with the same size: the inode change time moves.
        fs::write(dir.path().join("demo/rules/a.md"), "RULE").unwrap();
        assert!(!place.check.unchanged().unwrap(), "content rewritten");
        let place = fetch_place(&resolver).await;
        fs::write(dir.path().join("demo/rules/b.md"), "new").unwrap();
        assert!(!place.check.unchanged().unwrap(), "file added");
        let place = fetch_place(&resolver).await;
        fs::remove_file(dir.path().join("demo/rules/b.md")).unwrap();
        assert!(!place.check.unchanged().unwrap(), "file removed");
        let place = fetch_place(&resolver).await;
        fs::remove_dir_all(dir.path().join("demo")).unwrap();
        assert!(!place.check.unchanged().unwrap(), "plugin gone");
    }

    #[tokio::test]
    async fn a_plugin_staged_in_place_again_hashes_only_the_files_that_changed() {
        let (dir, registry) = registry_with(&["demo/rules"]);
        fs::write(dir.path().join("demo/plugin.yaml"), "version: 1.0.0\n").unwrap();
        fs::write(dir.path().join("demo/rules/a.md"), "rule").unwrap();
        fs::write(dir.path().join("demo/rules/b.md"), "other").unwrap();
        // Past the clock tick of the writes, so a later write gets a new ctime.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let memo = Arc::new(DigestMemo::new(100, std::time::Duration::ZERO));
        let resolver = LocalResolver::with_memo(registry, Arc::clone(&memo));
        let first = staged_digests(&resolver).await;
        assert_eq!(memo.hashed(), 3);
        assert_eq!(
            staged_digests(&resolver).await,
            first,
            "served from the memo"
        );
        assert_eq!(memo.hashed(), 3);

        fs::write(dir.path().join("demo/rules/a.md"), "RULE").unwrap();
        let sha = crate::domain::digest::sha256;
        let changed = staged_digests(&resolver).await;
        assert_eq!(memo.hashed(), 4, "only the rewritten file");
        assert_eq!(
            changed,
            [
                ("plugin.yaml".to_owned(), Some(sha(b"version: 1.0.0\n"))),
                ("rules/a.md".to_owned(), Some(sha(b"RULE"))),
                ("rules/b.md".to_owned(), Some(sha(b"other"))),
            ]
        );
    }

    /// Each file of `demo` staged in place with its digest, by path.
    async fn staged_digests(resolver: &LocalResolver) -> Vec<(String, Option<[u8; 32]>)> {
        let dest = tempfile::tempdir().unwrap();
        let fetched = resolver
            .fetch("demo", dest.path(), &in_place_limits(1024, 100))
            .await
            .unwrap();
        let mut files: Vec<_> = fetched
            .tree
            .files
            .into_iter()
            .map(|f| (f.path, f.sha256))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn only_files_changed_shortly_before_the_fingerprint_are_verified_by_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("new"), "n").unwrap();
        fs::write(dir.path().join("old"), "o").unwrap();
        let file = |path: &str| WrittenFile {
            path: path.to_owned(),
            len: 1,
            sha256: Some([path.len() as u8; 32]),
        };
        let files = [file("new"), file("old"), file("gone")];
        let now = SystemTime::now();
        let recent = recent_files(dir.path(), &files, now);
        assert_eq!(recent.len(), 2, "{recent:?}");
        assert!(recent.contains_key("new") && recent.contains_key("old"));
        // Fingerprinted long after the last change: nothing is recent.
        let later = recent_files(dir.path(), &files, now + RECENT * 2);
        assert!(later.is_empty(), "{later:?}");
    }

    async fn fetch_place(resolver: &LocalResolver) -> InPlace {
        let dest = tempfile::tempdir().unwrap();
        let fetched = resolver
            .fetch("demo", dest.path(), &in_place_limits(1024, 100))
            .await
            .unwrap();
        let place = fetched.tree.in_place.unwrap();
        assert!(place.check.unchanged().unwrap());
        place
    }

    #[tokio::test]
    async fn a_hostile_registry_plugin_is_refused_in_place_exactly_as_when_copied() {
        type Make = fn(&Path);
        let cases: [(&str, Make); 6] = [
            ("plugin contains a symlink: rules/link", |p| {
                std::os::unix::fs::symlink("/etc/passwd", p.join("rules/link")).unwrap()
            }),
            ("plugin contains a special file: rules/fifo", |p| {
                let status = std::process::Command::new("mkfifo")
                    .arg(p.join("rules/fifo"))
                    .status()
                    .unwrap();
                assert!(status.success());
            }),
            ("plugin contains a special file: hard", |p| {
                fs::hard_link(p.join("plugin.yaml"), p.join("hard")).unwrap()
            }),
            (r"plugin contains an unsafe path: bad\\name", |p| {
                fs::write(p.join("bad\\name"), "x").unwrap()
            }),
            ("staged plugin exceeds size limit", |p| {
                fs::write(p.join("big"), vec![0u8; 2048]).unwrap()
            }),
            ("staged plugin has too many entries", |p| {
                for i in 0..20 {
                    fs::write(p.join(format!("rules/{i}.md")), "x").unwrap();
                }
            }),
        ];
        for (message, make) in cases {
            let (dir, registry) = registry_with(&["demo/rules"]);
            fs::write(dir.path().join("demo/plugin.yaml"), "version: 1.0.0\n").unwrap();
            make(&dir.path().join("demo"));
            let resolver = LocalResolver::new(registry);
            for limits in [FetchLimits::new(1024, 10), in_place_limits(1024, 10)] {
                let dest = tempfile::tempdir().unwrap();
                let err = resolver
                    .fetch("demo", dest.path(), &limits)
                    .await
                    .unwrap_err();
                assert_eq!(err.to_string(), message, "in place: {}", limits.in_place);
            }
        }
        // The plugin directory itself.
        let (dir, registry) = registry_with(&["real"]);
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = LocalResolver::new(registry)
            .fetch("link", dest.path(), &in_place_limits(1024, 100))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "plugin contains a symlink: .");
    }

    #[tokio::test]
    async fn a_symlinked_plugin_directory_is_refused() {
        let (dir, registry) = registry_with(&["real"]);
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let limits = FetchLimits::new(1024, 100);
        let result = LocalResolver::new(registry)
            .fetch("link", dest.path(), &limits)
            .await;
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "plugin contains a symlink: .");
    }
}

//! [`RegistryIndex`]: the local registry (`PLUGINS_DIR`) kept in memory and
//! followed live, so a listing reads no file (SPEC §5 listings, issue 13).
//!
//! Each plugin's manifest is read once per change of its stamp (the inode,
//! size and times of its directory and of its `plugin.yaml`), never per
//! request; an unparsable manifest is kept as the bare name (SPEC §2).
//! Changes are found two ways:
//! - filesystem notifications (`notify`, inotify on Linux) name the plugins
//!   touched; they are looked at again after [`DEBOUNCE`];
//! - a re-scan of the whole directory every `rescan` interval, the safety
//!   net for notifications that are off, lost (queue overflow) or
//!   unavailable (watch limits, some network filesystems).
//!
//! So a listing never shows a plugin gone, or a manifest changed, more than
//! `rescan` plus one scan ago (about [`DEBOUNCE`] with notifications).
//!
//! Each plugin's fingerprint (its whole tree's metadata) is also followed,
//! to hand plugins that appeared or changed to packing ahead of time once
//! they have held still for [`RECENT`]. With notifications it is taken when
//! the plugin is touched; the re-scan takes it where the stamp moved, and
//! for [`SWEEP_PER_SCAN`] more plugins in turn (a change deep in a tree
//! whose notification was lost is found within `plugins / SWEEP_PER_SCAN`
//! re-scans). A download never trusts it: it takes its own.
//!
//! Memory: about 3 KB per plugin as measured for small manifests (the
//! [`Entry`], its place in the packing queue when packing is on, and the notification
//! watches' paths; benches/RESULTS.md), plus what its manifest holds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use notify::Watcher as _;
use tokio::sync::Notify;

use super::memo::{RECENT, changed_at};
use super::registry::{
    FileStamp, LocalRegistry, Unchanged, file_stamp, read_manifest, read_registry_dir,
    survey_blocking,
};
use crate::domain::digest::TreeDigest;
use crate::domain::manifest::Manifest;
use crate::domain::name::PluginName;
use crate::ports::registry::{Catalog, PluginRegistry, RegistryError};
use crate::ports::staging::TreeCheck;

/// How long a burst of notifications is gathered before the plugins it
/// names are looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(25);

/// Plugins whose fingerprint each re-scan takes besides those whose stamp
/// moved.
pub const SWEEP_PER_SCAN: usize = 256;

/// Plugin names a burst of notifications may name before the next look
/// covers the whole directory instead.
const DIRTY_MAX: usize = 4096;

/// How the index follows the directory.
#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    /// Use filesystem notifications (`PLUGIN_REGISTRY_WATCH`).
    pub watch: bool,
    /// Re-scan the whole directory this often (`PLUGIN_REGISTRY_RESCAN`).
    pub rescan: Duration,
    /// Queue changed plugins for [`PluginRegistry::next_changed`]: off when
    /// nothing packs ahead of time (`PLUGIN_REGISTRY_PREPACK=false`), so
    /// the queue holds nobody's work.
    pub queue_changes: bool,
}

/// What must not move for a plugin's indexed manifest to hold: its
/// directory's and its `plugin.yaml`'s inode, mode, size and times.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dir: FileStamp,
    manifest: Option<FileStamp>,
}

struct Entry {
    manifest: Arc<Manifest>,
    stamp: Stamp,
    /// False while the stamp is too recent to vouch for what was read (a
    /// write can land after its timestamp, or share it): read again.
    settled: bool,
    fingerprint: Option<String>,
}

/// What the notification thread hands the refresher.
#[derive(Default)]
struct Dirty {
    all: bool,
    names: HashSet<String>,
}

/// Shared by the index and its notification handler.
#[derive(Default)]
struct Inbox {
    dirty: Mutex<Dirty>,
    wake: Notify,
}

impl Inbox {
    fn dirty(&self) -> MutexGuard<'_, Dirty> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Dirty {
        std::mem::take(&mut *self.dirty())
    }

    /// Marks what `event` touched under `root`.
    fn note(&self, root: &Path, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "registry: notification error; re-scanning");
                self.dirty().all = true;
                self.wake.notify_one();
                return;
            }
        };
        // Opening and reading (ours too: scans, packing) change nothing;
        // closing a file written to does.
        if let notify::EventKind::Access(kind) = event.kind
            && kind != notify::event::AccessKind::Close(notify::event::AccessMode::Write)
        {
            return;
        }
        {
            let mut dirty = self.dirty();
            if event.need_rescan() {
                dirty.all = true;
            }
            for path in &event.paths {
                let first = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|rel| rel.components().next());
                match first.and_then(|c| c.as_os_str().to_str()) {
                    Some(name) if dirty.names.len() < DIRTY_MAX => {
                        dirty.names.insert(name.to_owned());
                    }
                    // The directory itself, or more names than worth
                    // tracking one by one.
                    _ => dirty.all = true,
                }
            }
        }
        self.wake.notify_one();
    }
}

/// Plugins that appeared or changed, each due once it has held still.
#[derive(Default)]
struct ChangedQueue {
    order: VecDeque<PluginName>,
    due: HashMap<PluginName, SystemTime>,
}

/// The notification watch and the identity of the directory it is on.
struct Watch {
    _watcher: notify::RecommendedWatcher,
    root_inode: (u64, u64),
}

/// What only the refresher touches.
#[derive(Default)]
struct State {
    entries: BTreeMap<PluginName, Entry>,
    generation: u64,
    watch: Option<Watch>,
    /// Whether watching failed for the directory of this identity (not
    /// retried until the directory is replaced).
    watch_failed_for: Option<(u64, u64)>,
    /// The sweep's position.
    sweep_after: Option<PluginName>,
    /// Entries already logged as skipped, so each is logged once.
    skipped_logged: HashSet<String>,
    missing_logged: bool,
}

/// The local registry, indexed and followed live (module docs).
pub struct RegistryIndex {
    registry: LocalRegistry,
    options: IndexOptions,
    catalog: RwLock<Result<Catalog, Arc<std::io::Error>>>,
    state: Mutex<State>,
    inbox: Arc<Inbox>,
    digests: Mutex<HashMap<PluginName, (String, TreeDigest)>>,
    changed: Mutex<ChangedQueue>,
    changed_wake: Notify,
    manifest_reads: AtomicU64,
    published: tokio::sync::watch::Sender<u64>,
}

impl RegistryIndex {
    /// Indexes `registry` now (the first listing is complete), then
    /// follows it on a task of the current runtime until the index is
    /// dropped.
    pub async fn open(registry: LocalRegistry, options: IndexOptions) -> Arc<Self> {
        let index = Arc::new(Self {
            registry,
            options,
            catalog: RwLock::new(Ok(Catalog::default())),
            state: Mutex::new(State::default()),
            inbox: Arc::default(),
            digests: Mutex::default(),
            changed: Mutex::default(),
            changed_wake: Notify::new(),
            manifest_reads: AtomicU64::new(0),
            published: tokio::sync::watch::channel(0).0,
        });
        let first = Arc::clone(&index);
        if let Err(e) = tokio::task::spawn_blocking(move || first.refresh(true)).await {
            tracing::error!(error = %e, "registry: first scan failed");
        }
        tokio::spawn(follow(Arc::downgrade(&index), index.inbox.clone(), options));
        index
    }

    /// How many times a `plugin.yaml` was read (tests: listings read none).
    pub fn manifest_reads(&self) -> u64 {
        self.manifest_reads.load(Ordering::Relaxed)
    }

    /// The generation of each catalog as it is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Whether filesystem notifications are on for the directory now.
    pub fn watching(&self) -> bool {
        self.state().watch.is_some()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) -> MutexGuard<'_, ChangedQueue> {
        self.changed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn digests(&self) -> MutexGuard<'_, HashMap<PluginName, (String, TreeDigest)>> {
        self.digests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One look: the whole directory, or the plugins notifications named.
    fn refresh(&self, everything: bool) {
        let mut state = self.state();
        let dirty = self.inbox.take();
        let before = state.generation;
        let mut changed = false;
        if everything || dirty.all {
            match self.scan_all(&mut state) {
                Ok(c) => changed = c,
                Err(e) => {
                    tracing::error!(
                        plugins_dir = %self.registry.root().display(),
                        error = %e,
                        "registry: cannot read PLUGINS_DIR; listings fail until it can be read"
                    );
                    *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Err(Arc::new(e));
                    return;
                }
            }
            self.keep_watching(&mut state);
        } else {
            let mut names: Vec<_> = dirty
                .names
                .iter()
                .filter_map(|n| PluginName::parse_registry(n).ok())
                .collect();
            names.sort();
            for name in names {
                changed |= self.look_at(&mut state, &name, true);
            }
        }
        let failed = self
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_err();
        if changed || failed || before == 0 {
            state.generation += 1;
            let plugins = state.entries.values().map(|e| e.manifest.clone()).collect();
            *self.catalog.write().unwrap_or_else(|e| e.into_inner()) =
                Ok(Catalog::new(state.generation, plugins));
            self.published.send_replace(state.generation);
        }
    }

    /// Looks at every plugin; true when the catalog changed.
    fn scan_all(&self, state: &mut State) -> std::io::Result<bool> {
        let root = self.registry.root();
        let Some(found) = read_registry_dir(root)? else {
            if !state.missing_logged {
                tracing::warn!(
                    plugins_dir = %root.display(),
                    "registry: PLUGINS_DIR is not a directory; listing no plugins"
                );
                state.missing_logged = true;
            }
            let changed = !state.entries.is_empty();
            let gone: Vec<_> = state.entries.keys().cloned().collect();
            for name in gone {
                self.forget(state, &name);
            }
            return Ok(changed);
        };
        state.missing_logged = false;
        let skipped: HashSet<String> = found.skipped.iter().map(|(n, _)| n.clone()).collect();
        for (entry, why) in &found.skipped {
            if !state.skipped_logged.contains(entry) {
                tracing::warn!(entry = %entry, "registry: skipping entry: {why}");
            }
        }
        state.skipped_logged = skipped;
        let present: HashSet<&PluginName> = found.plugins.iter().collect();
        let gone: Vec<_> = state
            .entries
            .keys()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for name in gone {
            self.forget(state, &name);
        }
        for name in &found.plugins {
            changed |= self.look_at(state, name, false);
        }
        self.sweep(state);
        Ok(changed)
    }

    /// Takes the fingerprint of the next [`SWEEP_PER_SCAN`] plugins.
    fn sweep(&self, state: &mut State) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = match state.sweep_after.take() {
            Some(after) => Excluded(after),
            None => Unbounded,
        };
        let mut names: Vec<PluginName> = state
            .entries
            .range((start, Unbounded))
            .take(SWEEP_PER_SCAN)
            .map(|(n, _)| n.clone())
            .collect();
        if names.len() < SWEEP_PER_SCAN {
            // Wrapped around: the rest from the start, at most once each.
            let more = SWEEP_PER_SCAN - names.len();
            let first = names.first().cloned();
            names.extend(
                state
                    .entries
                    .keys()
                    .take_while(|n| Some(*n) != first.as_ref())
                    .take(more)
                    .cloned(),
            );
        }
        state.sweep_after = names.last().cloned();
        for name in names {
            self.take_fingerprint(state, &name);
        }
    }

    /// Looks at plugin `name` again: its manifest when its stamp moved (or
    /// was too recent to trust), its fingerprint then or when `touched`.
    /// True when the catalog changed.
    fn look_at(&self, state: &mut State, name: &PluginName, touched: bool) -> bool {
        let dir = self.registry.plugin_dir(name);
        let dir_meta = match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => meta,
            // Gone, or no longer a directory (a symlink is not a plugin).
            _ => return self.forget(state, name),
        };
        let manifest_meta = std::fs::symlink_metadata(dir.join("plugin.yaml")).ok();
        let stamp = Stamp {
            dir: file_stamp(&dir_meta),
            manifest: manifest_meta.as_ref().map(file_stamp),
        };
        let current = state.entries.get(name);
        if current.is_some_and(|e| e.settled && e.stamp == stamp) {
            if touched {
                self.take_fingerprint(state, name);
            }
            return false;
        }
        let since = SystemTime::now()
            .checked_sub(RECENT)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let settled = changed_at(&dir_meta) < since
            && manifest_meta.as_ref().is_none_or(|m| changed_at(m) < since);
        self.manifest_reads.fetch_add(1, Ordering::Relaxed);
        let manifest = read_manifest(&dir, name.clone());
        let changed = current.is_none_or(|e| *e.manifest != manifest);
        let entry = state.entries.entry(name.clone()).or_insert_with(|| Entry {
            manifest: Arc::new(manifest.clone()),
            stamp: stamp.clone(),
            settled,
            fingerprint: None,
        });
        if changed {
            entry.manifest = Arc::new(manifest);
        }
        entry.stamp = stamp;
        entry.settled = settled;
        self.take_fingerprint(state, name);
        changed
    }

    /// Drops plugin `name`; true when it was indexed.
    fn forget(&self, state: &mut State, name: &PluginName) -> bool {
        self.digests().remove(name);
        let mut changed = self.changed();
        if changed.due.remove(name).is_some() {
            changed.order.retain(|n| n != name);
        }
        state.entries.remove(name).is_some()
    }

    /// Fingerprints plugin `name`; a new fingerprint queues it for packing
    /// once its tree has held still for [`RECENT`].
    fn take_fingerprint(&self, state: &mut State, name: &PluginName) {
        let Some(entry) = state.entries.get_mut(name) else {
            return;
        };
        let survey = match survey_blocking(&self.registry.plugin_dir(name)) {
            Ok(Some(survey)) => survey,
            // Gone or unreadable mid-walk: the next look settles it.
            Ok(None) | Err(_) => return,
        };
        if entry.fingerprint.as_deref() == Some(survey.fingerprint.as_str()) {
            return;
        }
        entry.fingerprint = Some(survey.fingerprint);
        if !self.options.queue_changes {
            return;
        }
        let due = (survey.last_change + RECENT).max(SystemTime::now());
        let mut changed = self.changed();
        if changed.due.insert(name.clone(), due).is_none() {
            changed.order.push_back(name.clone());
        }
        drop(changed);
        self.changed_wake.notify_one();
    }

    /// Starts (or restarts, for a replaced directory) the notification
    /// watch; without one, the re-scan alone follows the directory.
    fn keep_watching(&self, state: &mut State) {
        if !self.options.watch {
            return;
        }
        let root = self.registry.root();
        let inode = std::fs::metadata(root)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| (m.dev(), m.ino()));
        let Some(inode) = inode else {
            state.watch = None;
            return;
        };
        if state.watch.as_ref().is_some_and(|w| w.root_inode == inode)
            || state.watch_failed_for == Some(inode)
        {
            return;
        }
        state.watch = None;
        let inbox = Arc::clone(&self.inbox);
        let root_path: PathBuf = root.to_path_buf();
        let handler = move |event| inbox.note(&root_path, event);
        // Never follow a symlink out of the registry while adding watches.
        let config = notify::Config::default().with_follow_symlinks(false);
        let watched = notify::RecommendedWatcher::new(handler, config).and_then(|mut watcher| {
            watcher.watch(root, notify::RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        match watched {
            Ok(watcher) => {
                state.watch = Some(Watch {
                    _watcher: watcher,
                    root_inode: inode,
                });
                state.watch_failed_for = None;
            }
            Err(e) => {
                tracing::warn!(
                    plugins_dir = %root.display(),
                    error = %e,
                    rescan = ?self.options.rescan,
                    "registry: filesystem notifications unavailable; following PLUGINS_DIR by re-scanning only"
                );
                state.watch_failed_for = Some(inode);
            }
        }
    }
}

/// The refresher: a look at what notifications named after each burst,
/// and at everything every `rescan`; ends when the index is dropped.
async fn follow(index: Weak<RegistryIndex>, inbox: Arc<Inbox>, options: IndexOptions) {
    let mut rescan = tokio::time::interval(options.rescan);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    loop {
        let everything = tokio::select! {
            _ = rescan.tick() => true,
            _ = inbox.wake.notified() => {
                tokio::time::sleep(DEBOUNCE).await;
                false
            }
        };
        let Some(index) = index.upgrade() else { return };
        if tokio::task::spawn_blocking(move || index.refresh(everything))
            .await
            .is_err()
        {
            tracing::error!("registry: a scan panicked");
        }
    }
}

#[async_trait]
impl PluginRegistry for RegistryIndex {
    async fn list(&self) -> Result<Catalog, RegistryError> {
        match &*self.catalog.read().unwrap_or_else(|e| e.into_inner()) {
            Ok(catalog) => Ok(catalog.clone()),
            Err(e) => Err(RegistryError::Unavailable(Box::new(std::io::Error::new(
                e.kind(),
                e.to_string(),
            )))),
        }
    }

    async fn fingerprint(&self, name: &PluginName) -> Result<Option<String>, RegistryError> {
        let dir = self.registry.plugin_dir(name);
        tokio::task::spawn_blocking(move || survey_blocking(&dir))
            .await
            .map_err(|e| RegistryError::Unavailable(Box::new(e)))?
            .map(|survey| survey.map(|s| s.fingerprint))
            .map_err(|e| RegistryError::Unavailable(Box::new(e)))
    }

    fn plugin_dir(&self, name: &PluginName) -> PathBuf {
        self.registry.plugin_dir(name)
    }

    fn unchanged_since(&self, name: &PluginName, fingerprint: &str) -> Arc<dyn TreeCheck> {
        Arc::new(Unchanged::since(
            self.registry.plugin_dir(name),
            fingerprint,
        ))
    }

    fn known_digest(&self, name: &PluginName, fingerprint: &str) -> Option<TreeDigest> {
        self.digests()
            .get(name)
            .filter(|(fp, _)| fp == fingerprint)
            .map(|(_, digest)| digest.clone())
    }

    fn record_digest(&self, name: &PluginName, fingerprint: &str, digest: &TreeDigest) {
        self.digests()
            .insert(name.clone(), (fingerprint.to_owned(), digest.clone()));
    }

    async fn next_changed(&self) -> PluginName {
        loop {
            // Registered before looking, so a change queued meanwhile wakes it.
            let woken = self.changed_wake.notified();
            let wait = {
                let mut changed = self.changed();
                let now = SystemTime::now();
                let ready = changed
                    .order
                    .iter()
                    .position(|n| changed.due.get(n).is_some_and(|due| *due <= now));
                if let Some(at) = ready {
                    let name = changed.order.remove(at).expect("position is in range");
                    changed.due.remove(&name);
                    return name;
                }
                changed
                    .due
                    .values()
                    .min()
                    .and_then(|due| due.duration_since(now).ok())
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    fn changed_pending(&self) -> usize {
        self.changed().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tokio::time::Instant;

    /// A re-scan period no test waits out: what it sees came from
    /// notifications.
    const NEVER: Duration = Duration::from_secs(3600);
    /// How long a test waits for the index to catch up before failing.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn plugin(root: &Path, name: &str, version: &str) {
        fs::create_dir_all(root.join(name).join("rules")).unwrap();
        fs::write(
            root.join(name).join("plugin.yaml"),
            format!("version: {version}\n"),
        )
        .unwrap();
    }

    async fn open(root: &Path, watch: bool, rescan: Duration) -> Arc<RegistryIndex> {
        RegistryIndex::open(
            LocalRegistry::new(root),
            IndexOptions {
                watch,
                rescan,
                queue_changes: true,
            },
        )
        .await
    }

    /// `name@version` of every plugin listed now.
    fn listed(index: &RegistryIndex) -> Vec<String> {
        let catalog = index.catalog.read().unwrap().clone().unwrap();
        catalog
            .plugins
            .iter()
            .map(|m| format!("{}@{}", m.name, m.version))
            .collect()
    }

    /// Waits, catalog by catalog as they are published, until the listing
    /// is `expected`.
    async fn until_listed(index: &RegistryIndex, expected: &[&str]) {
        let mut published = index.subscribe();
        let give_up = Instant::now() + DEADLINE;
        loop {
            published.borrow_and_update();
            if listed(index) == expected {
                return;
            }
            if tokio::time::timeout_at(give_up, published.changed())
                .await
                .is_err()
            {
                panic!(
                    "not listed as {expected:?} within {DEADLINE:?}: {:?}",
                    listed(index)
                );
            }
        }
    }

    /// Adds, changes (same size, mtime restored), renames and removes
    /// plugins, each change listed in turn.
    async fn follows_every_kind_of_change(index: &RegistryIndex, root: &Path) {
        assert_eq!(listed(index), ["alpha@1.0.0"]);
        plugin(root, "beta", "2.0.0");
        until_listed(index, &["alpha@1.0.0", "beta@2.0.0"]).await;

        let yaml = root.join("alpha/plugin.yaml");
        let mtime = fs::metadata(&yaml).unwrap().modified().unwrap();
        fs::write(&yaml, "version: 1.0.1\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&yaml)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let after = fs::metadata(&yaml).unwrap();
        assert_eq!((after.len(), after.modified().unwrap()), (15, mtime));
        until_listed(index, &["alpha@1.0.1", "beta@2.0.0"]).await;

        fs::rename(root.join("beta"), root.join("gamma")).unwrap();
        until_listed(index, &["alpha@1.0.1", "gamma@2.0.0"]).await;

        fs::remove_dir_all(root.join("alpha")).unwrap();
        until_listed(index, &["gamma@2.0.0"]).await;
    }

    #[tokio::test]
    async fn notifications_carry_additions_changes_renames_and_removals_into_the_listing() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "alpha", "1.0.0");
        let index = open(root.path(), true, NEVER).await;
        assert!(index.watching());
        follows_every_kind_of_change(&index, root.path()).await;
    }

    #[tokio::test]
    async fn with_notifications_off_the_rescan_alone_catches_every_change() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "alpha", "1.0.0");
        let index = open(root.path(), false, Duration::from_millis(50)).await;
        assert!(!index.watching());
        follows_every_kind_of_change(&index, root.path()).await;
    }

    #[tokio::test]
    async fn a_listing_reads_no_manifest_and_a_broken_one_is_kept_as_its_name() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "good", "1.0.0");
        fs::create_dir_all(root.path().join("broken")).unwrap();
        fs::write(root.path().join("broken/plugin.yaml"), ": [unclosed\n").unwrap();
        let index = open(root.path(), true, NEVER).await;
        assert_eq!(index.manifest_reads(), 2);
        for _ in 0..1000 {
            let catalog = index.list().await.unwrap();
            assert_eq!(catalog.plugins.len(), 2);
        }
        assert_eq!(listed(&index), ["broken@", "good@1.0.0"]);
        assert_eq!(index.manifest_reads(), 2, "listings read no manifest");
    }

    #[tokio::test]
    async fn symlinks_in_the_registry_are_neither_listed_nor_followed_by_the_watch() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        plugin(outside.path(), "elsewhere", "6.6.6");
        plugin(root.path(), "alpha", "1.0.0");
        std::os::unix::fs::symlink(outside.path().join("elsewhere"), root.path().join("linked"))
            .unwrap();
        // Followed, this would put a watch on every directory of the host.
        std::os::unix::fs::symlink("/", root.path().join("alpha/rules/root")).unwrap();
        let index = open(root.path(), true, NEVER).await;
        assert!(index.watching());
        assert_eq!(listed(&index), ["alpha@1.0.0"]);
        // A change behind the symlink is not the registry's.
        plugin(outside.path(), "elsewhere", "7.7.7");
        plugin(root.path(), "beta", "1.0.0");
        until_listed(&index, &["alpha@1.0.0", "beta@1.0.0"]).await;
    }

    #[tokio::test]
    async fn a_registry_created_after_start_is_listed_and_then_watched() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("plugins");
        let index = open(&root, true, Duration::from_millis(50)).await;
        assert!(listed(&index).is_empty() && !index.watching());
        plugin(&root, "alpha", "1.0.0");
        until_listed(&index, &["alpha@1.0.0"]).await;
        let give_up = Instant::now() + DEADLINE;
        // Polls the refresher's next full scan, which starts the watch.
        while !index.watching() {
            assert!(Instant::now() < give_up, "never watched");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_plugin_is_handed_to_packing_once_it_has_held_still_and_again_when_it_changes() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "alpha", "1.0.0");
        let written = changed_at(&fs::metadata(root.path().join("alpha/plugin.yaml")).unwrap());
        let index = open(root.path(), true, NEVER).await;
        assert_eq!(index.changed_pending(), 1);
        let handed = tokio::time::timeout(DEADLINE, index.next_changed())
            .await
            .unwrap();
        assert_eq!(handed.as_str(), "alpha");
        assert!(
            SystemTime::now() >= written + RECENT,
            "handed out before it held still"
        );
        assert_eq!(index.changed_pending(), 0);

        fs::write(root.path().join("alpha/rules/new.md"), "x").unwrap();
        let handed = tokio::time::timeout(DEADLINE, index.next_changed())
            .await
            .unwrap();
        assert_eq!(handed.as_str(), "alpha", "a change deep in the tree");
    }

    #[tokio::test]
    async fn with_nothing_packing_ahead_of_time_no_change_is_queued() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "alpha", "1.0.0");
        let index = RegistryIndex::open(
            LocalRegistry::new(root.path()),
            IndexOptions {
                watch: true,
                rescan: NEVER,
                queue_changes: false,
            },
        )
        .await;
        plugin(root.path(), "beta", "1.0.0");
        until_listed(&index, &["alpha@1.0.0", "beta@1.0.0"]).await;
        assert_eq!(index.changed_pending(), 0);
    }

    #[tokio::test]
    async fn digests_are_remembered_by_fingerprint_and_forgotten_with_the_plugin() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "alpha", "1.0.0");
        let index = open(root.path(), true, NEVER).await;
        let name = PluginName::parse("alpha").unwrap();
        let fp = index.fingerprint(&name).await.unwrap().unwrap();
        let digest = crate::domain::digest::tree_digest(&[]);
        index.record_digest(&name, &fp, &digest);
        assert_eq!(index.known_digest(&name, &fp), Some(digest));
        assert_eq!(index.known_digest(&name, "other"), None);
        assert!(index.unchanged_since(&name, &fp).unchanged().unwrap());
        fs::remove_dir_all(root.path().join("alpha")).unwrap();
        until_listed(&index, &[]).await;
        assert_eq!(index.known_digest(&name, &fp), None);
    }
}

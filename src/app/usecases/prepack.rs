//! Packing ahead of time (issue 13): when a registry plugin appears or
//! changes, it is staged, hashed and packed in the default download format
//! in the background, so its first download is a cached one.
//!
//! Bounded: one plugin at a time; each waits until no request holds a
//! fetch slot (request work goes first) and takes one slot like a request
//! would; it never evicts an archive (it stops while the cache is full).
//! A download still runs every policy check and takes the plugin's
//! fingerprint again: what was packed is served only while the plugin is
//! unchanged. `PLUGIN_REGISTRY_PREPACK=false` turns it off.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use super::download::{Downloader, Prepared};
use super::staging::FetchSlots;
use crate::domain::name::PluginName;
use crate::ports::registry::PluginRegistry;

/// How often a waiting prepack looks again for idle fetch slots.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// What packing one plugin ahead of time came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepackOutcome {
    Prepared(Prepared),
    /// Staging or packing refused or failed (the log says why); the
    /// plugin is tried again when it changes.
    Failed,
}

/// One plugin packed ahead of time (tests and benches observe these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepackEvent {
    pub plugin: PluginName,
    pub outcome: PrepackOutcome,
}

/// The background packer.
#[derive(Clone)]
pub struct Prepacker {
    pub(super) download: Downloader,
    pub(super) registry: Arc<dyn PluginRegistry>,
    pub(super) slots: FetchSlots,
    pub(super) enabled: bool,
    pub(super) in_progress: Arc<AtomicUsize>,
    pub(super) events: broadcast::Sender<PrepackEvent>,
}

impl Prepacker {
    /// Whether packing ahead of time is on (`PLUGIN_REGISTRY_PREPACK`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Plugins waiting to be packed ahead of time, or being packed.
    pub fn pending(&self) -> usize {
        if !self.enabled {
            return 0;
        }
        self.registry.changed_pending() + self.in_progress.load(Ordering::Relaxed)
    }

    /// Every plugin packed ahead of time from now on, with its outcome.
    pub fn subscribe(&self) -> broadcast::Receiver<PrepackEvent> {
        self.events.subscribe()
    }

    /// Works through the plugins that appear or change, one at a time,
    /// for as long as the returned future is polled.
    pub async fn run(&self) {
        if !self.enabled {
            return;
        }
        loop {
            let plugin = self.registry.next_changed().await;
            self.in_progress.fetch_add(1, Ordering::Relaxed);
            let outcome = self.prepack(&plugin).await;
            self.in_progress.fetch_sub(1, Ordering::Relaxed);
            // Nobody listening is fine.
            let _ = self.events.send(PrepackEvent { plugin, outcome });
        }
    }

    /// Packs `plugin` once no request holds a fetch slot.
    pub async fn prepack(&self, plugin: &PluginName) -> PrepackOutcome {
        while !self.slots.idle() {
            tokio::time::sleep(IDLE_POLL).await;
        }
        match self.download.prepare(plugin).await {
            Ok(prepared) => {
                tracing::debug!(plugin = %plugin, outcome = ?prepared, "registry: packed ahead of time");
                PrepackOutcome::Prepared(prepared)
            }
            Err(e) => {
                tracing::info!(plugin = %plugin, error = %e, "registry: could not pack ahead of time");
                PrepackOutcome::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::usecases::Ports;
    use crate::ports::registry::MockPluginRegistry;

    #[tokio::test]
    async fn turned_off_it_waits_for_no_change_and_reports_nothing_pending() {
        let mut registry = MockPluginRegistry::new();
        registry.expect_next_changed().never();
        registry.expect_changed_pending().never();
        let app = Ports {
            registry: Arc::new(registry),
            ..Ports::default()
        }
        .into_app();
        assert!(!app.prepack.enabled());
        // Returns at once instead of waiting for changes.
        app.prepack.run().await;
        assert_eq!(app.prepack.pending(), 0);
    }
}

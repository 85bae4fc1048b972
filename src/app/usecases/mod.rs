//! The use cases: one module per capability, each a small struct holding
//! only the ports and policy values it needs, with methods named after
//! what they do. No HTTP type here: handlers in `app/http` parse a request,
//! call a use case, and map its answer (errors in `http::problem`).
//!
//! [`UseCases::build`] is the one place they are wired from [`Ports`] and
//! a [`Policy`]: the server, the unit-test harness and the integration
//! tests all go through it.

pub mod access;
pub mod allowlist;
pub mod audit;
pub mod compatibility;
mod container;
mod content;
pub mod download;
pub mod install;
pub mod installed;
pub mod outdated;
pub mod prepack;
pub mod readiness;
pub mod records;
pub mod registry;
pub mod staging;
pub mod tokens;
pub mod uninstall;
pub mod update;
pub mod verify;
pub mod workspaces;

#[cfg(test)]
mod test_fixtures;

use std::sync::Arc;
use std::time::Duration;

use crate::app::restart::Restarter;
use crate::domain::policy::AllowlistFailure;
use crate::domain::token::TokenHash;
use crate::ports::archives::ArchiveStore;
use crate::ports::audit::AuditLog;
use crate::ports::container::{ContainerEngine, TreeReadLimits, WorkspaceConfigs};
use crate::ports::coordination::{RestartQueue, WorkspaceLocks};
use crate::ports::receipts::ReceiptStore;
use crate::ports::registry::PluginRegistry;
use crate::ports::resolver::ResolverRegistry;
use crate::ports::staging::StagingArea;
use crate::ports::store::{AllowlistStore, StoreHealth, TokenStore, WorkspaceStore};

use self::access::Access;
use self::allowlist::{AllowlistGate, Allowlists};
use self::audit::{AuditRetention, AuditTrail, RETENTION_BATCH};
use self::compatibility::CompatibilityCheck;
use self::content::ContentResolver;
use self::download::Downloader;
use self::install::Installer;
use self::installed::InstalledPlugins;
use self::outdated::OutdatedCheck;
use self::prepack::Prepacker;
use self::readiness::ReadinessCheck;
use self::records::InstallRecords;
use self::registry::RegistryListing;
use self::staging::{FetchSlots, Stager, StagingLimits};
use self::tokens::Tokens;
use self::uninstall::Uninstaller;
use self::update::Updater;
use self::verify::Verifier;
use self::workspaces::Workspaces;

/// Every port the use cases reach, written once: the server fills it with
/// the real adapters, the tests with mocks or with the real ones and a few
/// swapped.
#[derive(Clone)]
pub struct Ports {
    pub workspaces: Arc<dyn WorkspaceStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub allowlists: Arc<dyn AllowlistStore>,
    pub store_health: Arc<dyn StoreHealth>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub audit: Arc<dyn AuditLog>,
    pub registry: Arc<dyn PluginRegistry>,
    pub resolvers: ResolverRegistry,
    pub staging: Arc<dyn StagingArea>,
    pub engine: Arc<dyn ContainerEngine>,
    pub configs: Arc<dyn WorkspaceConfigs>,
    pub archives: Arc<dyn ArchiveStore>,
    /// Exclusive holds on a workspace, across replicas (SPEC §12).
    pub locks: Arc<dyn WorkspaceLocks>,
    /// The pending restarts, shared by replicas (SPEC §12).
    pub restart_queue: Arc<dyn RestartQueue>,
}

/// The settings the use cases act on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Only the hash of the admin token is kept in memory.
    pub admin_token: TokenHash,
    pub body_max_bytes: u64,
    pub allow_tokenless_workspaces: bool,
    pub allowlist_failure: AllowlistFailure,
    /// Bounds fetching (and, for install, delivering) a plugin.
    pub fetch_timeout: Duration,
    /// Cap on a staged plugin, enforced while writing.
    pub max_dir_bytes: u64,
    /// Cap on a staged plugin's files and directories, enforced while writing.
    pub max_entries: u64,
    pub allow_unpinned: bool,
    /// Stagings and packings at once (`PLUGIN_MAX_CONCURRENT_FETCHES`).
    pub max_concurrent_fetches: usize,
    /// The disk each fetch slot may hold (`server::staging_disk_budget`).
    pub disk_per_fetch: u64,
    /// How long a restart waits for more changes (`PLUGIN_RESTART_DELAY`).
    pub restart_delay: Duration,
    /// Pack registry plugins ahead of time (`PLUGIN_REGISTRY_PREPACK`).
    pub prepack: bool,
    /// How long audit events are kept (`PLUGIN_AUDIT_RETENTION`).
    pub audit_retention: Duration,
    /// The status a failed request answers with, as its audit event
    /// records it (the HTTP layer's table).
    pub error_status: self::audit::StatusOf,
}

/// Every use case, wired; what the HTTP layer holds.
#[derive(Clone)]
pub struct UseCases {
    pub access: Access,
    pub install: Installer,
    pub update: Updater,
    pub uninstall: Uninstaller,
    pub download: Downloader,
    pub prepack: Prepacker,
    pub installed: InstalledPlugins,
    pub verify: Verifier,
    pub records: InstallRecords,
    pub outdated: OutdatedCheck,
    pub compatibility: CompatibilityCheck,
    pub registry: RegistryListing,
    pub workspaces: Workspaces,
    pub tokens: Tokens,
    pub allowlists: Allowlists,
    pub audit: AuditTrail,
    pub readiness: ReadinessCheck,
    retention: AuditRetention,
    body_max_bytes: u64,
    stager: Stager,
    restarts: Restarter,
}

impl UseCases {
    /// The composition: which use case gets which ports and policy values.
    pub fn build(ports: Ports, policy: Policy) -> Self {
        let locks = ports.locks;
        let restarts = Restarter::new(
            ports.engine.clone(),
            ports.workspaces.clone(),
            locks.clone(),
            ports.restart_queue,
            policy.restart_delay,
        );
        let stager = Stager::new(
            ports.resolvers.clone(),
            ports.staging.clone(),
            FetchSlots::new(policy.max_concurrent_fetches, policy.disk_per_fetch),
            StagingLimits {
                max_dir_bytes: policy.max_dir_bytes,
                max_entries: policy.max_entries,
                allow_unpinned: policy.allow_unpinned,
            },
        );
        let gate = AllowlistGate::new(ports.allowlists.clone(), policy.allowlist_failure);
        let audit = AuditTrail::new(ports.audit.clone(), policy.error_status);
        let content = ContentResolver {
            stager: stager.clone(),
            registry: ports.registry.clone(),
        };
        let download = Downloader {
            content: content.clone(),
            stager: stager.clone(),
            allowlist: gate.clone(),
            registry: ports.registry.clone(),
            archives: ports.archives,
            fetch_timeout: policy.fetch_timeout,
        };
        let installed = InstalledPlugins {
            engine: ports.engine.clone(),
            configs: ports.configs.clone(),
            receipts: ports.receipts.clone(),
            restarts: restarts.clone(),
        };
        let install = Installer {
            stager: stager.clone(),
            allowlist: gate.clone(),
            engine: ports.engine.clone(),
            configs: ports.configs.clone(),
            receipts: ports.receipts.clone(),
            audit: audit.clone(),
            restarts: restarts.clone(),
            locks: locks.clone(),
            fetch_timeout: policy.fetch_timeout,
        };
        Self {
            access: Access::new(
                ports.workspaces.clone(),
                ports.tokens.clone(),
                policy.admin_token,
                policy.allow_tokenless_workspaces,
            ),
            install: install.clone(),
            update: Updater {
                install,
                receipts: ports.receipts.clone(),
                audit: audit.clone(),
            },
            uninstall: Uninstaller {
                engine: ports.engine.clone(),
                configs: ports.configs.clone(),
                receipts: ports.receipts.clone(),
                audit: audit.clone(),
                restarts: restarts.clone(),
                locks: locks.clone(),
                fetch_timeout: policy.fetch_timeout,
            },
            verify: Verifier {
                engine: ports.engine.clone(),
                configs: ports.configs.clone(),
                receipts: ports.receipts.clone(),
                restarts: restarts.clone(),
                locks,
                limits: TreeReadLimits {
                    max_bytes: policy.max_dir_bytes,
                    max_entries: policy.max_entries,
                },
            },
            records: InstallRecords::new(ports.receipts.clone()),
            outdated: OutdatedCheck {
                receipts: ports.receipts.clone(),
                content,
                fetch_timeout: policy.fetch_timeout,
            },
            download: download.clone(),
            prepack: Prepacker {
                download,
                registry: ports.registry.clone(),
                slots: stager.slots().clone(),
                enabled: policy.prepack,
                in_progress: Default::default(),
                events: tokio::sync::broadcast::channel(64).0,
            },
            compatibility: CompatibilityCheck {
                installed: installed.clone(),
            },
            installed,
            registry: RegistryListing::new(ports.registry, ports.resolvers),
            workspaces: Workspaces::new(ports.workspaces.clone(), audit.clone()),
            tokens: Tokens::new(ports.workspaces, ports.tokens, audit.clone()),
            allowlists: Allowlists::new(ports.allowlists, audit.clone()),
            audit,
            readiness: ReadinessCheck::new(ports.store_health, ports.engine),
            retention: AuditRetention::new(ports.audit, policy.audit_retention, RETENTION_BATCH),
            body_max_bytes: policy.body_max_bytes,
            stager,
            restarts,
        }
    }

    /// The cap on a JSON request body (`PLUGIN_INSTALL_BODY_MAX_BYTES`).
    pub fn body_max_bytes(&self) -> u64 {
        self.body_max_bytes
    }

    /// The debounced restarts installs and uninstalls ask for: the server
    /// flushes them at shutdown, tests observe them.
    pub fn restarts(&self) -> &Restarter {
        &self.restarts
    }

    /// Audit retention (`PLUGIN_AUDIT_RETENTION`): the server runs its
    /// sweeps in the background.
    pub fn audit_retention(&self) -> &AuditRetention {
        &self.retention
    }

    /// The staging pipeline (SPEC §4) install and download run.
    pub fn staging(&self) -> &Stager {
        &self.stager
    }

    /// The per-workspace holds installs and uninstalls take.
    #[cfg(test)]
    pub(crate) fn locks(&self) -> &Arc<dyn WorkspaceLocks> {
        &self.install.locks
    }
}

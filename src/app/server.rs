//! Wiring: settings → adapters → ports → HTTP, and the server's life
//! (start-up checks, graceful shutdown).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::adapters::db::SeaOrmStore;
use crate::adapters::docker::DockerEngine;
use crate::adapters::fs::{
    FsArchiveStore, FsStaging, IndexOptions, LocalRegistry, LocalResolver, RegistryIndex,
};
use crate::adapters::git::GitResolver;
use crate::adapters::https::HttpsResolver;
use crate::app::http;
use crate::app::http::metrics::Metrics;
use crate::app::settings::Settings;
use crate::app::usecases::tokens::fresh_secret;
use crate::app::usecases::{Policy, Ports, UseCases};
use crate::domain::policy::AllowlistFailure;
use crate::domain::token::{SecretKind, TokenHash};
use crate::ports::resolver::ResolverRegistry;

/// Why the service could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read or write the admin token file {path}: {source}")]
    AdminToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token file {0} is empty: delete it to generate a new token")]
    EmptyAdminToken(PathBuf),
    #[error("cannot open the database (DATABASE_URL): {0}")]
    Database(String),
    #[error("cannot set up the container engine client (DOCKER_HOST): {0}")]
    Engine(String),
    #[error("cannot set up the git client: {0}")]
    Git(#[from] crate::adapters::git::GitSetupError),
    #[error("cannot prepare the directory {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the https resolver: {0}")]
    Https(#[from] crate::adapters::https::HttpsSetupError),
    #[error("cannot listen on {addr} (PLUGIN_LISTEN): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The admin token's hash: from `PLUGIN_ADMIN_TOKEN`, else from
/// `<data-dir>/admin-token`, generated (mode 0600) at first start.
fn admin_token(settings: &Settings) -> Result<TokenHash, StartupError> {
    if let Some(token) = &settings.admin_token {
        return Ok(TokenHash::of(token.expose()));
    }
    let path = settings.data_dir.join(ADMIN_TOKEN_FILE);
    let io = |source| StartupError::AdminToken {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) => {
            let secret = secret.trim();
            if secret.is_empty() {
                return Err(StartupError::EmptyAdminToken(path));
            }
            tracing::info!(path = %path.display(), "admin token read from file");
            Ok(TokenHash::of(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = fresh_secret(SecretKind::Admin);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            writeln!(file, "{secret}").map_err(io)?;
            tracing::info!(path = %path.display(), "generated an admin token; read it from this file");
            Ok(TokenHash::of(&secret))
        }
        Err(e) => Err(io(e)),
    }
}

fn create_dir(path: &Path) -> Result<(), StartupError> {
    std::fs::create_dir_all(path).map_err(|source| StartupError::DataDir {
        path: path.to_owned(),
        source,
    })
}

/// The disk one fetch slot may hold (ARCHITECTURE.md, "Disk"): its staged
/// tree (`max_dir_bytes`) and, beside it, one temporary file of the fetch
/// or packing: an https archive or git pack, or the archive packed from the
/// tree, each at most the tree plus its tar framing (headers, padding, long
/// names: 8 KiB an entry, at most the unpacker's own allowance) and 1 MiB
/// of compression overhead.
pub fn staging_disk_budget(max_dir_bytes: u64, max_entries: u64) -> u64 {
    let framing = max_entries
        .saturating_mul(8 * 1024)
        .saturating_add(1 << 20)
        .min(crate::adapters::fs::METADATA_ALLOWANCE);
    max_dir_bytes.saturating_mul(2).saturating_add(framing)
}

/// The use cases' settings: the admin token's hash (read, or generated at
/// first start) and the policy knobs.
pub fn policy(settings: &Settings) -> Result<Policy, StartupError> {
    create_dir(&settings.data_dir)?;
    Ok(Policy {
        admin_token: admin_token(settings)?,
        body_max_bytes: settings.body_max_bytes,
        allow_tokenless_workspaces: settings.allow_tokenless_workspaces,
        allowlist_failure: if settings.allowlist_fail_open {
            AllowlistFailure::Open
        } else {
            AllowlistFailure::Closed
        },
        fetch_timeout: settings.fetch_timeout,
        max_dir_bytes: settings.max_dir_bytes,
        max_entries: settings.max_entries,
        allow_unpinned: settings.allow_unpinned,
        max_concurrent_fetches: settings.max_concurrent_fetches,
        disk_per_fetch: staging_disk_budget(settings.max_dir_bytes, settings.max_entries),
        restart_delay: settings.restart_delay,
        prepack: settings.registry_prepack,
        audit_retention: settings.audit_retention,
        error_status: http::problem::status_of,
    })
}

/// The real adapters behind every port, from the settings.
pub async fn ports(settings: &Settings) -> Result<Ports, StartupError> {
    create_dir(&settings.data_dir)?;
    let store = Arc::new(
        SeaOrmStore::connect(&settings.database_url())
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "database connection failed");
                StartupError::Database(e.to_string())
            })?,
    );
    let registry = LocalRegistry::new(&settings.plugins_dir);
    let mut resolvers = ResolverRegistry::new();
    resolvers.register(Arc::new(LocalResolver::new(registry.clone())));
    let github = GitResolver::new(
        &settings.github_base_url,
        settings
            .github_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        settings.https_ca_file.as_deref(),
    )?;
    resolvers.register(Arc::new(github));
    resolvers.register(Arc::new(HttpsResolver::new(
        &settings.https_allowed_hosts,
        settings.https_ca_file.as_deref(),
    )?));
    let staging_root = settings.data_dir.join("staging");
    let staging = FsStaging::open(&staging_root).map_err(|source| StartupError::Staging {
        path: staging_root,
        source,
    })?;
    let cache_root = settings.data_dir.join("cache");
    let archives =
        FsArchiveStore::open(&cache_root, settings.cache_max_bytes).map_err(|source| {
            StartupError::Staging {
                path: cache_root,
                source,
            }
        })?;
    // The engine is reached lazily: a daemon that is down at start-up makes
    // the service not ready (and 503s), not unable to start.
    let docker = Arc::new(
        DockerEngine::new(settings.docker_host.as_deref(), settings.engine_timeout)
            .map_err(|e| StartupError::Engine(e.to_string()))?,
    );
    Ok(Ports {
        workspaces: store.clone(),
        tokens: store.clone(),
        allowlists: store.clone(),
        store_health: store.clone(),
        receipts: store.clone(),
        audit: store,
        registry: RegistryIndex::open(
            registry,
            IndexOptions {
                watch: settings.registry_watch,
                rescan: settings.registry_rescan,
            },
        )
        .await,
        resolvers,
        staging: Arc::new(staging),
        engine: docker.clone(),
        configs: docker,
        archives: Arc::new(archives),
    })
}

/// The use cases over the real adapters.
pub async fn use_cases(settings: &Settings) -> Result<UseCases, StartupError> {
    let policy = policy(settings)?;
    Ok(UseCases::build(ports(settings).await?, policy))
}

/// A bound, not yet serving, server.
pub struct Bound {
    listener: tokio::net::TcpListener,
    use_cases: Arc<UseCases>,
    cors_origins: Vec<String>,
    limits: http::transport::Limits,
    shutdown_grace: Duration,
}

impl Bound {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (SPEC
    /// §12), all within `PLUGIN_SHUTDOWN_GRACE` of the signal: `/readyz`
    /// answers 503 from the signal on, new connections are refused,
    /// requests in flight may finish, then restarts still pending are
    /// carried out; whatever is left at the end of the grace is cut (a
    /// restart cut or not reached is left for later).
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let grace = self.shutdown_grace;
        let restarts = self.use_cases.restarts().clone();
        let readiness = self.use_cases.readiness.clone();
        let (signalled, signal) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            shutdown.await;
            // Not ready before the listener closes: a probe never sees a
            // draining server as ready.
            readiness.shut_down();
            let _ = signalled.send(tokio::time::Instant::now());
        };
        // Packing ahead of time runs while the server serves.
        let prepack = self.use_cases.prepack.clone();
        let prepacking = tokio::spawn(async move { prepack.run().await });
        // Retention sweeps in the background for as long as the server
        // serves; requests never wait for it.
        let retention = tokio::spawn(self.use_cases.audit_retention().clone().run());
        let app = http::app(self.use_cases, &self.cors_origins, Metrics::new()?);
        let served = http::transport::serve(self.listener, app, self.limits, shutdown, grace)
            .await
            .map_err(StartupError::Serve);
        prepacking.abort();
        retention.abort();
        // A restart still pending is carried out before the process exits,
        // so a plugin installed just before shutdown is loaded; but never
        // past the grace.
        let deadline = signal
            .await
            .map_or_else(|_| tokio::time::Instant::now(), |at| at + grace);
        if tokio::time::timeout_at(deadline, restarts.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown grace period over: restarts not carried out are left for later"
            );
        }
        served
    }
}

/// Start-up: the use cases, then the listening socket.
pub async fn bind(settings: &Settings) -> Result<Bound, StartupError> {
    let use_cases = use_cases(settings).await?;
    bind_with(settings, Arc::new(use_cases)).await
}

/// Binds the listening socket for use cases already built (tests build
/// them from [`ports`] with some swapped, e.g. a store that fails on
/// demand).
pub async fn bind_with(
    settings: &Settings,
    use_cases: Arc<UseCases>,
) -> Result<Bound, StartupError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartupError::Listen {
            addr: settings.listen,
            source,
        })?;
    Ok(Bound {
        listener,
        use_cases,
        cors_origins: settings.cors_origins.clone(),
        limits: http::transport::Limits {
            header_read_timeout: settings.http_header_timeout,
            body_idle_timeout: settings.http_body_idle_timeout,
            max_connections: settings.http_max_connections,
        },
        shutdown_grace: settings.shutdown_grace,
    })
}

//! Settings (SPEC §9): environment variables with equal CLI flags, parsed
//! once at start-up; a bad value stops start-up naming the setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

/// A secret setting: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret(s.to_owned()))
}

/// `true`/`false`/`1`/`0` in any case; anything else is refused.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".into()),
    }
}

/// Humantime durations (`500ms`, `2s`, `5m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration like 500ms, 2s or 5m ({e})"))
}

fn parse_positive(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err("expected a positive whole number of bytes".into()),
        Ok(n) => Ok(n),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err("expected a positive whole number".into()),
        Ok(n) => Ok(n),
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("expected a duration above zero, like 500ms, 2s or 5m".into()),
        d => Ok(d),
    }
}

fn parse_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err("expected a positive whole number of connections".into()),
        Ok(n) => Ok(n),
    }
}

/// A count that also sizes an in-memory structure (a semaphore).
fn parse_small_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 4096".into()),
    }
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "https://".len() {
        Ok(s.to_owned())
    } else {
        Err("expected an http(s) URL such as https://github.com".into())
    }
}

/// Comma-separated lists, trimmed, empty items dropped.
fn list(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every setting of SPEC §9. Flags are the env var names in lower case
/// with dashes (`PLUGIN_LISTEN` is `--plugin-listen`).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "workspace-plugins",
    version,
    about = "Installs, removes and serves plugins for AI-agent workspaces"
)]
pub struct Settings {
    /// Address to listen on.
    #[arg(
        long = "plugin-listen",
        env = "PLUGIN_LISTEN",
        value_name = "PLUGIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Database URL (sqlite://… or postgres://…); default: a SQLite file in the data dir.
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<Secret>,

    /// Directory for the database, admin token, staging and cache.
    #[arg(
        long = "plugin-data-dir",
        env = "PLUGIN_DATA_DIR",
        value_name = "PLUGIN_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// The local plugin registry (one directory per plugin).
    #[arg(
        long = "plugins-dir",
        env = "PLUGINS_DIR",
        value_name = "PLUGINS_DIR",
        default_value = "./plugins"
    )]
    pub plugins_dir: PathBuf,

    /// Follow PLUGINS_DIR through filesystem notifications (the periodic
    /// re-scan runs either way).
    #[arg(long = "plugin-registry-watch", env = "PLUGIN_REGISTRY_WATCH", value_name = "PLUGIN_REGISTRY_WATCH", default_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub registry_watch: bool,

    /// Re-scan PLUGINS_DIR this often: the longest a listing can lag
    /// behind it when notifications are off or lost.
    #[arg(long = "plugin-registry-rescan", env = "PLUGIN_REGISTRY_RESCAN", value_name = "PLUGIN_REGISTRY_RESCAN", default_value = "2s", value_parser = parse_positive_duration)]
    pub registry_rescan: Duration,

    /// Pack registry plugins for download ahead of time, as they appear
    /// or change.
    #[arg(long = "plugin-registry-prepack", env = "PLUGIN_REGISTRY_PREPACK", value_name = "PLUGIN_REGISTRY_PREPACK", default_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub registry_prepack: bool,

    /// Docker engine address; default: the engine's default socket.
    #[arg(long = "docker-host", env = "DOCKER_HOST", value_name = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// Base URL of the git server for github:// sources.
    #[arg(long = "plugin-github-base-url", env = "PLUGIN_GITHUB_BASE_URL", value_name = "PLUGIN_GITHUB_BASE_URL", default_value = "https://github.com", value_parser = parse_base_url)]
    pub github_base_url: String,

    /// Token sent to the git server for private repositories.
    #[arg(long = "plugin-github-token", env = "PLUGIN_GITHUB_TOKEN", value_name = "PLUGIN_GITHUB_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub github_token: Option<Secret>,

    /// Hosts https:// sources may be fetched from (comma-separated).
    #[arg(
        long = "plugin-https-allowed-hosts",
        env = "PLUGIN_HTTPS_ALLOWED_HOSTS",
        value_name = "PLUGIN_HTTPS_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub https_allowed_hosts: Vec<String>,

    /// Extra PEM roots trusted for https and git fetches.
    #[arg(
        long = "plugin-https-ca-file",
        env = "PLUGIN_HTTPS_CA_FILE",
        value_name = "PLUGIN_HTTPS_CA_FILE"
    )]
    pub https_ca_file: Option<PathBuf>,

    /// Cap on every JSON request body, in bytes.
    #[arg(long = "plugin-install-body-max-bytes", env = "PLUGIN_INSTALL_BODY_MAX_BYTES", value_name = "PLUGIN_INSTALL_BODY_MAX_BYTES", default_value = "65536", value_parser = parse_positive)]
    pub body_max_bytes: u64,

    /// Deadline for fetching (and installing) a plugin.
    #[arg(long = "plugin-install-fetch-timeout", env = "PLUGIN_INSTALL_FETCH_TIMEOUT", value_name = "PLUGIN_INSTALL_FETCH_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub fetch_timeout: Duration,

    /// Cap on a staged plugin (sum of regular files), in bytes.
    #[arg(long = "plugin-install-max-dir-bytes", env = "PLUGIN_INSTALL_MAX_DIR_BYTES", value_name = "PLUGIN_INSTALL_MAX_DIR_BYTES", default_value = "104857600", value_parser = parse_positive)]
    pub max_dir_bytes: u64,

    /// Accept github sources without a pinned ref.
    #[arg(long = "plugin-allow-unpinned", env = "PLUGIN_ALLOW_UNPINNED", value_name = "PLUGIN_ALLOW_UNPINNED", default_value = "false", value_parser = parse_bool, action = ArgAction::Set)]
    pub allow_unpinned: bool,

    /// Allow plugins when the allowlist store fails (default: refuse).
    #[arg(long = "plugin-allowlist-fail-open", env = "PLUGIN_ALLOWLIST_FAIL_OPEN", value_name = "PLUGIN_ALLOWLIST_FAIL_OPEN", default_value = "false", value_parser = parse_bool, action = ArgAction::Set)]
    pub allowlist_fail_open: bool,

    /// Let workspaces without a live token be reached without a token.
    #[arg(long = "plugin-allow-tokenless-workspaces", env = "PLUGIN_ALLOW_TOKENLESS_WORKSPACES", value_name = "PLUGIN_ALLOW_TOKENLESS_WORKSPACES", default_value = "false", value_parser = parse_bool, action = ArgAction::Set)]
    pub allow_tokenless_workspaces: bool,

    /// Delay (debounce) before restarting a workspace after install/uninstall.
    #[arg(long = "plugin-restart-delay", env = "PLUGIN_RESTART_DELAY", value_name = "PLUGIN_RESTART_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub restart_delay: Duration,

    /// Origins allowed by CORS (comma-separated).
    #[arg(
        long = "plugin-cors-origins",
        env = "PLUGIN_CORS_ORIGINS",
        value_name = "PLUGIN_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:3000,http://localhost:3001"
    )]
    pub cors_origins: Vec<String>,

    /// Timeout of each container-engine call.
    #[arg(long = "plugin-engine-timeout", env = "PLUGIN_ENGINE_TIMEOUT", value_name = "PLUGIN_ENGINE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub engine_timeout: Duration,

    /// Size of the download cache under <data-dir>/cache, in bytes.
    #[arg(long = "plugin-cache-max-bytes", env = "PLUGIN_CACHE_MAX_BYTES", value_name = "PLUGIN_CACHE_MAX_BYTES", default_value = "1073741824", value_parser = parse_positive)]
    pub cache_max_bytes: u64,

    /// Cap on the files and directories of one staged plugin, any source.
    #[arg(long = "plugin-install-max-entries", env = "PLUGIN_INSTALL_MAX_ENTRIES", value_name = "PLUGIN_INSTALL_MAX_ENTRIES", default_value = "10000", value_parser = parse_count)]
    pub max_entries: u64,

    /// Stagings and packings at once; more wait a few seconds, then get 429.
    #[arg(long = "plugin-max-concurrent-fetches", env = "PLUGIN_MAX_CONCURRENT_FETCHES", value_name = "PLUGIN_MAX_CONCURRENT_FETCHES", default_value = "8", value_parser = parse_small_count)]
    pub max_concurrent_fetches: usize,

    /// Time a client has to send a request line and headers; also how long
    /// a kept-alive connection may wait for its next request.
    #[arg(long = "plugin-http-header-timeout", env = "PLUGIN_HTTP_HEADER_TIMEOUT", value_name = "PLUGIN_HTTP_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub http_header_timeout: Duration,

    /// Longest pause in a request body, or in a client's reading of a
    /// response, before the connection is closed.
    #[arg(long = "plugin-http-body-idle-timeout", env = "PLUGIN_HTTP_BODY_IDLE_TIMEOUT", value_name = "PLUGIN_HTTP_BODY_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub http_body_idle_timeout: Duration,

    /// Open client connections at most; more wait in the listen backlog.
    #[arg(long = "plugin-http-max-connections", env = "PLUGIN_HTTP_MAX_CONNECTIONS", value_name = "PLUGIN_HTTP_MAX_CONNECTIONS", default_value = "512", value_parser = parse_connections)]
    pub http_max_connections: usize,

    /// After SIGTERM or Ctrl-C: how long requests in flight (and due
    /// restarts) may take before they are cut and the process exits.
    #[arg(long = "plugin-shutdown-grace", env = "PLUGIN_SHUTDOWN_GRACE", value_name = "PLUGIN_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long audit events are kept; older ones are deleted in the background.
    #[arg(long = "plugin-audit-retention", env = "PLUGIN_AUDIT_RETENTION", value_name = "PLUGIN_AUDIT_RETENTION", default_value = "90d", value_parser = parse_positive_duration)]
    pub audit_retention: Duration,

    /// The admin token; generated into <data-dir>/admin-token when unset.
    #[arg(long = "plugin-admin-token", env = "PLUGIN_ADMIN_TOKEN", value_name = "PLUGIN_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub admin_token: Option<Secret>,
}

impl Settings {
    /// Lists cleaned of blanks and case (hosts compare case-insensitively).
    pub fn normalized(mut self) -> Self {
        self.https_allowed_hosts = list(&self.https_allowed_hosts)
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        self.cors_origins = list(&self.cors_origins);
        self
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("plugins.db").display()
            ),
        }
    }

    /// Logs the effective settings once, never a secret.
    pub fn log_effective(&self) {
        tracing::info!(
            listen = %self.listen,
            database = %redact_url(&self.database_url()),
            data_dir = %self.data_dir.display(),
            plugins_dir = %self.plugins_dir.display(),
            docker_host = self.docker_host.as_deref().unwrap_or("(engine default)"),
            github_base_url = %self.github_base_url,
            github_token = if self.github_token.is_some() { "(set)" } else { "(unset)" },
            https_allowed_hosts = ?self.https_allowed_hosts,
            https_ca_file = ?self.https_ca_file,
            body_max_bytes = self.body_max_bytes,
            fetch_timeout = %humantime::format_duration(self.fetch_timeout),
            max_dir_bytes = self.max_dir_bytes,
            allow_unpinned = self.allow_unpinned,
            allowlist_fail_open = self.allowlist_fail_open,
            allow_tokenless_workspaces = self.allow_tokenless_workspaces,
            restart_delay = %humantime::format_duration(self.restart_delay),
            registry_watch = self.registry_watch,
            registry_rescan = %humantime::format_duration(self.registry_rescan),
            registry_prepack = self.registry_prepack,
            cors_origins = ?self.cors_origins,
            engine_timeout = %humantime::format_duration(self.engine_timeout),
            cache_max_bytes = self.cache_max_bytes,
            max_entries = self.max_entries,
            max_concurrent_fetches = self.max_concurrent_fetches,

            http_header_timeout = %humantime::format_duration(self.http_header_timeout),
            http_body_idle_timeout = %humantime::format_duration(self.http_body_idle_timeout),
            http_max_connections = self.http_max_connections,
            shutdown_grace = %humantime::format_duration(self.shutdown_grace),
            audit_retention = %humantime::format_duration(self.audit_retention),
            admin_token = if self.admin_token.is_some() { "(set)" } else { "(generated file)" },
            "effective settings"
        );
    }
}

/// Removes the password of a `scheme://user:password@host/…` URL.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        let mut all = vec!["workspace-plugins"];
        all.extend_from_slice(args);
        Settings::try_parse_from(all)
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = parse(&[]).unwrap().normalized();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.body_max_bytes, 65536);
        assert_eq!(s.fetch_timeout, Duration::from_secs(300));
        assert_eq!(s.max_dir_bytes, 104_857_600);
        assert_eq!(s.restart_delay, Duration::from_secs(2));
        assert_eq!(s.audit_retention, Duration::from_secs(90 * 86400));
        assert_eq!(s.engine_timeout, Duration::from_secs(10));
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.cache_max_bytes, 1_073_741_824);
        assert_eq!(s.max_entries, 10_000);
        assert_eq!(s.max_concurrent_fetches, 8);

        assert_eq!(s.http_header_timeout, Duration::from_secs(30));
        assert_eq!(s.http_body_idle_timeout, Duration::from_secs(30));
        assert_eq!(s.http_max_connections, 512);
        assert!(!s.allow_unpinned && !s.allowlist_fail_open && !s.allow_tokenless_workspaces);
        assert!(s.registry_watch && s.registry_prepack);
        assert_eq!(s.registry_rescan, Duration::from_secs(2));
        assert!(s.https_allowed_hosts.is_empty());
        assert_eq!(
            s.cors_origins,
            ["http://localhost:3000", "http://localhost:3001"]
        );
        assert_eq!(s.github_base_url, "https://github.com");
        assert!(s.database_url().starts_with("sqlite://./data/plugins.db"));
    }

    #[test]
    fn booleans_take_true_false_1_0_in_any_case_and_nothing_else() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("False", false),
            ("0", false),
        ] {
            let s = parse(&["--plugin-allow-unpinned", value]).unwrap();
            assert_eq!(s.allow_unpinned, expected, "{value}");
        }
        for value in ["yes", "on", "", "2"] {
            let err = parse(&["--plugin-allow-unpinned", value])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("PLUGIN_ALLOW_UNPINNED"),
                "the message names the setting: {err}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases = [
            ("--plugin-listen", "nowhere", "PLUGIN_LISTEN"),
            (
                "--plugin-install-fetch-timeout",
                "soon",
                "PLUGIN_INSTALL_FETCH_TIMEOUT",
            ),
            (
                "--plugin-install-max-dir-bytes",
                "0",
                "PLUGIN_INSTALL_MAX_DIR_BYTES",
            ),
            (
                "--plugin-install-body-max-bytes",
                "-1",
                "PLUGIN_INSTALL_BODY_MAX_BYTES",
            ),
            (
                "--plugin-github-base-url",
                "ftp://x",
                "PLUGIN_GITHUB_BASE_URL",
            ),
            ("--plugin-admin-token", " ", "PLUGIN_ADMIN_TOKEN"),
            (
                "--plugin-install-max-entries",
                "0",
                "PLUGIN_INSTALL_MAX_ENTRIES",
            ),
            (
                "--plugin-max-concurrent-fetches",
                "lots",
                "PLUGIN_MAX_CONCURRENT_FETCHES",
            ),
            (
                "--plugin-max-concurrent-fetches",
                "0",
                "PLUGIN_MAX_CONCURRENT_FETCHES",
            ),
            (
                "--plugin-http-header-timeout",
                "0s",
                "PLUGIN_HTTP_HEADER_TIMEOUT",
            ),
            (
                "--plugin-http-body-idle-timeout",
                "later",
                "PLUGIN_HTTP_BODY_IDLE_TIMEOUT",
            ),
            (
                "--plugin-http-max-connections",
                "0",
                "PLUGIN_HTTP_MAX_CONNECTIONS",
            ),
            ("--plugin-shutdown-grace", "soon", "PLUGIN_SHUTDOWN_GRACE"),
            ("--plugin-shutdown-grace", "-1s", "PLUGIN_SHUTDOWN_GRACE"),
        ];
        for (flag, value, setting) in cases {
            let arg = format!("{flag}={value}");
            let err = parse(&[&arg]).unwrap_err().to_string();
            assert!(err.contains(setting), "{arg}: {err}");
        }
    }

    #[test]
    fn lists_are_trimmed_and_hosts_lower_cased() {
        let s = parse(&[
            "--plugin-https-allowed-hosts",
            " Example.COM, ,mirror.local ",
        ])
        .unwrap()
        .normalized();
        assert_eq!(s.https_allowed_hosts, ["example.com", "mirror.local"]);
    }

    #[test]
    fn secrets_never_show_in_debug_output_and_urls_lose_their_password() {
        let s = parse(&[
            "--plugin-admin-token",
            "hunter2",
            "--database-url",
            "postgres://u:pw@h/db",
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("pw@"),
            "{debug}"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }
}

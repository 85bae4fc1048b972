//! The container engine (SPEC §6): one source of truth for "is this
//! workspace's container running?", and the few operations install and
//! uninstall need inside it. Execs take argument vectors only: no shell
//! command is ever built from a name or any other input.

use std::path::Path;

use async_trait::async_trait;

use crate::domain::workspace::ContainerName;
use crate::ports::BoxError;

/// The three outcomes of a container lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Running; the engine's id for the container.
    Running { id: String },
    /// The container does not exist or is not running.
    Stopped,
    /// The engine could not answer (timeout, socket error, daemon down).
    /// Never to be treated as `Stopped`: callers must not take a
    /// destructive path on it.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine did not answer in time or could not be reached.
    #[error("container engine unavailable")]
    Unavailable(#[source] BoxError),
    /// The engine answered with an error (e.g. no such path).
    #[error("container engine error")]
    Other(#[source] BoxError),
}

/// What an exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A regular file read out of a container, with what it needs to be
/// written back unchanged in ownership and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFile {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFileError {
    /// No such file, or not a regular file.
    #[error("no such file")]
    NotFound,
    /// Larger than the caller's bound.
    #[error("file too large")]
    TooLarge,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The uid:gid the agent runs as; installed files belong to it.
pub const AGENT_UID: u64 = 1000;
pub const AGENT_GID: u64 = 1000;

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Whether the engine answers at all (readiness).
    async fn ping(&self) -> Result<(), EngineError>;

    /// The state of the named container. Errors and timeouts are
    /// `Unknown`, logged by the adapter as such (never as "stopped").
    async fn state(&self, container: &ContainerName) -> ContainerState;

    /// Copies the directory tree at `local_dir` into the container as the
    /// new directory `dest_dir` (absolute; its parent exists, it does not),
    /// every entry owned by 1000:1000. Only directories and regular files
    /// are sent.
    async fn copy_dir_in(
        &self,
        container_id: &str,
        local_dir: &Path,
        dest_dir: &str,
    ) -> Result<(), EngineError>;

    /// Reads a regular file of at most `max_bytes`.
    async fn read_file(
        &self,
        container_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<ContainerFile, ReadFileError>;

    /// Writes (replaces) a regular file with the given mode and owner,
    /// atomically: the path holds the old content or the new, never a part.
    async fn write_file(
        &self,
        container_id: &str,
        path: &str,
        file: &ContainerFile,
    ) -> Result<(), EngineError>;

    /// Runs `argv` (no shell unless argv names one with a constant script)
    /// and waits for it to end.
    async fn exec(&self, container_id: &str, argv: &[String]) -> Result<ExecOutput, EngineError>;

    /// Restarts the container.
    async fn restart(&self, container_id: &str) -> Result<(), EngineError>;
}

//! Runs one constant script in a container as the agent (`1000:1000`),
//! with an optional stdin stream and a bounded stdout (kept, or handed to
//! a sink as it arrives), under a deadline.
//! Three engine requests per script (create, start, inspect), whatever
//! the script does.

use std::io;
use std::pin::Pin;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{engine_error, no_such_container, other, status, timed_out};
use crate::domain::layout::{AGENT_GID, AGENT_UID};
use crate::ports::container::{ContainerId, EngineError};

/// What is kept of a script's stderr, for the log.
const STDERR_CAP: usize = 4 * 1024;

/// A constant script and its positional arguments (`$1`…): no shell
/// command is ever built from input.
pub(super) struct Script {
    pub text: &'static str,
    pub args: Vec<String>,
}

pub(super) enum Stdin {
    None,
    Bytes(Bytes),
    Stream(Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>),
}

/// How a started script ended, as far as it was seen.
#[derive(Debug)]
pub(super) enum Exit {
    /// It ran to the end with this exit code.
    Code(i64),
    /// It printed more than the caller's bound; it was not read on.
    TooLarge,
    /// The engine failed, or the deadline fired, before the end was seen.
    CutOff(EngineError),
}

#[derive(Debug)]
pub(super) struct Ran {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// All of stdin reached the script (and was closed).
    pub stdin_sent: bool,
}

/// Where a script's stdout goes, chunk by chunk, as it arrives.
pub(super) trait StdoutSink: Send {
    /// Takes the next chunk; false when the answer went past the caller's
    /// bound: the script is then not read on ([`Exit::TooLarge`]).
    fn take(&mut self, chunk: &[u8]) -> bool;
}

/// Keeps stdout in memory, up to a cap.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
}

impl StdoutSink for Capped {
    fn take(&mut self, chunk: &[u8]) -> bool {
        if self.bytes.len() + chunk.len() > self.cap {
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }
}

/// Runs `script` in `container`, keeping at most `stdout_cap` bytes of
/// its stdout. `Err` means it never started (nothing happened in the
/// container); once started, every outcome is a [`Ran`].
pub(super) async fn run_script(
    docker: &Docker,
    container: &ContainerId,
    script: &Script,
    stdin: Stdin,
    stdout_cap: usize,
    deadline: Instant,
    timeout: std::time::Duration,
) -> Result<Ran, EngineError> {
    let mut stdout = Capped {
        bytes: Vec::new(),
        cap: stdout_cap,
    };
    let mut ran = run_script_into(
        docker,
        container,
        script,
        stdin,
        &mut stdout,
        deadline,
        timeout,
    )
    .await?;
    ran.stdout = stdout.bytes;
    Ok(ran)
}

/// [`run_script`], handing stdout to `sink` as it arrives instead of
/// keeping it (the returned [`Ran`] has an empty `stdout`).
pub(super) async fn run_script_into(
    docker: &Docker,
    container: &ContainerId,
    script: &Script,
    stdin: Stdin,
    sink: &mut dyn StdoutSink,
    deadline: Instant,
    timeout: std::time::Duration,
) -> Result<Ran, EngineError> {
    let mut cmd = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        script.text.to_owned(),
        "sh".to_owned(),
    ];
    cmd.extend(script.args.iter().cloned());
    let has_stdin = !matches!(stdin, Stdin::None);
    let config = ExecConfig {
        cmd: Some(cmd),
        attach_stdin: Some(has_stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        user: Some(format!("{AGENT_UID}:{AGENT_GID}")),
        working_dir: Some("/".to_owned()),
        env: Some(vec!["LC_ALL=C".to_owned()]),
        ..Default::default()
    };
    let created = tokio::time::timeout_at(deadline, docker.create_exec(container.as_str(), config))
        .await
        .map_err(|_| timed_out("creating exec", timeout))?
        .map_err(|e| exec_error("creating exec", e))?;
    let started = tokio::time::timeout_at(
        deadline,
        docker.start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        ),
    )
    .await
    .map_err(|_| timed_out("starting exec", timeout))?
    .map_err(|e| exec_error("starting exec", e))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(other("exec started detached"));
    };

    let mut ran = Ran {
        exit: Exit::Code(0),
        stdout: Vec::new(),
        stderr: String::new(),
        stdin_sent: !has_stdin,
    };
    let feed = feed(input, stdin);
    tokio::pin!(feed);
    let mut feeding = has_stdin;
    let ended = loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                break Err(timed_out("running exec", timeout));
            }
            fed = &mut feed, if feeding => {
                feeding = false;
                match fed {
                    Ok(()) => ran.stdin_sent = true,
                    // The script stopped reading (it failed, or exited
                    // early): its exit code tells the rest.
                    Err(e) => tracing::debug!(error = %e, "exec stdin not fully sent"),
                }
            }
            frame = output.next() => match frame {
                None => break Ok(()),
                Some(Err(e)) => break Err(engine_error("reading exec output", e)),
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    if !sink.take(&message) {
                        ran.exit = Exit::TooLarge;
                        return Ok(ran);
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    let room = STDERR_CAP.saturating_sub(ran.stderr.len());
                    let take = &message[..message.len().min(room)];
                    ran.stderr.push_str(&String::from_utf8_lossy(take));
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
            }
        }
    };
    if let Err(e) = ended {
        ran.exit = Exit::CutOff(e);
        return Ok(ran);
    }
    // The output ends when the process does, but the engine may record
    // the exit code a moment later.
    ran.exit = loop {
        let inspected =
            match tokio::time::timeout_at(deadline, docker.inspect_exec(&created.id)).await {
                Err(_) => break Exit::CutOff(timed_out("inspecting exec", timeout)),
                Ok(Err(e)) => break Exit::CutOff(exec_error("inspecting exec", e)),
                Ok(Ok(inspected)) => inspected,
            };
        match (inspected.running, inspected.exit_code) {
            (Some(true), _) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            (_, Some(code)) => break Exit::Code(code),
            (_, None) => break Exit::CutOff(other("exec ended without an exit code")),
        }
    };
    Ok(ran)
}

/// Sends all of `stdin`, then closes it so the script sees its end.
async fn feed(mut input: Pin<Box<dyn AsyncWrite + Send>>, stdin: Stdin) -> io::Result<()> {
    match stdin {
        Stdin::None => return Ok(()),
        Stdin::Bytes(bytes) => input.write_all(&bytes).await?,
        Stdin::Stream(mut chunks) => {
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(chunk) => input.write_all(&chunk).await?,
                    // The sender failed short of its end: stdin is closed
                    // now, so the script sees the end without a seal at
                    // once rather than waiting for the deadline.
                    Err(e) => {
                        let _ = input.shutdown().await;
                        return Err(e);
                    }
                }
            }
        }
    }
    input.shutdown().await
}

/// A container that is gone or not running answers 404/409 to an exec:
/// that is the container stopping under the operation, not an engine
/// failure.
fn exec_error(what: &str, e: bollard::errors::Error) -> EngineError {
    match status(&e) {
        Some(409) => EngineError::NotRunning,
        Some(404) if no_such_container(&e) => EngineError::NotRunning,
        _ => engine_error(what, e),
    }
}

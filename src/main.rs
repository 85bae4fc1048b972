//! The `workspace-plugins` binary: settings, logging, serve until Ctrl-C
//! or SIGTERM, then shut down within `PLUGIN_SHUTDOWN_GRACE` and exit 0.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use workspace_plugins::app::server;
use workspace_plugins::app::settings::Settings;

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("workspace-plugins: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // The server has drained within the grace; blocking work cut with its
    // request (a stalled fetch on the blocking pool) must not hold the exit.
    // Its staging leftovers are removed at the next start.
    runtime.shutdown_background();
    code
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = Settings::parse().normalized();
    settings.log_effective();
    let bound = match server::bind(&settings).await {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("workspace-plugins: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(addr) = bound.local_addr() {
        tracing::info!(%addr, "listening; API docs at http://{addr}/docs");
    }
    match bound.serve(shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("workspace-plugins: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

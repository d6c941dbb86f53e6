//! What every Tollgate service binary shares.
//!
//! - [`config::load`] — typed configuration: defaults, then a TOML file, then `TOLLGATE_*`
//!   environment variables, then `validate()` — all before anything connects.
//! - [`Secret`] — a value that never appears in `Debug`, `Display` or serialized output.
//! - [`init_tracing`] — structured logs (`RUST_LOG` filter; `TOLLGATE_LOG_FORMAT=json`).
//! - [`shutdown_signal`] — resolves on SIGTERM or Ctrl-C, for graceful shutdown.
//! - [`serve::serve`] — an axum app over HTTP/1.1 with a deadline for request headers.
//! - [`run_service`] — a service binary's `main`: tracing, its config, a runtime, its work, and
//!   the exit code (2 for a bad configuration, 1 for a failure).

pub mod config;
mod secret;
pub mod serve;

pub use secret::Secret;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

/// What a service's work fails with.
pub type BoxError = Box<dyn std::error::Error>;

/// Runs a service binary: starts tracing, loads its configuration from `file` and the
/// environment (a bad one is reported and exits with code 2 before anything connects), builds a
/// multi-threaded runtime and runs `work` on it; a failure is logged and exits with code 1.
pub fn run_service<C, F, Fut>(name: &str, file: Option<&Path>, work: F) -> ExitCode
where
    C: serde::de::DeserializeOwned + serde::Serialize + Default + config::Validate,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    init_tracing();
    let config: C = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the global tracing subscriber: human-readable by default, JSON lines when
/// `TOLLGATE_LOG_FORMAT=json`; level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

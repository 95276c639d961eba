//! `im-business`: the business service on its own.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use im_business::{server, settings::BusinessSettings};
use im_common::settings::BusSettings;
use tokio_util::sync::CancellationToken;

/// The business service: users and tokens, groups, roles, mute and blacklist, permission
/// checks; an HTTP/JSON API (OpenAPI at /openapi.json) and a gRPC API for app backends.
///
/// Settings come from the [business] and [bus] sections of the config file, then from
/// environment variables IM_BUSINESS__<KEY> and IM_BUS__<KEY> (e.g. IM_BUSINESS__APP_SECRET,
/// IM_BUSINESS__TOKEN_SECRET, IM_BUSINESS__HTTP_LISTEN, IM_BUSINESS__DATABASE,
/// IM_BUS__NATS_URL). Logs follow RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "im-business", version)]
struct Args {
    /// The TOML config file.
    #[arg(long, short, env = "IM_CONFIG")]
    config: Option<PathBuf>,
    /// Print the settings in force as JSON (secrets hidden) and exit.
    #[arg(long)]
    print_settings: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let defaults = BusinessSettings::default();
    let loaded = im_common::settings::load("business", &defaults, args.config.as_deref());
    let settings = match loaded.and_then(|s| s.validate().map(|()| s)) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("im-business: {error}");
            return ExitCode::from(2);
        }
    };
    if args.print_settings {
        let shown = BusinessSettings {
            app_secret: "<hidden>".into(),
            token_secret: "<hidden>".into(),
            ..settings
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let bus =
        match im_common::settings::load("bus", &BusSettings::default(), args.config.as_deref()) {
            Ok(bus) => bus,
            Err(error) => {
                eprintln!("im-business: {error}");
                return ExitCode::from(2);
            }
        };
    // Without NATS the service has an in-process bus to itself.
    let bus = match im_common::bus::connect(&bus).await {
        Ok(bus) => bus,
        Err(error) => {
            eprintln!("im-business: bus: {error}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    let running = match server::start(&settings, bus, shutdown.clone()).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("im-business: {error}");
            return ExitCode::from(1);
        }
    };
    println!(
        "im-business: HTTP on http://{}, gRPC on {}",
        running.http_addr, running.grpc_addr
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    running.stopped().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

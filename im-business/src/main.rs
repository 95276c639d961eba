//! `im-business`: the business service on its own.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use im_business::{server, settings::BusinessSettings};
use im_common::{
    process::{init_tracing, print_settings, wait_for_signal},
    settings::{ClusterSettings, Config, Rename, cluster},
};
use tokio_util::sync::CancellationToken;

/// The business service: users and tokens, groups, roles, mute and blacklist, permission
/// checks; an HTTP/JSON API (OpenAPI at /openapi.json) and a gRPC API for app backends.
///
/// Settings come from the [cluster] and [business] sections of the config file, then from
/// environment variables IM_CLUSTER__<KEY> and IM_BUSINESS__<KEY> (e.g.
/// IM_CLUSTER__TOKEN_SECRET, IM_CLUSTER__NATS_URL, IM_BUSINESS__APP_SECRET,
/// IM_BUSINESS__HTTP_LISTEN, IM_BUSINESS__DATABASE). Logs follow RUST_LOG (default: info).
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

fn settings(args: &Args) -> Result<(ClusterSettings, BusinessSettings), String> {
    let renames: Vec<Rename> = [cluster::RENAMES, im_business::settings::RENAMES].concat();
    let config = Config::load(args.config.as_deref(), &renames).map_err(|e| e.to_string())?;
    let cluster = config
        .section("cluster", &ClusterSettings::default())
        .map_err(|e| e.to_string())?;
    let business = config
        .section("business", &BusinessSettings::default())
        .map_err(|e| e.to_string())?;
    business.validate().map_err(|e| e.to_string())?;
    cluster.validate().map_err(|e| e.to_string())?;
    Ok((cluster, business))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    im_common::process::raise_fd_limit();
    let (cluster, settings) = match settings(&args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("im-business: {error}");
            return ExitCode::from(2);
        }
    };
    if args.print_settings {
        print_settings(&serde_json::json!({
            "cluster": cluster.shown(),
            "business": settings.shown(),
        }));
        return ExitCode::SUCCESS;
    }
    // Without NATS the service has an in-process bus to itself.
    let bus = match im_common::bus::connect(&cluster).await {
        Ok(bus) => bus,
        Err(error) => {
            eprintln!("im-business: bus: {error}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    let running = match server::start(&cluster, &settings, bus, shutdown.clone()).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("im-business: {error}");
            return ExitCode::from(1);
        }
    };
    println!(
        "im-business: HTTP on http://{}, gRPC on {}, operations on http://{}",
        running.http_addr, running.grpc_addr, running.ops_addr
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    running.stopped().await;
    ExitCode::SUCCESS
}

//! `im-server`: the whole system in one process. The core service (WebSocket gateway,
//! messaging, presence) and the business service (users, tokens, groups, moderation, HTTP and
//! gRPC APIs) share an in-process bus; messages and business data live in SQLite files under
//! the data directory. No outside service is needed.
//!
//! The same binary runs a cluster's nodes: `--services core` on each core node and
//! `--services business` on business nodes, sharing NATS (`[bus] nats_url`), Redis
//! (`[core] redis_url`) and a database (`database = "postgres://…"` or `"mysql://…"`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::{Parser, Subcommand};
use im_business::{Actor, Business, BusinessError, settings::BusinessSettings};
use im_common::{
    auth::{TokenIssuer, TokenVerifier},
    bus::LocalBus,
    settings::{BusSettings, Secret, load, without_password},
};
use im_server::settings::CoreSettings;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The IM system in one process: the WebSocket gateway at ws://127.0.0.1:7100/ws and the
/// business API at http://127.0.0.1:7101 (gRPC on 7102), with SQLite under the data directory.
///
/// Settings come from the [core], [business] and [bus] sections of the config file, then from
/// environment variables IM_CORE__<KEY>, IM_BUSINESS__<KEY> and IM_BUS__<KEY>. Unless
/// configured, the token and app secrets are generated on first start and kept in
/// <data-dir>/secrets.toml (a cluster's nodes must be given the same secrets). Logs follow
/// RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "im-server", version)]
struct Args {
    /// The TOML config file.
    #[arg(long, short, env = "IM_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Where the databases and generated secrets live.
    #[arg(long, env = "IM_DATA_DIR", default_value = "data", global = true)]
    data_dir: PathBuf,
    /// The services this process runs: core (gateway, messaging, presence), business, or both.
    #[arg(
        long,
        env = "IM_SERVICES",
        value_delimiter = ',',
        default_value = "core,business",
        global = true
    )]
    services: Vec<Service>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Service {
    Core,
    Business,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an access token for a user on a device, creating the user if it does not exist
    /// (for development; apps issue tokens through the business API).
    Token {
        /// The user id.
        user: String,
        /// The device the token is bound to.
        #[arg(long, default_value = "dev")]
        device: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Print the settings in force as JSON (secrets hidden) and exit.
    PrintSettings,
}

/// Secrets generated for a data directory on its first start.
#[derive(Debug, Serialize, Deserialize)]
struct Generated {
    token_secret: String,
    app_secret: String,
}

const SECRETS_FILE: &str = "secrets.toml";

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The data directory's generated secrets, created if missing.
fn generated_secrets(data_dir: &Path) -> Result<Generated, String> {
    let path = data_dir.join(SECRETS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let generated = Generated {
        token_secret: random_secret(),
        app_secret: random_secret(),
    };
    let text = toml::to_string(&generated).map_err(|e| e.to_string())?;
    write_private(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(generated)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Every service's settings: the databases under the data directory and the secrets shared
/// (generated when not configured, which only a process on an in-process bus may rely on).
fn settings(args: &Args) -> Result<(CoreSettings, BusinessSettings, BusSettings), String> {
    let core_defaults = CoreSettings {
        database: args.data_dir.join("messages.db").display().to_string(),
        ..CoreSettings::default()
    };
    let business_defaults = BusinessSettings {
        database: args.data_dir.join("business.db").display().to_string(),
        ..BusinessSettings::default()
    };
    let config = args.config.as_deref();
    let mut core = load("core", &core_defaults, config).map_err(|e| e.to_string())?;
    let mut business = load("business", &business_defaults, config).map_err(|e| e.to_string())?;
    let bus = load("bus", &BusSettings::default(), config).map_err(|e| e.to_string())?;
    let token_secret = match (core.token_secret.expose(), business.token_secret.expose()) {
        ("", "") => None,
        ("", shared) | (shared, "") => Some(shared.to_owned()),
        (a, b) if a == b => Some(a.to_owned()),
        _ => return Err("core.token_secret and business.token_secret differ".into()),
    };
    let runs_business = args.services.contains(&Service::Business);
    if bus.nats_url.is_empty() && !runs_business {
        return Err(
            "a core node without the business service in its process needs bus.nats_url (IM_BUS__NATS_URL)".into(),
        );
    }
    let missing = token_secret.is_none() || business.app_secret.expose().is_empty();
    // A cluster's nodes cannot each generate their own secrets.
    let generate = missing && bus.nats_url.is_empty();
    let unsecured =
        token_secret.is_none() || (runs_business && business.app_secret.expose().is_empty());
    if !bus.nats_url.is_empty() && unsecured {
        return Err(
            "with bus.nats_url set, every node needs the same token_secret (IM_CORE__TOKEN_SECRET), and business nodes the app_secret (IM_BUSINESS__APP_SECRET): none is generated".into(),
        );
    }
    if generate {
        let generated = generated_secrets(&args.data_dir)?;
        if business.app_secret.expose().is_empty() {
            business.app_secret = Secret::from(generated.app_secret.as_str());
        }
        let token = token_secret.unwrap_or(generated.token_secret);
        core.token_secret = Secret::from(token.as_str());
        business.token_secret = Secret::from(token.as_str());
    } else if let Some(token) = token_secret {
        core.token_secret = Secret::from(token.as_str());
        business.token_secret = Secret::from(token.as_str());
    }
    core.validate().map_err(|e| e.to_string())?;
    if runs_business {
        business.validate().map_err(|e| e.to_string())?;
    }
    Ok((core, business, bus))
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
    let (core, business, bus) = match settings(&args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("im-server: {error}");
            return ExitCode::from(2);
        }
    };
    match &args.command {
        Some(Command::Token {
            user,
            device,
            ttl_secs,
        }) => match token(&business, user, device, *ttl_secs).await {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("im-server token: {error}");
                ExitCode::from(1)
            }
        },
        Some(Command::PrintSettings) => {
            let shown = serde_json::json!({
                "bus": BusSettings { nats_url: without_password(&bus.nats_url) },
                "core": CoreSettings {
                    token_secret: "<hidden>".into(),
                    database: without_password(&core.database),
                    redis_url: without_password(&core.redis_url),
                    ..core
                },
                "business": BusinessSettings {
                    app_secret: "<hidden>".into(),
                    token_secret: "<hidden>".into(),
                    database: without_password(&business.database),
                    ..business
                },
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        None => run(&args, &core, &business, &bus).await,
    }
}

/// A token for `user` on `device`, creating the user if needed.
async fn token(
    settings: &BusinessSettings,
    user: &str,
    device: &str,
    ttl_secs: u64,
) -> Result<String, String> {
    let store = im_business::server::open_store(settings).await?;
    let business = Business::new(
        store,
        Arc::new(LocalBus::default()),
        TokenIssuer::new(settings.token_secret.expose().as_bytes()),
        settings.rules(),
        "im-server-cli",
    )
    .await
    .map_err(|e| e.to_string())?;
    match business.get_user(&Actor::App, user).await {
        Ok(_) => {}
        Err(BusinessError::UserNotFound(_)) => {
            business
                .upsert_user(&Actor::App, user, user, "", "{}")
                .await
                .map_err(|e| e.to_string())?;
        }
        Err(error) => return Err(error.to_string()),
    }
    let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (token, _expires) = business
        .issue_token(&Actor::App, user, device, ttl_ms)
        .await
        .map_err(|e| e.to_string())?;
    Ok(token)
}

async fn run(
    args: &Args,
    core: &CoreSettings,
    business: &BusinessSettings,
    bus: &BusSettings,
) -> ExitCode {
    let shutdown = CancellationToken::new();
    let bus = match im_common::bus::connect(bus).await {
        Ok(bus) => bus,
        Err(error) => {
            eprintln!("im-server: bus: {error}");
            return ExitCode::from(1);
        }
    };
    let running_business = if args.services.contains(&Service::Business) {
        match im_business::server::start(business, bus.clone(), shutdown.clone()).await {
            Ok(running) => Some(running),
            Err(error) => {
                eprintln!("im-server: business service: {error}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let running_core = if args.services.contains(&Service::Core) {
        let verifier = match TokenVerifier::new(core.token_secret.expose().as_bytes(), None) {
            Ok(verifier) => Arc::new(verifier),
            Err(error) => {
                eprintln!("im-server: {error}");
                return ExitCode::from(2);
            }
        };
        match im_server::server::start(core, bus, verifier, shutdown.clone()).await {
            Ok(running) => Some(running),
            Err(error) => {
                eprintln!("im-server: core service: {error}");
                shutdown.cancel();
                if let Some(running) = running_business {
                    running.stopped().await;
                }
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    println!("im-server {} is running", env!("CARGO_PKG_VERSION"));
    if let Some(running) = &running_core {
        println!(
            "  WebSocket     ws://{}/ws  (subprotocol im.v1; node {})",
            running.addr, core.node_id
        );
        println!(
            "  operations    http://{}  (/healthz, /readyz, /metrics)",
            running.http_addr
        );
    }
    if let Some(running) = &running_business {
        println!(
            "  business API  http://{}  (OpenAPI at /openapi.json; gRPC on {})",
            running.http_addr, running.grpc_addr
        );
        println!(
            "  data          {}  (app secret in {} unless configured)",
            args.data_dir.display(),
            args.data_dir.join(SECRETS_FILE).display()
        );
        println!(
            "  a token:      cargo run --bin im-server -- token alice   (prints a token for user alice)"
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    if let Some(running) = running_core {
        running.stopped().await;
    }
    if let Some(running) = running_business {
        running.stopped().await;
    }
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

//! `im-server`: the whole system in one process. The core service (WebSocket gateway,
//! messaging, presence) and the business service (users, tokens, groups, moderation, HTTP and
//! gRPC APIs) share an in-process bus; messages and business data live in SQLite files under
//! the data directory. No outside service is needed.
//!
//! The same binary runs a cluster's nodes: `--services core` on each core node and
//! `--services business` on business nodes, sharing NATS (`[cluster] nats_url`), Redis
//! (`[cluster] redis_url`) and a database (`database = "postgres://…"` or `"mysql://…"`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::{Parser, Subcommand};
use im_all::{Services, Settings, System};
use im_business::{Actor, Business, BusinessError, settings::BusinessSettings};
use im_common::{
    auth::TokenIssuer,
    bus::LocalBus,
    process::{init_tracing, print_settings, wait_for_signal},
    settings::{ClusterSettings, Config, Rename, Secret, cluster},
};
use im_server::settings::CoreSettings;
use serde::{Deserialize, Serialize};

/// The IM system in one process: the WebSocket gateway at ws://127.0.0.1:7100/ws and the
/// business API at http://127.0.0.1:7101 (gRPC on 7102), with SQLite under the data directory.
///
/// Settings come from the [cluster], [core] and [business] sections of the config file (and
/// their tables, such as [core.gateway]), then from environment variables IM_CLUSTER__<KEY>,
/// IM_CORE__<KEY> and IM_BUSINESS__<KEY> (IM_CORE__GATEWAY__IDLE_TIMEOUT=90s). Unless
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
fn settings(args: &Args) -> Result<Settings, String> {
    let core_defaults = CoreSettings {
        database: args.data_dir.join("messages.db").display().to_string(),
        ..CoreSettings::default()
    };
    let business_defaults = BusinessSettings {
        database: args.data_dir.join("business.db").display().to_string(),
        media_dir: args.data_dir.join("media"),
        ..BusinessSettings::default()
    };
    let renames: Vec<Rename> = [
        cluster::RENAMES,
        im_server::settings::RENAMES,
        im_business::settings::RENAMES,
    ]
    .concat();
    let config = Config::load(args.config.as_deref(), &renames).map_err(|e| e.to_string())?;
    let mut cluster: ClusterSettings = config
        .section("cluster", &ClusterSettings::default())
        .map_err(|e| e.to_string())?;
    let core = config
        .section("core", &core_defaults)
        .map_err(|e| e.to_string())?;
    let mut business = config
        .section("business", &business_defaults)
        .map_err(|e| e.to_string())?;
    let runs_business = args.services.contains(&Service::Business);
    if !cluster.distributed() && !runs_business {
        return Err(
            "a core node without the business service in its process needs cluster.nats_url (IM_CLUSTER__NATS_URL)".into(),
        );
    }
    let missing_app_secret = runs_business && business.app_secret.is_empty();
    if cluster.distributed() && (cluster.token_secret.is_empty() || missing_app_secret) {
        return Err(
            "with cluster.nats_url set, every node needs the same cluster.token_secret (IM_CLUSTER__TOKEN_SECRET), and business nodes the business.app_secret (IM_BUSINESS__APP_SECRET): none is generated".into(),
        );
    }
    // Only a process on an in-process bus may generate the secrets it lacks.
    if cluster.token_secret.is_empty() || business.app_secret.is_empty() {
        let generated = generated_secrets(&args.data_dir)?;
        if cluster.token_secret.is_empty() {
            cluster.token_secret = Secret::from(generated.token_secret.as_str());
        }
        if business.app_secret.is_empty() {
            business.app_secret = Secret::from(generated.app_secret.as_str());
        }
    }
    cluster.validate().map_err(|e| e.to_string())?;
    core.validate().map_err(|e| e.to_string())?;
    if runs_business {
        business.validate().map_err(|e| e.to_string())?;
    }
    Ok(Settings {
        cluster,
        core,
        business,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    im_common::process::raise_fd_limit();
    let settings = match settings(&args) {
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
        }) => match token(&settings, user, device, *ttl_secs).await {
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
                "cluster": settings.cluster.shown(),
                "core": CoreSettings {
                    database: im_common::settings::without_password(&settings.core.database),
                    ..settings.core
                },
                "business": settings.business.shown(),
            });
            print_settings(&shown);
            ExitCode::SUCCESS
        }
        None => run(&args, &settings).await,
    }
}

/// A token for `user` on `device`, creating the user if needed.
async fn token(
    settings: &Settings,
    user: &str,
    device: &str,
    ttl_secs: u64,
) -> Result<String, String> {
    let store = im_business::server::open_store(&settings.business)
        .await
        .map_err(|e| e.to_string())?;
    let business = Business::new(
        store,
        Arc::new(LocalBus::default()),
        TokenIssuer::new(settings.cluster.token_secret.expose().as_bytes()),
        settings.business.rules(),
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

async fn run(args: &Args, settings: &Settings) -> ExitCode {
    let bus = match im_common::bus::connect(&settings.cluster).await {
        Ok(bus) => bus,
        Err(error) => {
            eprintln!("im-server: bus: {error}");
            return ExitCode::from(1);
        }
    };
    let services = Services {
        core: args.services.contains(&Service::Core),
        business: args.services.contains(&Service::Business),
    };
    let system = match System::start(settings, services, bus).await {
        Ok(system) => system,
        Err(error) => {
            eprintln!("im-server: {error}");
            return ExitCode::from(1);
        }
    };
    let (running_core, running_business) = (&system.core, &system.business);
    println!("im-server {} is running", env!("CARGO_PKG_VERSION"));
    if let Some(running) = running_core {
        let scheme = if settings.core.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        println!(
            "  WebSocket     {scheme}://{}/ws  (subprotocol im.v1; node {})",
            running.addr, settings.cluster.node_id
        );
        println!(
            "  operations    http://{}  (/healthz, /readyz, /metrics)",
            running.http_addr
        );
    }
    if let Some(running) = running_business {
        let (scheme, grpc) = match settings.business.tls {
            Some(_) => ("https", "gRPC over TLS"),
            None => ("http", "gRPC"),
        };
        println!(
            "  business API  {scheme}://{}  (OpenAPI at /openapi.json; {grpc} on {}; its health and metrics on http://{})",
            running.http_addr, running.grpc_addr, running.ops_addr
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
    system.stop().await;
    ExitCode::SUCCESS
}

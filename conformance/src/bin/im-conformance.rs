//! `im-conformance`: runs the scenarios through a driver and the server checks.
//!
//! ```sh
//! im-conformance                                  # the embedded server, the Rust driver
//! im-conformance --url ws://host:7100/ws --api http://host:7101 --app-secret S \
//!                --driver ./my-driver --implementation swift
//! ```
//!
//! Prints one JSON line per scenario and check (or writes them to `--report`), then the summary
//! ending with `N passed, N failed`. Exits 1 if something failed that the baseline
//! (`conformance/baseline/<implementation>.json`) says passed; `--bless` rewrites the baseline.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use im_conformance::{Outcome, baseline_of, read_baseline, regressions, summary};

#[derive(Debug, Parser)]
#[command(name = "im-conformance", version)]
struct Args {
    /// The server's gateway; without it the runner starts the embedded server itself.
    #[arg(long)]
    url: Option<String>,
    /// The server's business HTTP API (with --url).
    #[arg(long)]
    api: Option<String>,
    /// The business API's app secret (with --url).
    #[arg(long, env = "IM_CONFORMANCE_APP_SECRET")]
    app_secret: Option<String>,
    /// The driver command (default: im-driver-rust next to this program).
    #[arg(long)]
    driver: Option<String>,
    /// The name of the implementation the driver drives (its baseline's name).
    #[arg(long, default_value = "rust")]
    implementation: String,
    /// The scenario directory.
    #[arg(long, default_value = "conformance/scenarios")]
    scenarios: PathBuf,
    /// The baseline directory.
    #[arg(long, default_value = "conformance/baseline")]
    baselines: PathBuf,
    /// Write the JSON lines here instead of standard output.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Skip the server checks.
    #[arg(long)]
    no_server_checks: bool,
    /// Rewrite the baselines from this run.
    #[arg(long)]
    bless: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let driver = args.driver.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("im-driver-rust")))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "im-driver-rust".into())
    });
    let external = match (&args.url, &args.api, &args.app_secret) {
        (Some(url), Some(api), Some(secret)) => Some(im_conformance::system::Target {
            url: url.clone(),
            api: api.clone(),
            app_secret: secret.clone(),
        }),
        (None, _, _) => None,
        _ => {
            eprintln!("im-conformance: --url needs --api and --app-secret");
            return ExitCode::from(2);
        }
    };
    let options = im_conformance::runner::Options {
        scenarios: args.scenarios.clone(),
        driver,
        implementation: args.implementation.clone(),
        only: args.only.clone(),
        server_checks: !args.no_server_checks,
    };
    let outcomes: Vec<Outcome> = match im_conformance::runner::run(external, &options).await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            eprintln!("im-conformance: {error}");
            return ExitCode::from(2);
        }
    };
    let lines: String = outcomes.iter().map(|o| format!("{}\n", o.json())).collect();
    match &args.report {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &lines) {
                eprintln!("im-conformance: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        None => print!("{lines}"),
    }
    eprint!("{}", summary(&outcomes));
    let mut regressed = Vec::new();
    for implementation in [args.implementation.as_str(), "server"] {
        let path = args.baselines.join(format!("{implementation}.json"));
        let mine: Vec<Outcome> = outcomes
            .iter()
            .filter(|o| o.implementation == implementation)
            .cloned()
            .collect();
        if args.bless {
            // A partial run updates what it ran and keeps the rest.
            let mut merged = read_baseline(&path).unwrap_or_default();
            merged.extend(baseline_of(&mine));
            let text = serde_json::to_string_pretty(&merged).unwrap_or_default();
            if let Err(e) = std::fs::write(&path, text + "\n") {
                eprintln!("im-conformance: {}: {e}", path.display());
                return ExitCode::from(2);
            }
            continue;
        }
        match read_baseline(&path) {
            Ok(baseline) => regressed.extend(regressions(
                &baseline,
                &mine,
                args.only.is_none() && !args.no_server_checks,
            )),
            Err(e) => {
                eprintln!("im-conformance: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if regressed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("regressed against the baseline: {}", regressed.join(", "));
        ExitCode::from(1)
    }
}

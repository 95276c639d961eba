//! Runs `im-bench all --smoke` against the real `im-server` binary and checks that every
//! scenario produced positive counts. It checks that the tool works, never timings.

#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, process::Command};

use serde_json::Value;

/// The `im-server` binary next to `im-bench`. `cargo test --workspace` has built it already
/// (im-all's tests need it); alone, `cargo test -p im-bench` builds it first.
fn server_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_im-bench")).with_file_name("im-server");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "im-all", "--bin", "im-server", "--locked"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cargo build -p im-all --bin im-server failed"
        );
    }
    assert!(bin.is_file(), "no im-server at {}", bin.display());
    bin
}

/// The persist messages of `--smoke` (`AllArgs::shrink` in main.rs).
const SMOKE_PERSIST_MESSAGES: u64 = 200;
/// The cluster scenario's throughput messages of `--smoke`.
const SMOKE_CLUSTER_MESSAGES: u64 = 200;
/// Uploads in the smoke run's media scenario (`shrink` in main.rs).
const SMOKE_MEDIA_UPLOADS: u64 = 8;

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(program).is_file())
}

/// The number at `path` (`a.0.b`), or a panic naming it.
fn number(value: &Value, path: &str) -> f64 {
    let mut at = value;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[key],
        };
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is missing: {value:#}"))
}

fn positive(value: &Value, path: &str) {
    let n = number(value, path);
    assert!(n > 0.0, "{path} is {n}, not positive");
}

fn equal(value: &Value, left: &str, right: &str) {
    let (l, r) = (number(value, left), number(value, right));
    assert!(l == r, "{left} is {l} but {right} is {r}");
}

#[test]
fn the_whole_suite_runs_at_smoke_sizes() {
    let server = server_bin();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let nats = on_path("nats-server");
    if !nats {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is not on PATH and CI is set: run scripts/services start"
        );
        eprintln!("!!! nats-server is not on PATH: the smoke run SKIPS the raw NATS baselines !!!");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_im-bench"));
    command
        .arg("--server-bin")
        .arg(&server)
        .arg("--json")
        .arg(&json);
    if !nats {
        command.arg("--no-nats");
    }
    let out = command.args(["all", "--smoke"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "im-bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| figure"), "no table:\n{stdout}");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // The connections held (not the count asked for) and the memory they took.
    equal(&results, "idle.0.connections", "idle.0.requested");
    equal(&results, "idle.0.holder.connections", "idle.0.requested");
    positive(&results, "idle.0.connections");
    positive(&results, "idle.0.holder.rss_kib_after");
    assert!(
        number(&results, "idle.0.server.rss_kib_after")
            > number(&results, "idle.0.server.rss_kib_before"),
        "the server's RSS did not grow with its idle connections: {:#}",
        results["idle"]
    );
    positive(&results, "max_connections.held");
    positive(&results, "fanout.deliveries");
    positive(&results, "fanout.deliveries_per_sec");
    // Every persisted send was acknowledged.
    assert_eq!(
        results["persist"]["messages"].as_u64(),
        Some(SMOKE_PERSIST_MESSAGES),
        "persist.messages: {:#}",
        results["persist"]
    );
    positive(&results, "persist.messages_per_sec");
    positive(&results, "persist.raw_sqlite.rows_per_sec");
    // The server on PostgreSQL and MariaDB too, where the test services run (always in CI).
    for (backend, var) in [
        ("postgres", "IM_TEST_POSTGRES_URL"),
        ("mariadb", "IM_TEST_MARIADB_URL"),
    ] {
        if std::env::var_os(var).is_some() {
            assert_eq!(
                results["persist"][backend]["messages"].as_u64(),
                Some(SMOKE_PERSIST_MESSAGES),
                "persist.{backend}.messages: {:#}",
                results["persist"][backend]
            );
            positive(&results, &format!("persist.{backend}.messages_per_sec"));
            positive(
                &results,
                &format!("persist.{backend}.raw_{backend}.rows_per_sec"),
            );
        } else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is missing and CI is set: run scripts/services start"
            );
            eprintln!("!!! {var} is not set: the smoke run SKIPS persist on {backend} !!!");
        }
    }
    positive(&results, "latency.0.delivered");
    positive(&results, "latency.0.latency.count");
    positive(&results, "connect.connected");
    equal(&results, "connect.connected", "connect.total");
    equal(&results, "connect.tcp_baseline.connected", "connect.total");
    positive(&results, "connect.connects_per_sec");
    positive(&results, "connect.tcp_baseline.connects_per_sec");
    if nats {
        positive(&results, "fanout.nats.deliveries_per_sec");
        positive(&results, "latency.0.nats.delivered");
        positive(&results, "latency.0.nats.latency.count");
    }
    // Every delivery expected arrived.
    assert_eq!(
        results["fanout"]["deliveries"],
        results["fanout"]["expected_deliveries"]
    );
    assert_eq!(
        results["latency"][0]["delivered"],
        results["latency"][0]["sent"]
    );
    cluster(&results, nats);
    media(&results);
}

/// The media scenario: every upload completed and every raw PUT taken, on the disk store and,
/// where the test services run MinIO (always in CI), on S3.
fn media(results: &Value) {
    let mut stores = vec!["disk"];
    if std::env::var_os("IM_TEST_S3_URL").is_some() {
        stores.push("s3");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "IM_TEST_S3_URL is missing and CI is set: run scripts/services start"
        );
        eprintln!("!!! IM_TEST_S3_URL is not set: the smoke run SKIPS media on S3 !!!");
    }
    for store in stores {
        assert_eq!(
            results["media"][store]["uploads"].as_u64(),
            Some(SMOKE_MEDIA_UPLOADS),
            "media.{store}: {:#}",
            results["media"]
        );
        equal(
            results,
            &format!("media.{store}.uploads"),
            &format!("media.{store}.raw_put_baseline.puts"),
        );
        positive(results, &format!("media.{store}.uploads_per_sec"));
        positive(
            results,
            &format!("media.{store}.raw_put_baseline.puts_per_sec"),
        );
    }
}

/// The cluster scenario, where its services are (always in CI): on several nodes and on one,
/// every message acknowledged and delivered, and across nodes every one forwarded over NATS.
fn cluster(results: &Value, nats: bool) {
    let postgres = ["IM_BENCH_POSTGRES_URL", "IM_TEST_POSTGRES_URL"]
        .iter()
        .any(|var| std::env::var_os(var).is_some());
    if !(nats && on_path("redis-server") && postgres) {
        assert!(
            std::env::var_os("CI").is_none(),
            "the cluster scenario's services are missing and CI is set: run scripts/services start"
        );
        eprintln!(
            "!!! nats-server, redis-server or PostgreSQL is missing: the smoke run SKIPS the cluster !!!"
        );
        assert!(
            results["cluster"]["skipped"].is_string(),
            "cluster: {:#}",
            results["cluster"]
        );
        return;
    }
    for topology in ["across_nodes", "one_node"] {
        let at = |figure: &str| format!("cluster.{topology}.{figure}");
        assert_eq!(
            results["cluster"][topology]["throughput"]["acked"].as_u64(),
            Some(SMOKE_CLUSTER_MESSAGES),
            "cluster.{topology}: {:#}",
            results["cluster"][topology]
        );
        equal(
            results,
            &at("throughput.delivered"),
            &at("throughput.acked"),
        );
        positive(results, &at("throughput.acked_per_sec"));
        positive(results, &at("throughput.deliveries_per_sec"));
        positive(results, &at("latency.delivered"));
        equal(results, &at("latency.delivered"), &at("latency.sent"));
        positive(results, &at("latency.latency.count"));
    }
    let crossed = number(results, "cluster.across_nodes.throughput.acked")
        + number(results, "cluster.across_nodes.latency.sent");
    let forwarded = number(results, "cluster.across_nodes.deliveries_forwarded");
    assert!(
        forwarded >= crossed,
        "{forwarded} deliveries forwarded across nodes, fewer than the {crossed} messages sent"
    );
}

//! Scenario `cluster`: 1:1 messages across the core nodes of a cluster. Several core nodes
//! and a business node share nats-server (JetStream), redis-server and PostgreSQL; each
//! receiver is on the node after its sender's, so every message crosses nodes. Two loads run
//! over the same connections: a windowed throughput load (acked messages/s, deliveries/s,
//! every acked message delivered) and the paced latency load of `pairs`.
//!
//! Baseline: the same processes, loads and database with one core node, in the same run: what
//! spreading the sessions over nodes costs or gains. Without nats-server, redis-server or a
//! PostgreSQL URL the scenario is skipped, loudly; with `CI` set it fails instead.

use std::time::Instant;

use serde_json::{Value, json};

use super::{
    BODY, ClusterLoad, Ctx, Login, key_metrics,
    pairs::{ConnectedPairs, PacedRun, Pair, p50_p99_p999, paced_load},
    postgres_url,
};
use crate::{
    client,
    procs::{Cluster, ClusterPrograms, find_on_path},
    report::{Outcome, Row},
    util::{Progress, Result, human_count, micros_histogram, now_ms, quantiles},
};

/// The programs and database a cluster needs, or what is missing of them.
fn cluster_prerequisites(ctx: &Ctx) -> std::result::Result<(ClusterPrograms, String), String> {
    let nats = ctx.nats.clone().or_else(|| find_on_path("nats-server"));
    let redis = find_on_path("redis-server");
    let database = postgres_url();
    match (nats, redis, database) {
        (Some(nats_server), Some(redis_server), Some(database)) => Ok((
            ClusterPrograms {
                im_server: ctx.server_bin.clone(),
                nats_server,
                redis_server,
            },
            database,
        )),
        (nats, redis, database) => {
            let missing = [
                nats.is_none().then_some("nats-server is not on PATH"),
                redis.is_none().then_some("redis-server is not on PATH"),
                database
                    .is_none()
                    .then_some("neither IM_BENCH_POSTGRES_URL nor IM_TEST_POSTGRES_URL is set"),
            ];
            Err(missing.into_iter().flatten().collect::<Vec<_>>().join(", "))
        }
    }
}

/// `count` pairs on `cluster`: sender i on node i % N, its receiver on node (i + 1) % N, so
/// with more than one node every message crosses nodes. Users are `cs<i>-<run>` and
/// `cr<i>-<run>`: the database outlives runs, each run has users of its own.
fn cross_node_pairs(cluster: &Cluster, count: usize, run: i64) -> Result<(Vec<String>, Vec<Pair>)> {
    let nodes = cluster.cores.len().max(1);
    let mut users = Vec::with_capacity(2 * count);
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let (sender, receiver) = (format!("cs{i}-{run}"), format!("cr{i}-{run}"));
        let login = |user: &str, node: usize| -> Result<Login> {
            Ok(Login {
                addr: cluster.cores[node].ws,
                token: cluster.api.token(user, "d")?,
            })
        };
        pairs.push(Pair {
            sender: login(&sender, i % nodes)?,
            receiver: login(&receiver, (i + 1) % nodes)?,
            conversation: client::direct(&sender, &receiver),
        });
        users.extend([sender, receiver]);
    }
    Ok((users, pairs))
}

/// What a windowed load (each sender as fast as its acks allow) measured.
struct WindowedRun {
    /// Sends acknowledged.
    acked: u64,
    /// Send to ack, in µs.
    ack: hdrhistogram::Histogram<u64>,
    /// From the first send to the last ack.
    ack_secs: f64,
    /// Distinct entries the receivers got.
    delivered: u64,
    /// From the first send to the last delivery seen.
    deliver_secs: f64,
}

impl WindowedRun {
    fn acked_per_sec(&self) -> f64 {
        self.acked as f64 / self.ack_secs.max(1e-6)
    }

    fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.deliver_secs.max(1e-6)
    }

    fn json(&self) -> Value {
        json!({
            "acked": self.acked,
            "delivered": self.delivered,
            "all_delivered": self.delivered >= self.acked,
            "ack_secs": self.ack_secs,
            "acked_per_sec": self.acked_per_sec(),
            "deliver_secs": self.deliver_secs,
            "deliveries_per_sec": self.deliveries_per_sec(),
            "ack": quantiles(&self.ack),
        })
    }
}

/// Has each connected sender send its share of `messages` with `window` in flight, then waits
/// for the deliveries of what was acknowledged.
async fn windowed_load(
    connected: &mut ConnectedPairs,
    messages: usize,
    window: usize,
    label: &str,
) -> Result<WindowedRun> {
    let before = connected.delivered();
    let progress = Progress::new(&format!("{label} acks"), messages as u64);
    let counter = progress.counter();
    let senders = std::mem::take(&mut connected.senders);
    let count = senders.len().max(1);
    let started = Instant::now();
    let mut sends = Vec::new();
    for (i, (mut ws, conversation)) in senders
        .into_iter()
        .zip(&connected.conversations)
        .enumerate()
    {
        let share = messages / count + usize::from(i < messages % count);
        let (counter, conversation) = (counter.clone(), conversation.clone());
        sends.push(tokio::spawn(async move {
            let acks =
                client::send_windowed(&mut ws, &conversation, "c", share, window, BODY, &counter)
                    .await?;
            Ok::<_, crate::util::BoxError>((ws, acks))
        }));
    }
    let mut ack = micros_histogram();
    for send in sends {
        let (ws, acks) = send.await??;
        connected.senders.push(ws);
        let _ = ack.add(&acks);
    }
    let ack_secs = started.elapsed().as_secs_f64();
    drop(progress);
    let acked = ack.len();
    let (got, deliver) = connected.wait_delivered(before + acked, started).await;
    Ok(WindowedRun {
        acked,
        ack,
        ack_secs,
        delivered: got - before,
        deliver_secs: deliver.as_secs_f64(),
    })
}

/// The sum of a Prometheus counter's samples (every label set) in `text`.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Both loads on one topology.
struct TopologyRun {
    nodes: usize,
    throughput: WindowedRun,
    latency: PacedRun,
    /// Each core node's id and metrics text after both loads.
    metrics: Vec<(String, String)>,
}

impl TopologyRun {
    /// Deliveries handed to another node over NATS, over every node.
    fn forwarded(&self) -> u64 {
        self.metrics
            .iter()
            .map(|(_, text)| counter_sum(text, "im_deliveries_forwarded_total"))
            .sum::<f64>() as u64
    }

    fn json(&self) -> Value {
        let metrics: serde_json::Map<String, Value> = self
            .metrics
            .iter()
            .map(|(id, text)| (id.clone(), json!(key_metrics(text))))
            .collect();
        json!({
            "nodes": self.nodes,
            "throughput": self.throughput.json(),
            "latency": self.latency.json(),
            "deliveries_forwarded": self.forwarded(),
            "server_metrics": metrics,
        })
    }
}

/// Connections opened at once while a cluster's pairs connect. Each answers a ping before it
/// counts as open: a core node records a new session's route in Redis after its Welcome and
/// serves the session's requests only then, so no load starts before its routes exist.
const CLUSTER_CONNECTS_AT_ONCE: usize = 16;

/// Starts a cluster of `nodes` core nodes on `database` and runs both loads on it over the
/// same connections (users of the run's own; the throughput load's bodies carry no send time,
/// so only the latency load's are timed).
async fn cluster_run(
    programs: &ClusterPrograms,
    database: &str,
    nodes: usize,
    load: &ClusterLoad,
) -> Result<TopologyRun> {
    let label = format!("cluster ({})", node_count(nodes));
    eprintln!(
        "{label}: starting nats-server, redis-server, the business node, {} core {}",
        nodes,
        if nodes == 1 { "node" } else { "nodes" }
    );
    let begun = Instant::now();
    let cluster = Cluster::start(programs, database, nodes).await?;
    eprintln!("{label}: up in {:.1} s", begun.elapsed().as_secs_f64());
    let (users, pairs) = cross_node_pairs(&cluster, load.pairs, now_ms())?;
    cluster.api.import_users(&users).await?;
    let mut connected = ConnectedPairs::connect(&pairs, CLUSTER_CONNECTS_AT_ONCE, &label).await?;
    eprintln!(
        "{label}: {} messages over {} pairs, {} in flight each",
        load.messages, load.pairs, load.window
    );
    let throughput = windowed_load(&mut connected, load.messages, load.window, &label).await?;
    eprintln!(
        "{label}: {} messages/s for {} s over {} pairs",
        load.rate, load.seconds, load.pairs
    );
    let latency = paced_load(connected, load.rate, load.seconds, "cl", &label).await?;
    Ok(TopologyRun {
        nodes,
        throughput,
        latency,
        metrics: cluster.metrics().await,
    })
}

/// `1 node`, `3 nodes`.
fn node_count(nodes: usize) -> String {
    if nodes == 1 {
        "1 node".into()
    } else {
        format!("{nodes} nodes")
    }
}

/// `a / b` as `0.93 x 1 node`, for the target column (no target is set for a cluster).
fn ratio_to_one_node(a: f64, b: f64) -> String {
    format!("- ({:.2} x 1 node)", a / b.max(1e-9))
}

/// The table rows: each figure of the cluster beside the same figure on one node.
fn cluster_rows(load: &ClusterLoad, spread: &TopologyRun, single: &TopologyRun) -> Vec<Row> {
    let across = node_count(spread.nodes);
    let (t, t1) = (&spread.throughput, &single.throughput);
    let (l, l1) = (&spread.latency, &single.latency);
    let delivered = |r: &WindowedRun| {
        format!(
            "{} of {} acked delivered",
            human_count(r.delivered as f64),
            human_count(r.acked as f64)
        )
    };
    vec![
        Row::new(
            format!("cluster: 1:1 msgs/s acked across {across} (PostgreSQL)"),
            format!("{}/s", human_count(t.acked_per_sec())),
            format!("{}/s on 1 node", human_count(t1.acked_per_sec())),
            ratio_to_one_node(t.acked_per_sec(), t1.acked_per_sec()),
        ),
        Row::new(
            format!("cluster: deliveries/s across {across}"),
            format!(
                "{}/s ({}, {} forwarded)",
                human_count(t.deliveries_per_sec()),
                delivered(t),
                human_count(spread.forwarded() as f64)
            ),
            format!(
                "{}/s on 1 node ({})",
                human_count(t1.deliveries_per_sec()),
                delivered(t1)
            ),
            ratio_to_one_node(t.deliveries_per_sec(), t1.deliveries_per_sec()),
        ),
        Row::new(
            format!(
                "cluster: send->deliver at {}/s across {across}",
                human_count(load.rate as f64)
            ),
            format!(
                "{} (sent at {}/s)",
                p50_p99_p999(&l.latency),
                human_count(l.achieved())
            ),
            format!(
                "{} on 1 node (sent at {}/s)",
                p50_p99_p999(&l1.latency),
                human_count(l1.achieved())
            ),
            format!(
                "- (p99 {:.2} x 1 node)",
                l.latency.value_at_quantile(0.99) as f64
                    / (l1.latency.value_at_quantile(0.99) as f64).max(1.0)
            ),
        ),
    ]
}

/// Scenario `cluster`: `nodes` core nodes and a business node sharing nats-server (JetStream),
/// redis-server and PostgreSQL; `pairs` sender -> receiver pairs with each receiver on the
/// node after its sender's. Throughput (acked messages/s, deliveries/s, every acked message
/// delivered) and send-to-deliver latency at a fixed offered load. Baseline: the same
/// processes and loads with one core node, on the same database, in the same run.
///
/// Without nats-server, redis-server or a PostgreSQL URL it is skipped, loudly; with `CI` set
/// it fails instead.
pub(crate) async fn cluster(ctx: &Ctx, load: &ClusterLoad) -> Result<Outcome> {
    let (programs, database) = match cluster_prerequisites(ctx) {
        Ok(found) => found,
        Err(missing) if std::env::var_os("CI").is_some() => {
            return Err(format!(
                "{missing} (CI is set: the cluster scenario is required; run scripts/services start)"
            )
            .into());
        }
        Err(missing) => {
            eprintln!(
                "!!! {missing}: the cluster scenario is SKIPPED (scripts/services start runs what it needs) !!!"
            );
            return Ok(Outcome::skipped("cluster", missing));
        }
    };
    eprintln!(
        "cluster: {} core nodes against 1, {} pairs, {} messages, {}/s for {} s",
        load.nodes, load.pairs, load.messages, load.rate, load.seconds
    );
    let spread = cluster_run(&programs, &database, load.nodes, load).await?;
    let single = cluster_run(&programs, &database, 1, load).await?;
    let json = json!({
        "nodes": load.nodes,
        "pairs": load.pairs,
        "messages": load.messages,
        "window": load.window,
        "offered_per_sec": load.rate,
        "seconds": load.seconds,
        "database": "postgres",
        "across_nodes": spread.json(),
        "one_node": single.json(),
    });
    Ok(Outcome {
        name: "cluster",
        json,
        rows: cluster_rows(load, &spread, &single),
    })
}

#[cfg(test)]
mod tests {
    use super::counter_sum;

    #[test]
    fn a_counter_is_summed_over_its_labels_and_only_its_own() {
        let text = "\
# TYPE im_sends_total counter
im_sends_total{outcome=\"stored\"} 280
im_sends_total{outcome=\"duplicate\"} 2
im_sends_total_other 1000
im_deliveries_forwarded_total 210
";
        assert_eq!(counter_sum(text, "im_sends_total"), 282.0);
        assert_eq!(counter_sum(text, "im_deliveries_forwarded_total"), 210.0);
        assert_eq!(counter_sum(text, "im_missing_total"), 0.0);
    }
}

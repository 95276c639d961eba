//! Failures under load, on a three-node cluster with real NATS, Redis and PostgreSQL: a core
//! node SIGKILLed, nats-server restarted, Redis restarted (empty); and one node's link to NATS
//! breaking alone. Clients fail over and resync by themselves; every acknowledged message must
//! reach its receiver, once.
//!
//! Each test prints its figures (sent, acknowledged, delivered, lost, duplicated, and how long
//! things took to converge); `cargo test -p im-all --test failover -- --nocapture` shows them.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Cluster, LEASE_MS, Seen, Tally, text, watch};
use im_proto::v1::PresenceStatus;
use im_sdk_rust::{Client, ConnectionState, Event, direct_conversation_id};

/// The tests share the machine's two cores: one cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sender/receiver pairs, each on different nodes.
const PAIRS: usize = 6;
/// Messages each sender sends.
const PER_SENDER: usize = 200;
/// Sends a sender has in flight at once.
const IN_FLIGHT: usize = 4;
/// A pause between one sender's sends, so the load (3 s) outlasts the failure.
const PACE: Duration = Duration::from_millis(15);

struct Pair {
    sender: Arc<Client>,
    /// Kept alive while its messages are counted.
    _receiver: Arc<Client>,
    conversation: String,
    seen: Arc<Mutex<Seen>>,
    /// Client ids the server acknowledged.
    acked: Arc<Mutex<Vec<String>>>,
}

/// `PAIRS` pairs: sender i on node i % 3, its receiver on node (i + 1) % 3.
async fn pairs(cluster: &Cluster) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let (s, r) = (
            cluster.user(&format!("s{i}")),
            cluster.user(&format!("r{i}")),
        );
        let sender = cluster.client(&s, "d", i % 3).await;
        let receiver = cluster.client(&r, "d", (i + 1) % 3).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        // The receiver's stream is read from the start: nothing it shows is missed.
        std::mem::forget(watch(&receiver, seen.clone()));
        pairs.push(Pair {
            conversation: direct_conversation_id(&s, &r).unwrap(),
            sender: Arc::new(sender),
            _receiver: Arc::new(receiver),
            seen,
            acked: Arc::default(),
        });
    }
    pairs
}

/// Runs the load; `failure` runs (on a blocking thread) once a quarter of it is acknowledged.
/// Returns the tally and when the failure ended.
async fn run_load(
    pairs: &[Pair],
    failure: impl FnOnce() + Send + 'static,
) -> (Tally, Instant, Duration) {
    let acked_total = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for (i, pair) in pairs.iter().enumerate() {
        let (client, conversation) = (pair.sender.clone(), pair.conversation.clone());
        let (acked, total) = (pair.acked.clone(), acked_total.clone());
        senders.spawn(async move {
            // One send every PACE, at most IN_FLIGHT of them waiting for their ack.
            let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut sends = tokio::task::JoinSet::new();
            for k in 0..PER_SENDER {
                let slot = slots.clone().acquire_owned().await.unwrap();
                let (client, conversation) = (client.clone(), conversation.clone());
                let (acked, total) = (acked.clone(), total.clone());
                sends.spawn(async move {
                    let id = format!("m{i}-{k}");
                    let body = text(&format!("message {k}"));
                    if client.send_with_id(&conversation, &id, body).await.is_ok() {
                        acked.lock().unwrap().push(id);
                        total.fetch_add(1, Ordering::SeqCst);
                    }
                    drop(slot);
                });
                tokio::time::sleep(PACE).await;
            }
            while sends.join_next().await.is_some() {}
        });
    }
    let quarter = (PAIRS * PER_SENDER / 4) as u64;
    tokio::time::timeout(Duration::from_secs(60), async {
        while acked_total.load(Ordering::SeqCst) < quarter {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a quarter of the load acknowledged within a minute");
    tokio::task::spawn_blocking(failure).await.unwrap();
    let failed_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), async {
        while senders.join_next().await.is_some() {}
    })
    .await
    .expect("every send resolved within two minutes");
    // Every acknowledged message reaches its receiver, once.
    let converged = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let done = pairs.iter().all(|p| {
                let seen = p.seen.lock().unwrap();
                p.acked
                    .lock()
                    .unwrap()
                    .iter()
                    .all(|id| seen.shown.contains_key(id))
            });
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let all_delivered = failed_at.elapsed();
    let mut tally = Tally {
        sent: (PAIRS * PER_SENDER) as u64,
        ..Tally::default()
    };
    for pair in pairs {
        let seen = pair.seen.lock().unwrap();
        let acked = pair.acked.lock().unwrap();
        tally.acked += acked.len() as u64;
        tally.delivered += seen.shown.len() as u64;
        tally.lost += acked
            .iter()
            .filter(|id| !seen.shown.contains_key(*id))
            .count() as u64;
        tally.duplicated += seen.duplicates;
    }
    if converged.is_err() {
        eprintln!("not every acknowledged message arrived within a minute: {tally:?}");
    }
    (tally, failed_at, all_delivered)
}

fn check(name: &str, tally: &Tally, all_delivered: Duration) {
    println!(
        "{name}: sent {}, acknowledged {}, delivered {}, lost {}, duplicated {}; every acknowledged message delivered {:.2} s after the failure",
        tally.sent,
        tally.acked,
        tally.delivered,
        tally.lost,
        tally.duplicated,
        all_delivered.as_secs_f64()
    );
    assert_eq!(tally.lost, 0, "{name}: acknowledged messages lost");
    assert_eq!(tally.duplicated, 0, "{name}: messages shown twice");
    assert_eq!(
        tally.acked, tally.sent,
        "{name}: every send is acknowledged in the end (clients resend)"
    );
}

/// What `watcher` sees of `user`'s presence, polled every 50 ms from now on.
fn probe(watcher: Arc<Client>, user: String) -> Arc<Mutex<Vec<(Instant, PresenceStatus)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let writing = log.clone();
    tokio::spawn(async move {
        let users = [user];
        loop {
            if let Ok(seen) = watcher.subscribe_presence(&users).await {
                writing
                    .lock()
                    .unwrap()
                    .push((Instant::now(), seen[0].status()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    log
}

/// How long after `since` the probe first saw `wanted` (waiting up to 30 s for it).
async fn first_seen(
    log: &Mutex<Vec<(Instant, PresenceStatus)>>,
    since: Instant,
    wanted: PresenceStatus,
) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .find(|(at, status)| *at >= since && *status == wanted)
            .map(|(at, _)| *at - since);
        if let Some(after) = found {
            return after;
        }
        assert!(Instant::now() < deadline, "never saw {wanted:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_node_killed_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let pairs = pairs(&cluster).await;
    // zed knows only node 0, so it stays down with it; obi on node 1 watches.
    let zed = cluster.user("zed");
    let zed_client = cluster
        .client_of(&zed, "d", cluster.urls(0)[..1].to_vec())
        .await;
    let obi = Arc::new(cluster.client(&cluster.user("obi"), "d", 1).await);
    cluster.add_contact(&zed, &cluster.user("obi")).await;
    let zed_seen = probe(obi, zed.clone());
    first_seen(&zed_seen, Instant::now(), PresenceStatus::Online).await;

    let victim = Arc::new(Mutex::new(Some(cluster.nodes[0].take().unwrap())));
    let killed = victim.clone();
    let (tally, killed_at, all_delivered) = run_load(&pairs, move || {
        // SIGKILL, as `kill -9` does: no goodbye to anyone.
        drop(killed.lock().unwrap().take());
    })
    .await;
    check("core node killed", &tally, all_delivered);

    // zed's session lived on the dead node: its presence and route are gone everywhere
    // within one lease of the last renewal, so within one lease of the kill.
    let offline_after = first_seen(&zed_seen, killed_at, PresenceStatus::Offline).await;
    println!(
        "core node killed: zed's presence and route gone {:.2} s after the kill (lease {} ms)",
        offline_after.as_secs_f64(),
        LEASE_MS
    );
    assert!(
        offline_after <= Duration::from_millis(LEASE_MS + 1_000),
        "stale presence converged in {offline_after:?}, more than a lease (+1 s of polling)"
    );
    drop(zed_client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let pairs = pairs(&cluster).await;
    let cluster = Arc::new(Mutex::new(cluster));
    let restarting = cluster.clone();
    let (tally, _, all_delivered) = run_load(&pairs, move || {
        restarting
            .lock()
            .unwrap()
            .restart_nats(Duration::from_secs(1));
    })
    .await;
    check("nats-server restarted", &tally, all_delivered);
}

/// How the bus fails under a group's traffic.
#[derive(Debug, Clone, Copy)]
enum BusFailure {
    /// nats-server restarted: every node loses the bus and replays its window.
    Restart,
    /// The sender's node alone loses its link: only it replays.
    OneLink,
}

/// A group of six with members on all three nodes and the sender on the third, through a bus
/// failure. Outbound queues are short enough that the replay of the window (every message
/// before the failure, published again when the bus is back) would overflow them if it were
/// queued as fresh deliveries; and every node then tells its sessions to sync. No session of
/// the sender or a member ends (every client handles the Resync push), every message is shown
/// once.
async fn group_through(failure: BusFailure) {
    let queue = vec![("IM_CORE__GATEWAY__OUTBOUND_QUEUE", "8".to_owned())];
    let (cluster, link) = match failure {
        BusFailure::Restart => {
            let Some(cluster) = Cluster::start_with_core(3, queue).await else {
                return;
            };
            (cluster, None)
        }
        BusFailure::OneLink => {
            let Some(mut cluster) = Cluster::start_with_core(2, queue).await else {
                return;
            };
            let link = cluster.start_node_through_link("core-link").await;
            (cluster, Some(link))
        }
    };
    let mut cluster = cluster;
    let owner = cluster.user("owner");
    let members: Vec<String> = (0..6).map(|i| cluster.user(&format!("m{i}"))).collect();
    for user in members.iter().chain([&owner]) {
        cluster.admin.user(user).await.unwrap();
    }
    let group = cluster.user("team");
    cluster
        .admin
        .call(
            reqwest::Method::POST,
            "/v1/groups",
            Some(serde_json::json!({
                "group_id": group, "name": "team", "owner_user_id": owner,
                "member_user_ids": members,
            })),
        )
        .await
        .unwrap();
    let conversation = format!("g:{group}");
    // Every client watched from its first event: messages shown, and sessions ended.
    let ended = Arc::new(AtomicU64::new(0));
    let watch_client = |client: &Client| {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut events = client.events().unwrap();
        let (shown, ended) = (seen.clone(), ended.clone());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Event::Message(m) => {
                        let mut seen = shown.lock().unwrap();
                        let count = seen.shown.entry(m.client_msg_id.clone()).or_default();
                        *count += 1;
                        if *count > 1 || !seen.seqs.insert((m.conversation_id, m.seq)) {
                            seen.duplicates += 1;
                        }
                    }
                    Event::Connection(ConnectionState::Reconnecting { reason, .. }) => {
                        eprintln!("a session ended: {reason}");
                        ended.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
        seen
    };
    // The sender on the third node (the one whose link breaks), the members on all three.
    let sender = cluster
        .client_of(&owner, "d", cluster.urls(2)[..1].to_vec())
        .await;
    let _sender_seen = watch_client(&sender);
    let mut watched = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let client = cluster
            .client_of(member, "d", cluster.urls(i % 3)[..1].to_vec())
            .await;
        let seen = watch_client(&client);
        watched.push((client, seen));
    }
    let send = |from: usize, count: usize| {
        let (sender, conversation) = (&sender, &conversation);
        async move {
            for k in from..from + count {
                let body = text(&format!("message {k}"));
                sender
                    .send_with_id(conversation, &format!("g{k}"), body)
                    .await
                    .unwrap();
            }
        }
    };
    let all_seen = |count: usize| {
        let watched = &watched;
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                while !watched.iter().all(|(_, seen)| {
                    let seen = seen.lock().unwrap();
                    (0..count).all(|k| seen.shown.contains_key(&format!("g{k}")))
                }) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .expect("every member shows every message");
        }
    };
    send(0, 150).await;
    all_seen(150).await;
    match (failure, &link) {
        (BusFailure::Restart, _) => {
            tokio::task::block_in_place(|| cluster.restart_nats(Duration::from_secs(1)));
        }
        (BusFailure::OneLink, Some(link)) => link.cut(),
        (BusFailure::OneLink, None) => unreachable!("a link node was started"),
    }
    // Messages after it cross once the nodes are back on the bus, after their replay.
    send(150, 20).await;
    all_seen(170).await;
    // Past the latest a Resync may wait (four times `reconnect_after`, 1 s) and its sync.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended = ended.load(Ordering::SeqCst);
    let duplicated: u64 = watched
        .iter()
        .map(|(_, seen)| seen.lock().unwrap().duplicates)
        .sum();
    println!(
        "group of 6 on three nodes, bus failure {failure:?}: sessions ended {ended}, shown twice {duplicated}"
    );
    assert_eq!(
        ended, 0,
        "no session ends for the bus failure ({failure:?})"
    );
    assert_eq!(duplicated, 0, "and nothing is shown twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_through_a_nats_restart_keeps_every_session() {
    let _serial = SERIAL.lock().await;
    group_through(BusFailure::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_through_one_nodes_bus_link_breaking_keeps_every_session() {
    let _serial = SERIAL.lock().await;
    group_through(BusFailure::OneLink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let pairs = pairs(&cluster).await;
    // r0 stays connected (on node 1) throughout; obi on node 2 watches it.
    let watched = cluster.user("r0");
    let obi = Arc::new(cluster.client(&cluster.user("obi"), "d", 2).await);
    cluster.add_contact(&watched, &cluster.user("obi")).await;
    let r0_seen = probe(obi, watched);
    first_seen(&r0_seen, Instant::now(), PresenceStatus::Online).await;
    let cluster = Arc::new(Mutex::new(cluster));
    let restarting = cluster.clone();
    let (tally, restarted_at, all_delivered) = run_load(&pairs, move || {
        restarting
            .lock()
            .unwrap()
            .restart_redis(Duration::from_secs(1));
    })
    .await;
    check("redis-server restarted", &tally, all_delivered);
    // Redis came back empty: the nodes' renewals write their sessions back within a third of
    // a lease.
    let back = first_seen(&r0_seen, restarted_at, PresenceStatus::Online).await;
    println!(
        "redis-server restarted: presence and routes back {:.2} s after the restart (renewed every {} ms)",
        back.as_secs_f64(),
        LEASE_MS / 3
    );
    assert!(
        back <= Duration::from_millis(LEASE_MS / 3 + 1_000),
        "sessions written back in {back:?}, more than a renewal period (+1 s of polling)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_bus_link_breaks_alone_still_delivers_what_it_acknowledged() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start(1).await else {
        return;
    };
    let link = cluster.start_node_through_link("core-link").await;
    let (s, r) = (cluster.user("s"), cluster.user("r"));
    // The sender is on the node whose link breaks, the receiver on the healthy one; neither
    // fails over, so nothing but the bus can carry the messages across.
    let sender = cluster
        .client_of(&s, "d", cluster.urls(1)[..1].to_vec())
        .await;
    let receiver = cluster
        .client_of(&r, "d", cluster.urls(0)[..1].to_vec())
        .await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _watching = watch(&receiver, seen.clone());
    let conversation = direct_conversation_id(&s, &r).unwrap();
    let all_shown = |ids: &[String]| {
        let seen = seen.lock().unwrap();
        ids.iter().all(|id| seen.shown.contains_key(id))
    };
    // A first message across: the permission decision is cached and the route is known.
    let mut acked = vec!["first".to_owned()];
    sender
        .send_with_id(&conversation, "first", text("first"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !all_shown(&acked) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first message crosses the link");

    // The link silently stops carrying anything: the node still acknowledges (the pushes are
    // written to its connection), but they never reach NATS.
    link.black_hole();
    for k in 0..20 {
        let id = format!("m{k}");
        tokio::time::timeout(
            Duration::from_secs(20),
            sender.send_with_id(&conversation, &id, text(&format!("message {k}"))),
        )
        .await
        .expect("acknowledged in time")
        .unwrap();
        acked.push(id);
    }
    // Then it breaks. Nothing more is sent, so no later entry reveals a gap to the receiver.
    link.cut();
    let cut_at = Instant::now();
    let converged = tokio::time::timeout(Duration::from_secs(30), async {
        while !all_shown(&acked) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let after = cut_at.elapsed();
    let seen = seen.lock().unwrap();
    let lost = acked
        .iter()
        .filter(|id| !seen.shown.contains_key(*id))
        .count();
    println!(
        "bus link broken: sent {0}, acknowledged {0}, delivered {1}, lost {lost}, duplicated {2}; every acknowledged message delivered {3:.2} s after the break",
        acked.len(),
        seen.shown.len(),
        seen.duplicates,
        after.as_secs_f64()
    );
    assert!(
        converged.is_ok(),
        "{lost} acknowledged messages never arrived"
    );
    assert_eq!(seen.duplicates, 0, "messages shown twice");
}

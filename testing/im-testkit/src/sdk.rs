//! Clients of the Rust SDK, as tests use them: quick to reconnect, and the events they show
//! collected.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use im_sdk_rust::{Client, ClientBuilder, Config, Event, StaticToken};

use crate::{proxy::ws_url, token};

/// A client of `addr` with quick reconnects.
pub fn client(addr: SocketAddr, user: &str, device: &str) -> Client {
    let config = Config {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ack_delay: Duration::from_millis(20),
        ..Config::default()
    };
    ClientBuilder::new(
        ws_url(addr),
        device,
        Arc::new(StaticToken(token(user, device))),
    )
    .config(config)
    .build()
    .unwrap_or_else(|e| panic!("a client: {e}"))
}

/// Collects events until `done` says the collection is complete (or panics after a while).
pub async fn collect_until(
    events: &mut im_sdk_rust::Events,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the client stopped; seen: {seen:?}"),
            Err(_) => panic!("timed out; seen {} events: {seen:#?}", seen.len()),
        }
    }
    seen
}

/// The seqs and client ids of the messages of `conversation` among `events`, in order.
pub fn messages_in(events: &[Event], conversation: &str) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.conversation_id == conversation => {
                Some((m.seq, m.client_msg_id.clone()))
            }
            _ => None,
        })
        .collect()
}

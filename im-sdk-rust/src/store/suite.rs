//! The one test suite every [`LocalStore`] backend runs:
//! `local_store_suite!(async { (store, guard) })` in the backend's tests, with a store that
//! keeps 3 recent messages per conversation.

// A test suite: a panic is how it reports a failure.
#![allow(clippy::unwrap_used)]

use super::{LocalStore, Outgoing};
use crate::types::{Body, Content, Conversation, Message};

/// Runs every suite function, each as a test of its own, against a fresh store made by `$make`:
/// an async expression that yields `(store, guard)`, the guard (a temporary directory) living
/// for the test. The store keeps 3 recent messages per conversation.
macro_rules! local_store_suite {
    ($make:expr) => {
        $crate::store::suite::local_store_suite!(@each $make;
            held_only_moves_forward,
            recent_messages_are_kept_in_order_and_bounded,
            the_outbox_keeps_order_and_dedups,
            conversations_round_trip,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::store::suite::$name(&store).await;
            }
        )*
    };
}
pub(crate) use local_store_suite;

/// The conversation every suite function works in.
const CHAT: &str = "d:a:b";

fn message(seq: u64) -> Message {
    Message {
        conversation_id: CHAT.into(),
        seq,
        server_msg_id: format!("s{seq}"),
        sender_user_id: "a".into(),
        sender_device_id: "d".into(),
        client_msg_id: format!("{seq}"),
        server_time_ms: 7,
        body: Body::Content(Content::text(format!("#{seq}"))),
        state: None,
    }
}

fn out(id: &str) -> Outgoing {
    Outgoing {
        client_msg_id: id.into(),
        conversation_id: CHAT.into(),
        body: vec![1, 2],
    }
}

/// `held` is only ever raised: a late, lower seq leaves it where it was. Leaves the chat held
/// at 5.
pub(crate) async fn held_only_moves_forward(store: &dyn LocalStore) {
    store.set_held(CHAT, 5).await.unwrap();
    store.set_held(CHAT, 4).await.unwrap();
    store.set_held("g:other", 2).await.unwrap();
    let held = store.load().await.unwrap().held;
    assert_eq!(held[CHAT], 5, "held never moves back");
    assert_eq!(held["g:other"], 2, "each conversation has its own");
}

/// Messages come back oldest first, once each, only the newest kept. Leaves 3, 4 and 5.
pub(crate) async fn recent_messages_are_kept_in_order_and_bounded(store: &dyn LocalStore) {
    for seq in [2, 1, 4, 3, 5, 3] {
        store.put_message(&message(seq)).await.unwrap();
    }
    let recent = store.recent(CHAT, 10).await.unwrap();
    let seqs: Vec<u64> = recent.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        [3, 4, 5],
        "ordered, newest kept (3 per conversation), no repeats"
    );
    assert_eq!(recent[0], message(3), "a message comes back as it went in");
    let newest: Vec<u64> = store
        .recent(CHAT, 2)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        newest,
        [4, 5],
        "a smaller limit: the newest, still oldest first"
    );
    assert_eq!(store.recent("g:other", 10).await.unwrap(), []);
}

/// Sends wait in the order they were made, an id once; an acknowledged one goes. Leaves `y`.
pub(crate) async fn the_outbox_keeps_order_and_dedups(store: &dyn LocalStore) {
    for id in ["x", "y", "x"] {
        store.push_outgoing(&out(id)).await.unwrap();
    }
    assert_eq!(
        store.load().await.unwrap().outbox,
        vec![out("x"), out("y")],
        "in order, once each"
    );
    store.remove_outgoing("x").await.unwrap();
    assert_eq!(store.load().await.unwrap().outbox, vec![out("y")]);
}

/// A conversation comes back as it was put, and its read cursor is resumed from.
pub(crate) async fn conversations_round_trip(store: &dyn LocalStore) {
    let conversation = Conversation {
        conversation_id: CHAT.into(),
        kind: 1,
        last_seq: 5,
        read_seq: 2,
        unread_count: 3,
        active: true,
    };
    store.put_conversation(&conversation).await.unwrap();
    assert_eq!(store.load().await.unwrap().read[CHAT], 2);
    assert_eq!(
        store.conversations().await.unwrap(),
        vec![conversation.clone()]
    );
    let left = Conversation {
        active: false,
        ..conversation
    };
    store.put_conversation(&left).await.unwrap();
    assert_eq!(
        store.conversations().await.unwrap(),
        vec![left],
        "put again: replaced, not added"
    );
}

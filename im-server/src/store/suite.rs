//! The one test suite every [`MessageStore`] backend runs:
//! `message_store_suite!(async { Some((store, guard)) })` in the backend's tests.

// A test suite: a panic is how it reports a failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::{Appended, EntryKind, MessageStore, NewEntry, StoreError};

/// Runs every suite function, each as a test of its own, against a fresh store made by `$make`:
/// an async expression that yields `Some((store, guard))`, the guard (a temporary directory, a
/// database) living for the test, or `None` to skip (a database server that is not there).
#[macro_export]
macro_rules! message_store_suite {
    ($make:expr) => {
        $crate::message_store_suite!(@each $make;
            sequences_are_gap_free_per_conversation,
            resends_return_the_first_entry,
            a_bad_batch_writes_nothing,
            pages_forward_and_backward,
            read_cursors_only_move_forward,
            concurrent_appends_get_every_seq_once,
            views_of_a_conversation,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::store::suite::$name(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

const T: i64 = 1_764_000_000_000;

fn entry(conversation: &str, sender: &str, client_msg_id: &str) -> NewEntry {
    NewEntry {
        conversation_id: conversation.into(),
        sender_user_id: sender.into(),
        sender_device_id: "phone".into(),
        client_msg_id: client_msg_id.into(),
        kind: EntryKind::Content,
        target_seq: 0,
        body: client_msg_id.as_bytes().to_vec(),
        server_time_ms: T,
    }
}

fn seqs(appended: &[Appended]) -> Vec<i64> {
    appended.iter().map(|a| a.entry().seq).collect()
}

/// Each conversation counts 1, 2, 3, ... in batch order, independently of the others.
pub async fn sequences_are_gap_free_per_conversation(store: Arc<dyn MessageStore>) {
    let batch = [
        entry("d:amy:bob", "amy", "a1"),
        entry("g:team", "amy", "a2"),
        entry("d:amy:bob", "bob", "b1"),
        entry("d:amy:bob", "amy", "a3"),
        entry("g:team", "cy", "c1"),
    ];
    let appended = store.append(&batch).await.unwrap();
    assert_eq!(seqs(&appended), vec![1, 1, 2, 3, 2]);
    assert!(appended.iter().all(|a| matches!(a, Appended::New(_))));
    let next = store
        .append(&[entry("d:amy:bob", "bob", "b2")])
        .await
        .unwrap();
    assert_eq!(seqs(&next), vec![4]);
    let stored = store.entry("d:amy:bob", 4).await.unwrap().unwrap();
    let by_id = store
        .entry_by_client_id("d:amy:bob", "bob", "b2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id, stored);
    assert_eq!(
        store
            .entry_by_client_id("d:amy:bob", "amy", "b2")
            .await
            .unwrap(),
        None,
        "ids belong to their sender"
    );
    assert_eq!(
        (stored.body.as_slice(), stored.kind),
        (b"b2".as_slice(), EntryKind::Content as i32)
    );
    assert_eq!(
        store
            .last_seqs(&["g:team".into(), "d:x:y".into(), "d:amy:bob".into()])
            .await
            .unwrap(),
        vec![2, 0, 4]
    );
}

/// The same (conversation, sender, client message id) returns the first entry, in later batches
/// and within one batch; the same id from another sender or in another conversation is new.
pub async fn resends_return_the_first_entry(store: Arc<dyn MessageStore>) {
    let first = store
        .append(&[entry("g:team", "amy", "same")])
        .await
        .unwrap()
        .remove(0);
    let Appended::New(original) = first else {
        panic!("the first send is new")
    };
    let again = store
        .append(&[
            entry("g:team", "amy", "same"),
            entry("g:team", "bob", "same"),
            entry("g:other", "amy", "same"),
        ])
        .await
        .unwrap();
    assert_eq!(again[0], Appended::Duplicate(original.clone()));
    assert!(
        matches!(&again[1], Appended::New(e) if e.seq == 2),
        "another sender"
    );
    assert!(
        matches!(&again[2], Appended::New(e) if e.seq == 1),
        "another conversation"
    );
    let twice = store
        .append(&[entry("g:team", "cy", "x"), entry("g:team", "cy", "x")])
        .await
        .unwrap();
    assert!(matches!(twice[0], Appended::New(_)));
    assert_eq!(
        twice[1],
        Appended::Duplicate(twice[0].entry().clone()),
        "a resend within one batch"
    );
    assert_eq!(
        store.last_seqs(&["g:team".into()]).await.unwrap(),
        vec![3],
        "no seq was spent on resends"
    );
}

/// An invalid entry fails the whole batch before anything is written.
pub async fn a_bad_batch_writes_nothing(store: Arc<dyn MessageStore>) {
    let err = store
        .append(&[entry("g:team", "amy", "ok"), entry("g:team", "amy", "")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.last_seqs(&["g:team".into()]).await.unwrap(), vec![0]);
    assert!(
        store
            .entries_after("g:team", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Forward and backward pages are ascending, contiguous and bounded.
pub async fn pages_forward_and_backward(store: Arc<dyn MessageStore>) {
    let batch: Vec<NewEntry> = (1..=250)
        .map(|i| entry("g:big", "amy", &format!("m{i}")))
        .collect();
    store.append(&batch).await.unwrap();
    let range = |page: Vec<super::StoredEntry>| page.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        range(store.entries_after("g:big", 0, 100).await.unwrap()),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(
        range(store.entries_after("g:big", 200, 100).await.unwrap()),
        (201..=250).collect::<Vec<_>>()
    );
    assert_eq!(
        range(store.entries_before("g:big", 0, 50).await.unwrap()),
        (201..=250).collect::<Vec<_>>()
    );
    assert_eq!(
        range(store.entries_before("g:big", 101, 50).await.unwrap()),
        (51..=100).collect::<Vec<_>>()
    );
    assert_eq!(
        range(store.entries_before("g:big", 3, 50).await.unwrap()),
        vec![1, 2]
    );
    assert!(
        store
            .entries_after("g:big", 250, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.entries_after("g:big", 0, 0).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.entry("g:big", 251).await.unwrap(), None);
}

/// Read cursors move forward only and never past the last seq.
pub async fn read_cursors_only_move_forward(store: Arc<dyn MessageStore>) {
    let batch: Vec<NewEntry> = (1..=10)
        .map(|i| entry("g:team", "amy", &format!("m{i}")))
        .collect();
    store.append(&batch).await.unwrap();
    assert_eq!(store.advance_read("g:team", "bob", 5, T).await.unwrap(), 5);
    assert_eq!(
        store.advance_read("g:team", "bob", 3, T).await.unwrap(),
        5,
        "never back"
    );
    assert_eq!(
        store.advance_read("g:team", "bob", 999, T).await.unwrap(),
        10,
        "never past the last seq"
    );
    assert_eq!(store.advance_read("g:team", "amy", 2, T).await.unwrap(), 2);
    assert_eq!(
        store.advance_read("g:none", "amy", 2, T).await.unwrap(),
        0,
        "nothing to read"
    );
    let cursors = store.read_cursors("g:team", "", 10).await.unwrap();
    assert_eq!(cursors, vec![("amy".into(), 2), ("bob".into(), 10)]);
    assert_eq!(
        store.read_cursors("g:team", "amy", 10).await.unwrap(),
        vec![("bob".into(), 10)]
    );
}

/// Many writers at once: every seq from 1 to N is used exactly once, each by one entry.
pub async fn concurrent_appends_get_every_seq_once(store: Arc<dyn MessageStore>) {
    let writers = 8;
    let per_writer = 25;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let batch = [entry("g:hot", &format!("u{w}"), &format!("m{i}"))];
                store.append(&batch).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = writers * per_writer;
    let page = store.entries_after("g:hot", 0, 1_000).await.unwrap();
    let seqs: Vec<i64> = page.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    let mut keys: Vec<_> = page
        .iter()
        .map(|e| (e.sender_user_id.clone(), e.client_msg_id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "every entry once");
}

fn acting(conversation: &str, sender: &str, id: &str, kind: EntryKind, target: u64) -> NewEntry {
    NewEntry {
        kind,
        target_seq: target,
        ..entry(conversation, sender, id)
    }
}

/// What the views of a conversation are made of: whose 1:1 conversations exist, read cursors,
/// unread counts (content from others, not recalled or deleted), the newest content entry and
/// the entries acting on others.
pub async fn views_of_a_conversation(store: Arc<dyn MessageStore>) {
    let c = "d:amy:bob";
    store
        .append(&[
            entry(c, "amy", "1"),
            entry(c, "bob", "2"),
            entry(c, "amy", "3"),
            entry(c, "amy", "4"),
            acting(c, "amy", "5", EntryKind::Recall, 3),
            acting(c, "bob", "6", EntryKind::Reaction, 1),
            acting(c, "amy", "7", EntryKind::Edit, 1),
            entry("d:amy:amy", "amy", "self"),
            entry("g:team", "amy", "g1"),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.direct_conversations("amy").await.unwrap(),
        ["d:amy:amy", "d:amy:bob"]
    );
    assert_eq!(store.direct_conversations("bob").await.unwrap(), [c]);
    assert!(store.direct_conversations("cy").await.unwrap().is_empty());

    // bob has not read: amy's 1 and 4 count, 3 was recalled, 2 is his own.
    assert_eq!(store.unread_count(c, "bob", 0).await.unwrap(), 2);
    assert_eq!(store.unread_count(c, "bob", 1).await.unwrap(), 1);
    assert_eq!(store.unread_count(c, "amy", 0).await.unwrap(), 1);
    store.advance_read(c, "bob", 4, T).await.unwrap();
    let ids = [c.to_owned(), "g:team".to_owned()];
    assert_eq!(store.read_seqs("bob", &ids).await.unwrap(), [4, 0]);

    let newest = store.last_content(c).await.unwrap().unwrap();
    assert_eq!(newest.seq, 4);
    assert_eq!(store.last_content("g:none").await.unwrap(), None);

    let effects = store.effects(c, &[1, 3], 7).await.unwrap();
    assert_eq!(effects.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
    let effects = store.effects(c, &[1, 3], 6).await.unwrap();
    assert_eq!(effects.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
}

//! What was appended survives closing and reopening the database, and sequences continue
//! after it with no gap and no reuse.

use im_server::store::{Appended, EntryKind, MessageStore, NewEntry, SqliteMessageStore};

fn entry(client_msg_id: &str) -> NewEntry {
    NewEntry {
        conversation_id: "d:amy:bob".into(),
        sender_user_id: "amy".into(),
        sender_device_id: "phone".into(),
        client_msg_id: client_msg_id.into(),
        kind: EntryKind::Content,
        target_seq: 0,
        body: vec![1, 2, 3],
        server_time_ms: 1,
    }
}

#[tokio::test]
async fn entries_and_sequences_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.db");
    let first = {
        let store = SqliteMessageStore::open(&path, 2).await.unwrap();
        let batch: Vec<NewEntry> = (1..=5).map(|i| entry(&format!("m{i}"))).collect();
        store.append(&batch).await.unwrap()
    };
    let store = SqliteMessageStore::open(&path, 2).await.unwrap();
    assert_eq!(
        store.entries_after("d:amy:bob", 0, 10).await.unwrap().len(),
        5
    );
    let resend = store.append(&[entry("m3")]).await.unwrap();
    assert_eq!(
        resend[0],
        Appended::Duplicate(first[2].entry().clone()),
        "the resend finds the first entry"
    );
    let next = store.append(&[entry("m6")]).await.unwrap();
    assert_eq!(next[0].entry().seq, 6, "no gap, no reuse");
}

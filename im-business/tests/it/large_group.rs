//! A group of 100,000 members: created, grown and paged through, with every check on it still
//! a single lookup.

use std::time::Instant;

use im_business::{Actor, NewGroup, UserImport};
use im_proto::v1::ConversationAction;

const MEMBERS: usize = 100_000;

#[tokio::test]
async fn a_hundred_thousand_members() {
    let world = crate::common::world().await;
    let b = &world.business;
    let app = &Actor::App;
    let started = Instant::now();
    let ids: Vec<String> = (0..=MEMBERS + 1_000)
        .map(|i| format!("user{i:06}"))
        .collect();
    for batch in ids.chunks(b.config().max_import_batch) {
        let users: Vec<UserImport> = batch
            .iter()
            .map(|id| UserImport {
                user_id: id.clone(),
                ..Default::default()
            })
            .collect();
        assert_eq!(b.import_users(app, &users).await.unwrap(), batch.len());
    }
    let imported = started.elapsed();

    let (owner, rest) = ids.split_first().unwrap();
    let (first, later) = rest.split_at(MEMBERS - 1);
    let new = NewGroup {
        group_id: "huge".into(),
        name: "Huge".into(),
        owner_user_id: owner.clone(),
        member_user_ids: first.to_vec(),
        ..Default::default()
    };
    let group = b.create_group(app, new).await.unwrap();
    assert_eq!(group.member_count, MEMBERS as i64);
    let created = started.elapsed();

    let grown = b.add_members(app, "huge", later).await.unwrap();
    assert_eq!(grown.group.member_count, (MEMBERS + later.len()) as i64);

    let (mut seen, mut after) = (0, String::new());
    loop {
        let page = b
            .list_members(app, "huge", &after, 1_000)
            .await
            .unwrap()
            .items;
        let Some(last) = page.last() else { break };
        after = last.user_id.clone();
        seen += page.len();
    }
    assert_eq!(seen, MEMBERS + later.len());
    let decision = b
        .check_permission("user050000", "g:huge", ConversationAction::Send)
        .await;
    assert!(decision.allowed);
    eprintln!(
        "imported {} users in {imported:?}; group of {MEMBERS} created by {created:?}; everything in {:?}",
        ids.len(),
        started.elapsed()
    );
}

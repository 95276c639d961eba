//! Core nodes' permission checks, through the bus and the cache, against the real business
//! service: a removal, mute, block or mute-all is enforced on the very next check after its
//! event, never served stale from the cache.

#![allow(clippy::unwrap_used)] // Tests: a panic is how a failure is reported.

mod common;

use std::{sync::Arc, time::Duration};

use common::cast;
use im_business::{Actor, GroupUpdate, responder::serve_bus_requests};
use im_common::{bus::Bus, permission::PermissionClient};
use im_proto::v1::{ConversationAction, ErrorCode};

async fn until_applied(client: &PermissionClient, count: u64) {
    for _ in 0..5_000 {
        if client.applied() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the event never reached the cache");
}

#[tokio::test]
async fn changes_are_enforced_on_the_next_check_after_their_event() {
    let world = cast().await;
    let bus: Arc<dyn Bus> = Arc::new(world.bus.clone());
    // Dropping the set would stop the responders.
    let _responders = serve_bus_requests(world.business.clone(), bus.clone())
        .await
        .expect("serves");
    let client = Arc::new(PermissionClient::new(
        bus,
        10_000,
        Duration::from_secs(600),
        Duration::from_secs(5),
    ));
    client.clone().follow().await.expect("follows events");
    let business = &world.business;
    let send = ConversationAction::Send;
    let check = |user: &'static str, conversation: &'static str| {
        let client = client.clone();
        async move {
            client
                .check(user, conversation, send)
                .await
                .expect("answered")
        }
    };

    // Removal.
    assert!(check("member", "g:team").await.allowed);
    assert!(check("member", "g:team").await.allowed, "now cached");
    let applied = client.applied();
    business
        .remove_members(&Actor::App, "team", &["member".into()])
        .await
        .unwrap();
    until_applied(&client, applied + 1).await;
    assert_eq!(
        check("member", "g:team").await.code,
        ErrorCode::NotAMember as i32
    );

    // Mute of one member, with its end.
    assert!(check("tgt", "g:team").await.allowed);
    let applied = client.applied();
    let until = im_business::service::now_ms() + 3_600_000;
    business
        .mute_member(&Actor::App, "team", "tgt", until)
        .await
        .unwrap();
    until_applied(&client, applied + 1).await;
    let muted = check("tgt", "g:team").await;
    assert_eq!(
        (muted.allowed, muted.code, muted.until_ms),
        (false, ErrorCode::Muted as i32, until)
    );

    // Block in a 1:1 conversation.
    assert!(check("newbie", "d:newbie:owner").await.allowed);
    let applied = client.applied();
    business
        .set_block(&Actor::App, "owner", "newbie", true)
        .await
        .unwrap();
    until_applied(&client, applied + 1).await;
    assert_eq!(
        check("newbie", "d:newbie:owner").await.code,
        ErrorCode::Blocked as i32
    );

    // Mute-all spares the admins.
    assert!(check("blocked", "g:team").await.allowed);
    let applied = client.applied();
    let all = GroupUpdate {
        mute_all: Some(true),
        ..Default::default()
    };
    business
        .update_group(&Actor::App, "team", all)
        .await
        .unwrap();
    until_applied(&client, applied + 1).await;
    assert_eq!(
        check("blocked", "g:team").await.code,
        ErrorCode::Muted as i32
    );
    assert!(check("admin", "g:team").await.allowed);
}

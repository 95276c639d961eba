//! Core nodes' permission checks, through the bus and the cache followed by the event intake,
//! against the real business service: a removal, mute, block or mute-all is enforced on the
//! very next check after its event, never served stale from the cache.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use im_business::{
    Actor, Business, BusinessConfig, GroupUpdate, NewGroup, responder::serve_bus_requests,
    store::SqliteBusinessStore,
};
use im_common::{
    auth::{TokenIssuer, TokenVerifier},
    bus::{Bus, LocalBus},
};
use im_proto::{
    ConversationId, UserId,
    v1::{ConversationAction, ErrorCode, GroupRole},
};
use im_server::{
    business::{Directory, Permissions},
    events::{Event, Subscriptions},
    intake::{Intake, SessionEffects},
};

const SECRET: &[u8] = b"a test token secret of thirty-two bytes";

/// No sessions on this node: only the caches follow the events.
struct NoSessions;

#[async_trait]
impl SessionEffects for NoSessions {
    async fn apply(&self, _: &Event, _: Option<Arc<[String]>>) {}
}

async fn until_applied(client: &Permissions, count: u64) {
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
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
    let store = SqliteBusinessStore::open(&dir.path().join("business.db"), 4)
        .await
        .unwrap();
    let business = Arc::new(
        Business::new(
            Arc::new(store),
            bus.clone(),
            TokenIssuer::new(SECRET),
            BusinessConfig::default(),
            "business-test",
        )
        .await
        .unwrap(),
    );
    for id in ["owner", "admin", "member", "tgt", "blocked", "newbie"] {
        business
            .upsert_user(&Actor::App, id, id, "", "")
            .await
            .unwrap();
    }
    let team = NewGroup {
        group_id: "team".into(),
        name: "team".into(),
        owner_user_id: "owner".into(),
        member_user_ids: ["admin", "member", "tgt", "blocked"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    business.create_group(&Actor::App, team).await.unwrap();
    business
        .set_member_role(&Actor::App, "team", "admin", GroupRole::Admin)
        .await
        .unwrap();
    // Dropping the set would stop the responders.
    let _responders = serve_bus_requests(business.clone(), bus.clone())
        .await
        .expect("serves");
    let client = Arc::new(Permissions::new(
        bus.clone(),
        10_000,
        Duration::from_secs(600),
        Duration::from_secs(5),
    ));
    let intake = Intake::new(
        Arc::new(TokenVerifier::new(SECRET, None).unwrap()),
        client.clone(),
        Arc::new(Directory::new(bus.clone(), 100, Duration::from_secs(5))),
        Arc::new(NoSessions),
    );
    let subscriptions = Subscriptions::subscribe(bus.as_ref()).await.unwrap();
    tokio::spawn(intake.run(subscriptions, bus.link()));
    let send = ConversationAction::Send;
    let check = |user: &'static str, conversation: &'static str| {
        let client = client.clone();
        async move {
            let conversation: ConversationId = conversation.parse().unwrap();
            client
                .check(&UserId::new(user).unwrap(), &conversation, send)
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

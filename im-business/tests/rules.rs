//! Bad input gets its error code and writes nothing; every change is audited.

#![allow(clippy::unwrap_used)] // Tests: a panic is how a failure is reported.

mod common;

use common::{cast, user};
use im_business::{Actor, GroupUpdate, NewGroup};
use im_common::bus::Bus;
use im_proto::{
    bus,
    v1::{AuditEvent, AuditOutcome, ErrorCode},
};
use prost::Message;

fn code<T: std::fmt::Debug>(result: Result<T, im_business::BusinessError>) -> ErrorCode {
    result.expect_err("the call fails").code()
}

#[tokio::test]
async fn bad_input_is_refused_with_its_code_and_writes_nothing() {
    let world = cast().await;
    let b = &world.business;
    let app = &Actor::App;

    assert_eq!(code(b.get_user("ghost").await), ErrorCode::UserNotFound);
    assert_eq!(
        code(b.get_user("bad id!").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.get_group(app, "ghost").await),
        ErrorCode::GroupNotFound
    );
    assert_eq!(
        code(b.add_members(app, "ghost", &["tgt".into()]).await),
        ErrorCode::GroupNotFound
    );

    // One unknown user among several: nobody is added.
    let err = b
        .add_members(app, "team", &["newbie".into(), "ghost".into()])
        .await;
    assert_eq!(code(err), ErrorCode::UserNotFound);
    let members = b.list_members(app, "team", "", 100).await.unwrap();
    assert!(
        members.iter().all(|m| m.user_id != "newbie"),
        "no partial write"
    );
    assert_eq!(
        code(b.add_members(app, "team", &["tgt".into()]).await),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(
            b.add_members(app, "team", &["newbie".into(), "newbie".into()])
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.add_members(app, "team", &[]).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.add_members(app, "team", &["deact".into()]).await),
        ErrorCode::UserDisabled
    );

    // The owner cannot be removed, leave, or lose its role but by a transfer.
    assert_eq!(
        code(b.remove_members(app, "team", &["owner".into()]).await),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(b.leave_group(&user("owner"), "team", "owner").await),
        ErrorCode::Conflict
    );
    let demote = b
        .set_member_role(app, "team", "owner", im_proto::v1::GroupRole::Member)
        .await;
    assert_eq!(code(demote), ErrorCode::Conflict);
    let promote = b
        .set_member_role(app, "team", "tgt", im_proto::v1::GroupRole::Owner)
        .await;
    assert_eq!(code(promote), ErrorCode::InvalidArgument);
    assert_eq!(
        code(b.transfer_ownership(app, "team", "outsider").await),
        ErrorCode::NotAMember
    );
    assert_eq!(
        b.get_group(app, "team").await.unwrap().owner_user_id,
        "owner"
    );

    assert_eq!(
        code(b.set_block(app, "tgt", "tgt", true).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.set_block(app, "tgt", "ghost", true).await),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(b.set_contact(app, "tgt", "tgt", true).await),
        ErrorCode::InvalidArgument
    );

    let long = "x".repeat(b.config().max_name_bytes + 1);
    let rename = GroupUpdate {
        name: Some(long.clone()),
        ..Default::default()
    };
    assert_eq!(
        code(b.update_group(app, "team", rename).await),
        ErrorCode::InvalidArgument
    );
    let blank = GroupUpdate {
        name: Some("  ".into()),
        ..Default::default()
    };
    assert_eq!(
        code(b.update_group(app, "team", blank).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        b.get_group(app, "team").await.unwrap().name,
        "Team",
        "nothing renamed"
    );
    assert_eq!(
        code(b.upsert_user(app, "fresh", &long, "", "").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.upsert_user(app, "fresh", "Fresh", "", "{not json").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.get_user("fresh").await),
        ErrorCode::UserNotFound,
        "no user half-created"
    );

    let dup = NewGroup {
        group_id: "team".into(),
        name: "Again".into(),
        owner_user_id: "tgt".into(),
        ..Default::default()
    };
    assert_eq!(
        code(b.create_group(app, dup).await),
        ErrorCode::AlreadyExists
    );
    let with_ghost = NewGroup {
        group_id: "g2".into(),
        name: "G2".into(),
        owner_user_id: "tgt".into(),
        member_user_ids: vec!["ghost".into()],
        ..Default::default()
    };
    assert_eq!(
        code(b.create_group(app, with_ghost).await),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(b.get_group(app, "g2").await),
        ErrorCode::GroupNotFound,
        "no group half-created"
    );
    assert_eq!(
        code(b.issue_token(app, "deact", "phone", 0).await),
        ErrorCode::UserDisabled
    );
    assert_eq!(
        code(b.issue_token(app, "tgt", "bad device!", 0).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.mute_member(app, "team", "tgt", -1).await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn changes_and_refusals_are_audited() {
    let world = cast().await;
    let mut audit = world.bus.subscribe(bus::AUDIT).await.unwrap();
    let b = &world.business;
    b.add_members(&user("admin"), "team", &["newbie".into()])
        .await
        .unwrap();
    b.add_members(&user("member"), "team", &["outsider".into()])
        .await
        .unwrap_err();

    let mut next =
        async || AuditEvent::decode(audit.next().await.expect("an audit event").payload).unwrap();
    let done = next().await;
    assert_eq!(
        (
            done.actor.as_str(),
            done.action.as_str(),
            done.target.as_str()
        ),
        ("user:admin", "group.member.add", "group:team")
    );
    assert_eq!(done.outcome(), AuditOutcome::Success);
    assert!(done.time_ms > 0 && !done.event_id.is_empty() && done.node_id == "business-test");
    let refused = next().await;
    assert_eq!(
        (refused.actor.as_str(), refused.outcome()),
        ("user:member", AuditOutcome::Denied)
    );
    assert!(
        refused.detail_json.contains("forbidden"),
        "{}",
        refused.detail_json
    );
    assert_ne!(refused.event_id, done.event_id);
}

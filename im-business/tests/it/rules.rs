//! Bad input gets its error code and writes nothing; every change is audited.

use crate::common::{cast, user};
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

    assert_eq!(
        code(b.get_user(&Actor::App, "ghost").await),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(b.get_user(&Actor::App, "bad id!").await),
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
    let members = b.list_members(app, "team", "", 100).await.unwrap().items;
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
        code(b.get_user(&Actor::App, "fresh").await),
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

fn denied(decision: im_proto::v1::PermissionDecision) -> Option<ErrorCode> {
    (!decision.allowed).then(|| ErrorCode::try_from(decision.code).unwrap())
}

#[tokio::test]
async fn permission_rules_beyond_the_matrix() {
    use im_proto::v1::{ConversationAction::Send, ConversationType};
    let world = crate::common::cast_with(im_business::BusinessConfig {
        direct_requires_contact: true,
        ..Default::default()
    })
    .await;
    let b = &world.business;
    let app = &Actor::App;

    // A member's own mute binds admins too.
    b.mute_member(
        app,
        "team",
        "admin",
        im_business::service::now_ms() + 60_000,
    )
    .await
    .unwrap();
    assert_eq!(
        denied(b.check_permission("admin", "g:team", Send).await),
        Some(ErrorCode::Muted)
    );
    b.mute_member(app, "team", "admin", 0).await.unwrap();
    assert_eq!(
        denied(b.check_permission("admin", "g:team", Send).await),
        None
    );

    // Channels: owner and admins post, members read.
    let channel = NewGroup {
        group_id: "news".into(),
        name: "News".into(),
        owner_user_id: "owner".into(),
        member_user_ids: vec!["admin".into(), "member".into()],
        kind: ConversationType::Channel,
        ..Default::default()
    };
    b.create_group(app, channel).await.unwrap();
    b.set_member_role(app, "news", "admin", im_proto::v1::GroupRole::Admin)
        .await
        .unwrap();
    assert_eq!(
        denied(b.check_permission("member", "g:news", Send).await),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        denied(b.check_permission("admin", "g:news", Send).await),
        None
    );
    assert_eq!(
        denied(
            b.check_permission("member", "g:news", im_proto::v1::ConversationAction::Read)
                .await
        ),
        None
    );

    // Only contacts may talk 1:1 when the policy says so.
    assert_eq!(
        denied(b.check_permission("member", "d:member:tgt", Send).await),
        Some(ErrorCode::NotAContact)
    );
    b.set_contact(app, "tgt", "member", true).await.unwrap();
    assert_eq!(
        denied(b.check_permission("member", "d:member:tgt", Send).await),
        None
    );
    // A deactivated peer cannot be reached; the sender is not the one disabled.
    b.set_contact(app, "deact", "member", true)
        .await
        .unwrap_err();
    assert_eq!(
        denied(b.check_permission("member", "d:deact:member", Send).await),
        Some(ErrorCode::Forbidden)
    );

    // A dismissed group is gone for everyone.
    b.dismiss_group(app, "news").await.unwrap();
    assert_eq!(
        denied(b.check_permission("owner", "g:news", Send).await),
        Some(ErrorCode::GroupNotFound)
    );
    assert_eq!(
        denied(b.check_permission("amy", "x:bad", Send).await),
        Some(ErrorCode::InvalidArgument)
    );
}

#[tokio::test]
async fn concurrent_changes_never_leave_two_owners_or_undo_each_other() {
    let world = cast().await;
    let b = world.business.clone();
    let app = Actor::App;
    // The owner hands the group to two members at once: exactly one transfer wins.
    let owner = user("owner");
    let (one, two) = tokio::join!(
        b.transfer_ownership(&owner, "team", "tgt"),
        b.transfer_ownership(&owner, "team", "member")
    );
    assert!(
        one.is_ok() ^ two.is_ok(),
        "exactly one transfer wins: {one:?} {two:?}"
    );
    let members = b.list_members(&app, "team", "", 100).await.unwrap().items;
    let owners: Vec<_> = members
        .iter()
        .filter(|m| m.role == im_proto::v1::GroupRole::Owner as i32)
        .collect();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        b.get_group(&app, "team").await.unwrap().owner_user_id,
        owners[0].user_id
    );

    // A mute and a promotion of the same member at once both stick.
    let until = im_business::service::now_ms() + 60_000;
    let (muted, promoted) = tokio::join!(
        b.mute_member(&app, "team", "blocked", until),
        b.set_member_role(&app, "team", "blocked", im_proto::v1::GroupRole::Admin)
    );
    muted.unwrap();
    promoted.unwrap();
    let after = b
        .list_members(&app, "team", "", 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|m| m.user_id == "blocked")
        .unwrap();
    assert_eq!(
        (after.role, after.muted_until_ms),
        (im_proto::v1::GroupRole::Admin as i32, until)
    );
}

#[tokio::test]
async fn every_kind_of_change_is_audited_with_what_it_touched() {
    let world = cast().await;
    let mut audit = world.bus.subscribe(bus::AUDIT).await.unwrap();
    let b = &world.business;
    let app = &Actor::App;
    b.mute_member(app, "team", "tgt", 0).await.unwrap();
    b.set_member_role(app, "team", "tgt", im_proto::v1::GroupRole::Admin)
        .await
        .unwrap();
    b.issue_token(app, "tgt", "phone", 0).await.unwrap();
    b.revoke_tokens(&user("tgt"), "tgt", "phone").await.unwrap();
    b.set_block(&user("tgt"), "tgt", "newbie", true)
        .await
        .unwrap();
    b.deactivate_user(app, "newbie").await.unwrap();
    b.revoke_tokens(app, "ghost", "").await.unwrap_err();
    let mut seen = Vec::new();
    for _ in 0..7 {
        let event = AuditEvent::decode(audit.next().await.unwrap().payload).unwrap();
        seen.push((event.action, event.target, event.outcome, event.detail_json));
    }
    let success = AuditOutcome::Success as i32;
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str(), seen[0].2),
        ("group.member.mute", "group:team", success)
    );
    assert!(
        seen[0].3.contains("\"tgt\""),
        "the muted user is named: {}",
        seen[0].3
    );
    assert_eq!(seen[1].0, "group.member.role");
    assert!(seen[1].3.contains("GROUP_ROLE_ADMIN"));
    assert_eq!(
        (seen[2].0.as_str(), seen[2].1.as_str()),
        ("token.issue", "user:tgt")
    );
    assert_eq!(
        (seen[3].0.as_str(), seen[3].1.as_str()),
        ("token.revoke", "user:tgt")
    );
    assert_eq!(
        (seen[4].0.as_str(), seen[4].1.as_str()),
        ("user.block", "user:newbie")
    );
    assert_eq!(
        (seen[5].0.as_str(), seen[5].1.as_str()),
        ("user.deactivate", "user:newbie")
    );
    assert_eq!(
        (seen[6].0.as_str(), seen[6].2),
        ("token.revoke", AuditOutcome::Denied as i32)
    );
    assert!(seen[6].3.contains("not found"), "{}", seen[6].3);
}

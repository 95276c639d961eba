//! Consent to group adds: whom a user puts in a group at once and whom it invites, under each
//! `group_adds` policy, and the invitations' answers.

use im_business::{Actor, BusinessConfig, GroupAdds, NewGroup};
use im_proto::v1::{ErrorCode, JoinPolicy};

use crate::common::{World, user, world_with};

/// A world under `policy`: group `team` owned by `owner`; `friend` has the owner as a contact,
/// `stranger` does not, `blocker` blocks the owner; `open` is a group anyone may join.
async fn world(policy: GroupAdds) -> World {
    let w = world_with(BusinessConfig {
        group_adds: policy,
        ..BusinessConfig::default()
    })
    .await;
    let b = &w.business;
    for id in ["owner", "friend", "stranger", "blocker", "joiner"] {
        b.upsert_user(&Actor::App, id, id, "", "").await.unwrap();
    }
    b.set_contact(&Actor::App, "friend", "owner", true)
        .await
        .unwrap();
    b.set_block(&Actor::App, "blocker", "owner", true)
        .await
        .unwrap();
    for (id, join_policy) in [("team", JoinPolicy::InviteOnly), ("open", JoinPolicy::Open)] {
        let group = NewGroup {
            group_id: id.into(),
            name: id.into(),
            owner_user_id: "owner".into(),
            join_policy,
            ..Default::default()
        };
        b.create_group(&Actor::App, group).await.unwrap();
    }
    w
}

/// What adding `target` to `group` as `actor` does: "added", "invited" or the error's name.
async fn add(w: &World, actor: &Actor, group: &str, target: &str) -> String {
    match w.business.add_members(actor, group, &[target.into()]).await {
        Ok(outcome) if outcome.added == [target] => "added".into(),
        Ok(outcome) if outcome.invited == [target] => "invited".into(),
        Ok(outcome) => panic!("{outcome:?}"),
        Err(error) => error
            .code()
            .as_str_name()
            .trim_start_matches("ERROR_CODE_")
            .into(),
    }
}

#[tokio::test]
async fn group_adds_follow_the_policy_for_every_kind_of_target() {
    let owner = user("owner");
    // Per policy: the app adds a stranger; the owner adds friend, stranger, blocker; the app
    // adds blocker; a plain member of an open group adds friend (who has only the owner as a
    // contact).
    let matrix = [
        (
            GroupAdds::Direct,
            ["added", "added", "added", "BLOCKED", "added", "added"],
        ),
        (
            GroupAdds::Contacts,
            ["added", "added", "invited", "BLOCKED", "added", "invited"],
        ),
        (
            GroupAdds::Invitation,
            ["added", "invited", "invited", "BLOCKED", "added", "invited"],
        ),
    ];
    for (policy, expected) in matrix {
        let w = world(policy).await;
        let joined = w
            .business
            .add_members(&Actor::App, "open", &["joiner".into()])
            .await
            .unwrap();
        assert_eq!(joined.added, ["joiner"]);
        let got = [
            add(&w, &Actor::App, "team", "stranger").await,
            add(&w, &owner, "team", "friend").await,
            add(&w, &owner, "open", "stranger").await,
            add(&w, &owner, "team", "blocker").await,
            add(&w, &Actor::App, "team", "blocker").await,
            add(&w, &user("joiner"), "open", "friend").await,
        ];
        assert_eq!(got, expected, "{policy:?}");
    }
}

#[tokio::test]
async fn a_user_creating_a_group_invites_the_first_members_it_may_not_add() {
    let w = world(GroupAdds::Contacts).await;
    let group = NewGroup {
        group_id: "mine".into(),
        name: "mine".into(),
        member_user_ids: vec!["friend".into(), "stranger".into()],
        ..Default::default()
    };
    let created = w
        .business
        .create_group(&user("owner"), group)
        .await
        .unwrap();
    assert_eq!(created.member_count, 2, "the owner and friend");
    let invited = w
        .business
        .list_invitations(&user("stranger"), "stranger")
        .await
        .unwrap();
    assert_eq!(
        invited
            .iter()
            .map(|i| (i.group_id.as_str(), i.inviter_user_id.as_str()))
            .collect::<Vec<_>>(),
        [("mine", "owner")]
    );
    let refused = NewGroup {
        group_id: "blocked".into(),
        name: "blocked".into(),
        member_user_ids: vec!["blocker".into()],
        ..Default::default()
    };
    let error = w
        .business
        .create_group(&user("owner"), refused)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Blocked);
    assert!(
        w.business.get_group(&Actor::App, "blocked").await.is_err(),
        "no group is made"
    );
}

/// The code of a call that fails.
fn code<T: std::fmt::Debug>(result: Result<T, im_business::BusinessError>) -> ErrorCode {
    result.expect_err("the call fails").code()
}

#[tokio::test]
async fn invitations_are_answered_by_the_invitee_or_withdrawn_by_the_inviter() {
    let w = world(GroupAdds::Invitation).await;
    let b = &w.business;
    assert_eq!(add(&w, &user("owner"), "team", "stranger").await, "invited");
    assert_eq!(
        add(&w, &user("owner"), "team", "stranger").await,
        "invited",
        "inviting again changes nothing"
    );
    assert_eq!(
        b.list_invitations(&user("stranger"), "stranger")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        code(
            b.accept_invitation(&user("friend"), "team", "stranger")
                .await
        ),
        ErrorCode::Forbidden,
        "only the invitee accepts"
    );
    assert_eq!(
        code(
            b.decline_invitation(&user("friend"), "team", "stranger")
                .await
        ),
        ErrorCode::Forbidden,
        "a stranger to it cannot withdraw it"
    );
    b.decline_invitation(&user("owner"), "team", "stranger")
        .await
        .unwrap();
    assert_eq!(
        code(
            b.accept_invitation(&user("stranger"), "team", "stranger")
                .await
        ),
        ErrorCode::InvitationNotFound,
        "withdrawn"
    );

    add(&w, &user("owner"), "team", "stranger").await;
    let joined = b
        .accept_invitation(&user("stranger"), "team", "stranger")
        .await
        .unwrap();
    assert_eq!(joined.member_count, 2);
    assert!(
        b.list_invitations(&user("stranger"), "stranger")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        add(&w, &user("owner"), "team", "stranger").await,
        "ALREADY_EXISTS",
        "a member is not invited again"
    );
}

//! The one test suite every [`BusinessStore`] backend runs: write a backend, then
//! `business_store_suite!(async { Some((store, guard)) })` in its tests.

// A test suite: a panic is how it reports a failure.
#![allow(clippy::unwrap_used)]

use im_proto::v1::{
    ConversationType, GroupRole, HistoryVisibility, JoinPolicy, MediaKind, MediaState,
};

use super::{
    BusinessStore, GroupChanges, GroupRecord, HashRecord, HashVerdict, InvitationRecord, JOINING,
    MediaChange, MediaRecord, MemberRecord, Revocation, StoreError, UploadLimits, UserRecord,
};

/// Runs every suite function, each as a test of its own, against a fresh store made by `$make`:
/// an async expression that yields `Some((store, guard))`, the guard (a temporary directory, a
/// database) living for the test, or `None` to skip (a database server that is not there).
#[macro_export]
macro_rules! business_store_suite {
    ($make:expr) => {
        $crate::business_store_suite!(@each $make;
            users_upsert_keeps_creation_and_activity,
            deactivation_and_unknown_users,
            users_in_bulk,
            revocations_only_move_forward,
            revocations_page_in_key_order,
            groups_are_created_with_their_members,
            adding_members_is_all_or_nothing,
            removing_members_is_all_or_nothing,
            members_page_in_id_order,
            roles_mutes_and_ownership,
            group_changes_touch_only_their_fields,
            dismissed_groups_have_no_members,
            groups_of_a_user,
            blocks_and_contacts,
            notices_wait_until_appended,
            invitations_are_kept_once_until_answered,
            concurrent_uploads_never_pass_a_quota,
            media_moves_from_pending_once_and_usage_follows,
            an_upload_created_again_is_the_same_upload,
            processing_keeps_its_facts_and_stalls_are_found,
            hash_verdicts_replace_each_other_and_holders_are_found,
            references_keep_media_until_none_is_left,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::store::suite::$name(&store).await;
            }
        )*
    };
}

const T: i64 = 1_764_000_000_000;

fn user(id: &str) -> UserRecord {
    UserRecord {
        user_id: id.into(),
        display_name: format!("{id} name"),
        avatar_url: String::new(),
        extra_json: "{}".into(),
        active: true,
        created_at_ms: T,
        updated_at_ms: T,
    }
}

fn group(id: &str, owner: &str, max_members: i32) -> GroupRecord {
    GroupRecord {
        group_id: id.into(),
        name: format!("{id} name"),
        avatar_url: String::new(),
        owner_user_id: owner.into(),
        kind: ConversationType::Group as i32,
        join_policy: JoinPolicy::InviteOnly as i32,
        max_members,
        mute_all: false,
        extra_json: "{}".into(),
        member_count: 0,
        dismissed: false,
        version: 0,
        created_at_ms: T,
        history_visibility: HistoryVisibility::FromJoin as i32,
    }
}

fn member(group_id: &str, user_id: &str, role: GroupRole) -> MemberRecord {
    MemberRecord {
        group_id: group_id.into(),
        user_id: user_id.into(),
        role: role as i32,
        joined_at_ms: T,
        muted_until_ms: 0,
        visible_from_seq: 1,
    }
}

/// The body of a notice, as the service would encode it (opaque to the store).
const NOTICE: &[u8] = b"notice";

async fn team(store: &dyn BusinessStore, id: &str, max: i32) -> GroupRecord {
    let first = [
        member(id, "owner", GroupRole::Owner),
        member(id, "amy", GroupRole::Member),
    ];
    store
        .create_group(&group(id, "owner", max), &first, NOTICE)
        .await
        .expect("creates group")
}

/// An upsert updates the profile but keeps `active` and `created_at_ms`.
pub async fn users_upsert_keeps_creation_and_activity(store: &dyn BusinessStore) {
    let created = store.upsert_user(&user("amy")).await.unwrap();
    assert_eq!(created, user("amy"));
    store.deactivate_user("amy", T + 1).await.unwrap();
    let changed = UserRecord {
        display_name: "Amy".into(),
        active: true,
        created_at_ms: T + 99,
        updated_at_ms: T + 2,
        ..user("amy")
    };
    let updated = store.upsert_user(&changed).await.unwrap();
    assert_eq!(updated.display_name, "Amy");
    assert!(!updated.active, "an upsert does not reactivate");
    assert_eq!(updated.created_at_ms, T);
    assert_eq!(store.get_user("amy").await.unwrap(), Some(updated));
}

/// Deactivation sticks and revokes every token in the same step; unknown users are absent or
/// not found.
pub async fn deactivation_and_unknown_users(store: &dyn BusinessStore) {
    store.upsert_user(&user("bob")).await.unwrap();
    let off = store.deactivate_user("bob", T + 5).await.unwrap();
    assert!(!off.active);
    assert_eq!(off.updated_at_ms, T + 5);
    let cut = Revocation {
        user_id: "bob".into(),
        device_id: String::new(),
        revoked_before_ms: T + 5,
    };
    assert!(store.revocations("", "", 100).await.unwrap().contains(&cut));
    assert_eq!(store.get_user("nobody").await.unwrap(), None);
    let err = store.deactivate_user("nobody", T).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(
        store
            .revocations("", "", 100)
            .await
            .unwrap()
            .iter()
            .all(|r| r.user_id != "nobody"),
        "nothing written"
    );
}

/// Many users at once; the first missing or deactivated one among many is found.
pub async fn users_in_bulk(store: &dyn BusinessStore) {
    let batch: Vec<UserRecord> = (0..1_500).map(|i| user(&format!("u{i:04}"))).collect();
    store.upsert_users(&batch).await.unwrap();
    store
        .upsert_users(&[UserRecord {
            display_name: "renamed".into(),
            ..user("u0007")
        }])
        .await
        .unwrap();
    assert_eq!(
        store.get_user("u0007").await.unwrap().unwrap().display_name,
        "renamed"
    );
    let ids: Vec<String> = batch.iter().map(|u| u.user_id.clone()).collect();
    assert_eq!(store.first_unusable(&ids).await.unwrap(), None);
    store.deactivate_user("u1200", T).await.unwrap();
    let mut probe = ids.clone();
    probe.insert(1_300, "ghost".into());
    assert_eq!(
        store.first_unusable(&probe).await.unwrap(),
        Some(("u1200".into(), true))
    );
    probe.insert(10, "ghost2".into());
    assert_eq!(
        store.first_unusable(&probe).await.unwrap(),
        Some(("ghost2".into(), false))
    );
}

/// Every revocation moves its cut-off forward, past the one before even when asked for an
/// earlier time; the cut-offs of a device are its user's and its own.
pub async fn revocations_only_move_forward(store: &dyn BusinessStore) {
    let cut = |device: &str, at| Revocation {
        user_id: "amy".into(),
        device_id: device.into(),
        revoked_before_ms: at,
    };
    let none = store.cut_offs("amy", "phone").await.unwrap();
    assert_eq!((none.user_ms, none.device_ms), (0, 0));
    assert_eq!(
        store.revoke_tokens(&cut("phone", T + 10)).await.unwrap(),
        T + 10
    );
    assert_eq!(
        store.revoke_tokens(&cut("phone", T + 5)).await.unwrap(),
        T + 11
    );
    assert_eq!(
        store.revoke_tokens(&cut("phone", T + 11)).await.unwrap(),
        T + 12
    );
    assert_eq!(store.revoke_tokens(&cut("", T + 1)).await.unwrap(), T + 1);
    let all = store.revocations("", "", 100).await.unwrap();
    assert_eq!(all, vec![cut("", T + 1), cut("phone", T + 12)]);
    let phone = store.cut_offs("amy", "phone").await.unwrap();
    assert_eq!((phone.user_ms, phone.device_ms), (T + 1, T + 12));
    let laptop = store.cut_offs("amy", "laptop").await.unwrap();
    assert_eq!((laptop.user_ms, laptop.device_ms), (T + 1, 0));
    let bob = store.cut_offs("bob", "phone").await.unwrap();
    assert_eq!((bob.user_ms, bob.device_ms), (0, 0));
}

/// Revocations come in pages, in (user, device) order, each after the last key of the one
/// before.
pub async fn revocations_page_in_key_order(store: &dyn BusinessStore) {
    let cut = |user: &str, device: &str| Revocation {
        user_id: user.into(),
        device_id: device.into(),
        revoked_before_ms: T,
    };
    let keys = [
        ("bob", ""),
        ("amy", "phone"),
        ("bob", "a"),
        ("amy", ""),
        ("cy", "z"),
    ];
    for (user, device) in keys {
        store.revoke_tokens(&cut(user, device)).await.unwrap();
    }
    let (mut after, mut pages, mut all) = ((String::new(), String::new()), 0, Vec::new());
    loop {
        let page = store.revocations(&after.0, &after.1, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = (last.user_id.clone(), last.device_id.clone());
        pages += 1;
        all.extend(page);
    }
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.user_id.as_str(), r.device_id.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("amy", ""),
            ("amy", "phone"),
            ("bob", ""),
            ("bob", "a"),
            ("cy", "z")
        ]
    );
    assert_eq!(pages, 3);
}

/// A group starts with its members counted and version 1; its id is unique.
pub async fn groups_are_created_with_their_members(store: &dyn BusinessStore) {
    let created = team(store, "g1", 10).await;
    assert_eq!((created.member_count, created.version), (2, 1));
    assert_eq!(store.get_group("g1").await.unwrap(), Some(created));
    let role = store
        .get_member("g1", "owner")
        .await
        .unwrap()
        .map(|m| m.role);
    assert_eq!(role, Some(GroupRole::Owner as i32));
    let err = store
        .create_group(&group("g1", "x", 10), &[], NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    let too_many = [
        member("g2", "a", GroupRole::Owner),
        member("g2", "b", GroupRole::Member),
    ];
    let err = store
        .create_group(&group("g2", "a", 1), &too_many, NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::GroupFull { .. }), "{err}");
    assert_eq!(
        store.get_group("g2").await.unwrap(),
        None,
        "nothing written"
    );
}

/// One present member or one too many fails the whole add.
pub async fn adding_members_is_all_or_nothing(store: &dyn BusinessStore) {
    team(store, "g", 4).await;
    let add = |ids: &[&str]| {
        ids.iter()
            .map(|u| member("g", u, GroupRole::Member))
            .collect::<Vec<_>>()
    };
    let err = store
        .add_members("g", &add(&["bob", "amy"]), NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    assert_eq!(
        store.get_member("g", "bob").await.unwrap(),
        None,
        "bob was not added"
    );
    let err = store
        .add_members("g", &add(&["bob", "cy", "dan"]), NOTICE)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::GroupFull {
                would_have: 5,
                max: 4,
                ..
            }
        ),
        "{err}"
    );
    let after = store
        .add_members("g", &add(&["bob", "cy"]), NOTICE)
        .await
        .unwrap();
    assert_eq!((after.member_count, after.version), (4, 2));
    let err = store
        .add_members("nope", &add(&["bob"]), NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

/// One absent member fails the whole removal.
pub async fn removing_members_is_all_or_nothing(store: &dyn BusinessStore) {
    team(store, "g", 10).await;
    let err = store
        .remove_members("g", &["amy".into(), "zed".into()], NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(
        store.get_member("g", "amy").await.unwrap().is_some(),
        "amy is still there"
    );
    let after = store
        .remove_members("g", &["amy".into()], NOTICE)
        .await
        .unwrap();
    assert_eq!((after.member_count, after.version), (1, 2));
    assert_eq!(store.get_member("g", "amy").await.unwrap(), None);
}

/// Pages of members follow user id order without repeats or holes.
pub async fn members_page_in_id_order(store: &dyn BusinessStore) {
    let mut first = vec![member("big", "owner", GroupRole::Owner)];
    first.extend((0..1_203).map(|i| member("big", &format!("u{i:05}"), GroupRole::Member)));
    let created = store
        .create_group(&group("big", "owner", 5_000), &first, NOTICE)
        .await
        .unwrap();
    assert_eq!(created.member_count, 1_204);
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let page = store.list_members("big", &after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.user_id.clone();
        seen.extend(page.into_iter().map(|m| m.user_id));
    }
    let mut expected: Vec<String> = first.into_iter().map(|m| m.user_id).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

/// Roles and mutes change per member, each alone; ownership moves in one step, and only from
/// the owner of the moment; the owner's role moves by no other way, and it cannot be removed.
pub async fn roles_mutes_and_ownership(store: &dyn BusinessStore) {
    team(store, "g", 10).await;
    let role = |u| async move { store.get_member("g", u).await.unwrap().map(|m| m.role) };
    let after = store
        .set_member_role("g", "amy", GroupRole::Admin as i32)
        .await
        .unwrap();
    assert_eq!(after.version, 2);
    store.set_member_mute("g", "amy", T + 60_000).await.unwrap();
    let amy = store.get_member("g", "amy").await.unwrap().unwrap();
    assert_eq!(
        (amy.role, amy.muted_until_ms),
        (GroupRole::Admin as i32, T + 60_000),
        "neither change undid the other"
    );
    let err = store.set_member_mute("g", "zed", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store
        .set_member_role("g", "owner", GroupRole::Member as i32)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = store
        .set_member_role("g", "amy", GroupRole::Owner as i32)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = store
        .remove_members("g", &["owner".into()], NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");

    let after = store.transfer_ownership("g", "owner", "amy").await.unwrap();
    assert_eq!(after.owner_user_id, "amy");
    assert_eq!(role("amy").await, Some(GroupRole::Owner as i32));
    assert_eq!(role("owner").await, Some(GroupRole::Admin as i32));
    let stale = store
        .transfer_ownership("g", "owner", "owner")
        .await
        .unwrap_err();
    assert!(matches!(stale, StoreError::Conflict(_)), "{stale}");
    let stale = store
        .transfer_ownership("g", "owner", "amy")
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict(_)),
        "a transfer from a former owner: {stale}"
    );
    let err = store
        .transfer_ownership("g", "amy", "zed")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(
        role("amy").await,
        Some(GroupRole::Owner as i32),
        "a failed transfer changes nothing"
    );
    let owners = store
        .list_members("g", "", 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.role == GroupRole::Owner as i32)
        .count();
    assert_eq!(owners, 1);
}

/// A profile change writes the fields it names and nothing else.
pub async fn group_changes_touch_only_their_fields(store: &dyn BusinessStore) {
    team(store, "g", 10).await;
    let rename = GroupChanges {
        name: Some("Renamed".into()),
        ..Default::default()
    };
    let mute = GroupChanges {
        mute_all: Some(true),
        ..Default::default()
    };
    store.update_group("g", &mute).await.unwrap();
    let after = store.update_group("g", &rename).await.unwrap();
    assert_eq!(
        (after.name.as_str(), after.mute_all, after.version),
        ("Renamed", true, 3)
    );
    let err = store.update_group("nope", &rename).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

/// A user's groups, in group id order with the user's role; dismissed groups and groups the
/// user left are not among them.
pub async fn groups_of_a_user(store: &dyn BusinessStore) {
    for id in ["c", "a", "b"] {
        team(store, id, 10).await;
    }
    store
        .set_member_role("b", "amy", GroupRole::Admin as i32)
        .await
        .unwrap();
    store
        .remove_members("c", &["amy".into()], NOTICE)
        .await
        .unwrap();
    store.dismiss_group("a").await.unwrap();
    team(store, "d", 10).await;
    let groups = store.groups_of("amy").await.unwrap();
    let seen: Vec<_> = groups
        .iter()
        .map(|(g, m)| (g.group_id.as_str(), m.role))
        .collect();
    assert_eq!(
        seen,
        [
            ("b", GroupRole::Admin as i32),
            ("d", GroupRole::Member as i32)
        ]
    );
    assert!(store.groups_of("nobody").await.unwrap().is_empty());
}

/// A dismissed group keeps its row, loses its members and takes no more changes.
pub async fn dismissed_groups_have_no_members(store: &dyn BusinessStore) {
    team(store, "g", 10).await;
    let gone = store.dismiss_group("g").await.unwrap();
    assert!(gone.dismissed);
    assert_eq!(gone.member_count, 0);
    assert_eq!(store.list_members("g", "", 10).await.unwrap(), vec![]);
    let err = store
        .add_members("g", &[member("g", "bob", GroupRole::Member)], NOTICE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.dismiss_group("g").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

/// Blocks and contacts are directed and idempotent.
pub async fn blocks_and_contacts(store: &dyn BusinessStore) {
    assert!(store.set_block("amy", "bob", true, T).await.unwrap());
    assert!(
        !store.set_block("amy", "bob", true, T).await.unwrap(),
        "blocking twice changes nothing"
    );
    assert!(store.is_blocked("amy", "bob").await.unwrap());
    assert!(
        !store.is_blocked("bob", "amy").await.unwrap(),
        "blocks are directed"
    );
    store.set_block("amy", "cy", true, T).await.unwrap();
    assert_eq!(
        store.list_blocked("amy", "", 10).await.unwrap(),
        vec!["bob", "cy"]
    );
    assert_eq!(
        store.list_blocked("amy", "bob", 10).await.unwrap(),
        vec!["cy"]
    );
    assert!(store.set_block("amy", "bob", false, T).await.unwrap());
    assert!(!store.is_blocked("amy", "bob").await.unwrap());

    assert!(store.set_contact("amy", "bob", true, T).await.unwrap());
    assert!(store.is_contact("amy", "bob").await.unwrap());
    assert!(!store.is_contact("bob", "amy").await.unwrap());
    assert!(store.set_contact("amy", "bob", false, T).await.unwrap());
    assert!(!store.set_contact("amy", "bob", false, T).await.unwrap());
}

/// Each membership change records its notice at the group's new version; an appended notice
/// is forgotten once, and gives its joining members their first seq (and no one else).
pub async fn notices_wait_until_appended(store: &dyn BusinessStore) {
    let created = team(store, "g", 10).await;
    let joining = |user: &str| MemberRecord {
        visible_from_seq: JOINING,
        ..member("g", user, GroupRole::Member)
    };
    let added = store
        .add_members("g", &[joining("bob"), joining("cy")], b"added")
        .await
        .unwrap();
    let removed = store
        .remove_members("g", &["amy".into()], b"removed")
        .await
        .unwrap();
    let pending = store.pending_notices(i64::MAX, 10).await.unwrap();
    let keys: Vec<(i64, &[u8])> = pending
        .iter()
        .map(|n| (n.version, n.body.as_slice()))
        .collect();
    assert_eq!(
        keys,
        [
            (created.version, NOTICE),
            (added.version, b"added".as_slice()),
            (removed.version, b"removed".as_slice())
        ]
    );
    assert!(
        store.pending_notices(0, 10).await.unwrap().is_empty(),
        "none that old"
    );

    // A notice of another change names bob: his first seq waits for the notice of his add.
    assert!(
        store
            .notice_appended("g", created.version, 1, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .notice_appended(
                "g",
                added.version,
                7,
                &["bob".into(), "cy".into(), "owner".into()]
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .notice_appended("g", added.version, 9, &["bob".into()])
            .await
            .unwrap(),
        "appended once"
    );
    let mut floors = Vec::new();
    for user in ["bob", "cy", "owner"] {
        floors.push(
            store
                .get_member("g", user)
                .await
                .unwrap()
                .unwrap()
                .visible_from_seq,
        );
    }
    assert_eq!(floors, [7, 7, 1]);
    let left: Vec<i64> = store
        .pending_notices(i64::MAX, 10)
        .await
        .unwrap()
        .iter()
        .map(|n| n.version)
        .collect();
    assert_eq!(left, [removed.version]);
    let err = store
        .add_members("g", &[joining("bob")], b"again")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    assert_eq!(
        store.pending_notices(i64::MAX, 10).await.unwrap().len(),
        1,
        "a refused change records no notice"
    );
}

/// An invitation is kept once per group and user (inviting again changes nothing), listed for
/// the invitee oldest first, and gone once answered.
pub async fn invitations_are_kept_once_until_answered(store: &dyn BusinessStore) {
    let invitation = |group: &str, user: &str, by: &str, at: i64| InvitationRecord {
        group_id: group.into(),
        user_id: user.into(),
        inviter_user_id: by.into(),
        created_at_ms: at,
    };
    store
        .invite(&[
            invitation("g2", "bob", "amy", 20),
            invitation("g1", "bob", "cy", 10),
        ])
        .await
        .unwrap();
    store
        .invite(&[
            invitation("g1", "bob", "dan", 30),
            invitation("g1", "cy", "amy", 40),
        ])
        .await
        .unwrap();
    let listed = store.invitations_of("bob", 10).await.unwrap();
    assert_eq!(
        listed,
        [
            invitation("g1", "bob", "cy", 10),
            invitation("g2", "bob", "amy", 20)
        ],
        "oldest first, the first invitation kept"
    );
    assert_eq!(store.invitations_of("bob", 1).await.unwrap().len(), 1);
    assert_eq!(
        store.get_invitation("g1", "cy").await.unwrap(),
        Some(invitation("g1", "cy", "amy", 40))
    );
    assert!(store.delete_invitation("g1", "bob").await.unwrap());
    assert!(
        !store.delete_invitation("g1", "bob").await.unwrap(),
        "answered once"
    );
    assert_eq!(store.get_invitation("g1", "bob").await.unwrap(), None);
    assert_eq!(
        store.invitations_of("bob", 10).await.unwrap(),
        [invitation("g2", "bob", "amy", 20)]
    );
}

fn upload(media_id: &str, owner: &str, size: i64, created_at_ms: i64) -> MediaRecord {
    MediaRecord {
        media_id: media_id.into(),
        owner_user_id: owner.into(),
        client_upload_id: media_id.into(),
        kind: MediaKind::Image as i32,
        state: MediaState::Pending as i32,
        mime_type: "image/png".into(),
        size_bytes: size,
        sha256_hex: String::new(),
        file_name: format!("{media_id}.png"),
        detail: String::new(),
        created_at_ms,
        expires_at_ms: created_at_ms + 1_000,
        updated_at_ms: created_at_ms,
        facts: String::new(),
        multipart_id: String::new(),
        part_bytes: 0,
    }
}

const ROOMY: UploadLimits = UploadLimits {
    stored_bytes: 1 << 40,
    window_bytes: 1 << 40,
    window_start_ms: 0,
    pending_uploads: 1_000,
};

/// Twenty creates at once against room for five: exactly five pass, and usage says five.
pub async fn concurrent_uploads_never_pass_a_quota(store: &dyn BusinessStore) {
    store.upsert_user(&user("amy")).await.unwrap();
    // Room for five uploads of 100 bytes; twenty ask at once.
    let limits = UploadLimits {
        stored_bytes: 500,
        ..ROOMY
    };
    let creates = (0..20).map(|i| {
        let media = upload(&format!("m{i}"), "amy", 100, T);
        async move { store.create_upload(&media, &limits).await }
    });
    let outcomes = futures::future::join_all(creates).await;
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(accepted, 5, "exactly the quota, no more");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(
            matches!(
                refused,
                StoreError::QuotaExceeded {
                    what: "stored bytes",
                    limit: 500
                }
            ),
            "{refused}"
        );
    }
    let usage = store.media_usage("amy", 0).await.unwrap();
    assert_eq!((usage.stored_bytes, usage.pending_uploads), (500, 5));

    // Pending uploads and the window are limits of their own.
    store.upsert_user(&user("bob")).await.unwrap();
    let two_pending = UploadLimits {
        pending_uploads: 2,
        ..ROOMY
    };
    for id in ["p1", "p2"] {
        store
            .create_upload(&upload(id, "bob", 1, T), &two_pending)
            .await
            .unwrap();
    }
    let third = store
        .create_upload(&upload("p3", "bob", 1, T), &two_pending)
        .await;
    assert!(
        matches!(
            third,
            Err(StoreError::QuotaExceeded {
                what: "pending uploads",
                limit: 2
            })
        ),
        "{third:?}"
    );
    let window = UploadLimits {
        window_bytes: 10,
        window_start_ms: T + 10,
        ..ROOMY
    };
    // Before the window: not counted; inside it: counted.
    let before = store
        .create_upload(&upload("w0", "bob", 10, T + 10), &window)
        .await;
    assert!(before.is_ok(), "{before:?}");
    let over = store
        .create_upload(&upload("w1", "bob", 1, T + 20), &window)
        .await;
    assert!(
        matches!(
            over,
            Err(StoreError::QuotaExceeded {
                what: "uploaded bytes per window",
                ..
            })
        ),
        "{over:?}"
    );
}

/// A pending upload settles once (ready, rejected, aborted or expired), and usage follows.
pub async fn media_moves_from_pending_once_and_usage_follows(store: &dyn BusinessStore) {
    store.upsert_user(&user("amy")).await.unwrap();
    for id in ["done", "gone", "bad"] {
        store
            .create_upload(&upload(id, "amy", 100, T), &ROOMY)
            .await
            .unwrap();
    }
    // Complete and abort race: exactly one moves the upload.
    let ready = MediaChange {
        sha256_hex: Some("ab".repeat(32)),
        mime_type: Some("image/webp".into()),
        ..MediaChange::default()
    };
    let none = MediaChange::default();
    let (completed, aborted) = tokio::join!(
        store.transition_media(
            "done",
            &[MediaState::Pending],
            MediaState::Ready,
            &ready,
            T + 1
        ),
        store.transition_media(
            "done",
            &[MediaState::Pending],
            MediaState::Aborted,
            &none,
            T + 1
        ),
    );
    let (completed, aborted) = (completed.unwrap(), aborted.unwrap());
    assert!(
        completed.0 ^ aborted.0,
        "one of them: {completed:?} {aborted:?}"
    );
    assert_eq!(completed.1, aborted.1, "both see the one outcome");
    let done = store.get_media("done").await.unwrap().unwrap();
    if completed.0 {
        assert_eq!(done.state(), MediaState::Ready);
        assert_eq!(
            (
                done.mime_type.as_str(),
                done.sha256_hex.len(),
                done.updated_at_ms
            ),
            ("image/webp", 64, T + 1)
        );
    } else {
        assert_eq!(done.state(), MediaState::Aborted);
    }
    let (moved, _) = store
        .transition_media(
            "gone",
            &[MediaState::Pending],
            MediaState::Aborted,
            &MediaChange::default(),
            T + 2,
        )
        .await
        .unwrap();
    assert!(moved);
    let rejected = MediaChange {
        detail: Some("99 bytes stored, 100 declared".into()),
        ..MediaChange::default()
    };
    let (moved, bad) = store
        .transition_media(
            "bad",
            &[MediaState::Pending],
            MediaState::Rejected,
            &rejected,
            T + 3,
        )
        .await
        .unwrap();
    assert!(moved);
    assert_eq!(bad.detail, "99 bytes stored, 100 declared");
    let (again, _) = store
        .transition_media(
            "bad",
            &[MediaState::Pending],
            MediaState::Ready,
            &ready,
            T + 4,
        )
        .await
        .unwrap();
    assert!(!again, "a settled upload does not move again");

    let usage = store.media_usage("amy", 0).await.unwrap();
    let kept = if completed.0 { 100 } else { 0 };
    assert_eq!(
        (usage.stored_bytes, usage.pending_uploads),
        (kept, 0),
        "only ready media holds quota"
    );
    assert_eq!(
        usage.window_bytes, kept,
        "released uploads leave the window"
    );
    assert!(matches!(
        store
            .transition_media("nope", &[MediaState::Pending], MediaState::Ready, &ready, T)
            .await,
        Err(StoreError::NotFound(_))
    ));
    if completed.0 {
        assert_eq!(
            store.holders_of(&"ab".repeat(32), "other").await.unwrap(),
            1
        );
        assert_eq!(store.holders_of(&"ab".repeat(32), "done").await.unwrap(), 0);
    }
}

/// Creating with the same client upload id answers the same upload.
pub async fn an_upload_created_again_is_the_same_upload(store: &dyn BusinessStore) {
    store.upsert_user(&user("amy")).await.unwrap();
    let mut first = upload("first", "amy", 100, T);
    first.client_upload_id = "photo-1".into();
    store.create_upload(&first, &ROOMY).await.unwrap();
    let mut retry = upload("retry", "amy", 100, T + 5);
    retry.client_upload_id = "photo-1".into();
    let answered = store.create_upload(&retry, &ROOMY).await.unwrap();
    assert_eq!(answered, first, "the same upload, created once");
    assert_eq!(store.get_media("retry").await.unwrap(), None);
    let usage = store.media_usage("amy", 0).await.unwrap();
    assert_eq!((usage.stored_bytes, usage.pending_uploads), (100, 1));
    // Another owner's client id is its own.
    store.upsert_user(&user("bob")).await.unwrap();
    let mut bobs = upload("bobs", "bob", 7, T);
    bobs.client_upload_id = "photo-1".into();
    assert_eq!(store.create_upload(&bobs, &ROOMY).await.unwrap(), bobs);
    let expired = store.expired_uploads(T + 1_000, 10).await.unwrap();
    let mut ids: Vec<&str> = expired.iter().map(|m| m.media_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["bobs", "first"], "pending and past their expiry");
    assert!(store.expired_uploads(T + 999, 10).await.unwrap().is_empty());
}

/// Media moved to processing and on to ready keeps the facts it was given; media left in
/// processing is found once it has been there long enough.
pub async fn processing_keeps_its_facts_and_stalls_are_found(store: &dyn BusinessStore) {
    store.upsert_user(&user("amy")).await.unwrap();
    for id in ["slow", "done", "fresh"] {
        store
            .create_upload(&upload(id, "amy", 10, T), &ROOMY)
            .await
            .unwrap();
    }
    let processing = |at| async move {
        let change = MediaChange::default();
        for id in ["slow", "done", "fresh"] {
            let moved_at = if id == "fresh" { at + 500 } else { at };
            store
                .transition_media(
                    id,
                    &[MediaState::Pending],
                    MediaState::Processing,
                    &change,
                    moved_at,
                )
                .await
                .unwrap();
        }
    };
    processing(T + 10).await;
    let facts = MediaChange {
        facts: Some(r#"{"width":4,"height":3}"#.into()),
        ..MediaChange::default()
    };
    let (moved, done) = store
        .transition_media(
            "done",
            &[MediaState::Processing],
            MediaState::Ready,
            &facts,
            T + 20,
        )
        .await
        .unwrap();
    assert!(moved);
    assert_eq!(done.facts, r#"{"width":4,"height":3}"#);
    assert_eq!(
        store.get_media("done").await.unwrap().unwrap().facts,
        done.facts
    );
    assert_eq!(
        store.get_media("slow").await.unwrap().unwrap().facts,
        "",
        "none yet"
    );
    let stalled = store.stalled_processing(T + 10, 10).await.unwrap();
    let ids: Vec<&str> = stalled.iter().map(|m| m.media_id.as_str()).collect();
    assert_eq!(
        ids,
        ["slow"],
        "in processing since then or earlier; not ready ones"
    );
    let stalled = store.stalled_processing(T + 510, 1).await.unwrap();
    assert_eq!(stalled.len(), 1, "bounded by the limit, oldest first");
    assert_eq!(stalled[0].media_id, "slow");
}

/// A verdict on a digest replaces the one before; the media holding a digest are found by
/// state, oldest first.
pub async fn hash_verdicts_replace_each_other_and_holders_are_found(store: &dyn BusinessStore) {
    let sha = "cd".repeat(32);
    assert_eq!(store.hash_verdict(&sha).await.unwrap(), None);
    let blocked = HashRecord {
        sha256_hex: sha.clone(),
        verdict: HashVerdict::Blocked as i32,
        reason: "Eicar-Test-Signature \u{2014} found".into(),
        actor: "clamd".into(),
        updated_at_ms: T,
    };
    store.set_hash_verdict(&blocked).await.unwrap();
    let kept = store.hash_verdict(&sha).await.unwrap().unwrap();
    assert_eq!(kept, blocked);
    assert!(kept.blocked() && !kept.allowed());
    let allowed = HashRecord {
        verdict: HashVerdict::Allowed as i32,
        reason: "a false positive".into(),
        actor: "operator:ops".into(),
        updated_at_ms: T + 1,
        ..blocked
    };
    store.set_hash_verdict(&allowed).await.unwrap();
    assert_eq!(store.hash_verdict(&sha).await.unwrap(), Some(allowed));
    assert_eq!(store.hash_verdict(&"ef".repeat(32)).await.unwrap(), None);

    store.upsert_user(&user("amy")).await.unwrap();
    let with_hash = MediaChange {
        sha256_hex: Some(sha.clone()),
        ..MediaChange::default()
    };
    for (id, at, to) in [
        ("second", T + 2, MediaState::Quarantined),
        ("first", T + 1, MediaState::Quarantined),
        ("ready", T + 3, MediaState::Ready),
    ] {
        store
            .create_upload(&upload(id, "amy", 10, at), &ROOMY)
            .await
            .unwrap();
        store
            .transition_media(id, &[MediaState::Pending], to, &with_hash, at)
            .await
            .unwrap();
    }
    store
        .create_upload(&upload("pending", "amy", 10, T), &ROOMY)
        .await
        .unwrap();
    let ids = |media: Vec<MediaRecord>| media.into_iter().map(|m| m.media_id).collect::<Vec<_>>();
    let quarantined = store
        .media_of_hash(&sha, &[MediaState::Quarantined], 10)
        .await
        .unwrap();
    assert_eq!(ids(quarantined), ["first", "second"]);
    let holding = store
        .media_of_hash(&sha, &[MediaState::Quarantined, MediaState::Ready], 2)
        .await
        .unwrap();
    assert_eq!(ids(holding), ["first", "second"], "bounded by the limit");
    assert!(
        store
            .media_of_hash(&"ef".repeat(32), &[MediaState::Ready], 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A send's held reference, then its entry's, keep ready media; once every entry that
/// referenced it is withdrawn, the media is unreferenced and can be deleted (its usage
/// released), but never while a reference is held.
pub async fn references_keep_media_until_none_is_left(store: &dyn BusinessStore) {
    store.upsert_user(&user("amy")).await.unwrap();
    let ready = MediaChange {
        sha256_hex: Some("ee".repeat(32)),
        ..MediaChange::default()
    };
    for id in ["pic", "old", "new"] {
        store
            .create_upload(&upload(id, "amy", 100, T), &ROOMY)
            .await
            .unwrap();
    }
    store
        .create_upload(&upload("pending", "amy", 100, T), &ROOMY)
        .await
        .unwrap();
    for (id, at) in [("pic", T + 1), ("old", T + 2), ("new", T + 50)] {
        store
            .transition_media(id, &[MediaState::Pending], MediaState::Ready, &ready, at)
            .await
            .unwrap();
    }
    let ids = |ids: &[&str]| ids.iter().map(|&i| i.to_owned()).collect::<Vec<_>>();
    let unreferenced = async |before| {
        store
            .unreferenced_media(before, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.media_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        unreferenced(T + 10).await,
        ["pic", "old"],
        "oldest first, within the age"
    );

    // Held for a send, then referenced by two entries.
    assert!(
        store
            .hold_references(&ids(&["pic"]), "g:team", T + 3)
            .await
            .unwrap()
    );
    assert!(
        !store
            .hold_references(&ids(&["pic", "pending"]), "g:team", T + 3)
            .await
            .unwrap(),
        "pending media cannot be referenced"
    );
    assert_eq!(unreferenced(T + 10).await, ["old"]);
    assert!(
        !store.delete_if_unreferenced("pic", T + 4).await.unwrap(),
        "held"
    );
    store
        .add_references(&ids(&["pic"]), "g:team", 7, T + 5)
        .await
        .unwrap();
    store
        .add_references(&ids(&["pic"]), "g:team", 7, T + 5)
        .await
        .unwrap();
    store
        .add_references(&ids(&["pic"]), "d:amy:bob", 2, T + 5)
        .await
        .unwrap();
    assert_eq!(
        store.references("pic").await.unwrap(),
        [("d:amy:bob".to_owned(), 2), ("g:team".to_owned(), 7)],
        "the held reference gave way to the entry's, recorded once"
    );
    store.drop_references("g:team", 7).await.unwrap();
    assert!(
        !store.delete_if_unreferenced("pic", T + 6).await.unwrap(),
        "still in d:amy:bob"
    );
    store.drop_references("d:amy:bob", 2).await.unwrap();
    assert_eq!(unreferenced(T + 10).await, ["pic", "old"]);

    let before = store.media_usage("amy", 0).await.unwrap().stored_bytes;
    assert!(store.delete_if_unreferenced("pic", T + 7).await.unwrap());
    assert!(
        !store.delete_if_unreferenced("pic", T + 7).await.unwrap(),
        "once"
    );
    assert_eq!(
        store.get_media("pic").await.unwrap().unwrap().state(),
        MediaState::Deleted
    );
    assert_eq!(
        store.media_usage("amy", 0).await.unwrap().stored_bytes,
        before - 100,
        "its bytes no longer count"
    );
    assert!(
        !store
            .hold_references(&ids(&["pic"]), "g:team", T + 8)
            .await
            .unwrap(),
        "deleted media cannot be referenced"
    );
    assert!(
        !store
            .delete_if_unreferenced("pending", T + 8)
            .await
            .unwrap(),
        "only ready media"
    );
}

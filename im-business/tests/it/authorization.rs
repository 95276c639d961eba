//! The authorization matrix: every operation of the business service against every kind of
//! caller, each on a fresh copy of the same world, with its expected outcome.

use std::{future::Future, pin::Pin};

use crate::common::{cast, user};
use im_business::{Actor, Business, BusinessError, GroupUpdate, NewGroup};
use im_proto::v1::{ConversationAction, GroupRole};

/// The callers, in the order of the expectation rows.
const CALLERS: [&str; 8] = [
    "app", "owner", "admin", "member", "muted", "outsider", "blocked", "deact",
];

type Outcome = Result<(), String>;
type Run =
    for<'a> fn(&'a Business, &'a Actor, &'a str) -> Pin<Box<dyn Future<Output = Outcome> + 'a>>;

fn code(result: Result<impl Sized, BusinessError>) -> Outcome {
    result.map(drop).map_err(|e| e.code().name().to_owned())
}

fn decision(d: im_proto::v1::PermissionDecision) -> Outcome {
    if d.allowed {
        Ok(())
    } else {
        Err(im_proto::v1::ErrorCode::try_from(d.code).map_or("?".into(), |c| c.name().to_owned()))
    }
}

/// For a permission check the app has no user: the caller's own name stands in.
fn as_user<'a>(actor: &'a Actor, name: &'a str) -> &'a str {
    match actor {
        Actor::App => name,
        Actor::User(u) => u,
    }
}

macro_rules! op {
    ($name:literal, |$b:ident, $a:ident, $n:ident| $body:expr, [$($expect:expr),* $(,)?]) => {
        ($name, (|$b: &Business, $a: &Actor, $n: &str| Box::pin(async move { $body })) as Run, [$($expect),*])
    };
}

fn matrix() -> Vec<(&'static str, Run, [&'static str; 8])> {
    const OK: &str = "ok";
    const SKIP: &str = "-";
    const F: &str = "FORBIDDEN";
    const NAM: &str = "NOT_A_MEMBER";
    const UD: &str = "USER_DISABLED";
    vec![
        //                                         app   owner admin member muted outsider blocked deact
        op!(
            "get_user",
            |b, a, _n| code(b.get_user(a, "tgt").await),
            [OK, OK, OK, OK, OK, OK, OK, UD]
        ),
        op!(
            "get_group",
            |b, a, _n| code(b.get_group(a, "team").await),
            [OK, OK, OK, OK, OK, NAM, OK, UD]
        ),
        op!(
            "list_members",
            |b, a, _n| code(b.list_members(a, "team", "", 10).await),
            [OK, OK, OK, OK, OK, NAM, OK, UD]
        ),
        op!(
            "update_group",
            |b, a, _n| code(
                b.update_group(
                    a,
                    "team",
                    GroupUpdate {
                        name: Some("T".into()),
                        ..Default::default()
                    }
                )
                .await
            ),
            [OK, OK, OK, F, F, NAM, F, UD]
        ),
        op!(
            "mute_all",
            |b, a, _n| code(
                b.update_group(
                    a,
                    "team",
                    GroupUpdate {
                        mute_all: Some(true),
                        ..Default::default()
                    }
                )
                .await
            ),
            [OK, OK, OK, F, F, NAM, F, UD]
        ),
        op!(
            "dismiss_group",
            |b, a, _n| code(b.dismiss_group(a, "team").await),
            [OK, OK, F, F, F, NAM, F, UD]
        ),
        op!(
            "add_members",
            |b, a, _n| code(b.add_members(a, "team", &["newbie".into()]).await),
            [OK, OK, OK, F, F, NAM, F, UD]
        ),
        op!(
            "remove_member",
            |b, a, _n| code(b.remove_members(a, "team", &["tgt".into()]).await),
            [OK, OK, OK, F, F, NAM, F, UD]
        ),
        op!(
            "remove_admin",
            |b, a, _n| code(b.remove_members(a, "team", &["admin".into()]).await),
            [OK, OK, F, F, F, NAM, F, UD]
        ),
        op!(
            "remove_owner",
            |b, a, _n| code(b.remove_members(a, "team", &["owner".into()]).await),
            ["CONFLICT", "CONFLICT", "CONFLICT", F, F, NAM, F, UD]
        ),
        op!(
            "leave_group",
            |b, a, n| code(
                b.leave_group(a, "team", if *a == Actor::App { "tgt" } else { n })
                    .await
            ),
            [OK, "CONFLICT", OK, OK, OK, NAM, OK, UD]
        ),
        op!(
            "set_member_role",
            |b, a, _n| code(b.set_member_role(a, "team", "tgt", GroupRole::Admin).await),
            [OK, OK, F, F, F, NAM, F, UD]
        ),
        op!(
            "transfer_ownership",
            |b, a, _n| code(b.transfer_ownership(a, "team", "tgt").await),
            [OK, OK, F, F, F, NAM, F, UD]
        ),
        op!(
            "mute_member",
            |b, a, _n| code(b.mute_member(a, "team", "tgt", 4_102_444_800_000).await),
            [OK, OK, OK, F, F, NAM, F, UD]
        ),
        op!(
            "mute_admin",
            |b, a, _n| code(b.mute_member(a, "team", "admin", 4_102_444_800_000).await),
            [OK, OK, F, F, F, NAM, F, UD]
        ),
        op!(
            "upsert_user",
            |b, a, _n| code(b.upsert_user(a, "fresh", "Fresh", "", "{}").await),
            [OK, F, F, F, F, F, F, UD]
        ),
        op!(
            "deactivate_user",
            |b, a, _n| code(b.deactivate_user(a, "tgt").await),
            [OK, F, F, F, F, F, F, UD]
        ),
        op!(
            "issue_token",
            |b, a, _n| code(b.issue_token(a, "tgt", "phone", 0).await),
            [OK, F, F, F, F, F, F, UD]
        ),
        op!(
            "revoke_own_tokens",
            |b, a, n| code(
                b.revoke_tokens(a, if *a == Actor::App { "tgt" } else { n }, "")
                    .await
            ),
            [OK, OK, OK, OK, OK, OK, OK, UD]
        ),
        op!(
            "revoke_others_tokens",
            |b, a, _n| code(b.revoke_tokens(a, "tgt", "").await),
            [OK, F, F, F, F, F, F, UD]
        ),
        op!(
            "block_user",
            |b, a, n| code(
                b.set_block(a, if *a == Actor::App { "tgt" } else { n }, "newbie", true)
                    .await
            ),
            [OK, OK, OK, OK, OK, OK, OK, UD]
        ),
        op!(
            "block_for_another",
            |b, a, _n| code(b.set_block(a, "tgt", "newbie", true).await),
            [OK, F, F, F, F, F, F, UD]
        ),
        op!(
            "list_blocked",
            |b, a, n| code(
                b.list_blocked(a, if *a == Actor::App { "owner" } else { n }, "", 10)
                    .await
            ),
            [OK, OK, OK, OK, OK, OK, OK, UD]
        ),
        op!(
            "add_contact",
            |b, a, n| code(
                b.set_contact(a, if *a == Actor::App { "tgt" } else { n }, "newbie", true)
                    .await
            ),
            [OK, OK, OK, OK, OK, OK, OK, UD]
        ),
        op!(
            "create_group",
            |b, a, _n| code(
                b.create_group(
                    a,
                    NewGroup {
                        name: "New".into(),
                        owner_user_id: if *a == Actor::App {
                            "tgt".into()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    }
                )
                .await
            ),
            [OK, OK, OK, OK, OK, OK, OK, UD]
        ),
        op!(
            "send_in_group",
            |b, a, n| decision(
                b.check_permission(as_user(a, n), "g:team", ConversationAction::Send)
                    .await
            ),
            [SKIP, OK, OK, OK, "MUTED", NAM, OK, UD]
        ),
        op!(
            "read_group",
            |b, a, n| decision(
                b.check_permission(as_user(a, n), "g:team", ConversationAction::Read)
                    .await
            ),
            [SKIP, OK, OK, OK, OK, NAM, OK, UD]
        ),
        op!(
            "manage_group",
            |b, a, n| decision(
                b.check_permission(as_user(a, n), "g:team", ConversationAction::Manage)
                    .await
            ),
            [SKIP, OK, OK, F, F, NAM, F, UD]
        ),
        op!(
            "send_to_owner",
            |b, a, n| {
                let me = as_user(a, n);
                let conversation = if me < "owner" {
                    format!("d:{me}:owner")
                } else {
                    format!("d:owner:{me}")
                };
                decision(
                    b.check_permission(me, &conversation, ConversationAction::Send)
                        .await,
                )
            },
            [SKIP, OK, OK, OK, OK, OK, "BLOCKED", UD]
        ),
    ]
}

#[tokio::test]
async fn every_operation_against_every_caller() {
    let mut failures = Vec::new();
    let mut cells = 0;
    for (name, run, expected) in matrix() {
        for (caller, expect) in CALLERS.iter().zip(expected) {
            if expect == "-" {
                continue;
            }
            let world = cast().await;
            let actor = if *caller == "app" {
                Actor::App
            } else {
                user(caller)
            };
            let got = run(&world.business, &actor, caller).await;
            let want: Outcome = if expect == "ok" {
                Ok(())
            } else {
                Err(expect.to_owned())
            };
            cells += 1;
            if got != want {
                failures.push(format!("{name} as {caller}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cells >= 200, "the matrix shrank to {cells} cells");
}

//! A business service on a fresh SQLite file and an in-process bus, with a cast of users.

use std::sync::Arc;

use im_business::{Actor, Business, BusinessConfig, NewGroup, store::SqliteBusinessStore};
use im_common::{auth::TokenIssuer, bus::LocalBus};
use im_proto::v1::GroupRole;
use tempfile::TempDir;

pub const SECRET: &[u8] = b"a test token secret of thirty-two bytes";

pub struct World {
    pub business: Arc<Business>,
    pub bus: LocalBus,
    _dir: TempDir,
}

pub async fn world() -> World {
    world_with(BusinessConfig::default()).await
}

pub async fn world_with(config: BusinessConfig) -> World {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteBusinessStore::open(&dir.path().join("business.db"), 4)
        .await
        .expect("opens store");
    let bus = LocalBus::default();
    let business = Business::new(
        Arc::new(store),
        Arc::new(bus.clone()),
        TokenIssuer::new(SECRET),
        config,
        "business-test",
    )
    .await
    .expect("business");
    World {
        business: Arc::new(business),
        bus,
        _dir: dir,
    }
}

pub fn user(id: &str) -> Actor {
    Actor::User(id.to_owned())
}

/// Everyone in the matrix, and group `team`: owner; admin; member, muted (for a year),
/// blocked (blocked by the owner), deact (deactivated) and tgt as plain members; outsider and
/// newbie are not members, and invitee is invited by the owner.
pub async fn cast() -> World {
    cast_with(BusinessConfig::default()).await
}

pub async fn cast_with(config: BusinessConfig) -> World {
    let w = world_with(config).await;
    let b = &w.business;
    for id in [
        "owner", "admin", "member", "muted", "outsider", "blocked", "deact", "tgt", "newbie",
        "invitee",
    ] {
        b.upsert_user(&Actor::App, id, id, "", "")
            .await
            .expect("creates user");
    }
    let members = ["admin", "member", "muted", "blocked", "deact", "tgt"]
        .map(String::from)
        .to_vec();
    let new = NewGroup {
        group_id: "team".into(),
        name: "Team".into(),
        owner_user_id: "owner".into(),
        member_user_ids: members,
        ..Default::default()
    };
    b.create_group(&Actor::App, new)
        .await
        .expect("creates group");
    b.set_member_role(&Actor::App, "team", "admin", GroupRole::Admin)
        .await
        .expect("admin");
    let year = im_business::service::now_ms() + 365 * 24 * 3_600_000;
    b.mute_member(&Actor::App, "team", "muted", year)
        .await
        .expect("mutes");
    b.set_block(&Actor::App, "owner", "blocked", true)
        .await
        .expect("blocks");
    b.deactivate_user(&Actor::App, "deact")
        .await
        .expect("deactivates");
    // Invited by the owner (unless the policy lets the owner add anyone at once).
    b.add_members(&user("owner"), "team", &["invitee".into()])
        .await
        .expect("invites");
    w
}

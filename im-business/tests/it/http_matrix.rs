//! The authorization matrix through the HTTP API: every documented route against no
//! credential, a wrong secret, the app, the owner, an admin, a member, a muted member, a
//! non-member, a blocked user and a deactivated user, each on a fresh world.

use std::{collections::BTreeSet, sync::Arc};

use im_business::{
    Actor,
    api::http::{ApiDoc, ApiState, router},
    media::{Media, MediaConfig, NewUpload, fs::FsObjectStore},
};
use im_proto::v1::MediaKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use utoipa::OpenApi;

const SECRET: &str = "app secret of the matrix";

/// Callers, in the order of the expectation rows: `none` sends no credential, `wrong` a wrong
/// secret, `app` the secret alone, the others the secret and `x-im-actor: <name>`.
const CALLERS: [&str; 10] = [
    "none", "wrong", "app", "owner", "admin", "member", "muted", "outsider", "blocked", "deact",
];

/// A route: method, documented path, the concrete path and body for a caller (`me` is the
/// caller's name, or `tgt` for the app; `{media}` in the path becomes a pending upload of
/// `me`'s), and the expected outcome per caller.
struct Row {
    method: Method,
    documented: &'static str,
    call: fn(me: &str) -> (String, Option<Value>),
    expect: [&'static str; 10],
}

const OK: &str = "ok";
const UA: &str = "UNAUTHENTICATED";
const F: &str = "FORBIDDEN";
const NAM: &str = "NOT_A_MEMBER";
const UD: &str = "USER_DISABLED";
const C: &str = "CONFLICT";

fn rows() -> Vec<Row> {
    let row = |method, documented, call, expect| Row {
        method,
        documented,
        call,
        expect,
    };
    let app_only = [UA, UA, OK, F, F, F, F, F, F, UD];
    let for_self = [UA, UA, OK, OK, OK, OK, OK, OK, OK, UD];
    let readers = [UA, UA, OK, OK, OK, OK, OK, NAM, OK, UD];
    let managers = [UA, UA, OK, OK, OK, F, F, NAM, F, UD];
    let owners = [UA, UA, OK, OK, F, F, F, NAM, F, UD];
    let pending = [UA, UA, C, C, C, C, C, C, C, UD];
    vec![
        row(
            Method::POST,
            "/v1/users",
            |_| ("/v1/users".into(), Some(json!({"user_id": "fresh"}))),
            app_only,
        ),
        row(
            Method::POST,
            "/v1/users/import",
            |_| {
                (
                    "/v1/users/import".into(),
                    Some(json!({"users": [{"user_id": "fresh"}]})),
                )
            },
            app_only,
        ),
        row(
            Method::GET,
            "/v1/users/{user_id}",
            |_| ("/v1/users/tgt".into(), None),
            for_self,
        ),
        row(
            Method::POST,
            "/v1/users/{user_id}/deactivate",
            |_| ("/v1/users/tgt/deactivate".into(), None),
            app_only,
        ),
        row(
            Method::POST,
            "/v1/users/{user_id}/tokens",
            |_| {
                (
                    "/v1/users/tgt/tokens".into(),
                    Some(json!({"device_id": "phone"})),
                )
            },
            app_only,
        ),
        row(
            Method::POST,
            "/v1/users/{user_id}/tokens/revoke",
            |me| (format!("/v1/users/{me}/tokens/revoke"), Some(json!({}))),
            for_self,
        ),
        row(
            Method::GET,
            "/v1/users/{user_id}/blocks",
            |me| (format!("/v1/users/{me}/blocks"), None),
            for_self,
        ),
        row(
            Method::PUT,
            "/v1/users/{user_id}/blocks/{blocked}",
            |me| (format!("/v1/users/{me}/blocks/newbie"), None),
            for_self,
        ),
        row(
            Method::DELETE,
            "/v1/users/{user_id}/blocks/{blocked}",
            |me| (format!("/v1/users/{me}/blocks/newbie"), None),
            for_self,
        ),
        row(
            Method::PUT,
            "/v1/users/{user_id}/contacts/{contact}",
            |me| (format!("/v1/users/{me}/contacts/newbie"), None),
            for_self,
        ),
        row(
            Method::DELETE,
            "/v1/users/{user_id}/contacts/{contact}",
            |me| (format!("/v1/users/{me}/contacts/newbie"), None),
            for_self,
        ),
        row(
            Method::POST,
            "/v1/groups",
            |me| {
                (
                    "/v1/groups".into(),
                    Some(if me == "tgt" {
                        json!({"name": "New", "owner_user_id": "tgt"})
                    } else {
                        json!({"name": "New"})
                    }),
                )
            },
            for_self,
        ),
        row(
            Method::GET,
            "/v1/groups/{group_id}",
            |_| ("/v1/groups/team".into(), None),
            readers,
        ),
        row(
            Method::PATCH,
            "/v1/groups/{group_id}",
            |_| ("/v1/groups/team".into(), Some(json!({"name": "Renamed"}))),
            managers,
        ),
        row(
            Method::DELETE,
            "/v1/groups/{group_id}",
            |_| ("/v1/groups/team".into(), None),
            owners,
        ),
        row(
            Method::GET,
            "/v1/groups/{group_id}/members",
            |_| ("/v1/groups/team/members".into(), None),
            readers,
        ),
        row(
            Method::POST,
            "/v1/groups/{group_id}/members",
            |_| {
                (
                    "/v1/groups/team/members".into(),
                    Some(json!({"user_ids": ["newbie"]})),
                )
            },
            managers,
        ),
        row(
            Method::POST,
            "/v1/groups/{group_id}/members/remove",
            |_| {
                (
                    "/v1/groups/team/members/remove".into(),
                    Some(json!({"user_ids": ["tgt"]})),
                )
            },
            managers,
        ),
        row(
            Method::PUT,
            "/v1/groups/{group_id}/members/{user_id}/role",
            |_| {
                (
                    "/v1/groups/team/members/tgt/role".into(),
                    Some(json!({"role": "admin"})),
                )
            },
            owners,
        ),
        row(
            Method::PUT,
            "/v1/groups/{group_id}/members/{user_id}/mute",
            |_| {
                (
                    "/v1/groups/team/members/tgt/mute".into(),
                    Some(json!({"until_ms": 4_102_444_800_000_i64})),
                )
            },
            managers,
        ),
        row(
            Method::GET,
            "/v1/users/{user_id}/invitations",
            |me| (format!("/v1/users/{me}/invitations"), None),
            for_self,
        ),
        row(
            Method::POST,
            "/v1/groups/{group_id}/invitations/{user_id}/accept",
            |_| ("/v1/groups/team/invitations/invitee/accept".into(), None),
            app_only,
        ),
        row(
            Method::DELETE,
            "/v1/groups/{group_id}/invitations/{user_id}",
            |_| ("/v1/groups/team/invitations/invitee".into(), None),
            // The inviter (the owner) and the admins withdraw it.
            [UA, UA, OK, OK, OK, F, F, F, F, UD],
        ),
        row(
            Method::POST,
            "/v1/groups/{group_id}/leave",
            |me| ("/v1/groups/team/leave".into(), Some(json!({"user_id": me}))),
            [UA, UA, OK, "CONFLICT", OK, OK, OK, NAM, OK, UD],
        ),
        row(
            Method::POST,
            "/v1/media/uploads",
            |me| {
                let body = json!({"user_id": me, "kind": "image", "mime_type": "image/png", "size_bytes": 10});
                ("/v1/media/uploads".into(), Some(body))
            },
            for_self,
        ),
        row(
            Method::GET,
            "/v1/media/{media_id}",
            |_| ("/v1/media/{media}".into(), None),
            for_self,
        ),
        // Nothing was PUT yet: the caller reached the upload, which cannot complete.
        row(
            Method::POST,
            "/v1/media/{media_id}/complete",
            |_| ("/v1/media/{media}/complete".into(), None),
            pending,
        ),
        row(
            Method::POST,
            "/v1/media/{media_id}/abort",
            |_| ("/v1/media/{media}/abort".into(), None),
            for_self,
        ),
        // Operators only; a pending upload has no bytes to moderate yet.
        row(
            Method::POST,
            "/v1/media/{media_id}/quarantine",
            |_| {
                (
                    "/v1/media/{media}/quarantine".into(),
                    Some(json!({"reason": "r"})),
                )
            },
            [UA, UA, C, F, F, F, F, F, F, UD],
        ),
        row(
            Method::POST,
            "/v1/media/{media_id}/release",
            |_| {
                (
                    "/v1/media/{media}/release".into(),
                    Some(json!({"reason": "r"})),
                )
            },
            [UA, UA, C, F, F, F, F, F, F, UD],
        ),
        // A pending upload has nothing to serve yet.
        row(
            Method::POST,
            "/v1/media/{media_id}/download",
            |_| ("/v1/media/{media}/download".into(), Some(json!({}))),
            pending,
        ),
        row(
            Method::GET,
            "/v1/media/{media_id}/content",
            |_| ("/v1/media/{media}/content".into(), None),
            pending,
        ),
        row(
            Method::GET,
            "/v1/users/{user_id}/media-quota",
            |me| (format!("/v1/users/{me}/media-quota"), None),
            for_self,
        ),
        row(
            Method::POST,
            "/v1/groups/{group_id}/owner",
            |_| {
                (
                    "/v1/groups/team/owner".into(),
                    Some(json!({"user_id": "tgt"})),
                )
            },
            owners,
        ),
    ]
}

async fn call(row: &Row, caller: &str) -> Result<(), String> {
    let world = crate::common::cast().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(FsObjectStore::open(dir.path(), &base, SECRET.as_bytes()).unwrap());
    let media = Arc::new(Media::new(
        world.business.store(),
        objects.clone(),
        Arc::new(world.bus.clone()),
        MediaConfig::default(),
    ));
    let state = ApiState::new(world.business.clone(), SECRET.as_bytes()).with_media(media.clone());
    let app = router(state).merge(objects.routes());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let me = if matches!(caller, "none" | "wrong" | "app") {
        "tgt"
    } else {
        caller
    };
    let (mut path, body) = (row.call)(me);
    if path.contains("{media}") {
        // A deactivated user has no uploads: any id will do, it is refused before the lookup.
        let upload = media
            .create_upload(
                &Actor::App,
                NewUpload {
                    user_id: me.into(),
                    kind: MediaKind::Image,
                    mime_type: "image/png".into(),
                    size_bytes: 10,
                    ..NewUpload::default()
                },
            )
            .await;
        let id = upload.map_or_else(|_| "none".into(), |u| u.media.media_id);
        path = path.replace("{media}", &id);
    }
    let mut request = reqwest::Client::new().request(row.method.clone(), format!("{base}{path}"));
    match caller {
        "none" => {}
        "wrong" => request = request.bearer_auth("not the secret"),
        "app" => request = request.bearer_auth(SECRET),
        user => request = request.bearer_auth(SECRET).header("x-im-actor", user),
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    drop(dir);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    server.abort();
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(body["name"].as_str().unwrap_or("no error body").to_owned())
    }
}

#[tokio::test]
async fn every_route_against_every_caller() {
    let rows = rows();
    let covered: BTreeSet<(String, &str)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.documented))
        .collect();
    let doc = ApiDoc::openapi();
    let mut documented = BTreeSet::new();
    // The API's own routes; `/openapi.json` is open and not in the matrix.
    for (path, item) in doc
        .paths
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/"))
    {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ] {
            if op.is_some() {
                documented.insert((method.to_owned(), path.as_str()));
            }
        }
    }
    assert_eq!(
        covered, documented,
        "the matrix covers exactly the documented routes"
    );

    let mut failures = Vec::new();
    let mut cells = 0;
    for row in &rows {
        for (caller, expect) in CALLERS.iter().zip(row.expect) {
            let want = if expect == OK {
                Ok(())
            } else {
                Err(expect.to_owned())
            };
            let got = call(row, caller).await;
            cells += 1;
            if got != want {
                failures.push(format!(
                    "{} {} as {caller}: got {got:?}, want {want:?}",
                    row.method, row.documented
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cells, 340);
}

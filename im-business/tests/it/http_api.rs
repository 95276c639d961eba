//! The HTTP/JSON API on an ephemeral port, through a real HTTP client.

use std::sync::Arc;

use im_business::api::http::{ApiDoc, ApiState, router};
use im_common::auth::TokenVerifier;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use utoipa::OpenApi;

const APP_SECRET: &str = "app secret for the http tests";

struct Server {
    base: String,
    http: reqwest::Client,
    _world: crate::common::World,
}

async fn serve() -> Server {
    let world = crate::common::world().await;
    let verifier = Arc::new(TokenVerifier::new(crate::common::SECRET, None).unwrap());
    let state = ApiState::new(world.business.clone(), APP_SECRET.as_bytes())
        .with_user_tokens(verifier.clone());
    verifier.follow(&world.bus).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Server {
        base,
        http: reqwest::Client::new(),
        _world: world,
    }
}

impl Server {
    async fn call(
        &self,
        method: Method,
        path: &str,
        actor: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(APP_SECRET);
        if let Some(actor) = actor {
            request = request.header("x-im-actor", actor);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Every documented route, with its path parameters filled in.
fn documented_routes() -> Vec<(Method, String)> {
    let doc = ApiDoc::openapi();
    let mut routes = Vec::new();
    for (path, item) in doc.paths.paths {
        let concrete = path
            .replace("{user_id}", "amy")
            .replace("{group_id}", "g")
            .replace("{blocked}", "bob")
            .replace("{contact}", "bob");
        for (method, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
        ] {
            if op.is_some() {
                routes.push((method, concrete.clone()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_secret() {
    let server = serve().await;
    let routes = documented_routes();
    assert!(
        routes.len() >= 22,
        "only {} routes documented",
        routes.len()
    );
    for (method, path) in routes {
        let url = format!("{}{path}", server.base);
        for secret in [None, Some("wrong secret"), Some("")] {
            let mut request = server.http.request(method.clone(), &url).json(&json!({}));
            if let Some(secret) = secret {
                request = request.bearer_auth(secret);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {secret:?}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                (body["code"].as_i64(), body["name"].as_str()),
                (Some(2000), Some("UNAUTHENTICATED"))
            );
        }
    }
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let server = serve().await;
    for (method, path) in documented_routes() {
        let (status, body) = server
            .call(method.clone(), &path, None, Some(json!({})))
            .await;
        assert!(
            status != StatusCode::NOT_FOUND || body.get("code").is_some(),
            "{method} {path} is documented but not routed"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
}

#[tokio::test]
async fn users_groups_and_tokens_over_http() {
    let s = serve().await;
    for id in ["amy", "bob", "cy"] {
        let (status, user) = s
            .call(
                Method::POST,
                "/v1/users",
                None,
                Some(json!({"user_id": id, "display_name": id.to_uppercase()})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{user}");
        assert_eq!(user["active"], true);
    }
    let (status, group) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some("amy"),
            Some(json!({"name": "Crew", "member_user_ids": ["bob"], "kind": "channel"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(
        (
            group["owner_user_id"].as_str(),
            group["kind"].as_str(),
            group["member_count"].as_i64()
        ),
        (Some("amy"), Some("channel"), Some(2))
    );
    let id = group["group_id"].as_str().unwrap().to_owned();

    let (status, error) = s
        .call(
            Method::POST,
            &format!("/v1/groups/{id}/members"),
            Some("bob"),
            Some(json!({"user_ids": ["cy"]})),
        )
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/v1/groups/{id}/members"),
            Some("amy"),
            Some(json!({"user_ids": ["cy"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, page) = s
        .call(
            Method::GET,
            &format!("/v1/groups/{id}/members?limit=2"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["members"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_page_token"], "bob");
    let (_, rest) = s
        .call(
            Method::GET,
            &format!("/v1/groups/{id}/members?limit=2&page_token=bob"),
            None,
            None,
        )
        .await;
    assert_eq!(rest["members"][0]["user_id"], "cy");
    assert_eq!(rest["next_page_token"], "");

    let (status, token) = s
        .call(
            Method::POST,
            "/v1/users/amy/tokens",
            None,
            Some(json!({"device_id": "phone", "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let verifier = TokenVerifier::new(crate::common::SECRET, None).unwrap();
    let verified = verifier
        .verify(token["token"].as_str().unwrap(), "phone")
        .unwrap();
    assert_eq!(verified.user_id, "amy");

    let (status, error) = s.call(Method::GET, "/v1/groups/nope", None, None).await;
    assert_eq!(
        (status, error["code"].as_i64()),
        (StatusCode::NOT_FOUND, Some(4003))
    );
    let (status, error) = s
        .call(
            Method::POST,
            &format!("/v1/groups/{id}/members/remove"),
            None,
            Some(json!({"user_ids": ["amy"]})),
        )
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::CONFLICT, Some("CONFLICT"))
    );
}

#[tokio::test]
async fn malformed_json_is_an_invalid_argument() {
    let s = serve().await;
    for body in ["{not json", "[]", r#"{"user_id": 7}"#, ""] {
        let response = s
            .http
            .post(format!("{}/v1/users", s.base))
            .bearer_auth(APP_SECRET)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["name"], "INVALID_ARGUMENT", "{body:?}");
    }
    let response = s
        .http
        .post(format!("{}/v1/users", s.base))
        .bearer_auth(APP_SECRET)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "a body without a JSON content type"
    );

    let (status, error) = s
        .call(Method::GET, "/v1/groups/g/members?limit=many", None, None)
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
        "{error}"
    );
    let huge = "x".repeat(im_business::api::http::MAX_BODY_BYTES + 1);
    let response = s
        .http
        .post(format!("{}/v1/users", s.base))
        .bearer_auth(APP_SECRET)
        .header("content-type", "application/json")
        .body(format!("{{\"user_id\": \"{huge}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["name"], "FRAME_TOO_LARGE");
}

#[tokio::test]
async fn the_api_serves_its_openapi_document_and_no_operations_endpoints() {
    let s = serve().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/groups/{group_id}/members"]["post"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn users_call_with_their_own_tokens_and_act_only_for_themselves() {
    let s = serve().await;
    for user in ["amy", "bob"] {
        let (status, _) = s
            .call(
                Method::POST,
                "/v1/users",
                None,
                Some(json!({"user_id": user})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, issued) = s
        .call(
            Method::POST,
            "/v1/users/amy/tokens",
            None,
            Some(json!({"device_id": "phone"})),
        )
        .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let as_amy = |method: Method, path: &str, actor: Option<&str>, body: Option<Value>| {
        let mut request = s
            .http
            .request(method, format!("{}{path}", s.base))
            .bearer_auth(&token);
        if let Some(actor) = actor {
            request = request.header("x-im-actor", actor);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, group) = as_amy(
        Method::POST,
        "/v1/groups",
        None,
        Some(json!({"group_id": "mine", "name": "Mine", "member_user_ids": ["bob"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(group["owner_user_id"], "amy", "a user's group is its own");
    let (status, members) = as_amy(Method::GET, "/v1/groups/mine/members", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(members["members"].as_array().unwrap().len(), 2);

    let (status, error) = as_amy(Method::GET, "/v1/groups/mine", Some("bob"), None).await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    let (status, error) = as_amy(
        Method::POST,
        "/v1/users/bob/tokens",
        None,
        Some(json!({"device_id": "x"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "issuing tokens is the app's: {error}"
    );

    let (status, _) = s
        .call(
            Method::POST,
            "/v1/users/amy/tokens/revoke",
            None,
            Some(json!({"device_id": "phone"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut refused = None;
    for _ in 0..100 {
        let (status, error) = as_amy(Method::GET, "/v1/groups/mine", None, None).await;
        if status == StatusCode::UNAUTHORIZED {
            refused = Some(error);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(refused.unwrap()["name"], "TOKEN_REVOKED");
}

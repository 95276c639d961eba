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

/// Every documented `/v1` route, with its path parameters filled in.
fn documented_routes() -> Vec<(Method, String)> {
    let doc = ApiDoc::openapi();
    let mut routes = Vec::new();
    for (path, item) in doc.paths.paths {
        if !path.starts_with("/v1/") {
            continue;
        }
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
    // Bob and cy have amy as a contact: she adds them without asking.
    for id in ["bob", "cy"] {
        let path = format!("/v1/users/{id}/contacts/amy");
        let (status, _) = s.call(Method::PUT, &path, None, Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK);
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
    // Bob has amy as a contact: she adds him without asking.
    s.call(
        Method::PUT,
        "/v1/users/bob/contacts/amy",
        None,
        Some(json!({})),
    )
    .await;
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

/// The document as served.
async fn served_document(s: &Server) -> Value {
    let answer = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json().await.unwrap()
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every operation of the served document: path, method, operation.
fn operations(doc: &Value) -> Vec<(String, &'static str, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                all.push((path.clone(), method, op));
            }
        }
    }
    all
}

/// The parameter `name` in `location` of an operation.
fn parameter<'a>(op: &'a Value, location: &str, name: &str) -> Option<&'a Value> {
    op["parameters"]
        .as_array()?
        .iter()
        .find(|p| p["in"] == location && p["name"] == name)
}

/// The id rules of docs/PROTOCOL.md on a string schema (`or_empty`: empty means none).
fn has_id_rules(schema: &Value, or_empty: bool) -> bool {
    let (pattern, min) = if or_empty {
        (im_business::api::http::ID_OR_EMPTY_PATTERN, None)
    } else {
        (im_business::api::http::ID_PATTERN, Some(1))
    };
    schema["type"] == "string"
        && schema["pattern"] == pattern
        && schema["minLength"].as_i64() == min
        && schema["maxLength"] == 64
}

#[tokio::test]
async fn the_document_declares_every_path_parameter_with_the_id_rules() {
    let s = serve().await;
    let doc = served_document(&s).await;
    let mut checked = 0;
    for (path, method, op) in operations(&doc) {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for name in names {
            let param = parameter(op, "path", name)
                .unwrap_or_else(|| panic!("{method} {path} does not declare {{{name}}}"));
            assert_eq!(param["required"], true, "{method} {path} {name}");
            assert!(
                has_id_rules(&param["schema"], false),
                "{method} {path} {name}: {}",
                param["schema"]
            );
            checked += 1;
        }
        let in_path = op["parameters"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["in"] == "path").count());
        assert_eq!(
            in_path,
            path.matches('{').count(),
            "{method} {path}: a path parameter the path does not have"
        );
    }
    assert!(checked >= 25, "only {checked} path parameters");
}

#[tokio::test]
async fn the_document_declares_paging_in_the_query_the_actor_header_and_bearer_auth() {
    let s = serve().await;
    let doc = served_document(&s).await;
    for path in [
        "/v1/groups/{group_id}/members",
        "/v1/users/{user_id}/blocks",
    ] {
        let op = &doc["paths"][path]["get"];
        for name in ["page_token", "limit"] {
            let param = parameter(op, "query", name)
                .unwrap_or_else(|| panic!("GET {path}: {name} is not a query parameter"));
            assert_eq!(param["required"], false, "{path} {name}");
        }
    }
    let mut v1 = 0;
    for (path, method, op) in operations(&doc) {
        if !path.starts_with("/v1/") {
            assert_eq!(op["security"], json!([{}]), "{path} is open");
            continue;
        }
        v1 += 1;
        let actor = parameter(op, "header", "x-im-actor")
            .unwrap_or_else(|| panic!("{method} {path} does not declare x-im-actor"));
        assert_eq!(actor["required"], false);
        assert!(has_id_rules(&actor["schema"], true), "{}", actor["schema"]);
    }
    assert_eq!(v1, 34);
    let scheme = &doc["components"]["securitySchemes"]["app_secret"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert_eq!(doc["security"], json!([{"app_secret": []}]));
}

#[tokio::test]
async fn the_document_declares_the_id_rules_on_every_id_field() {
    let s = serve().await;
    let doc = served_document(&s).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut checked = Vec::new();
    for (name, schema) in schemas {
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        for (field, property) in properties {
            // Absent or empty, these three mean "none": the server picks, or every device.
            let optional = matches!(
                (name.as_str(), field.as_str()),
                ("RevokeBody", "device_id") | ("CreateGroupBody", "group_id" | "owner_user_id")
            );
            if field.ends_with("user_id") || field.ends_with("group_id") || field == "device_id" {
                assert!(
                    has_id_rules(property, optional),
                    "{name}.{field}: {property}"
                );
                checked.push(format!("{name}.{field}"));
            } else if field.ends_with("user_ids") {
                assert_eq!(property["type"], "array", "{name}.{field}");
                assert!(
                    has_id_rules(&property["items"], false),
                    "{name}.{field}: {property}"
                );
                checked.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(checked.len() >= 13, "{checked:?}");
    let listed = &schemas["UserIdsBody"]["properties"]["user_ids"];
    assert_eq!(
        (listed["minItems"].as_i64(), listed["uniqueItems"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(
        schemas["ImportUsersBody"]["properties"]["users"]["minItems"],
        1
    );
}

#[tokio::test]
async fn the_document_declares_every_answer_with_its_content_type() {
    let s = serve().await;
    let doc = served_document(&s).await;
    for (path, method, op) in operations(&doc) {
        if path.ends_with("/content") {
            // Fetched by `<img src>` and players: it answers a redirect to the signed URL.
            assert!(
                op["responses"]["302"].is_object(),
                "{method} {path}: no 302"
            );
        } else {
            let ok = &op["responses"]["200"]["content"]["application/json"]["schema"];
            assert!(ok.is_object(), "{method} {path}: no JSON 200");
        }
        if path.starts_with("/v1/") {
            for range in ["4XX", "5XX"] {
                assert_eq!(
                    op["responses"][range]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {range}"
                );
            }
        }
        if method != "get" && method != "delete" && op.get("requestBody").is_some() {
            assert!(
                op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path}"
            );
        }
    }
}

/// A call's status, content type and JSON body (Null if the body is not JSON).
async fn raw(s: &Server, method: Method, path: &str) -> (StatusCode, String, Value) {
    let response = s
        .http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(APP_SECRET)
        .json(&json!({"user_ids": ["amy"]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

#[tokio::test]
async fn bad_utf8_in_a_path_is_a_json_invalid_argument() {
    let s = serve().await;
    for (method, path) in [
        (Method::GET, "/v1/users/%FF"),
        (Method::PUT, "/v1/users/%FF/blocks/bob"),
        (Method::DELETE, "/v1/users/amy/contacts/%C3%28"),
        (Method::GET, "/v1/groups/%FF/members"),
        (Method::PUT, "/v1/groups/g/members/%FF/role"),
        (Method::PUT, "/v1/groups/%FF/members/amy/mute"),
        (Method::POST, "/v1/groups/%FE%FF/members"),
    ] {
        let (status, content_type, body) = raw(&s, method.clone(), path).await;
        assert_eq!(
            (status, content_type.as_str(), body["code"].as_i64()),
            (StatusCode::BAD_REQUEST, "application/json", Some(4000)),
            "{method} {path}: {body}"
        );
        assert_eq!(body["name"], "INVALID_ARGUMENT");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_a_json_error() {
    let s = serve().await;
    for path in ["/", "/nope", "/v1/nope", "/v1/users/amy/nope", "/v2/users"] {
        let (status, content_type, body) = raw(&s, Method::GET, path).await;
        assert_eq!(
            (status, content_type.as_str(), body["name"].as_str()),
            (
                StatusCode::NOT_FOUND,
                "application/json",
                Some("INVALID_ARGUMENT")
            ),
            "GET {path}"
        );
    }
    for (method, path) in [
        (Method::PATCH, "/v1/users"),
        (Method::GET, "/v1/users/import"),
        (Method::DELETE, "/v1/groups/g/members"),
        (Method::POST, "/openapi.json"),
        (Method::OPTIONS, "/v1/groups/g"),
    ] {
        let response = s
            .http
            .request(method.clone(), format!("{}{path}", s.base))
            .bearer_auth(APP_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(response.headers().contains_key("allow"), "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 4000, "{method} {path}");
    }
}

#[tokio::test]
async fn each_path_serves_exactly_the_documented_methods() {
    let s = serve().await;
    let doc = served_document(&s).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut documented: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        if documented.iter().any(|m| m == "GET") {
            documented.push("HEAD".into());
        }
        documented.sort();
        let concrete = path
            .replace("{user_id}", "amy")
            .replace("{group_id}", "g")
            .replace("{blocked}", "bob")
            .replace("{contact}", "bob");
        let response = s
            .http
            .request(Method::OPTIONS, format!("{}{concrete}", s.base))
            .send()
            .await
            .unwrap();
        let mut allowed: Vec<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        allowed.sort();
        assert_eq!(allowed, documented, "{path}");
    }
}

#[tokio::test]
async fn an_empty_list_of_users_is_an_invalid_argument() {
    let s = serve().await;
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/users",
            None,
            Some(json!({"user_id": "amy"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, group) = s
        .call(
            Method::POST,
            "/v1/groups",
            None,
            Some(json!({"group_id": "g", "name": "G", "owner_user_id": "amy"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    for (path, body) in [
        ("/v1/users/import", json!({"users": []})),
        ("/v1/groups/g/members", json!({"user_ids": []})),
        ("/v1/groups/g/members/remove", json!({"user_ids": []})),
    ] {
        let (status, error) = s.call(Method::POST, path, None, Some(body)).await;
        assert_eq!(
            (status, error["name"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn adding_members_answers_who_joined_and_who_was_invited() {
    let s = serve().await;
    for id in ["amy", "bob", "cy"] {
        s.call(
            Method::POST,
            "/v1/users",
            None,
            Some(json!({"user_id": id})),
        )
        .await;
    }
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            None,
            Some(json!({"group_id": "g", "name": "G", "owner_user_id": "amy"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let add = |actor, user: &str| {
        s.call(
            Method::POST,
            "/v1/groups/g/members",
            actor,
            Some(json!({"user_ids": [user]})),
        )
    };
    assert_eq!(
        add(None, "bob").await,
        (
            StatusCode::OK,
            json!({"added_user_ids": ["bob"], "invited_user_ids": []})
        ),
        "the app adds at once"
    );
    // business.proto: RemoveMembers answers `Ok`, an empty object in JSON.
    let (status, answer) = s
        .call(
            Method::POST,
            "/v1/groups/g/members/remove",
            None,
            Some(json!({"user_ids": ["bob"]})),
        )
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));

    // Cy has not added amy as a contact: amy's add is an invitation, which cy answers.
    assert_eq!(
        add(Some("amy"), "cy").await,
        (
            StatusCode::OK,
            json!({"added_user_ids": [], "invited_user_ids": ["cy"]})
        )
    );
    let (status, listed) = s
        .call(Method::GET, "/v1/users/cy/invitations", Some("cy"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let invitation = &listed["invitations"][0];
    assert_eq!(
        (
            invitation["group_id"].as_str(),
            invitation["inviter_user_id"].as_str()
        ),
        (Some("g"), Some("amy"))
    );
    let (status, error) = s
        .call(Method::GET, "/v1/users/cy/invitations", Some("amy"), None)
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
        "a user's invitations are its own"
    );
    let (status, answer) = s
        .call(
            Method::DELETE,
            "/v1/groups/g/invitations/cy",
            Some("cy"),
            None,
        )
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})), "declined");
    let (status, error) = s
        .call(
            Method::POST,
            "/v1/groups/g/invitations/cy/accept",
            Some("cy"),
            None,
        )
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::NOT_FOUND, Some("INVITATION_NOT_FOUND")),
        "a declined invitation is gone"
    );
    add(Some("amy"), "cy").await;
    let (status, group) = s
        .call(
            Method::POST,
            "/v1/groups/g/invitations/cy/accept",
            Some("cy"),
            None,
        )
        .await;
    assert_eq!(
        (status, group["member_count"].as_i64()),
        (StatusCode::OK, Some(2)),
        "cy joins by accepting: {group}"
    );

    let doc = served_document(&s).await;
    let answer = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"]
            .clone()
    };
    assert_eq!(
        answer("/v1/groups/{group_id}/members", "post"),
        "#/components/schemas/AddedMembersJson"
    );
    assert_eq!(
        answer("/v1/groups/{group_id}/members/remove", "post"),
        "#/components/schemas/OkJson"
    );
}

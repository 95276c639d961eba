//! The system under test: where its WebSocket gateway and business API are, and the admin
//! calls scenarios need (through the business HTTP API with the app secret). Without a URL the
//! runner starts the embedded system itself (`im_testkit::Embedded`).

use reqwest::Method;
use serde_json::{Value, json};

/// Where the system under test listens.
#[derive(Debug, Clone)]
pub struct Target {
    /// The gateway: `ws://host:port/ws`.
    pub url: String,
    /// The business HTTP API: `http://host:port`.
    pub api: String,
    /// The app secret of the business API.
    pub app_secret: String,
}

/// The business API as the app: users, tokens, groups, moderation.
#[derive(Debug, Clone)]
pub struct Admin {
    target: Target,
    http: reqwest::Client,
}

impl Admin {
    /// An admin of `target`.
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// Calls the API; the JSON answer, or the error body as the error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.target.api))
            .bearer_auth(&self.target.app_secret);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(value.to_string())
        }
    }

    /// Creates (or updates) a user.
    pub async fn user(&self, id: &str) -> Result<(), String> {
        self.call(Method::POST, "/v1/users", Some(json!({ "user_id": id })))
            .await
            .map(drop)
    }

    /// A token for `user` on `device`.
    pub async fn token(&self, user: &str, device: &str) -> Result<String, String> {
        let answer = self
            .call(
                Method::POST,
                &format!("/v1/users/{user}/tokens"),
                Some(json!({ "device_id": device })),
            )
            .await?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in {answer}"))
    }

    /// A group owned by `owner` with `members`, showing members added later the history
    /// `history` says (`from_join` or `full`; the server's default when `None`).
    pub async fn group(
        &self,
        id: &str,
        owner: &str,
        members: &[String],
        channel: bool,
        history: Option<&str>,
    ) -> Result<(), String> {
        let kind = if channel { "channel" } else { "group" };
        let mut body = json!({
            "group_id": id, "name": id, "owner_user_id": owner, "member_user_ids": members,
            "kind": kind,
        });
        if let Some(history) = history {
            body["history_visibility"] = json!(history);
        }
        self.call(Method::POST, "/v1/groups", Some(body))
            .await
            .map(drop)
    }
}

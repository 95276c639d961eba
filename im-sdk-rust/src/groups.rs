//! Groups and membership, through the business service's HTTP API with the user's own token
//! (the user acts for itself: its rights in each group apply).

use std::sync::Arc;

use im_proto::ErrorCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    client::TokenProvider,
    error::{Error, Result},
};

/// A group or channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group id (its conversation is `g:<group_id>`).
    pub group_id: String,
    /// Shown name.
    pub name: String,
    /// The one owner.
    pub owner_user_id: String,
    /// `group` or `channel`.
    pub kind: String,
    /// Members now.
    pub member_count: u64,
}

impl Group {
    fn from_json(v: &Value) -> Self {
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        Self {
            group_id: text("group_id"),
            name: text("name"),
            owner_user_id: text("owner_user_id"),
            kind: text("kind"),
            member_count: v["member_count"].as_u64().unwrap_or(0),
        }
    }
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user_id: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
}

/// The business API as the user.
pub(crate) struct GroupsApi {
    base: String,
    http: reqwest::Client,
    token: Arc<dyn TokenProvider>,
}

fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Unavailable, error.to_string())
}

impl GroupsApi {
    pub(crate) fn new(base: &str, token: Arc<dyn TokenProvider>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            token,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let token = self.token.token(false).await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(unavailable)?;
        let ok = response.status().is_success();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if ok {
            return Ok(value);
        }
        Err(Error {
            code: value["code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(ErrorCode::Internal as i32),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
            retry_after_ms: 0,
        })
    }

    pub(crate) async fn create(&self, name: &str, members: &[String]) -> Result<Group> {
        let body = json!({ "name": name, "member_user_ids": members });
        let group = self.call(Method::POST, "/v1/groups", Some(body)).await?;
        Ok(Group::from_json(&group))
    }

    pub(crate) async fn get(&self, group_id: &str) -> Result<Group> {
        let group = self
            .call(Method::GET, &format!("/v1/groups/{group_id}"), None)
            .await?;
        Ok(Group::from_json(&group))
    }

    pub(crate) async fn add(&self, group_id: &str, users: &[String]) -> Result<()> {
        let body = json!({ "user_ids": users });
        self.call(
            Method::POST,
            &format!("/v1/groups/{group_id}/members"),
            Some(body),
        )
        .await
        .map(drop)
    }

    pub(crate) async fn remove(&self, group_id: &str, users: &[String]) -> Result<()> {
        let body = json!({ "user_ids": users });
        let path = format!("/v1/groups/{group_id}/members/remove");
        self.call(Method::POST, &path, Some(body)).await.map(drop)
    }

    pub(crate) async fn leave(&self, group_id: &str, user_id: &str) -> Result<()> {
        let body = json!({ "user_id": user_id });
        let path = format!("/v1/groups/{group_id}/leave");
        self.call(Method::POST, &path, Some(body)).await.map(drop)
    }

    pub(crate) async fn members(&self, group_id: &str) -> Result<Vec<Member>> {
        let mut members = Vec::new();
        let mut token = String::new();
        loop {
            let path = format!("/v1/groups/{group_id}/members?page_token={token}");
            let page = self.call(Method::GET, &path, None).await?;
            for m in page["members"].as_array().into_iter().flatten() {
                members.push(Member {
                    user_id: m["user_id"].as_str().unwrap_or_default().to_owned(),
                    role: m["role"].as_str().unwrap_or_default().to_owned(),
                });
            }
            token = page["next_page_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if token.is_empty() {
                return Ok(members);
            }
        }
    }
}

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
    /// A group as the business API answers it (`GroupJson`; fields this SDK does not use, such
    /// as `join_policy`, are ignored).
    fn from_json(v: &Value) -> Result<Self> {
        const WHAT: &str = "a group";
        Ok(Self {
            group_id: text(v, WHAT, "group_id")?,
            name: text(v, WHAT, "name")?,
            owner_user_id: text(v, WHAT, "owner_user_id")?,
            kind: text(v, WHAT, "kind")?,
            member_count: count(v, WHAT, "member_count")?,
        })
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

impl Member {
    /// A member as the business API answers it (`MemberJson`).
    fn from_json(v: &Value) -> Result<Self> {
        const WHAT: &str = "a member";
        Ok(Self {
            user_id: text(v, WHAT, "user_id")?,
            role: text(v, WHAT, "role")?,
        })
    }
}

/// One page of a group's members (`MemberPageJson`), and the token of the next (empty on the
/// last).
fn members_page(v: &Value) -> Result<(Vec<Member>, String)> {
    const WHAT: &str = "a page of members";
    let members = v
        .get("members")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(WHAT, "members", "a list"))?
        .iter()
        .map(Member::from_json)
        .collect::<Result<_>>()?;
    Ok((members, text(v, WHAT, "next_page_token")?))
}

// Every field the SDK reads must be there: a renamed or missing one is an error, never a
// silent empty string or zero.

fn malformed(what: &str, key: &str, expected: &str) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("the business API answered {what} without `{key}` ({expected})"),
    )
}

fn text(v: &Value, what: &str, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| malformed(what, key, "a string"))
}

fn count(v: &Value, what: &str, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed(what, key, "a non-negative integer"))
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
        Group::from_json(&group)
    }

    pub(crate) async fn get(&self, group_id: &str) -> Result<Group> {
        let group = self
            .call(Method::GET, &format!("/v1/groups/{group_id}"), None)
            .await?;
        Group::from_json(&group)
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
            let (page, next) = members_page(&page)?;
            members.extend(page);
            token = next;
            if token.is_empty() {
                return Ok(members);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group as im-business's `GroupJson` serializes it.
    fn group_json() -> Value {
        json!({
            "group_id": "team",
            "name": "The team",
            "avatar_url": "",
            "owner_user_id": "alice",
            "kind": "channel",
            "join_policy": "invite_only",
            "member_count": 3,
            "max_members": 500,
            "mute_all": false,
            "extra_json": "",
            "created_at_ms": 1_764_000_000_000_i64,
        })
    }

    #[test]
    fn a_group_is_read_from_the_business_api_answer() {
        assert_eq!(
            Group::from_json(&group_json()).unwrap(),
            Group {
                group_id: "team".into(),
                name: "The team".into(),
                owner_user_id: "alice".into(),
                kind: "channel".into(),
                member_count: 3,
            }
        );
    }

    #[test]
    fn a_group_without_a_field_the_sdk_reads_is_an_error_naming_it() {
        for key in ["group_id", "name", "owner_user_id", "kind", "member_count"] {
            let mut answer = group_json();
            answer.as_object_mut().unwrap().remove(key);
            let error = Group::from_json(&answer).unwrap_err();
            assert_eq!(error.error_code(), Some(ErrorCode::Internal));
            assert!(error.message.contains(&format!("`{key}`")), "{error}");
        }
        let mut answer = group_json();
        answer["member_count"] = json!("3");
        let error = Group::from_json(&answer).unwrap_err();
        assert!(
            error
                .message
                .contains("`member_count` (a non-negative integer)"),
            "a field of the wrong type is no better: {error}"
        );
    }

    #[test]
    fn a_page_of_members_is_read_with_its_next_token() {
        let page = json!({
            "members": [
                {"user_id": "alice", "role": "owner", "joined_at_ms": 1, "muted_until_ms": 0},
                {"user_id": "bob", "role": "member", "joined_at_ms": 2, "muted_until_ms": 0},
            ],
            "next_page_token": "bob",
        });
        let (members, next) = members_page(&page).unwrap();
        assert_eq!(
            members,
            [
                Member {
                    user_id: "alice".into(),
                    role: "owner".into()
                },
                Member {
                    user_id: "bob".into(),
                    role: "member".into()
                },
            ]
        );
        assert_eq!(next, "bob");
    }

    #[test]
    fn a_page_of_members_missing_a_field_is_an_error_naming_it() {
        let missing = |page: Value, key: &str| {
            let error = members_page(&page).unwrap_err();
            assert!(error.message.contains(&format!("`{key}`")), "{error}");
        };
        missing(json!({"next_page_token": ""}), "members");
        missing(json!({"members": []}), "next_page_token");
        missing(
            json!({"members": [{"user_id": "bob"}], "next_page_token": ""}),
            "role",
        );
        missing(
            json!({"members": [{"role": "member"}], "next_page_token": ""}),
            "user_id",
        );
    }
}

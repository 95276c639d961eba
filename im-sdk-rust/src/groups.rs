//! Groups and membership, through the business service's HTTP API with the user's own token
//! (the user acts for itself: its rights in each group apply).
//!
//! Answers are parsed into structs that mirror the server's JSON (im-business's `GroupJson`,
//! `MemberJson`, `MemberPageJson`; im-common's `ErrorBody` for a refusal), holding only the
//! fields this SDK reads. Each of those is required: a renamed or missing field fails the call
//! with INTERNAL naming it, never a silent empty string or zero.

use std::sync::Arc;

use im_proto::ErrorCode;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
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

/// A group as the business API answers it (`GroupJson`; fields this SDK does not use, such as
/// `join_policy`, are ignored).
#[derive(Deserialize)]
struct GroupJson {
    group_id: String,
    name: String,
    owner_user_id: String,
    kind: String,
    #[serde(deserialize_with = "member_count")]
    member_count: u64,
}

/// `member_count`, a non-negative integer. serde's own message for a value of the wrong type
/// names the types but not the field; a count sent as a string (or negative) is worth naming.
fn member_count<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let value = Value::deserialize(d)?;
    value.as_u64().ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`member_count` (a non-negative integer) is {value}"
        ))
    })
}

impl From<GroupJson> for Group {
    fn from(g: GroupJson) -> Self {
        Self {
            group_id: g.group_id,
            name: g.name,
            owner_user_id: g.owner_user_id,
            kind: g.kind,
            member_count: g.member_count,
        }
    }
}

impl Group {
    /// A group from the body of the business API's answer.
    fn from_answer(body: &[u8]) -> Result<Self> {
        parse::<GroupJson>("a group", body).map(Self::from)
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

/// A member as the business API answers it (`MemberJson`).
#[derive(Deserialize)]
struct MemberJson {
    user_id: String,
    role: String,
}

impl From<MemberJson> for Member {
    fn from(m: MemberJson) -> Self {
        Self {
            user_id: m.user_id,
            role: m.role,
        }
    }
}

/// What adding members did (`AddedMembersJson`): who joined, and who was invited (they join
/// once they accept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Added {
    /// Members now.
    #[serde(rename = "added_user_ids")]
    pub added: Vec<String>,
    /// Invited.
    #[serde(rename = "invited_user_ids")]
    pub invited: Vec<String>,
}

/// An invitation of the user to a group (`InvitationJson`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Invitation {
    /// The group.
    pub group_id: String,
    /// Who invited the user.
    pub inviter_user_id: String,
    /// When.
    pub created_at_ms: i64,
}

/// The user's invitations (`InvitationListJson`).
#[derive(Deserialize)]
struct InvitationListJson {
    invitations: Vec<Invitation>,
}

/// One page of a group's members (`MemberPageJson`).
#[derive(Deserialize)]
struct MemberPageJson {
    members: Vec<MemberJson>,
    /// The token of the next page; empty on the last.
    next_page_token: String,
}

/// One page of a group's members from the body of the business API's answer, and the token of
/// the next (empty on the last).
fn members_page(body: &[u8]) -> Result<(Vec<Member>, String)> {
    let page = parse::<MemberPageJson>("a page of members", body)?;
    let members = page.members.into_iter().map(Member::from).collect();
    Ok((members, page.next_page_token))
}

/// The body of a refusal (im-common's `ErrorBody`).
#[derive(Deserialize)]
struct ErrorBody {
    code: i32,
    /// Required, so that only the server's error body is taken for one; not kept, as
    /// [`Error::name`] names the code.
    #[expect(dead_code, reason = "checked to be there, never read")]
    name: String,
    message: String,
}

/// The answer `what` in `body`. Serde's message names a required field that is missing.
pub(crate) fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorCode::Internal,
            format!("the business API's answer is not {what}: {e}"),
        )
    })
}

/// The error of an answer with a status other than 2xx: the server's code and message, or,
/// when the body is not the server's error body (a proxy's page, say), INTERNAL with the
/// status.
pub(crate) fn refusal(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(refused) => Error {
            code: refused.code,
            message: refused.message,
            retry_after_ms: 0,
        },
        Err(_) => Error::new(
            ErrorCode::Internal,
            format!("the business API answered HTTP {status} without an error body"),
        ),
    }
}

/// The business API as the user.
pub(crate) struct BusinessApi {
    base: String,
    http: reqwest::Client,
    token: Arc<dyn TokenProvider>,
}

pub(crate) fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Unavailable, error.to_string())
}

impl BusinessApi {
    pub(crate) fn new(base: &str, token: Arc<dyn TokenProvider>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            token,
        }
    }

    /// The client for requests to signed URLs (no token: the URL is the authority).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The body of the answer to a request, once its status says it succeeded.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Vec<u8>> {
        let token = self.token.token(false).await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        // A body that cannot be read counts as empty: an answer that needs one fails to parse.
        let body = response.bytes().await.map(Vec::from).unwrap_or_default();
        if status.is_success() {
            Ok(body)
        } else {
            Err(refusal(status, &body))
        }
    }

    pub(crate) async fn create(&self, name: &str, members: &[String]) -> Result<Group> {
        let body = json!({ "name": name, "member_user_ids": members });
        let group = self.call(Method::POST, "/v1/groups", Some(body)).await?;
        Group::from_answer(&group)
    }

    pub(crate) async fn get(&self, group_id: &str) -> Result<Group> {
        let group = self
            .call(Method::GET, &format!("/v1/groups/{group_id}"), None)
            .await?;
        Group::from_answer(&group)
    }

    pub(crate) async fn add(&self, group_id: &str, users: &[String]) -> Result<Added> {
        let body = json!({ "user_ids": users });
        let answer = self
            .call(
                Method::POST,
                &format!("/v1/groups/{group_id}/members"),
                Some(body),
            )
            .await?;
        parse("what the add did", &answer)
    }

    pub(crate) async fn invitations(&self, user_id: &str) -> Result<Vec<Invitation>> {
        let path = format!("/v1/users/{user_id}/invitations");
        let answer = self.call(Method::GET, &path, None).await?;
        Ok(parse::<InvitationListJson>("a list of invitations", &answer)?.invitations)
    }

    pub(crate) async fn accept(&self, group_id: &str, user_id: &str) -> Result<Group> {
        let path = format!("/v1/groups/{group_id}/invitations/{user_id}/accept");
        let group = self.call(Method::POST, &path, None).await?;
        Group::from_answer(&group)
    }

    pub(crate) async fn decline(&self, group_id: &str, user_id: &str) -> Result<()> {
        let path = format!("/v1/groups/{group_id}/invitations/{user_id}");
        self.call(Method::DELETE, &path, None).await.map(drop)
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

    /// The body of an answer.
    fn bytes(answer: &Value) -> Vec<u8> {
        serde_json::to_vec(answer).unwrap()
    }

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
            Group::from_answer(&bytes(&group_json())).unwrap(),
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
            let error = Group::from_answer(&bytes(&answer)).unwrap_err();
            assert_eq!(error.error_code(), Some(ErrorCode::Internal));
            assert!(error.message.contains(&format!("`{key}`")), "{error}");
        }
        let mut answer = group_json();
        answer["member_count"] = json!("3");
        let error = Group::from_answer(&bytes(&answer)).unwrap_err();
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
        let (members, next) = members_page(&bytes(&page)).unwrap();
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
            let error = members_page(&bytes(&page)).unwrap_err();
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

    #[test]
    fn a_refusal_carries_the_code_and_message_of_the_servers_error_body() {
        let body = json!({
            "code": 3001,
            "name": "NOT_A_MEMBER",
            "message": "bob is not a member of team",
        });
        let error = refusal(StatusCode::FORBIDDEN, &bytes(&body));
        assert_eq!(error.error_code(), Some(ErrorCode::NotAMember));
        assert_eq!(error.message, "bob is not a member of team");
        assert_eq!(error.retry_after_ms, 0);
    }

    #[test]
    fn a_refusal_without_the_servers_error_body_is_internal_with_the_http_status() {
        let not_error_bodies: [&[u8]; 4] = [
            b"<html>502 Bad Gateway</html>",
            b"",
            br#"{"error": "upstream down"}"#,
            br#"{"code": 3001, "message": "no name"}"#,
        ];
        for body in not_error_bodies {
            let error = refusal(StatusCode::SERVICE_UNAVAILABLE, body);
            assert_eq!(error.error_code(), Some(ErrorCode::Internal));
            assert!(error.message.contains("HTTP 503"), "{error}");
        }
    }
}

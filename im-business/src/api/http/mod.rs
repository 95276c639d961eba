//! The HTTP/JSON API, with its OpenAPI description generated from this code
//! (`GET /openapi.json`).
//!
//! Every `/v1` call carries `authorization: Bearer <app secret>`; `x-im-actor: <user id>`
//! makes the app act on behalf of that user, whose rights then apply. Failures answer with an
//! [`ErrorBody`] and the HTTP status of its code.
//!
//! This module holds the shared state, the router and the OpenAPI document; `auth` checks who
//! calls, `error` maps failures to answers, `shapes` holds the JSON shapes, and the handlers
//! are split by resource (`users`, `groups`, `moderation`), each tagged so in the document.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post, put},
};
use im_common::{api::ErrorBody, auth::TokenVerifier};
use utoipa::OpenApi;

use crate::Business;

mod auth;
mod error;
mod groups;
mod moderation;
mod shapes;
mod users;

pub use error::{ApiError, Body, PathArg, QueryArg};
pub use shapes::{
    CreateGroupBody, GroupJson, GroupKind, ImportUsersBody, ImportedJson, IssueTokenBody, Joining,
    MemberJson, MemberPageJson, MuteBody, PageQuery, RevokeBody, Role, RoleBody, TokenJson,
    UpdateGroupBody, UpsertUserBody, UserIdBody, UserIdPageJson, UserIdsBody, UserJson,
};

use groups::{
    add_members, create_group, dismiss_group, get_group, leave_group, list_members, mute_member,
    remove_members, set_member_role, transfer_ownership, update_group,
};
use moderation::{add_contact, block_user, list_blocked, remove_contact, unblock_user};
use users::{deactivate_user, get_user, import_users, issue_token, revoke_tokens, upsert_user};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    business: Arc<Business>,
    secret: Arc<[u8]>,
    /// Checks users' own tokens, when users may call the API themselves.
    users: Option<Arc<TokenVerifier>>,
}

impl ApiState {
    /// State for a service checking `secret`.
    pub fn new(business: Arc<Business>, secret: &[u8]) -> Self {
        Self {
            business,
            secret: secret.into(),
            users: None,
        }
    }

    /// Users may also call the API with their own access tokens, acting for themselves (the
    /// client SDK does, for groups and membership); `verifier` checks the tokens.
    pub fn with_user_tokens(mut self, verifier: Arc<TokenVerifier>) -> Self {
        self.users = Some(verifier);
        self
    }
}

/// The largest request body, in bytes (an import of the largest batch with full profiles fits).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The OpenAPI document, served as JSON.
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI description of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "im business API", description = "Users and tokens, groups, roles, mutes, blocks and contacts, for app backends. Authenticate with `authorization: Bearer <app secret>`; act for a user with `x-im-actor`."),
    paths(
        users::upsert_user, users::import_users, users::get_user, users::deactivate_user,
        users::issue_token, users::revoke_tokens,
        groups::create_group, groups::get_group, groups::update_group, groups::dismiss_group,
        groups::list_members, groups::add_members, groups::remove_members, groups::leave_group,
        groups::set_member_role, groups::mute_member, groups::transfer_ownership,
        moderation::block_user, moderation::unblock_user, moderation::list_blocked,
        moderation::add_contact, moderation::remove_contact,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecurityAddon),
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "app_secret",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "app_secret",
            Vec::<String>::new(),
        )]);
    }
}

/// The router: `/v1/...` behind the app secret, `/openapi.json` open. The operations
/// endpoints are on a listener of their own (`im_common::ops`).
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/users", post(upsert_user))
        .route("/v1/users/import", post(import_users))
        .route("/v1/users/{user_id}", get(get_user))
        .route("/v1/users/{user_id}/deactivate", post(deactivate_user))
        .route("/v1/users/{user_id}/tokens", post(issue_token))
        .route("/v1/users/{user_id}/tokens/revoke", post(revoke_tokens))
        .route("/v1/users/{user_id}/blocks", get(list_blocked))
        .route(
            "/v1/users/{user_id}/blocks/{blocked}",
            put(block_user).delete(unblock_user),
        )
        .route(
            "/v1/users/{user_id}/contacts/{contact}",
            put(add_contact).delete(remove_contact),
        )
        .route("/v1/groups", post(create_group))
        .route(
            "/v1/groups/{group_id}",
            get(get_group).patch(update_group).delete(dismiss_group),
        )
        .route(
            "/v1/groups/{group_id}/members",
            get(list_members).post(add_members),
        )
        .route("/v1/groups/{group_id}/members/remove", post(remove_members))
        .route(
            "/v1/groups/{group_id}/members/{user_id}/role",
            put(set_member_role),
        )
        .route(
            "/v1/groups/{group_id}/members/{user_id}/mute",
            put(mute_member),
        )
        .route("/v1/groups/{group_id}/leave", post(leave_group))
        .route("/v1/groups/{group_id}/owner", post(transfer_ownership))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

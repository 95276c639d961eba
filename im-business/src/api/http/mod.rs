//! The HTTP/JSON API, with its OpenAPI description generated from this code
//! (`GET /openapi.json`).
//!
//! Every `/v1` call carries `authorization: Bearer <app secret>`; `x-im-actor: <user id>`
//! makes the app act on behalf of that user, whose rights then apply. Failures answer with an
//! [`ErrorBody`] and the HTTP status of its code; so do unknown paths (404) and methods (405).
//!
//! This module holds the shared state, the router and the OpenAPI document; `auth` checks who
//! calls, `error` maps failures to answers, `shapes` holds the JSON shapes, and the handlers
//! are split by resource (`users`, `groups`, `moderation`), each tagged so in the document.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    middleware,
    routing::{MethodRouter, delete, get, post, put},
};
use im_common::{
    api::{ACTOR_HEADER, ErrorBody},
    auth::TokenVerifier,
};
use utoipa::{
    OpenApi, PartialSchema,
    openapi::{
        Content, HttpMethod, RefOr, ResponseBuilder,
        path::{Parameter, ParameterBuilder, ParameterIn},
    },
};

use crate::Business;

mod auth;
mod error;
mod groups;
mod media;
mod moderation;
mod shapes;
mod users;

pub use error::{ApiError, Body, PathArg, QueryArg};
pub use shapes::{
    AddedMembersJson, BlockPath, ContactPath, CreateGroupBody, GroupJson, GroupKind, GroupPath,
    History, ID_OR_EMPTY_PATTERN, ID_PATTERN, Id, IdOrEmpty, ImportUsersBody, ImportedJson,
    InvitationJson, InvitationListJson, IssueTokenBody, Joining, MemberJson, MemberPageJson,
    MemberPath, MuteBody, NewRole, OkJson, PageQuery, RevokeBody, Role, RoleBody, TokenJson,
    UpdateGroupBody, UpsertUserBody, UserIdBody, UserIdPageJson, UserIdsBody, UserJson, UserPath,
};

use groups::{
    accept_invitation, add_members, create_group, decline_invitation, dismiss_group, get_group,
    leave_group, list_invitations, list_members, mute_member, remove_members, set_member_role,
    transfer_ownership, update_group,
};
pub use media::{
    CreateUploadBody, DownloadBody, DownloadQuery, HeaderJson, Kind as MediaKindJson, MediaJson,
    ModerationBody, QuotaJson, SignedRequestJson, UploadJson, VariantJson,
};
use media::{
    abort_upload, complete_upload, create_upload, get_media, media_quota, quarantine_media,
    redirect_to_content, release_media, sign_download,
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
    /// Uploads and downloads, where configured.
    media: Option<Arc<crate::media::Media>>,
}

impl ApiState {
    /// State for a service checking `secret`.
    pub fn new(business: Arc<Business>, secret: &[u8]) -> Self {
        Self {
            business,
            secret: secret.into(),
            users: None,
            media: None,
        }
    }

    /// Users may also call the API with their own access tokens, acting for themselves (the
    /// client SDK does, for groups and membership); `verifier` checks the tokens.
    pub fn with_user_tokens(mut self, verifier: Arc<TokenVerifier>) -> Self {
        self.users = Some(verifier);
        self
    }

    /// The media routes serve `media` (without it they answer UNAVAILABLE).
    pub fn with_media(mut self, media: Arc<crate::media::Media>) -> Self {
        self.media = Some(media);
        self
    }
}

/// The largest request body, in bytes (an import of the largest batch with full profiles fits).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", security(()), responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object)), tag = "meta")]
async fn openapi(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    with_limits(&mut doc, state.business.config());
    Json(doc)
}

/// The limits this server is configured with, in the schemas they bound, so that the served
/// document promises what this server accepts.
fn with_limits(doc: &mut serde_json::Value, config: &crate::BusinessConfig) {
    let mut set = |pointer: &str, key: &str, value: serde_json::Value| {
        if let Some(serde_json::Value::Object(schema)) = doc.pointer_mut(pointer) {
            schema.insert(key.to_owned(), value);
        }
    };
    set(
        "/components/schemas/IssueTokenBody/properties/ttl_seconds",
        "maximum",
        (config.max_token_ttl_ms / 1000).into(),
    );
    set(
        "/components/schemas/ImportUsersBody/properties/users",
        "maxItems",
        config.max_import_batch.into(),
    );
}

/// The OpenAPI description of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "im business API", description = "Users and tokens, groups, roles, mutes, blocks and contacts, media uploads and downloads, for app backends. Authenticate with `authorization: Bearer <app secret>`; act for a user with `x-im-actor`. Every failure, including an unknown path (404) or method (405), answers with an `ErrorBody`."),
    paths(
        openapi,
        users::upsert_user, users::import_users, users::get_user, users::deactivate_user,
        users::issue_token, users::revoke_tokens,
        groups::create_group, groups::get_group, groups::update_group, groups::dismiss_group,
        groups::list_members, groups::add_members, groups::remove_members, groups::leave_group,
        groups::set_member_role, groups::mute_member, groups::transfer_ownership,
        groups::list_invitations, groups::accept_invitation, groups::decline_invitation,
        moderation::block_user, moderation::unblock_user, moderation::list_blocked,
        moderation::add_contact, moderation::remove_contact,
        media::create_upload, media::complete_upload, media::abort_upload, media::get_media,
        media::sign_download, media::redirect_to_content, media::media_quota,
        media::quarantine_media, media::release_media,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecurityAddon, &CommonParts),
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "app_secret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The app secret, or a user's own access token (the user then acts for itself).",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "app_secret",
            Vec::<String>::new(),
        )]);
    }
}

/// What every `/v1` operation shares, added in one place so that none lacks it: the optional
/// `x-im-actor` header, and the [`ErrorBody`] of its failures (4XX and 5XX).
struct CommonParts;

impl utoipa::Modify for CommonParts {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let failure = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    )))),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for method in [
                HttpMethod::Get,
                HttpMethod::Post,
                HttpMethod::Put,
                HttpMethod::Patch,
                HttpMethod::Delete,
            ] {
                let Some(operation) = operation_mut(item, method) else {
                    continue;
                };
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(actor_header());
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "4XX".into(),
                    RefOr::T(failure("Refused: the protocol error code says why.")),
                );
                responses.insert(
                    "5XX".into(),
                    RefOr::T(failure(
                        "The server could not do it (INTERNAL, UNAVAILABLE, ...).",
                    )),
                );
            }
        }
    }
}

fn operation_mut(
    item: &mut utoipa::openapi::PathItem,
    method: HttpMethod,
) -> Option<&mut utoipa::openapi::path::Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

/// `x-im-actor`: the user the app acts for (absent or empty: the app itself).
fn actor_header() -> Parameter {
    ParameterBuilder::new()
        .name(ACTOR_HEADER)
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "The user the app acts for, whose rights then apply; absent or empty: the app itself. With a user's own token, only that user.",
        ))
        .schema(Some(IdOrEmpty::schema()))
        .build()
}

/// The `/v1` routes, one entry per path; the document lists the same paths (a unit test checks
/// it) and the same methods (the tests compare each path's `allow` with it).
fn v1_routes() -> Vec<(&'static str, MethodRouter<ApiState>)> {
    vec![
        ("/v1/users", post(upsert_user)),
        ("/v1/users/import", post(import_users)),
        ("/v1/users/{user_id}", get(get_user)),
        ("/v1/users/{user_id}/deactivate", post(deactivate_user)),
        ("/v1/users/{user_id}/tokens", post(issue_token)),
        ("/v1/users/{user_id}/tokens/revoke", post(revoke_tokens)),
        ("/v1/users/{user_id}/blocks", get(list_blocked)),
        (
            "/v1/users/{user_id}/blocks/{blocked}",
            put(block_user).delete(unblock_user),
        ),
        (
            "/v1/users/{user_id}/contacts/{contact}",
            put(add_contact).delete(remove_contact),
        ),
        ("/v1/groups", post(create_group)),
        (
            "/v1/groups/{group_id}",
            get(get_group).patch(update_group).delete(dismiss_group),
        ),
        (
            "/v1/groups/{group_id}/members",
            get(list_members).post(add_members),
        ),
        ("/v1/groups/{group_id}/members/remove", post(remove_members)),
        (
            "/v1/groups/{group_id}/members/{user_id}/role",
            put(set_member_role),
        ),
        (
            "/v1/groups/{group_id}/members/{user_id}/mute",
            put(mute_member),
        ),
        (
            "/v1/groups/{group_id}/invitations/{user_id}",
            delete(decline_invitation),
        ),
        (
            "/v1/groups/{group_id}/invitations/{user_id}/accept",
            post(accept_invitation),
        ),
        ("/v1/users/{user_id}/invitations", get(list_invitations)),
        ("/v1/groups/{group_id}/leave", post(leave_group)),
        ("/v1/groups/{group_id}/owner", post(transfer_ownership)),
        ("/v1/media/uploads", post(create_upload)),
        ("/v1/media/{media_id}", get(get_media)),
        ("/v1/media/{media_id}/complete", post(complete_upload)),
        ("/v1/media/{media_id}/abort", post(abort_upload)),
        ("/v1/media/{media_id}/quarantine", post(quarantine_media)),
        ("/v1/media/{media_id}/release", post(release_media)),
        ("/v1/media/{media_id}/download", post(sign_download)),
        ("/v1/media/{media_id}/content", get(redirect_to_content)),
        ("/v1/users/{user_id}/media-quota", get(media_quota)),
    ]
}

/// The router: `/v1/...` behind the app secret, `/openapi.json` open. The operations
/// endpoints are on a listener of their own (`im_common::ops`).
pub fn router(state: ApiState) -> Router {
    let v1 = v1_routes()
        .into_iter()
        .fold(Router::new(), |router, (path, route)| {
            router.route(path, route)
        })
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(openapi))
        // After every route: it replaces the fallback of the routes there are.
        .method_not_allowed_fallback(error::no_such_method)
        .fallback(error::no_such_path)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_lists_the_routed_paths() {
        let mut routed: BTreeSet<&str> = v1_routes().into_iter().map(|(path, _)| path).collect();
        routed.insert("/openapi.json");
        let doc = ApiDoc::openapi();
        let documented: BTreeSet<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        assert_eq!(routed, documented);
    }

    #[test]
    fn the_id_pattern_is_the_protocol_rule() {
        let pattern = |id: &str| {
            id.len() <= im_proto::ids::MAX_ID_BYTES
                && !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
        };
        assert_eq!(
            ID_PATTERN, "^[A-Za-z0-9_.@-]+$",
            "the predicate below spells it out"
        );
        let long = "x".repeat(65);
        for id in [
            "alice",
            "a.b-c_d@example.com",
            "team-42",
            "",
            "a:b",
            "é",
            "a b",
            "%FF",
            &long,
        ] {
            assert_eq!(
                pattern(id),
                id.parse::<im_proto::UserId>().is_ok(),
                "{id:?}"
            );
        }
    }
}

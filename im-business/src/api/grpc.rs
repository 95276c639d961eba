//! The gRPC API: `UserService`, `GroupService`, `ModerationService` and `MediaService` of
//! `business.proto` (the last in `media`).
//!
//! Calls carry `authorization: Bearer <app secret>`; `x-im-actor: <user id>` (or a request's
//! `GroupRef.actor_user_id`) makes the app act for that user. A failure is a gRPC status whose
//! trailer `im-error-code` holds the protocol error code.

use std::sync::Arc;

mod media;

use im_common::api::{ACTOR_HEADER, ERROR_CODE_METADATA, bearer, grpc_code, secret_matches};
use im_proto::v1::{
    self, ErrorCode, GroupRole, HistoryVisibility, JoinPolicy,
    group_service_server::{GroupService, GroupServiceServer},
    moderation_service_server::{ModerationService, ModerationServiceServer},
    user_service_server::{UserService, UserServiceServer},
};
use tonic::{
    Request, Response, Status,
    service::{Routes, interceptor::InterceptedService},
};

use crate::{
    Actor, Business, BusinessError, GroupUpdate, NewGroup, UserImport,
    store::{GroupRecord, MemberRecord, UserRecord},
};

/// The business gRPC services over one [`Business`].
#[derive(Clone)]
pub struct GrpcApi {
    business: Arc<Business>,
}

/// Checks the app secret on every call.
#[derive(Clone)]
pub struct AppSecret(Arc<[u8]>);

impl tonic::service::Interceptor for AppSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match presented {
            Some(secret) if secret_matches(secret.as_bytes(), &self.0) => Ok(request),
            Some(_) => Err(status(ErrorCode::Unauthenticated, "wrong app secret")),
            None => Err(status(
                ErrorCode::Unauthenticated,
                "authorization: Bearer <app secret> is missing",
            )),
        }
    }
}

/// The largest request message, in bytes (as the HTTP API's body limit).
pub const MAX_REQUEST_BYTES: usize = super::http::MAX_BODY_BYTES;

/// The services (media where it is configured), each behind the app-secret check, as routes
/// for a tonic server.
pub fn routes(
    business: Arc<Business>,
    media: Option<Arc<crate::media::Media>>,
    secret: &[u8],
) -> Routes {
    let api = GrpcApi {
        business: business.clone(),
    };
    let guard = AppSecret(secret.into());
    let users = UserServiceServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST_BYTES);
    let groups = GroupServiceServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST_BYTES);
    let moderation = ModerationServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let routes = Routes::new(InterceptedService::new(users, guard.clone()))
        .add_service(InterceptedService::new(groups, guard.clone()))
        .add_service(InterceptedService::new(moderation, guard.clone()));
    match media {
        Some(media) => routes.add_service(InterceptedService::new(
            media::server(business, media),
            guard,
        )),
        None => routes,
    }
}

fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let mut status = Status::new(grpc_code(code), message);
    if let Ok(value) = (code as i32).to_string().parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    status
}

impl From<BusinessError> for Status {
    fn from(error: BusinessError) -> Self {
        status(error.code(), error.to_string())
    }
}

/// The actor: the request's `actor_user_id` if set, else the `x-im-actor` metadata, else the app.
fn actor<T>(request: &Request<T>, actor_user_id: &str) -> Result<Actor, Status> {
    if !actor_user_id.is_empty() {
        return Ok(Actor::User(actor_user_id.to_owned()));
    }
    match request.metadata().get(ACTOR_HEADER).map(|v| v.to_str()) {
        None | Some(Ok("")) => Ok(Actor::App),
        Some(Ok(user)) => Ok(Actor::User(user.to_owned())),
        Some(Err(_)) => Err(status(ErrorCode::InvalidArgument, "x-im-actor is not text")),
    }
}

fn group_ref(group: Option<v1::GroupRef>) -> Result<v1::GroupRef, Status> {
    group.ok_or_else(|| status(ErrorCode::InvalidArgument, "group is missing"))
}

fn user(u: UserRecord) -> v1::User {
    v1::User {
        user_id: u.user_id,
        display_name: u.display_name,
        avatar_url: u.avatar_url,
        extra_json: u.extra_json,
        active: u.active,
        created_at_ms: u.created_at_ms,
    }
}

fn group(g: GroupRecord) -> v1::Group {
    v1::Group {
        group_id: g.group_id,
        name: g.name,
        avatar_url: g.avatar_url,
        owner_user_id: g.owner_user_id,
        r#type: g.kind,
        join_policy: g.join_policy,
        member_count: u32::try_from(g.member_count).unwrap_or(u32::MAX),
        max_members: u32::try_from(g.max_members).unwrap_or(0),
        mute_all: g.mute_all,
        extra_json: g.extra_json,
        created_at_ms: g.created_at_ms,
        history_visibility: g.history_visibility,
    }
}

fn member(m: MemberRecord) -> v1::Member {
    v1::Member {
        user_id: m.user_id,
        role: m.role,
        joined_at_ms: m.joined_at_ms,
        muted_until_ms: m.muted_until_ms,
    }
}

fn ok() -> Response<v1::Ok> {
    Response::new(v1::Ok {})
}

#[tonic::async_trait]
impl UserService for GrpcApi {
    async fn upsert_user(
        &self,
        request: Request<v1::UpsertUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        let u = self
            .business
            .upsert_user(
                &actor,
                &r.user_id,
                &r.display_name,
                &r.avatar_url,
                &r.extra_json,
            )
            .await?;
        Ok(Response::new(user(u)))
    }

    async fn import_users(
        &self,
        request: Request<v1::ImportUsersRequest>,
    ) -> Result<Response<v1::ImportUsersResponse>, Status> {
        let actor = actor(&request, "")?;
        let users: Vec<UserImport> = request
            .into_inner()
            .users
            .into_iter()
            .map(UserImport::from)
            .collect();
        let imported = self.business.import_users(&actor, &users).await?;
        let imported = u32::try_from(imported).unwrap_or(u32::MAX);
        Ok(Response::new(v1::ImportUsersResponse { imported }))
    }

    async fn get_user(
        &self,
        request: Request<v1::GetUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let actor = actor(&request, "")?;
        let u = self
            .business
            .get_user(&actor, &request.into_inner().user_id)
            .await?;
        Ok(Response::new(user(u)))
    }

    async fn deactivate_user(
        &self,
        request: Request<v1::GetUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let actor = actor(&request, "")?;
        let u = self
            .business
            .deactivate_user(&actor, &request.into_inner().user_id)
            .await?;
        Ok(Response::new(user(u)))
    }

    async fn issue_token(
        &self,
        request: Request<v1::IssueTokenRequest>,
    ) -> Result<Response<v1::IssueTokenResponse>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        let ttl_ms = super::convert::ttl_ms(r.ttl_seconds);
        let (token, expires_at_ms) = self
            .business
            .issue_token(&actor, &r.user_id, &r.device_id, ttl_ms)
            .await?;
        Ok(Response::new(v1::IssueTokenResponse {
            token,
            expires_at_ms,
        }))
    }

    async fn revoke_tokens(
        &self,
        request: Request<v1::RevokeTokensRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .revoke_tokens(&actor, &r.user_id, &r.device_id)
            .await?;
        Ok(ok())
    }
}

#[tonic::async_trait]
impl GroupService for GrpcApi {
    async fn create_group(
        &self,
        request: Request<v1::CreateGroupRequest>,
    ) -> Result<Response<v1::Group>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        let new = NewGroup {
            kind: r.r#type(),
            join_policy: r.join_policy(),
            history_visibility: r.history_visibility(),
            group_id: r.group_id,
            name: r.name,
            owner_user_id: r.owner_user_id,
            member_user_ids: r.member_user_ids,
            avatar_url: r.avatar_url,
            extra_json: r.extra_json,
        };
        Ok(Response::new(group(
            self.business.create_group(&actor, new).await?,
        )))
    }

    async fn get_group(
        &self,
        request: Request<v1::GroupRef>,
    ) -> Result<Response<v1::Group>, Status> {
        let actor = actor(&request, &request.get_ref().actor_user_id)?;
        Ok(Response::new(group(
            self.business
                .get_group(&actor, &request.get_ref().group_id)
                .await?,
        )))
    }

    async fn update_group(
        &self,
        request: Request<v1::UpdateGroupRequest>,
    ) -> Result<Response<v1::Group>, Status> {
        let r = request.get_ref();
        let g = group_ref(r.group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        let join_policy = match r.join_policy {
            None => None,
            Some(value) => Some(
                JoinPolicy::try_from(value)
                    .map_err(|_| status(ErrorCode::InvalidArgument, "unknown join policy"))?,
            ),
        };
        let history_visibility =
            match r.history_visibility {
                None => None,
                Some(value) => Some(HistoryVisibility::try_from(value).map_err(|_| {
                    status(ErrorCode::InvalidArgument, "unknown history visibility")
                })?),
            };
        let update = GroupUpdate {
            name: r.name.clone(),
            avatar_url: r.avatar_url.clone(),
            join_policy,
            mute_all: r.mute_all,
            extra_json: r.extra_json.clone(),
            history_visibility,
        };
        Ok(Response::new(group(
            self.business
                .update_group(&actor, &g.group_id, update)
                .await?,
        )))
    }

    async fn dismiss_group(
        &self,
        request: Request<v1::GroupRef>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, &request.get_ref().actor_user_id)?;
        self.business
            .dismiss_group(&actor, &request.get_ref().group_id)
            .await?;
        Ok(ok())
    }

    async fn add_members(
        &self,
        request: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::AddMembersResponse>, Status> {
        let g = group_ref(request.get_ref().group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        let outcome = self
            .business
            .add_members(&actor, &g.group_id, &request.get_ref().user_ids)
            .await?;
        Ok(Response::new(v1::AddMembersResponse {
            added_user_ids: outcome.added,
            invited_user_ids: outcome.invited,
        }))
    }

    async fn remove_members(
        &self,
        request: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let g = group_ref(request.get_ref().group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        self.business
            .remove_members(&actor, &g.group_id, &request.get_ref().user_ids)
            .await?;
        Ok(ok())
    }

    async fn leave_group(
        &self,
        request: Request<v1::LeaveGroupRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .leave_group(&actor, &r.group_id, &r.user_id)
            .await?;
        Ok(ok())
    }

    async fn list_invitations(
        &self,
        request: Request<v1::ListInvitationsRequest>,
    ) -> Result<Response<v1::InvitationList>, Status> {
        let actor = actor(&request, "")?;
        let invitations = self
            .business
            .list_invitations(&actor, &request.get_ref().user_id)
            .await?
            .into_iter()
            .map(|i| v1::Invitation {
                group_id: i.group_id,
                user_id: i.user_id,
                inviter_user_id: i.inviter_user_id,
                created_at_ms: i.created_at_ms,
            })
            .collect();
        Ok(Response::new(v1::InvitationList { invitations }))
    }

    async fn accept_invitation(
        &self,
        request: Request<v1::InvitationRef>,
    ) -> Result<Response<v1::Group>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        Ok(Response::new(group(
            self.business
                .accept_invitation(&actor, &r.group_id, &r.user_id)
                .await?,
        )))
    }

    async fn decline_invitation(
        &self,
        request: Request<v1::InvitationRef>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .decline_invitation(&actor, &r.group_id, &r.user_id)
            .await?;
        Ok(ok())
    }

    async fn list_members(
        &self,
        request: Request<v1::ListMembersRequest>,
    ) -> Result<Response<v1::MemberPage>, Status> {
        let g = group_ref(request.get_ref().group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        let r = request.into_inner();
        let page = self
            .business
            .list_members(&actor, &g.group_id, &r.page_token, r.limit)
            .await?;
        let members = page.items.into_iter().map(member).collect();
        Ok(Response::new(v1::MemberPage {
            members,
            next_page_token: page.next_page_token,
        }))
    }

    async fn set_member_role(
        &self,
        request: Request<v1::SetMemberRoleRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let g = group_ref(request.get_ref().group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        let r = request.into_inner();
        let role = GroupRole::try_from(r.role)
            .map_err(|_| status(ErrorCode::InvalidArgument, "unknown role"))?;
        self.business
            .set_member_role(&actor, &g.group_id, &r.user_id, role)
            .await?;
        Ok(ok())
    }

    async fn transfer_ownership(
        &self,
        request: Request<v1::TransferOwnershipRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let g = group_ref(request.get_ref().group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        self.business
            .transfer_ownership(&actor, &g.group_id, &request.get_ref().new_owner_user_id)
            .await?;
        Ok(ok())
    }
}

#[tonic::async_trait]
impl ModerationService for GrpcApi {
    async fn mute_member(
        &self,
        request: Request<v1::MuteMemberRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let g = group_ref(request.get_ref().group.clone())?;
        let actor = actor(&request, &g.actor_user_id)?;
        let r = request.into_inner();
        self.business
            .mute_member(&actor, &g.group_id, &r.user_id, r.until_ms)
            .await?;
        Ok(ok())
    }

    async fn block_user(
        &self,
        request: Request<v1::BlockRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .set_block(&actor, &r.user_id, &r.blocked_user_id, true)
            .await?;
        Ok(ok())
    }

    async fn unblock_user(
        &self,
        request: Request<v1::BlockRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .set_block(&actor, &r.user_id, &r.blocked_user_id, false)
            .await?;
        Ok(ok())
    }

    async fn list_blocked(
        &self,
        request: Request<v1::ListBlockedRequest>,
    ) -> Result<Response<v1::UserIdPage>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        let page = self
            .business
            .list_blocked(&actor, &r.user_id, &r.page_token, r.limit)
            .await?;
        Ok(Response::new(v1::UserIdPage {
            user_ids: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    async fn add_contact(
        &self,
        request: Request<v1::ContactRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .set_contact(&actor, &r.user_id, &r.contact_user_id, true)
            .await?;
        Ok(ok())
    }

    async fn remove_contact(
        &self,
        request: Request<v1::ContactRequest>,
    ) -> Result<Response<v1::Ok>, Status> {
        let actor = actor(&request, "")?;
        let r = request.into_inner();
        self.business
            .set_contact(&actor, &r.user_id, &r.contact_user_id, false)
            .await?;
        Ok(ok())
    }
}

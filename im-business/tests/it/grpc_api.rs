//! The gRPC API on an ephemeral port, through tonic's client.

use im_business::api::grpc::routes;
use im_common::api::ERROR_CODE_METADATA;
use im_proto::{
    FILE_DESCRIPTOR_SET,
    v1::{self, group_service_client::GroupServiceClient, user_service_client::UserServiceClient},
};
use prost_reflect::DescriptorPool;
use tonic::{
    Code, Request, Status,
    transport::{Channel, Server, server::TcpIncoming},
};

const APP_SECRET: &str = "app secret for the grpc tests";

async fn serve() -> (Channel, crate::common::World) {
    let world = crate::common::world().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_routes(routes(world.business.clone(), None, APP_SECRET.as_bytes()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    (channel, world)
}

fn with<T>(message: T, secret: Option<&str>, actor: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(secret) = secret {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    }
    if let Some(actor) = actor {
        request
            .metadata_mut()
            .insert("x-im-actor", actor.parse().unwrap());
    }
    request
}

fn im_code(status: &Status) -> Option<i32> {
    status
        .metadata()
        .get(ERROR_CODE_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Calls any method with an empty request, whatever its types.
async fn raw_call(channel: Channel, path: &str, secret: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(with((), secret, None), path.parse().unwrap(), codec)
        .await
        .map(drop)
}

#[tokio::test]
async fn every_method_refuses_a_missing_or_wrong_secret() {
    let (channel, _world) = serve().await;
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = 0;
    for service in ["UserService", "GroupService", "ModerationService"] {
        let service = pool
            .get_service_by_name(&format!("im.v1.{service}"))
            .unwrap();
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            for secret in [None, Some("wrong secret")] {
                let status = raw_call(channel.clone(), &path, secret).await.unwrap_err();
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{path} with {secret:?}"
                );
                assert_eq!(im_code(&status), Some(2000), "{path}");
            }
            // With the secret, the method is served: whatever it answers, it is not refused.
            if let Err(status) = raw_call(channel.clone(), &path, Some(APP_SECRET)).await {
                assert!(
                    !matches!(status.code(), Code::Unauthenticated | Code::Unimplemented),
                    "{path}: {status:?}"
                );
                assert!(
                    im_code(&status).is_some(),
                    "{path}: a failure carries its protocol code"
                );
            }
            methods += 1;
        }
    }
    assert_eq!(methods, 25);
}

#[tokio::test]
async fn users_and_groups_over_grpc() {
    let (channel, _world) = serve().await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut groups = GroupServiceClient::new(channel);
    let secret = Some(APP_SECRET);
    for id in ["amy", "bob", "cy"] {
        let upsert = v1::UpsertUserRequest {
            user_id: id.into(),
            display_name: id.into(),
            ..Default::default()
        };
        users.upsert_user(with(upsert, secret, None)).await.unwrap();
    }
    let create = v1::CreateGroupRequest {
        name: "Crew".into(),
        member_user_ids: vec!["bob".into()],
        ..Default::default()
    };
    let group = groups
        .create_group(with(create, secret, Some("amy")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (group.owner_user_id.as_str(), group.member_count),
        ("amy", 1),
        "bob has not added amy as a contact: he is invited"
    );
    let invitations = groups
        .list_invitations(with(
            v1::ListInvitationsRequest {
                user_id: "bob".into(),
            },
            secret,
            Some("bob"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        invitations
            .invitations
            .iter()
            .map(|i| (i.group_id.as_str(), i.inviter_user_id.as_str()))
            .collect::<Vec<_>>(),
        [(group.group_id.as_str(), "amy")]
    );
    let invitation = v1::InvitationRef {
        group_id: group.group_id.clone(),
        user_id: "bob".into(),
    };
    let joined = groups
        .accept_invitation(with(invitation.clone(), secret, Some("bob")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.member_count, 2, "bob joins by accepting");
    let spent = groups
        .decline_invitation(with(invitation, secret, Some("bob")))
        .await
        .unwrap_err();
    assert_eq!(
        im_code(&spent),
        Some(4008),
        "INVITATION_NOT_FOUND: it was spent"
    );

    let as_bob = v1::GroupRef {
        group_id: group.group_id.clone(),
        actor_user_id: "bob".into(),
    };
    let add = v1::MembersRequest {
        group: Some(as_bob),
        user_ids: vec!["cy".into()],
    };
    let refused = groups
        .add_members(with(add, secret, None))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), im_code(&refused)),
        (Code::PermissionDenied, Some(3000))
    );

    let as_cy = v1::GroupRef {
        group_id: group.group_id.clone(),
        actor_user_id: "cy".into(),
    };
    let outsider = groups
        .get_group(with(as_cy, secret, None))
        .await
        .unwrap_err();
    assert_eq!(im_code(&outsider), Some(3001), "NOT_A_MEMBER");

    let list = v1::ListMembersRequest {
        group: Some(v1::GroupRef {
            group_id: group.group_id.clone(),
            ..Default::default()
        }),
        limit: 1,
        ..Default::default()
    };
    let page = groups
        .list_members(with(list, secret, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.members.len(), page.next_page_token.as_str()),
        (1, "amy")
    );

    let token = v1::IssueTokenRequest {
        user_id: "bob".into(),
        device_id: "phone".into(),
        ttl_seconds: 60,
    };
    let issued = users
        .issue_token(with(token, secret, None))
        .await
        .unwrap()
        .into_inner();
    let verifier = im_common::auth::TokenVerifier::new(crate::common::SECRET, None).unwrap();
    assert_eq!(
        verifier.verify(&issued.token, "phone").unwrap().user_id,
        "bob"
    );

    let missing = users
        .get_user(with(
            v1::GetUserRequest {
                user_id: "ghost".into(),
            },
            secret,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), im_code(&missing)),
        (Code::NotFound, Some(4002))
    );
}

//! The gateway's contract on the wire: the upgrade and the Hello, bad input with its codes,
//! every limit, heartbeats, resends, sessions ended from elsewhere, and a graceful shutdown
//! that answers every send in flight.

use std::time::Duration;

use crate::common::*;
use futures::SinkExt;
use im_business::Actor;
use im_proto::v1::{
    ErrorCode, Ping, PresenceSubscribe, SendRequest, ServerFrame, client_frame, server_frame,
};
use std::sync::Arc;

use im_server::store::{
    Appended, MessageStore, NewEntry, SqliteMessageStore, StoreResult, StoredEntry,
};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, protocol::CloseFrame};

fn close_code(close: &Option<CloseFrame>) -> u16 {
    close.as_ref().map(|c| u16::from(c.code)).unwrap_or(0)
}

fn reason(close: &Option<CloseFrame>) -> String {
    close
        .as_ref()
        .map(|c| c.reason.to_string())
        .unwrap_or_default()
}

fn go_away(frames: &[ServerFrame]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match &f.body {
        Some(server_frame::Body::GoAway(g)) => Some(g.code()),
        _ => None,
    })
}

fn ping() -> client_frame::Body {
    client_frame::Body::Ping(Ping { client_time_ms: 7 })
}

#[tokio::test]
async fn versions_are_negotiated_at_the_upgrade_and_in_the_hello() {
    let w = world().await;
    w.users(&["amy"]).await;
    let (_, chosen) = open(w.addr, &["im.v1", "im"]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("im.v1"));

    // No version in common but the bare name offered: a typed refusal after the upgrade.
    let (mut ws, chosen) = open(w.addr, &["im.v9", "im"]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("im"));
    let hello = hello(&w.token("amy", "d"), "d");
    let frame = im_proto::v1::ClientFrame {
        request_id: 1,
        body: Some(client_frame::Body::Hello(hello.clone())),
    };
    ws.send(WsMessage::Binary(
        prost::Message::encode_to_vec(&frame).into(),
    ))
    .await
    .unwrap();
    let (frames, close) = drain(&mut ws).await;
    let error = error_of(&frames[0]).unwrap();
    assert_eq!(
        (error.code(), error.supported_versions.clone()),
        (ErrorCode::UnsupportedVersion, vec![1])
    );
    assert_eq!(
        (close_code(&close), reason(&close).as_str()),
        (1002, "UNSUPPORTED_VERSION")
    );

    // Neither: the upgrade itself is refused.
    match open(w.addr, &["im.v9"]).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected a 400, got {:?}", other.map(|(_, c)| c)),
    }

    // A Hello that does not list the negotiated version.
    let (answer, close) = Client::refused(
        w.addr,
        im_proto::v1::Hello {
            protocol_versions: vec![2],
            ..hello
        },
    )
    .await;
    assert_eq!(
        error_of(&answer).unwrap().code(),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(close_code(&close), 1002);
}

#[tokio::test]
async fn bad_tokens_and_devices_are_refused_with_their_codes() {
    let w = world().await;
    w.users(&["amy", "gone"]).await;
    let issuer = im_common::auth::TokenIssuer::new(SECRET.as_bytes());
    let expired = issuer
        .issue("amy", "d", now_ms() - 7_200_000, 3_600_000)
        .unwrap();
    let old = w.token("amy", "old");
    tokio::time::sleep(Duration::from_millis(5)).await;
    w.business
        .revoke_tokens(&Actor::App, "amy", "old")
        .await
        .unwrap();
    let gone = w.token("gone", "d");
    w.business
        .deactivate_user(&Actor::App, "gone")
        .await
        .unwrap();

    let cases = [
        (hello("not a token", "d"), ErrorCode::Unauthenticated, 1008),
        (
            hello(&w.token("amy", "phone"), "laptop"),
            ErrorCode::Unauthenticated,
            1008,
        ),
        (hello(&expired, "d"), ErrorCode::TokenExpired, 1008),
        (hello(&old, "old"), ErrorCode::TokenRevoked, 1008),
        (hello(&gone, "d"), ErrorCode::UserDisabled, 1008),
        (
            hello(&w.token("amy", "d"), "bad device!"),
            ErrorCode::InvalidArgument,
            1002,
        ),
        (
            im_proto::v1::Hello {
                max_frame_bytes: 100,
                ..hello(&w.token("amy", "d"), "d")
            },
            ErrorCode::InvalidArgument,
            1002,
        ),
    ];
    for (hello, code, close) in cases {
        let (answer, closed) = Client::refused(w.addr, hello).await;
        let error = error_of(&answer).unwrap();
        assert_eq!((error.code(), answer.request_id), (code, 1), "{error:?}");
        assert_eq!(close_code(&closed), close, "{code:?}");
        assert_eq!(reason(&closed), code.name());
    }
}

#[tokio::test]
async fn the_hello_comes_first_and_only_once() {
    let w = world().await;
    w.users(&["amy"]).await;
    let (mut ws, _) = open(w.addr, &["im.v1"]).await.unwrap();
    let frame = im_proto::v1::ClientFrame {
        request_id: 3,
        body: Some(ping()),
    };
    ws.send(WsMessage::Binary(
        prost::Message::encode_to_vec(&frame).into(),
    ))
    .await
    .unwrap();
    let (frames, close) = drain(&mut ws).await;
    assert_eq!(
        error_of(&frames[0]).unwrap().code(),
        ErrorCode::HandshakeRequired
    );
    assert_eq!(close_code(&close), 1002);

    let mut amy = w.connect("amy", "d").await;
    let id = amy
        .send(client_frame::Body::Hello(hello(&w.token("amy", "d"), "d")))
        .await;
    let (frames, close) = amy.closed().await;
    let error = frames.iter().find_map(error_of).unwrap();
    assert_eq!(error.code(), ErrorCode::AlreadyAuthenticated);
    assert_eq!(frames[0].request_id, id);
    assert_eq!(close_code(&close), 1002);
}

#[tokio::test]
async fn unknown_variants_are_answered_and_the_connection_lives_on() {
    let w = world().await;
    w.users(&["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    // request_id 9, field 999 (a frame kind from a newer client).
    amy.send_bytes(vec![0x08, 0x09, 0xba, 0x3e, 0x00]).await;
    let answer = amy.read().await.unwrap();
    assert_eq!(answer.request_id, 9);
    assert_eq!(
        error_of(&answer).unwrap().code(),
        ErrorCode::UnsupportedFrame
    );
    assert!(matches!(amy.call(ping()).await, server_frame::Body::Pong(p) if p.client_time_ms == 7));

    // A send whose body kind is unknown is refused, nothing stored.
    let mut newer = Vec::new();
    put_field(&mut newer, 99, &[]);
    let mut send = prost::Message::encode_to_vec(&SendRequest {
        client_msg_id: "n1".into(),
        conversation_id: "d:amy:amy".into(),
        body: None,
    });
    put_field(&mut send, 3, &newer);
    let mut frame = prost::Message::encode_to_vec(&im_proto::v1::ClientFrame {
        request_id: 10,
        body: None,
    });
    put_field(&mut frame, 4, &send);
    amy.send_bytes(frame).await;
    match amy.answer(10).await {
        server_frame::Body::Error(e) => assert_eq!(e.code(), ErrorCode::UnsupportedFrame),
        other => panic!("{other:?}"),
    }
    let none = amy
        .send_message("d:amy:amy", "n2", im_proto::v1::MessageBody::default())
        .await;
    assert_eq!(
        none.unwrap_err().code(),
        ErrorCode::InvalidArgument,
        "no kind at all"
    );
}

#[tokio::test]
async fn a_body_sent_in_copies_is_stored_as_protobuf_merges_it() {
    use im_proto::v1::{Content, MessageBody, PullRequest, content, message_body};
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    // The first copy says something; the second has mentions but no content kind, which the
    // checks refuse alone. Protobuf merges them into one body with both.
    let said = text("hi");
    let mentions = MessageBody {
        kind: Some(message_body::Kind::Content(Content {
            mentions: vec!["bob".into()],
            ..Default::default()
        })),
    };
    let mut send = prost::Message::encode_to_vec(&SendRequest {
        client_msg_id: "m1".into(),
        conversation_id: "d:amy:bob".into(),
        body: None,
    });
    for copy in [&said, &mentions] {
        put_field(&mut send, 3, &prost::Message::encode_to_vec(copy));
    }
    let mut frame = prost::Message::encode_to_vec(&im_proto::v1::ClientFrame {
        request_id: 5,
        body: None,
    });
    put_field(&mut frame, 4, &send);
    amy.send_bytes(frame).await;
    assert!(matches!(
        amy.answer(5).await,
        server_frame::Body::SendAck(_)
    ));

    let merged = MessageBody {
        kind: Some(message_body::Kind::Content(Content {
            kind: Some(content::Kind::Text(im_proto::v1::Text {
                text: "hi".into(),
            })),
            mentions: vec!["bob".into()],
            ..Default::default()
        })),
    };
    let pushed = bob.message().await;
    assert_eq!(pushed.body.as_ref(), Some(&merged), "pushed as checked");
    let server_frame::Body::Messages(page) = bob
        .call(client_frame::Body::Pull(PullRequest {
            conversation_id: "d:amy:bob".into(),
            after_seq: 0,
            limit: 0,
        }))
        .await
    else {
        panic!("a page");
    };
    assert_eq!(
        page.messages[0].body.as_ref(),
        Some(&merged),
        "stored as checked"
    );
}

#[tokio::test]
async fn a_close_from_the_client_is_answered_with_a_close() {
    let w = world().await;
    w.users(&["amy"]).await;
    let bye = || {
        WsMessage::Close(Some(CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        }))
    };
    // After the Welcome, and before the Hello.
    let mut amy = w.connect("amy", "d").await;
    amy.ws.send(bye()).await.unwrap();
    let (_, close) = amy.closed().await;
    assert_eq!(close_code(&close), 1000, "answered with the client's code");
    let (mut ws, _) = open(w.addr, &["im.v1"]).await.unwrap();
    ws.send(bye()).await.unwrap();
    let (_, close) = drain(&mut ws).await;
    assert_eq!(close_code(&close), 1000, "before the Hello too");
}

#[tokio::test]
async fn malformed_and_text_frames_close_the_connection() {
    let w = world().await;
    w.users(&["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    amy.send_bytes(vec![0xff, 0xff, 0xff]).await;
    let (frames, close) = amy.closed().await;
    assert_eq!(
        error_of(&frames[0]).unwrap().code(),
        ErrorCode::MalformedFrame
    );
    assert_eq!(close_code(&close), 1002);

    let mut amy = w.connect("amy", "d").await;
    amy.ws.send(WsMessage::Text("hello".into())).await.unwrap();
    let (frames, close) = amy.closed().await;
    assert_eq!(
        error_of(&frames[0]).unwrap().code(),
        ErrorCode::MalformedFrame
    );
    assert_eq!(close_code(&close), 1002);

    // A request that needs an answer but carries request_id 0.
    let mut amy = w.connect("amy", "d").await;
    amy.send_with_id(0, ping()).await;
    let (frames, close) = amy.closed().await;
    assert_eq!(
        error_of(&frames[0]).unwrap().code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(close_code(&close), 1002);
}

#[tokio::test]
async fn frames_up_to_the_limit_pass_and_larger_ones_close_with_frame_too_large() {
    let w = world_with(|s| {
        s.gateway.max_frame_bytes = 4096;
        s.messaging.max_content_bytes = 2048;
    })
    .await;
    w.users(&["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    assert_eq!(amy.welcome.limits.as_ref().unwrap().max_frame_bytes, 4096);

    // A ping padded with an unknown field to exactly the limit.
    let padded = |size: usize| {
        let mut frame = prost::Message::encode_to_vec(&im_proto::v1::ClientFrame {
            request_id: 77,
            body: Some(ping()),
        });
        let header = 3; // key (2 bytes for field 100) + length (1 or 2 bytes)
        let pad = size - frame.len() - header - 1;
        prost::encoding::encode_key(100, prost::encoding::WireType::LengthDelimited, &mut frame);
        prost::encoding::encode_varint(pad as u64, &mut frame);
        frame.extend(std::iter::repeat_n(0u8, pad));
        frame
    };
    let exact = padded(4096);
    assert_eq!(exact.len(), 4096);
    amy.send_bytes(exact).await;
    assert!(matches!(amy.answer(77).await, server_frame::Body::Pong(_)));

    let too_big = "x".repeat(2100);
    let refused = amy
        .send_message("d:amy:amy", "big", text(&too_big))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.limit),
        (ErrorCode::ContentTooLarge, 2048)
    );
    assert!(
        matches!(amy.call(ping()).await, server_frame::Body::Pong(_)),
        "still open"
    );

    amy.send_bytes(padded(4097)).await;
    let (frames, close) = amy.closed().await;
    let error = frames.iter().find_map(error_of).unwrap();
    assert_eq!(
        (error.code(), error.limit),
        (ErrorCode::FrameTooLarge, 4096)
    );
    assert_eq!(close_code(&close), 1009);

    let mut amy = w.connect("amy", "d").await;
    amy.send_bytes(vec![0; 100_000]).await;
    let (frames, close) = amy.closed().await;
    assert_eq!(
        frames.iter().find_map(error_of).unwrap().code(),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(close_code(&close), 1009);
}

#[tokio::test]
async fn sends_are_rate_limited_per_user() {
    let w = world_with(|s| s.messaging.messages_per_second = 2).await;
    w.users(&["amy"]).await;
    let mut phone = w.connect("amy", "phone").await;
    let mut laptop = w.connect("amy", "laptop").await;
    let mut accepted = 0;
    let mut limited = Vec::new();
    for n in 0..12 {
        let client = if n % 2 == 0 { &mut phone } else { &mut laptop };
        match client
            .send_message("d:amy:amy", &format!("m{n}"), text("x"))
            .await
        {
            Ok(_) => accepted += 1,
            Err(error) => limited.push(error),
        }
    }
    assert!(accepted >= 4, "the burst passes");
    assert!(!limited.is_empty(), "the user, not each device, is limited");
    for error in &limited {
        assert_eq!(error.code(), ErrorCode::RateLimited);
        assert!(error.retry_after_ms > 0);
    }
}

#[tokio::test]
async fn floods_are_rate_limited_then_disconnected() {
    let w = world_with(|s| {
        s.gateway.frames_per_second = 5;
        s.gateway.abuse_threshold = 20;
    })
    .await;
    w.users(&["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let announced = amy.welcome.limits.unwrap();
    assert_eq!(
        (
            announced.max_frames_per_second,
            announced.max_rate_limited_in_a_row
        ),
        (5, 20),
        "both limits are announced"
    );
    for _ in 0..200 {
        amy.send(ping()).await;
    }
    let (frames, close) = amy.closed().await;
    let limited = frames
        .iter()
        .filter_map(error_of)
        .filter(|e| e.code() == ErrorCode::RateLimited)
        .count();
    assert!(
        limited >= 20,
        "answered with RATE_LIMITED first ({limited})"
    );
    assert_eq!(
        (close_code(&close), reason(&close).as_str()),
        (1008, "RATE_LIMITED")
    );
}

#[tokio::test]
async fn connections_that_never_say_hello_take_no_session_slot() {
    let w = world_with(|s| s.gateway.max_sessions = 2).await;
    w.users(&["amy", "bob"]).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(open(w.addr, &["im.v1"]).await.unwrap());
    }
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    for client in [&mut amy, &mut bob] {
        assert!(matches!(
            client.call(ping()).await,
            server_frame::Body::Pong(_)
        ));
    }
}

/// Reads until the server closes the connection; what it said before that, if anything.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> usize {
    use tokio::io::AsyncReadExt;
    let mut said = 0;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return said,
            Ok(Ok(n)) => said += n,
            Err(_) => panic!("the server kept the connection open"),
        }
    }
}

#[tokio::test]
async fn connections_before_their_hello_are_capped_per_address_and_in_all() {
    use tokio::net::TcpStream;
    let w = world_with(|s| {
        s.gateway.max_pending_per_ip = 3;
        s.gateway.max_pending_connections = 5;
    })
    .await;
    w.users(&["amy", "bob"]).await;
    // Per address: one more than the cap is closed at once, before a byte is read.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(w.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(w.addr).await.unwrap();
    assert_eq!(closed_by_server(&mut over).await, 0);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A connection that goes frees its place: a login gets in.
    let mut amy = w.connect("amy", "d").await;
    assert!(matches!(
        amy.call(ping()).await,
        server_frame::Body::Pong(_)
    ));

    // In all: silent connections from other addresses (all of 127/8 is loopback) give way,
    // oldest first, to newer ones, so a client that says its Hello promptly gets in.
    let from = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        socket.connect(w.addr).await.unwrap()
    };
    let mut oldest = from(2).await;
    for last in 3..8 {
        held.push(from(last).await);
    }
    assert_eq!(
        closed_by_server(&mut oldest).await,
        0,
        "the oldest gave way"
    );
    let mut bob = w.connect("bob", "d").await;
    assert!(matches!(
        bob.call(ping()).await,
        server_frame::Body::Pong(_)
    ));
}

#[tokio::test]
async fn connections_are_capped_per_node_and_per_user() {
    let w = world_with(|s| {
        s.gateway.max_sessions = 2;
        s.gateway.max_sessions_per_user = 1;
    })
    .await;
    w.users(&["amy", "bob", "cy"]).await;
    let _amy = w.connect("amy", "phone").await;
    let (answer, close) = Client::refused(w.addr, hello(&w.token("amy", "laptop"), "laptop")).await;
    assert_eq!(
        error_of(&answer).unwrap().code(),
        ErrorCode::TooManyConnections
    );
    assert_eq!(close_code(&close), 1013);

    let bob = w.connect("bob", "d").await;
    let (answer, close) = Client::refused(w.addr, hello(&w.token("cy", "d"), "d")).await;
    let error = error_of(&answer).unwrap();
    assert_eq!(
        (error.code(), answer.request_id),
        (ErrorCode::TooManyConnections, 1)
    );
    assert!(error.retry_after_ms > 0);
    assert_eq!(close_code(&close), 1013);

    drop(bob);
    // The slot comes back once the server has seen the close.
    let mut attempts = 0;
    loop {
        let (mut ws, _) = open(w.addr, &["im.v1"]).await.unwrap();
        let frame = im_proto::v1::ClientFrame {
            request_id: 1,
            body: Some(client_frame::Body::Hello(hello(&w.token("cy", "d"), "d"))),
        };
        ws.send(WsMessage::Binary(
            prost::Message::encode_to_vec(&frame).into(),
        ))
        .await
        .unwrap();
        let mut client_frames = drain_first(&mut ws).await;
        match client_frames.remove(0).body {
            Some(server_frame::Body::Welcome(_)) => break,
            _ if attempts < 50 => attempts += 1,
            other => panic!("never admitted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first frame the server sends.
async fn drain_first(ws: &mut Ws) -> Vec<ServerFrame> {
    use futures::StreamExt;
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(bytes))) => {
                return vec![prost::Message::decode(bytes).unwrap()];
            }
            Some(Ok(_)) => {}
            other => panic!("closed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_new_session_of_the_same_device_replaces_the_old_one() {
    let w = world().await;
    w.users(&["amy"]).await;
    let first = w.connect("amy", "phone").await;
    let mut second = w.connect("amy", "phone").await;
    let (frames, close) = first.closed().await;
    assert_eq!(go_away(&frames), Some(ErrorCode::SessionReplaced));
    assert_eq!(
        (close_code(&close), reason(&close).as_str()),
        (1008, "SESSION_REPLACED")
    );
    assert!(matches!(
        second.call(ping()).await,
        server_frame::Body::Pong(_)
    ));
}

#[tokio::test]
async fn revocations_and_deactivations_end_live_sessions() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let amy = w.connect("amy", "phone").await;
    let mut amy_laptop = w.connect("amy", "laptop").await;
    let bob = w.connect("bob", "d").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    w.business
        .revoke_tokens(&Actor::App, "amy", "phone")
        .await
        .unwrap();
    let (frames, close) = amy.closed().await;
    assert_eq!(go_away(&frames), Some(ErrorCode::TokenRevoked));
    assert_eq!(close_code(&close), 1008);
    assert!(
        matches!(amy_laptop.call(ping()).await, server_frame::Body::Pong(_)),
        "only the revoked device is ended"
    );
    // A token signed after the revocation, but not under it, stays refused: revocation does
    // not go by the issue time a token carries.
    let (late, _) = Client::refused(w.addr, hello(&w.token("amy", "phone"), "phone")).await;
    assert_eq!(error_of(&late).unwrap().code(), ErrorCode::TokenRevoked);
    // The business service's next token for the device is good at once.
    let (fresh, _) = w
        .business
        .issue_token(&Actor::App, "amy", "phone", 60_000)
        .await
        .unwrap();
    let mut again = Client::connect(w.addr, &fresh, "phone").await;
    assert!(matches!(
        again.call(ping()).await,
        server_frame::Body::Pong(_)
    ));

    w.business
        .deactivate_user(&Actor::App, "bob")
        .await
        .unwrap();
    let (frames, close) = bob.closed().await;
    assert_eq!(go_away(&frames), Some(ErrorCode::UserDisabled));
    assert_eq!(close_code(&close), 1008);
}

#[tokio::test]
async fn silent_connections_time_out_and_pings_keep_them_alive() {
    let w = world_with(|s| s.gateway.idle_timeout = Duration::from_secs(1)).await;
    w.users(&["amy"]).await;
    let mut talking = w.connect("amy", "phone").await;
    let silent = w.connect("amy", "laptop").await;
    assert_eq!(talking.welcome.idle_timeout_ms, 1_000);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(
            talking.call(ping()).await,
            server_frame::Body::Pong(_)
        ));
    }
    let (frames, close) = silent.closed().await;
    assert_eq!(go_away(&frames), Some(ErrorCode::HeartbeatTimeout));
    assert_eq!(
        (close_code(&close), reason(&close).as_str()),
        (1001, "HEARTBEAT_TIMEOUT"),
        "going away, not a normal closure"
    );
}

#[tokio::test]
async fn unacknowledged_pushes_are_resent_until_acknowledged() {
    let w = world_with(|s| s.gateway.resend_after = Duration::from_millis(100)).await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    amy.say("d:amy:bob", "1", "hi").await;
    let first = bob.message().await;
    let again = bob.message().await;
    assert_eq!(
        (first.seq, again.seq),
        (1, 1),
        "resent while unacknowledged"
    );
    bob.ack("d:amy:bob", 1).await;
    // Drain a resend that may have been on its way before the ack arrived.
    let _ = bob
        .sees_within(Duration::from_millis(150), |b| {
            matches!(b, server_frame::Body::Message(_)).then_some(())
        })
        .await;
    let more = bob
        .sees_within(Duration::from_millis(400), |b| {
            matches!(b, server_frame::Body::Message(_)).then_some(())
        })
        .await;
    assert!(more.is_none(), "no resend after the acknowledgement");
}

#[tokio::test]
async fn a_device_that_never_acknowledges_is_a_slow_consumer() {
    let w = world_with(|s| s.gateway.max_unacked = 5).await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let bob = w.connect("bob", "d").await;
    for n in 0..6 {
        amy.say("d:amy:bob", &format!("{n}"), "x").await;
    }
    let (frames, close) = bob.closed().await;
    assert_eq!(go_away(&frames), Some(ErrorCode::SlowConsumer));
    assert_eq!(close_code(&close), 1013);
}

#[tokio::test]
async fn presence_subscriptions_are_capped() {
    let w = World::builder()
        .core(|s| s.presence.max_subscriptions = 2)
        .business(|s| s.presence_visible_to = im_business::PresenceAudience::Everyone)
        .start()
        .await;
    w.users(&["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let subscribe = |ids: &[&str]| {
        client_frame::Body::PresenceSubscribe(PresenceSubscribe {
            user_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
    };
    assert!(matches!(
        amy.call(subscribe(&["a", "b"])).await,
        server_frame::Body::Presences(_)
    ));
    match amy.call(subscribe(&["c"])).await {
        server_frame::Body::Error(e) => assert_eq!(e.code(), ErrorCode::QuotaExceeded),
        other => panic!("{other:?}"),
    }
    match amy.call(subscribe(&["not valid!"])).await {
        server_frame::Body::Error(e) => assert_eq!(e.code(), ErrorCode::InvalidArgument),
        other => panic!("{other:?}"),
    }
}

/// A store whose appends take a while, so that sends are still in flight at a shutdown.
struct SlowStore(Arc<dyn MessageStore>);

#[async_trait::async_trait]
impl MessageStore for SlowStore {
    async fn append(&self, batch: &[NewEntry]) -> StoreResult<Vec<Appended>> {
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.0.append(batch).await
    }
    async fn entries_after(
        &self,
        c: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>> {
        self.0.entries_after(c, after, limit).await
    }
    async fn entries_before(
        &self,
        c: &str,
        before: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>> {
        self.0.entries_before(c, before, limit).await
    }
    async fn entry(&self, c: &str, seq: u64) -> StoreResult<Option<StoredEntry>> {
        self.0.entry(c, seq).await
    }
    async fn entry_by_client_id(
        &self,
        c: &str,
        u: &str,
        id: &str,
    ) -> StoreResult<Option<StoredEntry>> {
        self.0.entry_by_client_id(c, u, id).await
    }
    async fn last_seqs(&self, ids: &[String]) -> StoreResult<Vec<u64>> {
        self.0.last_seqs(ids).await
    }
    async fn advance_read(&self, c: &str, u: &str, seq: u64, now: i64) -> StoreResult<u64> {
        self.0.advance_read(c, u, seq, now).await
    }
    async fn direct_conversations(&self, u: &str) -> StoreResult<Vec<String>> {
        self.0.direct_conversations(u).await
    }
    async fn read_seqs(&self, u: &str, ids: &[String]) -> StoreResult<Vec<u64>> {
        self.0.read_seqs(u, ids).await
    }
    async fn unread_count(&self, c: &str, u: &str, after: u64) -> StoreResult<u64> {
        self.0.unread_count(c, u, after).await
    }
    async fn last_content(&self, c: &str) -> StoreResult<Option<StoredEntry>> {
        self.0.last_content(c).await
    }
    async fn effects(&self, c: &str, targets: &[u64], up_to: u64) -> StoreResult<Vec<StoredEntry>> {
        self.0.effects(c, targets, up_to).await
    }
    async fn read_cursors(
        &self,
        c: &str,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, u64)>> {
        self.0.read_cursors(c, after, limit).await
    }
}

#[tokio::test]
async fn a_graceful_shutdown_answers_every_send_in_flight_and_says_goodbye() {
    let mut w = world_with_store(|_| {}, |store| Arc::new(SlowStore(store))).await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    for n in 0..40 {
        amy.send(client_frame::Body::Send(SendRequest {
            client_msg_id: format!("m{n}"),
            conversation_id: "d:amy:bob".into(),
            body: Some(text("x")),
        }))
        .await;
    }
    // The first batch is being stored: every send has been read and is in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ((), (frames, close)) = tokio::join!(w.stop(), amy.closed());
    let mut acked: Vec<u64> = frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(server_frame::Body::SendAck(ack)) => Some(ack.seq),
            _ => None,
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=40).collect::<Vec<_>>(),
        "every send in flight was answered"
    );
    assert_eq!(go_away(&frames), Some(ErrorCode::ShuttingDown));
    assert_eq!(
        (close_code(&close), reason(&close).as_str()),
        (1001, "SHUTTING_DOWN")
    );
    let store = SqliteMessageStore::open(&w.dir.join("messages.db"), 1)
        .await
        .unwrap();
    let stored = store.entries_after("d:amy:bob", 0, 1000).await.unwrap();
    assert_eq!(stored.len(), 40, "and stored before the answer");
}

#[tokio::test]
async fn the_operations_endpoint_serves_health_and_metrics() {
    let w = world().await;
    w.users(&["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    amy.say("d:amy:amy", "1", "note to self").await;
    let get = |path: &str| {
        let url = format!("http://{}{path}", w.http_addr);
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get("/readyz").await.0, 200);
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "im_sessions ",
        "im_sessions_opened_total ",
        "im_sends_total{outcome=\"stored\"}",
        "im_commit_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

//! Server checks on the wire, with raw frames: the handshake and version negotiation, malformed,
//! unknown and oversized frames, and the error codes a client can provoke. They check any server
//! at a URL, so an alternative server implementation can be checked too.

use std::time::Duration;

use futures::SinkExt;
use im_proto::v1::{
    Error, ErrorCode, Hello, MessageBody, Ping, SendRequest, ServerFrame, Text, client_frame,
    content, message_body, server_frame,
};
use im_testkit::client;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::system::{Admin, Target};

type Ws = client::Ws;

/// One server check's outcome.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check.
    pub name: &'static str,
    /// `Err` says what was wrong.
    pub outcome: Result<(), String>,
}

const WAIT: Duration = Duration::from_secs(10);

async fn open(target: &Target, protocols: &str) -> Result<(Ws, Option<String>), String> {
    let offered: Vec<&str> = protocols.split(',').map(str::trim).collect();
    client::open_url(&target.url, &offered)
        .await
        .map_err(|e| e.to_string())
}

async fn send(ws: &mut Ws, request_id: u64, body: client_frame::Body) -> Result<(), String> {
    client::send_frame(ws, request_id, body)
        .await
        .map_err(|e| e.to_string())
}

/// The next frame, or `None` at the close (with its code).
async fn read(ws: &mut Ws) -> Result<Result<ServerFrame, Option<u16>>, String> {
    Ok(match client::read_frame(ws, WAIT).await? {
        client::Read::Frame(frame) => Ok(*frame),
        client::Read::Closed(code) => Err(code),
    })
}

/// The first error, then the close code.
async fn refusal(ws: &mut Ws) -> Result<(Error, u64, Option<u16>), String> {
    let frame = match read(ws).await? {
        Ok(frame) => frame,
        Err(code) => return Err(format!("closed ({code:?}) without an error")),
    };
    let error = match frame.body {
        Some(server_frame::Body::Error(e)) => e,
        other => return Err(format!("expected an error, got {other:?}")),
    };
    let mut close = None;
    for _ in 0..4 {
        if let Err(code) = read(ws).await? {
            close = code;
            break;
        }
    }
    Ok((error, frame.request_id, close))
}

fn expect(
    error: &Error,
    code: ErrorCode,
    close: Option<u16>,
    wanted_close: u16,
) -> Result<(), String> {
    if error.code() != code {
        return Err(format!(
            "expected {}, got {} ({})",
            code.name(),
            error.code,
            error.message
        ));
    }
    if close != Some(wanted_close) {
        return Err(format!("expected close {wanted_close}, got {close:?}"));
    }
    Ok(())
}

/// A Hello with `token` is refused with `code` (close 1008) within a few seconds: the server
/// learns of revocations and deactivations through an event.
async fn refused_eventually(
    target: &Target,
    token: &str,
    device: &str,
    code: ErrorCode,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (mut ws, _) = open(target, "im.v1").await?;
        send(&mut ws, 1, hello(token, device)).await?;
        let outcome = match read(&mut ws).await? {
            Ok(frame) => match frame.body {
                Some(server_frame::Body::Error(error)) => {
                    let mut close = None;
                    for _ in 0..4 {
                        if let Err(c) = read(&mut ws).await? {
                            close = c;
                            break;
                        }
                    }
                    expect(&error, code, close, 1008)
                }
                other => Err(format!("not refused: {other:?}")),
            },
            Err(c) => Err(format!("closed ({c:?}) without an error")),
        };
        if outcome.is_ok() || tokio::time::Instant::now() >= deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hello(token: &str, device: &str) -> client_frame::Body {
    client_frame::Body::Hello(Hello {
        protocol_versions: vec![1],
        token: token.into(),
        device_id: device.into(),
        platform: 0,
        client_version: "im-conformance/0".into(),
        max_frame_bytes: 0,
        features: Vec::new(),
    })
}

/// Connects and completes the Hello; the server's frame limit.
async fn welcomed(target: &Target, token: &str, device: &str) -> Result<(Ws, u32), String> {
    let (mut ws, _) = open(target, "im.v1, im").await?;
    send(&mut ws, 1, hello(token, device)).await?;
    match read(&mut ws)
        .await?
        .map_err(|c| format!("closed: {c:?}"))?
        .body
    {
        Some(server_frame::Body::Welcome(w)) => Ok((ws, w.limits.map_or(0, |l| l.max_frame_bytes))),
        other => Err(format!("no welcome: {other:?}")),
    }
}

async fn answer(ws: &mut Ws, request_id: u64) -> Result<server_frame::Body, String> {
    loop {
        let frame = read(ws).await?.map_err(|c| format!("closed: {c:?}"))?;
        if frame.request_id == request_id {
            return frame.body.ok_or_else(|| "an answer without a body".into());
        }
    }
}

fn text(body: &str) -> MessageBody {
    MessageBody {
        kind: Some(message_body::Kind::Content(im_proto::v1::Content {
            kind: Some(content::Kind::Text(Text { text: body.into() })),
            ..Default::default()
        })),
    }
}

/// Runs every server check against `target`; `suffix` keeps its users apart from others'.
pub async fn run_all(target: &Target, suffix: &str) -> Vec<CheckResult> {
    let admin = Admin::new(target);
    let user = |name: &str| format!("{name}-{suffix}");
    let mut results = Vec::new();
    macro_rules! check {
        ($name:literal, $body:expr) => {
            let outcome: Result<(), String> = async { $body }.await;
            results.push(CheckResult {
                name: $name,
                outcome,
            });
        };
    }
    let setup = async {
        for name in ["amy", "bob", "gone", "old"] {
            admin.user(&user(name)).await?;
        }
        admin
            .group(&user("team"), &user("bob"), &[], false, None)
            .await
    };
    if let Err(error) = setup.await {
        results.push(CheckResult {
            name: "setup",
            outcome: Err(error),
        });
        return results;
    }

    check!("negotiates_im_v1", {
        let (_, chosen) = open(target, "im.v1, im").await?;
        if chosen.as_deref() == Some("im.v1") {
            Ok(())
        } else {
            Err(format!("chose {chosen:?}"))
        }
    });
    check!("bare_im_gets_a_typed_unsupported_version", {
        let (mut ws, chosen) = open(target, "im.v99, im").await?;
        if chosen.as_deref() != Some("im") {
            return Err(format!("chose {chosen:?}"));
        }
        send(&mut ws, 1, hello("x", "d")).await?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::UnsupportedVersion, close, 1002)?;
        if error.supported_versions.contains(&1) {
            Ok(())
        } else {
            Err("supported_versions lacks 1".into())
        }
    });
    check!("no_common_version_refuses_the_upgrade", {
        match open(target, "im.v99").await {
            Err(e) if e.contains("400") => Ok(()),
            other => Err(format!(
                "expected HTTP 400, got {:?}",
                other.map(|(_, c)| c)
            )),
        }
    });
    check!("a_frame_before_the_hello_is_handshake_required", {
        let (mut ws, _) = open(target, "im.v1").await?;
        send(
            &mut ws,
            4,
            client_frame::Body::Ping(Ping { client_time_ms: 1 }),
        )
        .await?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::HandshakeRequired, close, 1002)
    });
    check!("a_bad_token_is_unauthenticated", {
        let (mut ws, _) = open(target, "im.v1").await?;
        send(&mut ws, 1, hello("not-a-token", "d")).await?;
        let (error, request_id, close) = refusal(&mut ws).await?;
        if request_id != 1 {
            return Err(format!("the error answers request {request_id}"));
        }
        expect(&error, ErrorCode::Unauthenticated, close, 1008)
    });
    check!("a_token_for_another_device_is_unauthenticated", {
        let token = admin.token(&user("amy"), "phone").await?;
        let (mut ws, _) = open(target, "im.v1").await?;
        send(&mut ws, 1, hello(&token, "laptop")).await?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::Unauthenticated, close, 1008)
    });
    check!("a_revoked_token_is_token_revoked", {
        let token = admin.token(&user("old"), "d").await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        admin
            .call(
                reqwest::Method::POST,
                &format!("/v1/users/{}/tokens/revoke", user("old")),
                Some(serde_json::json!({})),
            )
            .await?;
        refused_eventually(target, &token, "d", ErrorCode::TokenRevoked).await
    });
    check!("a_deactivated_user_is_user_disabled", {
        let token = admin.token(&user("gone"), "d").await?;
        admin
            .call(
                reqwest::Method::POST,
                &format!("/v1/users/{}/deactivate", user("gone")),
                Some(serde_json::json!({})),
            )
            .await?;
        refused_eventually(target, &token, "d", ErrorCode::UserDisabled).await
    });
    let amy = admin.token(&user("amy"), "d").await.unwrap_or_default();
    check!("a_second_hello_is_already_authenticated", {
        let (mut ws, _) = welcomed(target, &amy, "d").await?;
        send(&mut ws, 2, hello(&amy, "d")).await?;
        let (error, request_id, close) = refusal(&mut ws).await?;
        if request_id != 2 {
            return Err(format!("answers request {request_id}"));
        }
        expect(&error, ErrorCode::AlreadyAuthenticated, close, 1002)
    });
    check!("malformed_bytes_are_malformed_frame", {
        let (mut ws, _) = welcomed(target, &amy, "d").await?;
        ws.send(WsMessage::Binary(vec![0xff, 0xff, 0xff].into()))
            .await
            .map_err(|e| e.to_string())?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::MalformedFrame, close, 1002)
    });
    check!("a_text_message_is_malformed_frame", {
        let (mut ws, _) = welcomed(target, &amy, "d").await?;
        ws.send(WsMessage::Text("hi".into()))
            .await
            .map_err(|e| e.to_string())?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::MalformedFrame, close, 1002)
    });
    check!(
        "an_unknown_variant_is_unsupported_frame_and_the_connection_lives",
        {
            let (mut ws, _) = welcomed(target, &amy, "d").await?;
            ws.send(WsMessage::Binary(vec![0x08, 0x09, 0xba, 0x3e, 0x00].into()))
                .await
                .map_err(|e| e.to_string())?;
            match answer(&mut ws, 9).await? {
                server_frame::Body::Error(e) if e.code() == ErrorCode::UnsupportedFrame => {}
                other => return Err(format!("got {other:?}")),
            }
            send(
                &mut ws,
                10,
                client_frame::Body::Ping(Ping { client_time_ms: 3 }),
            )
            .await?;
            match answer(&mut ws, 10).await? {
                server_frame::Body::Pong(p) if p.client_time_ms == 3 => Ok(()),
                other => Err(format!("no pong: {other:?}")),
            }
        }
    );
    check!("a_frame_over_the_limit_is_frame_too_large", {
        let (mut ws, limit) = welcomed(target, &amy, "d").await?;
        let limit = if limit == 0 { 1 << 20 } else { limit as usize };
        ws.send(WsMessage::Binary(vec![0u8; limit + 1].into()))
            .await
            .map_err(|e| e.to_string())?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::FrameTooLarge, close, 1009)?;
        if error.limit == limit as u64 {
            Ok(())
        } else {
            Err(format!("limit {} announced {limit}", error.limit))
        }
    });
    check!("a_request_without_a_request_id_is_invalid_argument", {
        let (mut ws, _) = welcomed(target, &amy, "d").await?;
        send(
            &mut ws,
            0,
            client_frame::Body::Ping(Ping { client_time_ms: 1 }),
        )
        .await?;
        let (error, _, close) = refusal(&mut ws).await?;
        expect(&error, ErrorCode::InvalidArgument, close, 1002)
    });
    check!("a_second_session_of_the_device_replaces_the_first", {
        let twice = admin.token(&user("amy"), "twice").await?;
        let (mut first, _) = welcomed(target, &twice, "twice").await?;
        let (_second, _) = welcomed(target, &twice, "twice").await?;
        loop {
            match read(&mut first).await? {
                Ok(frame) => match frame.body {
                    Some(server_frame::Body::GoAway(g))
                        if g.code() == ErrorCode::SessionReplaced =>
                    {
                        return Ok(());
                    }
                    Some(server_frame::Body::Error(e))
                        if e.code() == ErrorCode::SessionReplaced =>
                    {
                        return Ok(());
                    }
                    _ => {}
                },
                Err(code) => return Err(format!("closed ({code:?}) without SESSION_REPLACED")),
            }
        }
    });
    check!("sends_are_refused_with_their_codes", {
        let (mut ws, _) = welcomed(target, &amy, "d").await?;
        let cases: [(&str, &str, MessageBody, ErrorCode); 4] = [
            (
                "1",
                &format!("g:{}", user("team")),
                text("x"),
                ErrorCode::NotAMember,
            ),
            (
                "2",
                &format!("g:{}", user("nowhere")),
                text("x"),
                ErrorCode::GroupNotFound,
            ),
            ("3", "d:zz:aa", text("x"), ErrorCode::InvalidArgument),
            (
                "4",
                &format!("d:{}:{}", user("amy"), user("amy")),
                MessageBody {
                    kind: Some(message_body::Kind::Recall(im_proto::v1::Recall {
                        target_seq: 99,
                    })),
                },
                ErrorCode::MessageNotFound,
            ),
        ];
        for (n, (id, conversation, body, code)) in cases.into_iter().enumerate() {
            let request_id = 100 + n as u64;
            send(
                &mut ws,
                request_id,
                client_frame::Body::Send(SendRequest {
                    client_msg_id: id.into(),
                    conversation_id: conversation.into(),
                    body: Some(body),
                }),
            )
            .await?;
            match answer(&mut ws, request_id).await? {
                server_frame::Body::Error(e) if e.code() == code => {}
                other => {
                    return Err(format!(
                        "{conversation}: expected {}, got {other:?}",
                        code.name()
                    ));
                }
            }
        }
        Ok(())
    });
    check!("a_silent_connection_gets_heartbeat_timeout", {
        let silent = admin.token(&user("amy"), "silent").await?;
        let (mut ws, _) = open(target, "im.v1").await?;
        send(&mut ws, 1, hello(&silent, "silent")).await?;
        let idle = match read(&mut ws)
            .await?
            .map_err(|c| format!("closed: {c:?}"))?
            .body
        {
            Some(server_frame::Body::Welcome(w)) => w.idle_timeout_ms,
            other => return Err(format!("no welcome: {other:?}")),
        };
        if idle == 0 || idle > 20_000 {
            return Err(format!("idle_timeout_ms {idle} is too long to check here"));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(idle) + 5_000);
        loop {
            let next = tokio::time::timeout_at(deadline, read(&mut ws)).await;
            match next.map_err(|_| "still open after the idle timeout".to_owned())?? {
                Ok(frame) => match frame.body {
                    Some(server_frame::Body::GoAway(g))
                        if g.code() == ErrorCode::HeartbeatTimeout =>
                    {
                        return Ok(());
                    }
                    Some(server_frame::Body::Error(e))
                        if e.code() == ErrorCode::HeartbeatTimeout =>
                    {
                        return Ok(());
                    }
                    _ => {}
                },
                Err(code) => return Err(format!("closed ({code:?}) without HEARTBEAT_TIMEOUT")),
            }
        }
    });
    check!("floods_are_rate_limited", {
        let flood = admin.token(&user("amy"), "flood").await?;
        let (mut ws, _) = welcomed(target, &flood, "flood").await?;
        for n in 0..2_000u64 {
            send(
                &mut ws,
                n + 2,
                client_frame::Body::Ping(Ping { client_time_ms: 0 }),
            )
            .await?;
        }
        loop {
            match read(&mut ws).await? {
                Ok(frame) => {
                    if let Some(server_frame::Body::Error(e)) = frame.body
                        && e.code() == ErrorCode::RateLimited
                    {
                        return if e.retry_after_ms > 0 || frame.request_id == 0 {
                            Ok(())
                        } else {
                            Err("RATE_LIMITED without retry_after_ms".into())
                        };
                    }
                }
                Err(code) => return Err(format!("closed ({code:?}) before any RATE_LIMITED")),
            }
        }
    });
    results
}

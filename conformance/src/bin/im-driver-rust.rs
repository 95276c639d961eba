//! The reference conformance driver: the Rust SDK behind the JSON-lines driver protocol
//! (docs/CONFORMANCE.md). Commands arrive on stdin, one JSON object per line; answers and events
//! leave on stdout, one JSON object per line.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
};

use im_sdk_rust::{
    Body, Client, ClientBuilder, ConnectionState, Content, ContentKind, Event, NewUpload,
    StaticToken,
    proto::v1::{MediaKind, MediaRef, PresenceStatus},
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

type Sessions = Arc<Mutex<HashMap<String, Arc<Client>>>>;

fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn error_json(e: &im_sdk_rust::Error) -> Value {
    json!({"code": e.code, "name": e.name(), "message": e.message})
}

/// A notice's kind as the driver protocol names it: `members_added` for MEMBERS_ADDED.
fn notice_name(kind: im_proto::v1::NoticeKind) -> String {
    kind.as_str_name()
        .trim_start_matches("NOTICE_KIND_")
        .to_ascii_lowercase()
}

/// A message's media reference as the driver protocol shows it.
fn media_json(reference: &MediaRef) -> Value {
    json!({
        "media_id": reference.media_id, "mime_type": reference.mime_type,
        "size_bytes": reference.size_bytes, "file_name": reference.file_name,
        "caption": reference.caption,
    })
}

fn event_json(session: &str, event: &Event) -> Value {
    let mut v = match event {
        Event::Message(m) => json!({
            "type": "message", "conversation": m.conversation_id, "seq": m.seq,
            "from": m.sender_user_id, "from_device": m.sender_device_id,
            "client_msg_id": m.client_msg_id, "text": m.body_text(),
            "media": match &m.body {
                Body::Content(Content { kind: ContentKind::Media(r), .. }) => media_json(r),
                _ => Value::Null,
            },
        }),
        Event::Change(m) => {
            let (kind, target, key, remove) = match &m.body {
                Body::Edit { target_seq, .. } => ("edit", *target_seq, None, false),
                Body::Recall { target_seq } => ("recall", *target_seq, None, false),
                Body::Delete { target_seq } => ("delete", *target_seq, None, false),
                Body::Reaction {
                    target_seq,
                    key,
                    remove,
                } => ("reaction", *target_seq, Some(key.clone()), *remove),
                Body::Notice(_) => ("notice", 0, None, false),
                _ => ("unknown", 0, None, false),
            };
            let mut v = json!({
                "type": "change", "kind": kind, "conversation": m.conversation_id, "seq": m.seq,
                "from": m.sender_user_id, "target": target, "key": key, "remove": remove,
            });
            if let Body::Notice(notice) = &m.body {
                v["notice"] = json!(notice_name(notice.kind()));
                v["targets"] = json!(notice.target_user_ids);
            }
            v
        }
        Event::ReadState {
            conversation_id,
            read_seq,
            unread_count,
        } => json!({
            "type": "read_state", "conversation": conversation_id, "read_seq": read_seq,
            "unread_count": unread_count,
        }),
        Event::Receipt {
            conversation_id,
            user_id,
            read_seq,
        } => json!({
            "type": "receipt", "conversation": conversation_id, "user": user_id, "read_seq": read_seq,
        }),
        Event::Typing {
            conversation_id,
            user_id,
            active,
        } => json!({
            "type": "typing", "conversation": conversation_id, "user": user_id, "active": active,
        }),
        Event::Presence(p) => json!({
            "type": "presence", "user": p.user_id,
            "status": p.status().as_str_name().trim_start_matches("PRESENCE_STATUS_").to_lowercase(),
            "status_text": p.status_text,
        }),
        Event::Conversation(c) => json!({
            "type": "conversation", "conversation": c.conversation_id, "active": c.active,
            "last_seq": c.last_seq, "read_seq": c.read_seq, "unread_count": c.unread_count,
        }),
        Event::Connection(state) => json!({
            "type": "connection",
            "state": match state {
                ConnectionState::Connecting => "connecting",
                ConnectionState::Connected { .. } => "connected",
                ConnectionState::Reconnecting { .. } => "reconnecting",
                ConnectionState::Stopped { .. } => "stopped",
            },
        }),
    };
    v["session"] = json!(session);
    json!({ "event": v })
}

fn body_of(v: &Value) -> Body {
    let target = v["target"].as_u64().unwrap_or(0);
    match v["kind"].as_str().unwrap_or("text") {
        "edit" => Body::Edit {
            target_seq: target,
            content: Content::text(text(v, "text")),
        },
        "recall" => Body::Recall { target_seq: target },
        "delete" => Body::Delete { target_seq: target },
        "reaction" => Body::Reaction {
            target_seq: target,
            key: text(v, "key"),
            remove: v["remove"].as_bool().unwrap_or(false),
        },
        _ => {
            let mut content = Content::text(text(v, "text"));
            content.reply_to_seq = v["reply_to"].as_u64().unwrap_or(0);
            Body::Content(content)
        }
    }
}

async fn handle(sessions: Sessions, command: Value) -> Value {
    let session_name = text(&command, "session");
    let session = sessions
        .lock()
        .map(|s| s.get(&session_name).cloned())
        .ok()
        .flatten();
    let need = || {
        session
            .clone()
            .ok_or_else(|| json!({"code": 0, "name": "NO_SESSION"}))
    };
    let result: Result<Value, Value> = async {
        match command["cmd"].as_str().unwrap_or_default() {
            "hello" => Ok(json!({"implementation": "rust", "sdk": env!("CARGO_PKG_VERSION")})),
            "connect" => {
                let mut builder = ClientBuilder::new(
                    text(&command, "url"),
                    text(&command, "device"),
                    Arc::new(StaticToken(text(&command, "token"))),
                );
                if let Some(api) = command["api"].as_str() {
                    builder = builder.business_api(api);
                }
                let client = Arc::new(builder.build().map_err(|e| error_json(&e))?);
                let mut events = client.events().ok_or_else(|| json!({"name": "NO_EVENTS"}))?;
                let name = session_name.clone();
                tokio::spawn(async move {
                    while let Some(event) = events.next().await {
                        emit(&event_json(&name, &event));
                    }
                });
                let user = client.wait_connected().await.map_err(|e| error_json(&e))?;
                if let Ok(mut s) = sessions.lock() {
                    s.insert(session_name.clone(), client);
                }
                Ok(json!({"user": user}))
            }
            "close" => {
                let client = need()?;
                client.close().await;
                if let Ok(mut s) = sessions.lock() {
                    s.remove(&session_name);
                }
                Ok(json!({}))
            }
            "send" if command["body"]["kind"] == "media" => {
                let client = need()?;
                let body = &command["body"];
                let media = client.media(&text(body, "media_id")).await.map_err(|e| error_json(&e))?;
                let sent = client
                    .send_media(&text(&command, "conversation"), &media, &text(body, "caption"))
                    .await
                    .map_err(|e| error_json(&e))?;
                Ok(json!({"seq": sent.seq, "duplicate": sent.duplicate, "client_msg_id": sent.client_msg_id}))
            }
            "send" => {
                let client = need()?;
                let body = body_of(&command["body"]);
                let conversation = text(&command, "conversation");
                let sent = match command["client_msg_id"].as_str() {
                    Some(id) => client.send_with_id(&conversation, id, body).await,
                    None => client.send(&conversation, body).await,
                }
                .map_err(|e| error_json(&e))?;
                Ok(json!({"seq": sent.seq, "duplicate": sent.duplicate, "client_msg_id": sent.client_msg_id}))
            }
            "history" => {
                let client = need()?;
                let page = client
                    .history(
                        &text(&command, "conversation"),
                        command["before"].as_u64().unwrap_or(0),
                        command["limit"].as_u64().unwrap_or(0) as u32,
                    )
                    .await
                    .map_err(|e| error_json(&e))?;
                let messages: Vec<Value> = page
                    .messages
                    .iter()
                    .map(|m| {
                        let state = m.state.clone().unwrap_or_default();
                        let notice = match &m.body {
                            Body::Notice(n) => Some(notice_name(n.kind())),
                            _ => None,
                        };
                        json!({
                            "seq": m.seq, "from": m.sender_user_id, "text": m.body_text(),
                            "notice": notice,
                            "edited_seq": state.edited_seq, "recalled_seq": state.recalled_seq,
                            "deleted_seq": state.deleted_seq,
                            "reactions": state.reactions.iter()
                                .map(|(k, n, mine)| json!({"key": k, "count": n, "mine": mine}))
                                .collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                Ok(json!({
                    "messages": messages, "has_more": page.has_more, "last_seq": page.last_seq,
                    "visible_from_seq": page.visible_from_seq,
                }))
            }
            "mark_read" => {
                let client = need()?;
                let state = client
                    .mark_read(&text(&command, "conversation"), command["seq"].as_u64().unwrap_or(0))
                    .await
                    .map_err(|e| error_json(&e))?;
                Ok(json!({"read_seq": state.read_seq, "unread_count": state.unread_count}))
            }
            "typing" => {
                let client = need()?;
                client
                    .typing(&text(&command, "conversation"), command["active"].as_bool().unwrap_or(true))
                    .await
                    .map_err(|e| error_json(&e))?;
                Ok(json!({}))
            }
            "subscribe_presence" => {
                let client = need()?;
                let users: Vec<String> = serde_json::from_value(command["users"].clone()).unwrap_or_default();
                let list = client.subscribe_presence(&users).await.map_err(|e| error_json(&e))?;
                let list: Vec<Value> = list
                    .iter()
                    .map(|p| json!({"user": p.user_id, "status": p.status().as_str_name().trim_start_matches("PRESENCE_STATUS_").to_lowercase()}))
                    .collect();
                Ok(json!({"presences": list}))
            }
            "set_presence" => {
                let client = need()?;
                let status = match command["status"].as_str().unwrap_or("online") {
                    "away" => PresenceStatus::Away,
                    "busy" => PresenceStatus::Busy,
                    _ => PresenceStatus::Online,
                };
                client
                    .set_presence(status, &text(&command, "text"))
                    .await
                    .map_err(|e| error_json(&e))?;
                Ok(json!({}))
            }
            "conversations" => {
                let client = need()?;
                let list = client.conversations().await.map_err(|e| error_json(&e))?;
                let list: Vec<Value> = list
                    .iter()
                    .map(|c| json!({"conversation": c.conversation_id, "unread_count": c.unread_count, "read_seq": c.read_seq, "last_seq": c.last_seq, "active": c.active}))
                    .collect();
                Ok(json!({"conversations": list}))
            }
            "create_group" => {
                let client = need()?;
                let members: Vec<String> = serde_json::from_value(command["members"].clone()).unwrap_or_default();
                let group = client
                    .create_group(&text(&command, "name"), &members)
                    .await
                    .map_err(|e| error_json(&e))?;
                Ok(json!({"group_id": group.group_id}))
            }
            "upload" => {
                let client = need()?;
                let kind = match command["kind"].as_str().unwrap_or_default() {
                    "image" => MediaKind::Image,
                    "video" => MediaKind::Video,
                    "audio" => MediaKind::Audio,
                    _ => MediaKind::File,
                };
                let bytes = hex::decode(text(&command, "data_hex"))
                    .map_err(|e| json!({"code": 0, "name": "MALFORMED_COMMAND", "message": e.to_string()}))?;
                let upload = NewUpload::new(kind, text(&command, "mime_type"), bytes)
                    .file_name(text(&command, "file_name"));
                let media = client.upload(upload).await.map_err(|e| error_json(&e))?;
                Ok(json!({
                    "media_id": media.media_id, "state": media.state,
                    "mime_type": media.mime_type, "size_bytes": media.size_bytes,
                }))
            }
            "download" => {
                let client = need()?;
                let bytes = client
                    .download(
                        &text(&command, "media_id"),
                        &text(&command, "conversation"),
                        command["seq"].as_u64().unwrap_or(0),
                    )
                    .await
                    .map_err(|e| error_json(&e))?;
                Ok(json!({"data_hex": hex::encode(bytes)}))
            }
            "leave_group" => {
                let client = need()?;
                client.leave_group(&text(&command, "group")).await.map_err(|e| error_json(&e))?;
                Ok(json!({}))
            }
            other => Err(json!({"code": 0, "name": "UNKNOWN_COMMAND", "message": other})),
        }
    }
    .await;
    let id = command["id"].clone();
    match result {
        Ok(mut answer) => {
            answer["id"] = id;
            answer["ok"] = json!(true);
            answer
        }
        Err(error) => json!({"id": id, "ok": false, "error": error}),
    }
}

#[tokio::main]
async fn main() {
    let sessions: Sessions = Arc::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(command) = serde_json::from_str::<Value>(&line) else {
            emit(&json!({"ok": false, "error": {"name": "MALFORMED_COMMAND", "message": line}}));
            continue;
        };
        let sessions = sessions.clone();
        // Commands run concurrently: a send waiting for its ack does not hold up the others.
        tokio::spawn(async move { emit(&handle(sessions, command).await) });
    }
}

//! Media in messages, through the whole system: a send checks its `MediaRef` with the business
//! service (the sender's own media, completed, not held), and a download for anyone but the
//! uploader is signed only through a message they can read that references the media; the
//! authorization matrix of member, outsider, removed member, another conversation, the wrong
//! seq, a recalled message and a quarantined object.

use im_business::Actor;
use im_proto::v1::{
    Content, ErrorCode, MediaKind, MediaRef, MediaState, MessageBody, Recall, content, message_body,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// The business HTTP API as `actor` (with the app secret).
async fn api(w: &World, path: &str, actor: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", w.api_url()))
        .bearer_auth(im_testkit::APP_SECRET)
        .header("x-im-actor", actor)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An upload of `PNG` by `user`, completed unless `complete` is false; its media id.
async fn uploaded(w: &World, user: &str, complete: bool) -> String {
    let create = json!({"user_id": user, "kind": "image", "mime_type": "image/png",
        "size_bytes": PNG.len()});
    let (status, upload) = api(w, "/v1/media/uploads", user, create).await;
    assert_eq!(status, StatusCode::OK, "{upload}");
    let part = &upload["parts"][0];
    let mut put = reqwest::Client::new()
        .put(part["url"].as_str().unwrap())
        .body(PNG);
    for h in part["headers"].as_array().unwrap() {
        put = put.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let id = upload["media_id"].as_str().unwrap().to_owned();
    if complete {
        let (status, media) = api(w, &format!("/v1/media/{id}/complete"), user, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{media}");
    }
    id
}

fn image(media_id: &str) -> MessageBody {
    MessageBody {
        kind: Some(message_body::Kind::Content(Content {
            kind: Some(content::Kind::Media(MediaRef {
                kind: MediaKind::Image as i32,
                media_id: media_id.into(),
                mime_type: "image/png".into(),
                size_bytes: PNG.len() as u64,
                ..Default::default()
            })),
            ..Default::default()
        })),
    }
}

/// What a download for `user` through (`conversation`, `seq`) answers: the bytes, or the
/// error's name.
async fn download(w: &World, user: &str, id: &str, at: (&str, u64)) -> Result<Vec<u8>, String> {
    let body = json!({"conversation_id": at.0, "seq": at.1});
    let (status, signed) = api(w, &format!("/v1/media/{id}/download"), user, body).await;
    if status != StatusCode::OK {
        return Err(signed["name"]
            .as_str()
            .unwrap_or("no error body")
            .to_owned());
    }
    let fetched = reqwest::get(signed["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    Ok(fetched.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_send_references_only_the_senders_own_completed_media() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    w.contact("bob", "amy").await;
    w.group("team", "amy", &["bob"]).await;
    let mut amy = w.connect("amy", "phone").await;
    let mut bob = w.connect("bob", "phone").await;
    let ready = uploaded(&w, "amy", true).await;
    let pending = uploaded(&w, "amy", false).await;

    let refused = bob
        .send_message("g:team", "b1", image(&ready))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::MediaNotFound, "amy's, not bob's");
    let refused = amy
        .send_message("g:team", "a1", image(&pending))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::Conflict, "not completed");
    let refused = amy
        .send_message("g:team", "a2", image("no-such-media"))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::MediaNotFound);
    let ack = amy
        .send_message("g:team", "a3", image(&ready))
        .await
        .unwrap();
    let seen = bob.message().await;
    assert_eq!((seen.seq, seen.sender_user_id.as_str()), (ack.seq, "amy"));
}

#[tokio::test]
async fn a_download_is_signed_only_through_a_message_the_user_can_read() {
    let w = world().await;
    w.users(&["amy", "bob", "cat"]).await;
    w.contact("bob", "amy").await;
    w.contact("cat", "amy").await;
    w.group("team", "amy", &["bob"]).await;
    w.group("other", "amy", &["cat"]).await;
    let mut amy = w.connect("amy", "phone").await;
    let id = uploaded(&w, "amy", true).await;
    let first = amy
        .send_message("g:team", "a1", image(&id))
        .await
        .unwrap()
        .seq;
    let text = amy.say("g:team", "a2", "and a word").await.seq;
    let second = amy
        .send_message("g:team", "a3", image(&id))
        .await
        .unwrap()
        .seq;
    let in_other = amy.say("g:other", "a4", "no image here").await.seq;
    let nf = || Err("MEDIA_NOT_FOUND".to_owned());

    assert_eq!(
        download(&w, "amy", &id, ("", 0)).await,
        Ok(PNG.to_vec()),
        "the uploader"
    );
    assert_eq!(
        download(&w, "bob", &id, ("g:team", first)).await,
        Ok(PNG.to_vec())
    );
    assert_eq!(
        download(&w, "bob", &id, ("", 0)).await,
        nf(),
        "no message named"
    );
    assert_eq!(
        download(&w, "bob", &id, ("g:team", text)).await,
        nf(),
        "a message without it"
    );
    assert_eq!(
        download(&w, "bob", &id, ("g:team", 99)).await,
        nf(),
        "no such seq"
    );
    assert_eq!(
        download(&w, "cat", &id, ("g:team", first)).await,
        nf(),
        "an outsider"
    );
    assert_eq!(
        download(&w, "cat", &id, ("g:other", in_other)).await,
        nf(),
        "another conversation's message"
    );
    assert_eq!(download(&w, "cat", &id, ("g:other", first)).await, nf());

    // A recalled message no longer shows the media; another that references it still does.
    let recall = MessageBody {
        kind: Some(message_body::Kind::Recall(Recall { target_seq: first })),
    };
    amy.send_message("g:team", "a5", recall).await.unwrap();
    assert_eq!(
        download(&w, "bob", &id, ("g:team", first)).await,
        nf(),
        "recalled"
    );
    assert_eq!(
        download(&w, "bob", &id, ("g:team", second)).await,
        Ok(PNG.to_vec())
    );

    // A removed member reads the group no more.
    w.business
        .remove_members(&Actor::App, "team", &["bob".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        download(&w, "bob", &id, ("g:team", second)).await,
        nf(),
        "removed"
    );

    // Held by content safety: served to no one, and referenced by no new message.
    let store = w.business.store();
    store
        .transition_media(
            &id,
            &[MediaState::Ready],
            MediaState::Quarantined,
            &Default::default(),
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(
        download(&w, "amy", &id, ("", 0)).await,
        Err("MEDIA_QUARANTINED".to_owned())
    );
    let refused = amy
        .send_message("g:team", "a6", image(&id))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::MediaQuarantined);
}

/// Waits (a bounded while) until the media's references are `want`: they arrive through the
/// outbox after the entry's commit.
async fn references_become(w: &World, id: &str, want: &[(&str, i64)]) {
    let want: Vec<(String, i64)> = want.iter().map(|(c, s)| ((*c).to_owned(), *s)).collect();
    let store = w.business.store();
    for _ in 0..200 {
        if store.references(id).await.unwrap() == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "references of {id}: {:?}, not {want:?}",
        store.references(id).await.unwrap()
    );
}

#[tokio::test]
async fn media_no_message_shows_is_deleted_after_its_grace_and_referenced_media_is_kept() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    w.contact("bob", "amy").await;
    w.group("team", "amy", &["bob"]).await;
    let mut amy = w.connect("amy", "phone").await;
    let sent = uploaded(&w, "amy", true).await;
    let unsent = uploaded(&w, "amy", true).await;
    let ack = amy
        .send_message("g:team", "a1", image(&sent))
        .await
        .unwrap();
    references_become(&w, &sent, &[("g:team", ack.seq as i64)]).await;

    // A day and more later: what no message shows goes, what one shows stays.
    let later = now_ms() + 25 * 3600 * 1000;
    assert_eq!(w.media.collect_unreferenced(later, 100).await.unwrap(), 1);
    let store = w.business.store();
    let state = |id: String| {
        let store = store.clone();
        async move { store.get_media(&id).await.unwrap().unwrap().state() }
    };
    assert_eq!(state(unsent.clone()).await, MediaState::Deleted);
    assert_eq!(state(sent.clone()).await, MediaState::Ready);
    assert_eq!(
        download(&w, "amy", &unsent, ("", 0)).await,
        Err("MEDIA_NOT_FOUND".to_owned())
    );
    assert_eq!(
        download(&w, "bob", &sent, ("g:team", ack.seq)).await,
        Ok(PNG.to_vec()),
        "the bytes of deleted media stay while other media holds them"
    );

    // Recalled: the message shows it no more, and after its grace it goes too.
    let recall = MessageBody {
        kind: Some(message_body::Kind::Recall(Recall {
            target_seq: ack.seq,
        })),
    };
    amy.send_message("g:team", "a2", recall).await.unwrap();
    references_become(&w, &sent, &[]).await;
    assert_eq!(
        w.media.collect_unreferenced(now_ms(), 100).await.unwrap(),
        0,
        "within its grace"
    );
    assert_eq!(w.media.collect_unreferenced(later, 100).await.unwrap(), 1);
    assert_eq!(state(sent.clone()).await, MediaState::Deleted);
    assert_eq!(
        download(&w, "amy", &sent, ("", 0)).await,
        Err("MEDIA_NOT_FOUND".to_owned())
    );
    let refused = amy
        .send_message("g:team", "a3", image(&sent))
        .await
        .unwrap_err();
    assert_eq!(
        code(&refused),
        ErrorCode::MediaNotFound,
        "deleted media is sent no more"
    );
}

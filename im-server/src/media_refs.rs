//! The media that entries reference, told to the business service so that it can count
//! references: after an entry is committed, a content (or edit) carrying a `MediaRef` says
//! which media it shows, and a recall or delete says that its target shows none any more. Each
//! goes into the bus's durable outbox IM_MEDIA_REFS (`im.mediaref`) as a [`MediaReferences`],
//! put once per entry.
//!
//! A reference that never arrives keeps media alive, never the reverse: the business service
//! records a reference of its own when it allows a send to attach media, and drops it only
//! when the committed entry's reference arrives.

use std::{sync::Arc, time::Duration};

use im_common::bus::Outbox;
use im_proto::v1::{MediaRef, MediaReferences};
use prost::Message as _;

use crate::{
    store::{EntryKind, StoredEntry},
    wire::{self, fields},
};

/// Where the media references of committed entries go.
pub struct MediaRefs {
    outbox: Arc<dyn Outbox>,
}

impl std::fmt::Debug for MediaRefs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRefs").finish_non_exhaustive()
    }
}

impl MediaRefs {
    /// References into `outbox`.
    pub fn new(outbox: Arc<dyn Outbox>) -> Self {
        Self { outbox }
    }

    /// Records `references` (of committed entries, from [`references_of`]). A put the outbox
    /// does not confirm is tried three times, then counted in
    /// `im_media_references_failed_total` (the media is then kept longer, not lost).
    pub async fn record(&self, references: Vec<MediaReferences>) {
        for references in references {
            let id = format!(
                "{}:{}:{}",
                references.conversation_id, references.seq, references.referenced
            );
            let payload = bytes::Bytes::from(references.encode_to_vec());
            let mut stored = false;
            for wait_ms in [0, 100, 500] {
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                match self.outbox.put_once(&id, payload.clone()).await {
                    Ok(()) => {
                        stored = true;
                        break;
                    }
                    Err(error) => tracing::warn!(%error, "media reference not stored yet"),
                }
            }
            if !stored {
                tracing::error!(
                    conversation = %references.conversation_id,
                    seq = references.seq,
                    "media reference dropped: the outbox refused it three times"
                );
                metrics::counter!("im_media_references_failed_total").increment(1);
            }
        }
    }
}

/// What `entry` changes in media references: the media a content or edit shows, or, for a
/// recall or delete, that its target shows none any more; `None` for anything else.
pub fn references_of(entry: &StoredEntry) -> Option<MediaReferences> {
    let target = u64::try_from(entry.target_seq).unwrap_or(0);
    let content = match entry.kind {
        k if k == EntryKind::Content as i32 => wire::field(&entry.body, fields::BODY_CONTENT)?,
        k if k == EntryKind::Edit as i32 => {
            let edit = wire::field(&entry.body, fields::BODY_EDIT)?;
            wire::field(&edit, fields::EDIT_CONTENT)?
                .into_owned()
                .into()
        }
        k if k == EntryKind::Recall as i32 || k == EntryKind::Delete as i32 => {
            return Some(MediaReferences {
                conversation_id: entry.conversation_id.clone(),
                seq: target,
                media_ids: Vec::new(),
                referenced: false,
            });
        }
        _ => return None,
    };
    // Only contents that carry media are decoded further.
    let media = wire::field(&content, fields::CONTENT_MEDIA)?;
    let media = MediaRef::decode(media.as_ref()).ok()?;
    let media_ids: Vec<String> = [media.media_id, media.thumbnail_media_id]
        .into_iter()
        .filter(|id| !id.is_empty())
        .collect();
    (!media_ids.is_empty()).then(|| MediaReferences {
        conversation_id: entry.conversation_id.clone(),
        seq: u64::try_from(entry.seq).unwrap_or(0),
        media_ids,
        referenced: true,
    })
}

#[cfg(test)]
mod tests {
    use im_proto::v1::{Content, MessageBody, Recall, Text, content, message_body};

    use super::*;

    fn entry(kind: EntryKind, body: MessageBody, target_seq: i64) -> StoredEntry {
        StoredEntry {
            conversation_id: "g:team".into(),
            seq: 9,
            server_msg_id: "m9".into(),
            sender_user_id: "amy".into(),
            sender_device_id: "phone".into(),
            client_msg_id: "c9".into(),
            kind: kind as i32,
            target_seq,
            body: body.encode_to_vec(),
            server_time_ms: 1,
        }
    }

    fn content(kind: content::Kind) -> MessageBody {
        MessageBody {
            kind: Some(message_body::Kind::Content(Content {
                kind: Some(kind),
                ..Content::default()
            })),
        }
    }

    #[test]
    fn media_contents_reference_and_withdrawals_release() {
        let media = content(content::Kind::Media(MediaRef {
            media_id: "m1".into(),
            thumbnail_media_id: "t1".into(),
            ..MediaRef::default()
        }));
        let refs = references_of(&entry(EntryKind::Content, media, 0)).unwrap();
        assert_eq!(
            (refs.seq, refs.media_ids.as_slice(), refs.referenced),
            (9, &["m1".to_owned(), "t1".to_owned()][..], true)
        );
        let text = content(content::Kind::Text(Text { text: "hi".into() }));
        assert_eq!(references_of(&entry(EntryKind::Content, text, 0)), None);
        let recall = MessageBody {
            kind: Some(message_body::Kind::Recall(Recall { target_seq: 4 })),
        };
        let released = references_of(&entry(EntryKind::Recall, recall, 4)).unwrap();
        assert_eq!((released.seq, released.referenced), (4, false));
    }
}

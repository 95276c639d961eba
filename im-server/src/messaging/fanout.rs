//! The fan-out: committed entries, in commit order, go to every online device of every member
//! (the sending session excepted) on every node; the rest are handed to the push hook (system
//! notices excepted). Only then is each sender answered.

use std::sync::Arc;

use im_proto::{
    ConversationId, ConversationKind, ErrorCode, GroupId,
    v1::{Message, MessageBody, NoticeKind, message_body},
};
use prost::Message as _;
use tokio::sync::mpsc;

use super::commit::Committed;
use crate::{
    business::Directory,
    media_refs::{MediaRefs, references_of},
    push::PushHook,
    router::{Routed, Router},
    sessions::Outbound,
    store::{EntryKind, StoredEntry},
    wire,
};

/// Committed entries fanned out together, at most.
const FAN_OUT_BATCH: usize = 256;

/// What the fan-out needs.
pub(super) struct FanOut {
    pub(super) directory: Arc<Directory>,
    pub(super) router: Arc<Router>,
    pub(super) push: Arc<dyn PushHook>,
    pub(super) media_refs: Arc<MediaRefs>,
}

/// An entry's `Message` without its body (which goes in raw, as received).
pub(super) fn message_of(entry: &StoredEntry) -> Message {
    Message {
        conversation_id: entry.conversation_id.clone(),
        seq: entry.seq as u64,
        server_msg_id: entry.server_msg_id.clone(),
        sender_user_id: entry.sender_user_id.clone(),
        sender_device_id: entry.sender_device_id.clone(),
        client_msg_id: entry.client_msg_id.clone(),
        server_time_ms: entry.server_time_ms,
        body: None,
        state: None,
    }
}

/// The push of a new entry, its body as received.
pub fn push_frame(entry: &StoredEntry) -> bytes::Bytes {
    wire::push_frame(&wire::message(&message_of(entry), &entry.body))
}

/// Pushes committed entries until the committer is gone. Entries committed together go out
/// together: one route lookup and one bus message per node.
pub(super) async fn fan_out(fanout: FanOut, mut committed: mpsc::Receiver<Committed>) {
    let mut batch = Vec::with_capacity(FAN_OUT_BATCH);
    while committed.recv_many(&mut batch, FAN_OUT_BATCH).await > 0 {
        let mut items = Vec::with_capacity(batch.len());
        // Per item, which answer holds its entry.
        let mut pushed = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        for Committed {
            appended,
            session_id,
            done,
        } in batch.drain(..)
        {
            let entry = appended.entry();
            if let Some(recipients) = recipients(&fanout.directory, entry).await {
                items.push(Routed {
                    users: recipients,
                    outbound: Outbound {
                        frame: push_frame(entry),
                        entry: Some((entry.conversation_id.as_str().into(), entry.seq as u64)),
                    },
                    exclude: session_id,
                });
                pushed.push(answers.len());
            }
            answers.push((done, appended));
        }
        let wants_offline = fanout.push.wants_offline_users();
        let offline = fanout.router.deliver_all(&items, wants_offline).await;
        // Push services want the content (a preview): the body decoded, unlike pushes to
        // clients, which relay its bytes. System notices wake no one.
        let previews: Vec<(Message, Vec<String>)> = if wants_offline {
            pushed
                .iter()
                .zip(offline)
                .filter(|(i, users)| {
                    !users.is_empty() && answers[**i].1.entry().kind != EntryKind::Notice as i32
                })
                .map(|(&i, users)| {
                    let entry = answers[i].1.entry();
                    let mut message = message_of(entry);
                    message.body = MessageBody::decode(entry.body.as_slice()).ok();
                    (message, users)
                })
                .collect()
        } else {
            Vec::new()
        };
        let references: Vec<_> = answers
            .iter()
            .filter_map(|(_, appended)| references_of(appended.entry()))
            .collect();
        for (done, appended) in answers {
            let _ = done.send(Ok(appended));
        }
        if !references.is_empty() {
            fanout.media_refs.record(references).await;
        }
        for (message, users) in previews {
            fanout.push.offline(&message, &users).await;
        }
    }
}

/// Who gets an entry: both sides of a 1:1, or a group's members.
async fn recipients(directory: &Directory, entry: &StoredEntry) -> Option<Arc<[String]>> {
    let id = entry.conversation_id.parse::<ConversationId>().ok()?;
    match id.kind() {
        ConversationKind::Direct(a, b) if a == b => Some(Arc::new([a.to_string()])),
        ConversationKind::Direct(a, b) => Some(Arc::new([a.to_string(), b.to_string()])),
        ConversationKind::Group(group) if entry.kind == EntryKind::Notice as i32 => {
            let members = members_with_retries(directory, group).await?;
            Some(notice_recipients(&members, entry))
        }
        ConversationKind::Group(group) => {
            let members = members_with_retries(directory, group).await;
            if members.is_none() {
                // Members catch up at their next sync or gap; nothing is lost, the push is.
                tracing::warn!(
                    conversation = %entry.conversation_id,
                    seq = entry.seq,
                    "no member list: entry not pushed"
                );
                metrics::counter!("im_pushes_skipped_total").increment(1);
            }
            members
        }
    }
}

/// Who gets a notice: the members the change leaves, whatever this node's list knew of it when
/// the notice was written. Those it removes get their inactive state instead; those it adds get
/// their conversation state once the business service has recorded this notice's seq as their
/// first, and pull from there (a push now could come before that, while they see nothing yet).
fn notice_recipients(members: &[String], entry: &StoredEntry) -> Arc<[String]> {
    let notice = match MessageBody::decode(entry.body.as_slice()).map(|b| b.kind) {
        Ok(Some(message_body::Kind::Notice(notice))) => notice,
        _ => return members.into(),
    };
    let targets = notice.target_user_ids.iter().map(String::as_str);
    let mut users: std::collections::BTreeSet<&str> = members.iter().map(String::as_str).collect();
    match notice.kind() {
        NoticeKind::GroupCreated => users.extend(targets),
        NoticeKind::MembersAdded | NoticeKind::MembersRemoved | NoticeKind::MemberLeft => {
            for target in targets {
                users.remove(target);
            }
        }
        _ => {}
    }
    users.into_iter().map(str::to_owned).collect()
}

/// A group's members, asked up to three times (a business node restarting, say).
async fn members_with_retries(directory: &Directory, group: &GroupId) -> Option<Arc<[String]>> {
    for wait_ms in [0, 100, 500] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        match directory.members(group).await {
            Ok(members) => return Some(members),
            // A group that is gone stays gone.
            Err(error) if error.code() == ErrorCode::GroupNotFound => return None,
            Err(_) => {}
        }
    }
    None
}

//! System notices: entries the business service writes once a group change is stored (created,
//! members added, removed, left). Any core node appends them, as an entry with no sender in
//! the group's conversation, so that they take seqs, fan out and appear in history like any
//! other entry. The business service asks again until a node answers; the notice's client
//! message id makes the second ask a duplicate.

use im_common::now_ms;
use im_proto::v1::{MessageBody, NoticeWrite, SendAck, message_body};
use prost::Message as _;

use super::{Conversation, MAX_CLIENT_MSG_ID, Messaging, MessagingError, MessagingResult};
use crate::store::{EntryKind, NewEntry};

impl Messaging {
    /// Appends the notice `write` asks for and waits until it is durable and fanned out.
    pub async fn write_notice(&self, write: NoticeWrite) -> MessagingResult<SendAck> {
        let conversation = Conversation::parse(&write.conversation_id)?;
        if conversation.group().is_none() {
            return Err(MessagingError::Invalid(
                "system notices are written to group conversations only".into(),
            ));
        }
        if write.client_msg_id.is_empty() || write.client_msg_id.len() > MAX_CLIENT_MSG_ID {
            return Err(MessagingError::Invalid(format!(
                "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} bytes"
            )));
        }
        let notice = write
            .notice
            .filter(|notice| notice.kind != 0)
            .ok_or_else(|| MessagingError::Invalid("a system notice needs a kind".into()))?;
        let body = MessageBody {
            kind: Some(message_body::Kind::Notice(notice)),
        };
        let entry = NewEntry {
            conversation_id: conversation.key,
            sender_user_id: String::new(),
            sender_device_id: String::new(),
            client_msg_id: write.client_msg_id,
            kind: EntryKind::Notice,
            target_seq: 0,
            body: body.encode_to_vec(),
            server_time_ms: now_ms(),
        };
        self.enqueue(entry, None).await?.wait().await
    }
}

//! The SDK's plain types: what apps read and write, independent of the wire encoding (and
//! simple enough for the foreign-language bindings to mirror).

use im_proto::v1::{self, content, message_body};

/// What a user says: text, a media reference or an app-defined payload, with mentions and the
/// entry it replies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Text, media or custom.
    pub kind: ContentKind,
    /// User ids mentioned.
    pub mentions: Vec<String>,
    /// Mentions everyone.
    pub mention_all: bool,
    /// The seq of the entry this one replies to; 0 for none.
    pub reply_to_seq: u64,
}

impl Content {
    /// Plain text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: ContentKind::Text(text.into()),
            mentions: Vec::new(),
            mention_all: false,
            reply_to_seq: 0,
        }
    }

    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match &self.kind {
            ContentKind::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// The kinds of content.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentKind {
    /// Text.
    Text(String),
    /// An uploaded object.
    Media(v1::MediaRef),
    /// An app-defined payload, relayed unread by the server.
    Custom {
        /// App-chosen type name, e.g. `com.example.location`.
        type_name: String,
        /// The payload.
        data: Vec<u8>,
        /// Shown by clients that do not know the type.
        fallback_text: String,
    },
    /// A kind newer than this SDK.
    Unknown,
}

/// What an entry of a conversation does.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A message.
    Content(Content),
    /// Replaces an earlier message's content.
    Edit {
        /// The edited entry.
        target_seq: u64,
        /// The new content.
        content: Content,
    },
    /// Withdraws an earlier message.
    Recall {
        /// The recalled entry.
        target_seq: u64,
    },
    /// Erases an earlier message.
    Delete {
        /// The deleted entry.
        target_seq: u64,
    },
    /// Adds or removes the sender's reaction.
    Reaction {
        /// The entry reacted to.
        target_seq: u64,
        /// An emoji or a short app-defined key.
        key: String,
        /// True to take the reaction back.
        remove: bool,
    },
    /// Written by the server (members added, removed, ...): its kind, who did it, to whom,
    /// and a human-readable fallback text.
    Notice(v1::SystemNotice),
    /// No body: a recalled or deleted entry, as history returns it.
    Empty,
    /// A kind newer than this SDK.
    Unknown,
}

impl From<&v1::Content> for Content {
    fn from(c: &v1::Content) -> Self {
        let kind = match &c.kind {
            Some(content::Kind::Text(t)) => ContentKind::Text(t.text.clone()),
            Some(content::Kind::Media(m)) => ContentKind::Media(m.clone()),
            Some(content::Kind::Custom(x)) => ContentKind::Custom {
                type_name: x.r#type.clone(),
                data: x.data.clone(),
                fallback_text: x.fallback_text.clone(),
            },
            None => ContentKind::Unknown,
        };
        Self {
            kind,
            mentions: c.mentions.clone(),
            mention_all: c.mention_all,
            reply_to_seq: c.reply_to_seq,
        }
    }
}

impl From<&Content> for v1::Content {
    fn from(c: &Content) -> Self {
        let kind = match &c.kind {
            ContentKind::Text(text) => Some(content::Kind::Text(v1::Text { text: text.clone() })),
            ContentKind::Media(media) => Some(content::Kind::Media(media.clone())),
            ContentKind::Custom {
                type_name,
                data,
                fallback_text,
            } => Some(content::Kind::Custom(v1::Custom {
                r#type: type_name.clone(),
                data: data.clone(),
                fallback_text: fallback_text.clone(),
            })),
            ContentKind::Unknown => None,
        };
        Self {
            kind,
            mentions: c.mentions.clone(),
            mention_all: c.mention_all,
            reply_to_seq: c.reply_to_seq,
        }
    }
}

impl From<Option<&v1::MessageBody>> for Body {
    fn from(body: Option<&v1::MessageBody>) -> Self {
        let Some(body) = body else {
            return Self::Empty;
        };
        match &body.kind {
            None => Self::Empty,
            Some(message_body::Kind::Content(c)) => Self::Content(c.into()),
            Some(message_body::Kind::Edit(e)) => Self::Edit {
                target_seq: e.target_seq,
                content: e.content.as_ref().map_or_else(
                    || Content {
                        kind: ContentKind::Unknown,
                        ..Content::text("")
                    },
                    Content::from,
                ),
            },
            Some(message_body::Kind::Recall(r)) => Self::Recall {
                target_seq: r.target_seq,
            },
            Some(message_body::Kind::Delete(d)) => Self::Delete {
                target_seq: d.target_seq,
            },
            Some(message_body::Kind::Reaction(r)) => Self::Reaction {
                target_seq: r.target_seq,
                key: r.key.clone(),
                remove: r.remove,
            },
            Some(message_body::Kind::Notice(n)) => Self::Notice(n.clone()),
        }
    }
}

impl Body {
    /// The wire form; `None` for bodies a client cannot send (notices, empty, unknown).
    pub fn to_wire(&self) -> Option<v1::MessageBody> {
        let kind = match self {
            Self::Content(c) => message_body::Kind::Content(c.into()),
            Self::Edit {
                target_seq,
                content,
            } => message_body::Kind::Edit(v1::Edit {
                target_seq: *target_seq,
                content: Some(content.into()),
            }),
            Self::Recall { target_seq } => message_body::Kind::Recall(v1::Recall {
                target_seq: *target_seq,
            }),
            Self::Delete { target_seq } => message_body::Kind::Delete(v1::Delete {
                target_seq: *target_seq,
            }),
            Self::Reaction {
                target_seq,
                key,
                remove,
            } => message_body::Kind::Reaction(v1::Reaction {
                target_seq: *target_seq,
                key: key.clone(),
                remove: *remove,
            }),
            Self::Notice(_) | Self::Empty | Self::Unknown => return None,
        };
        Some(v1::MessageBody { kind: Some(kind) })
    }
}

/// What later entries did to an entry, as a history or catch-up page reports it. Entries up to
/// `as_of_seq` are already reflected: an app applies a [`Event::Change`] to this entry only when
/// the change's seq is above `as_of_seq`, so nothing counts twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryState {
    /// The conversation's last seq when the page was read.
    pub as_of_seq: u64,
    /// The latest edit's seq; the body is already the edited one.
    pub edited_seq: u64,
    /// The recall's seq; the body is then empty.
    pub recalled_seq: u64,
    /// The delete's seq; the body is then empty.
    pub deleted_seq: u64,
    /// (key, count, whether this user reacted) per reaction key.
    pub reactions: Vec<(String, u32, bool)>,
}

/// One entry of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Canonical conversation id.
    pub conversation_id: String,
    /// Its place in the conversation: 1, 2, 3, ...
    pub seq: u64,
    /// The server's id for it.
    pub server_msg_id: String,
    /// Who sent it.
    pub sender_user_id: String,
    /// From which device.
    pub sender_device_id: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// When the server accepted it (Unix milliseconds).
    pub server_time_ms: i64,
    /// What it says or does.
    pub body: Body,
    /// Set in history pages; `None` in live entries.
    pub state: Option<EntryState>,
}

impl Message {
    /// The text, if this entry is a text message.
    pub fn body_text(&self) -> Option<&str> {
        match &self.body {
            Body::Content(content) => content.as_text(),
            _ => None,
        }
    }
}

impl From<&v1::Message> for Message {
    fn from(m: &v1::Message) -> Self {
        Self {
            conversation_id: m.conversation_id.clone(),
            seq: m.seq,
            server_msg_id: m.server_msg_id.clone(),
            sender_user_id: m.sender_user_id.clone(),
            sender_device_id: m.sender_device_id.clone(),
            client_msg_id: m.client_msg_id.clone(),
            server_time_ms: m.server_time_ms,
            body: Body::from(m.body.as_ref()),
            state: m.state.as_ref().map(|s| EntryState {
                as_of_seq: 0,
                edited_seq: s.edited_seq,
                recalled_seq: s.recalled_seq,
                deleted_seq: s.deleted_seq,
                reactions: s
                    .reactions
                    .iter()
                    .map(|r| (r.key.clone(), r.count, r.mine))
                    .collect(),
            }),
        }
    }
}

/// A conversation as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Canonical id.
    pub conversation_id: String,
    /// DIRECT, GROUP or CHANNEL (`im.v1.ConversationType`).
    pub kind: i32,
    /// The newest seq.
    pub last_seq: u64,
    /// The user's read cursor.
    pub read_seq: u64,
    /// Messages from others above the read cursor.
    pub unread_count: u64,
    /// False once the user left or was removed.
    pub active: bool,
}

impl From<&v1::ConversationState> for Conversation {
    fn from(c: &v1::ConversationState) -> Self {
        Self {
            conversation_id: c.conversation_id.clone(),
            kind: c.r#type,
            last_seq: c.last_seq,
            read_seq: c.read_seq,
            unread_count: c.unread_count,
            active: c.active,
        }
    }
}

/// The connection's state, as the event stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening a connection.
    Connecting,
    /// Connected and authenticated; catching up.
    Connected {
        /// The authenticated user.
        user_id: String,
        /// The server's session id.
        session_id: String,
    },
    /// The connection was lost; the next attempt comes after the delay.
    Reconnecting {
        /// Why it was lost.
        reason: String,
        /// The delay before the next attempt, in milliseconds.
        retry_in_ms: u64,
    },
    /// The client stopped for good (closed, replaced by another session of the device, or
    /// refused in a way a retry cannot fix).
    Stopped {
        /// Why.
        reason: String,
    },
}

/// Everything the client tells the app, in order. Entries of one conversation come in seq
/// order, each once.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new message (the user's own included, once the server acknowledged it).
    Message(Message),
    /// An entry that edits, recalls, deletes or reacts to an earlier one, or a notice.
    Change(Message),
    /// The user's read cursor moved (on this device or another one).
    ReadState {
        /// The conversation.
        conversation_id: String,
        /// The cursor.
        read_seq: u64,
        /// Messages from others above it.
        unread_count: u64,
    },
    /// Another member read up to `read_seq`.
    Receipt {
        /// The conversation.
        conversation_id: String,
        /// Who read.
        user_id: String,
        /// How far.
        read_seq: u64,
    },
    /// Someone is typing (or stopped).
    Typing {
        /// The conversation.
        conversation_id: String,
        /// Who.
        user_id: String,
        /// Typing now.
        active: bool,
    },
    /// A watched user's presence changed.
    Presence(v1::Presence),
    /// A conversation's state changed (after a sync, or when the user joined or left).
    Conversation(Conversation),
    /// The connection's state changed.
    Connection(ConnectionState),
}

impl From<&Message> for v1::Message {
    fn from(m: &Message) -> Self {
        let body = match &m.body {
            Body::Notice(notice) => Some(v1::MessageBody {
                kind: Some(message_body::Kind::Notice(notice.clone())),
            }),
            Body::Empty => Some(v1::MessageBody::default()),
            other => other.to_wire(),
        };
        Self {
            conversation_id: m.conversation_id.clone(),
            seq: m.seq,
            server_msg_id: m.server_msg_id.clone(),
            sender_user_id: m.sender_user_id.clone(),
            sender_device_id: m.sender_device_id.clone(),
            client_msg_id: m.client_msg_id.clone(),
            server_time_ms: m.server_time_ms,
            body,
            state: m.state.as_ref().map(|s| v1::MessageState {
                edited_seq: s.edited_seq,
                recalled_seq: s.recalled_seq,
                deleted_seq: s.deleted_seq,
                reactions: s
                    .reactions
                    .iter()
                    .map(|(key, count, mine)| v1::ReactionCount {
                        key: key.clone(),
                        count: *count,
                        mine: *mine,
                    })
                    .collect(),
            }),
        }
    }
}

//! Ids of users, devices, groups and conversations, each with one canonical string form.
//!
//! User, device and group ids are 1 to 64 bytes of ASCII letters, digits and `_ - . @`; they are
//! chosen by the app (users, groups) or the client (devices) and compared byte for byte.
//! Conversation ids are derived from them:
//!
//! | conversation | canonical form | example |
//! |---|---|---|
//! | 1:1 (direct) | `d:<user>:<user>`, the two ids in byte order | `d:alice:bob` |
//! | group or channel | `g:<group>` | `g:team-42` |
//!
//! A user may hold a 1:1 conversation with itself (`d:alice:alice`, notes to self).
//!
//! ```
//! use im_proto::ids::{ConversationId, UserId};
//!
//! let alice: UserId = "alice".parse().unwrap();
//! let bob: UserId = "bob".parse().unwrap();
//! let direct = ConversationId::direct(bob.clone(), alice.clone());
//! assert_eq!(direct.to_string(), "d:alice:bob");
//! assert_eq!("d:alice:bob".parse::<ConversationId>().unwrap(), direct);
//! assert_eq!(direct.peer_of(&alice), Some(&bob));
//! assert!("d:bob:alice".parse::<ConversationId>().is_err(), "one canonical form only");
//! ```

use std::{fmt, str::FromStr};

use crate::v1::ErrorCode;

/// The longest id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which id.
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("{kind} id is {len} bytes, more than {MAX_ID_BYTES}")]
    TooLong {
        /// Which id.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9_.@-]`.
    #[error("{kind} id holds {found:?}; allowed are ASCII letters, digits and _ - . @")]
    InvalidChar {
        /// Which id.
        kind: &'static str,
        /// The first bad character.
        found: char,
    },
    /// A conversation id that starts with neither `d:` nor `g:`, or has the wrong parts.
    #[error("conversation id {0:?} is neither d:<user>:<user> nor g:<group>")]
    UnknownConversationForm(String),
    /// A 1:1 conversation id whose user ids are not in byte order.
    #[error("conversation id {0:?} is not canonical: the user ids must be in byte order")]
    NotCanonical(String),
}

impl IdError {
    /// Every id error is answered with `INVALID_ARGUMENT`.
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

fn validate(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            kind,
            len: id.len(),
        });
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
    {
        Some(found) => Err(IdError::InvalidChar { kind, found }),
        None => Ok(()),
    }
}

macro_rules! simple_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                validate($kind, &id)?;
                Ok(Self(id))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

simple_id!(
    /// A user, as the app names it.
    UserId,
    "user"
);
simple_id!(
    /// One installation of a client, chosen by the client and stable across restarts.
    DeviceId,
    "device"
);
simple_id!(
    /// A group or channel.
    GroupId,
    "group"
);

/// A conversation: 1:1 between two users, or a group. Opaque, so that a 1:1 id is always in
/// canonical order; read it with [`ConversationId::kind`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationId(ConversationKind);

/// What a [`ConversationId`] names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConversationKind {
    /// A 1:1 conversation; the first user id is never greater than the second.
    Direct(UserId, UserId),
    /// A group or channel conversation.
    Group(GroupId),
}

impl ConversationId {
    /// The 1:1 conversation of two users, in either order.
    pub fn direct(a: UserId, b: UserId) -> Self {
        Self(if a <= b {
            ConversationKind::Direct(a, b)
        } else {
            ConversationKind::Direct(b, a)
        })
    }

    /// The conversation of a group.
    pub fn group(group: GroupId) -> Self {
        Self(ConversationKind::Group(group))
    }

    /// What this id names.
    pub fn kind(&self) -> &ConversationKind {
        &self.0
    }

    /// For a 1:1 conversation that `me` is part of, the other user (`me` for notes to self).
    pub fn peer_of(&self, me: &UserId) -> Option<&UserId> {
        match &self.0 {
            ConversationKind::Direct(a, b) if a == me => Some(b),
            ConversationKind::Direct(a, b) if b == me => Some(a),
            _ => None,
        }
    }

    /// The group, for a group conversation.
    pub fn group_id(&self) -> Option<&GroupId> {
        match &self.0 {
            ConversationKind::Group(group) => Some(group),
            ConversationKind::Direct(..) => None,
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ConversationKind::Direct(a, b) => write!(f, "d:{a}:{b}"),
            ConversationKind::Group(g) => write!(f, "g:{g}"),
        }
    }
}

impl FromStr for ConversationId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let unknown = || IdError::UnknownConversationForm(s.to_owned());
        if let Some(group) = s.strip_prefix("g:") {
            return Ok(Self::group(group.parse()?));
        }
        let pair = s.strip_prefix("d:").ok_or_else(unknown)?;
        let (a, b) = pair.split_once(':').ok_or_else(unknown)?;
        let (a, b): (UserId, UserId) = (a.parse()?, b.parse()?);
        if a > b {
            return Err(IdError::NotCanonical(s.to_owned()));
        }
        Ok(Self(ConversationKind::Direct(a, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        id.parse().unwrap()
    }

    #[test]
    fn simple_ids_accept_the_allowed_alphabet_only() {
        assert!(UserId::new("a.b-c_d@example.com").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Empty { kind: "user" }));
        assert_eq!(
            DeviceId::new("x".repeat(65)),
            Err(IdError::TooLong {
                kind: "device",
                len: 65
            })
        );
        assert!(DeviceId::new("x".repeat(64)).is_ok());
        assert_eq!(
            GroupId::new("a:b"),
            Err(IdError::InvalidChar {
                kind: "group",
                found: ':'
            })
        );
        assert_eq!(
            UserId::new("é").unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn conversation_ids_have_one_canonical_form() {
        let direct = ConversationId::direct(user("zed"), user("amy"));
        assert_eq!(direct.to_string(), "d:amy:zed");
        assert_eq!(direct, ConversationId::direct(user("amy"), user("zed")));
        for text in ["d:amy:zed", "d:amy:amy", "g:team", "d:A:a"] {
            assert_eq!(text.parse::<ConversationId>().unwrap().to_string(), text);
        }
        assert_eq!(
            "d:zed:amy".parse::<ConversationId>(),
            Err(IdError::NotCanonical("d:zed:amy".into()))
        );
        for bad in [
            "", "x:amy", "d:amy", "d:amy:", "d::amy", "g:", "d:a:b:c", "g:a:b",
        ] {
            assert!(bad.parse::<ConversationId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn peers_of_a_direct_conversation() {
        let c = ConversationId::direct(user("amy"), user("zed"));
        assert_eq!(c.peer_of(&user("amy")), Some(&user("zed")));
        assert_eq!(c.peer_of(&user("zed")), Some(&user("amy")));
        assert_eq!(c.peer_of(&user("bob")), None);
        let notes = ConversationId::direct(user("amy"), user("amy"));
        assert_eq!(notes.peer_of(&user("amy")), Some(&user("amy")));
        assert_eq!(
            "g:x"
                .parse::<ConversationId>()
                .unwrap()
                .peer_of(&user("amy")),
            None
        );
    }
}

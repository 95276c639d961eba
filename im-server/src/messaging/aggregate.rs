//! What later entries did to earlier ones: the edits, recalls, deletes and reactions acting on
//! the entries of a page, folded into each entry's `MessageState` (and its body, edited or
//! withdrawn) as of the page's last seq.

use std::collections::{BTreeMap, HashMap, HashSet};

use im_proto::v1::{MessageBody, MessageState, ReactionCount, message_body};
use prost::Message as _;

use super::fanout::message_of;
use crate::{
    store::{EntryKind, StoredEntry},
    wire::{self, fields},
};

/// The effects of later entries on some targets, as one user sees them.
#[derive(Default)]
pub(super) struct Aggregations<'a> {
    /// target -> the latest edit's seq and raw body.
    edits: HashMap<u64, (u64, &'a [u8])>,
    recalled: HashMap<u64, u64>,
    deleted: HashMap<u64, u64>,
    /// target -> key -> reactors.
    pub(super) reactions: HashMap<u64, BTreeMap<String, HashSet<&'a str>>>,
    /// Whose `mine` the reaction counts tell.
    user: &'a str,
}

impl<'a> Aggregations<'a> {
    /// Folds `effects` (ascending) for `user`.
    pub(super) fn fold(user: &'a str, effects: &'a [StoredEntry]) -> Self {
        let mut folded = Self {
            user,
            ..Default::default()
        };
        for effect in effects {
            let (seq, target) = (effect.seq as u64, effect.target_seq as u64);
            match EntryKind::from_i32(effect.kind) {
                Some(EntryKind::Edit) => {
                    folded.edits.insert(target, (seq, effect.body.as_slice()));
                }
                Some(EntryKind::Recall) => {
                    folded.recalled.entry(target).or_insert(seq);
                }
                Some(EntryKind::Delete) => {
                    folded.deleted.entry(target).or_insert(seq);
                }
                Some(EntryKind::Reaction) => {
                    let Ok(body) = MessageBody::decode(effect.body.as_slice()) else {
                        continue;
                    };
                    let Some(message_body::Kind::Reaction(reaction)) = body.kind else {
                        continue;
                    };
                    let reactors = folded
                        .reactions
                        .entry(target)
                        .or_default()
                        .entry(reaction.key)
                        .or_default();
                    if reaction.remove {
                        reactors.remove(effect.sender_user_id.as_str());
                    } else {
                        reactors.insert(effect.sender_user_id.as_str());
                    }
                }
                _ => {}
            }
        }
        folded
    }

    pub(super) fn withdrawn(&self, seq: u64) -> bool {
        self.recalled.contains_key(&seq) || self.deleted.contains_key(&seq)
    }

    /// The entry as an encoded `Message`, its body as stored or as changed by later entries.
    pub(super) fn encode(&self, entry: &StoredEntry) -> Vec<u8> {
        let seq = entry.seq as u64;
        let mut state = MessageState {
            edited_seq: self.edits.get(&seq).map_or(0, |(s, _)| *s),
            recalled_seq: self.recalled.get(&seq).copied().unwrap_or(0),
            deleted_seq: self.deleted.get(&seq).copied().unwrap_or(0),
            reactions: Vec::new(),
        };
        if let Some(keys) = self.reactions.get(&seq) {
            state.reactions = keys
                .iter()
                .filter(|(_, who)| !who.is_empty())
                .map(|(key, who)| ReactionCount {
                    key: key.clone(),
                    count: who.len() as u32,
                    mine: who.contains(self.user),
                })
                .collect();
        }
        let body: Vec<u8> = if self.withdrawn(seq)
            || (entry.kind == EntryKind::Edit as i32 && self.withdrawn(entry.target_seq as u64))
        {
            Vec::new()
        } else if let Some((_, edit)) = self.edits.get(&seq) {
            let content = wire::field(edit, fields::BODY_EDIT)
                .and_then(|e| wire::field(&e, fields::EDIT_CONTENT).map(|c| c.into_owned()))
                .unwrap_or_default();
            let mut body = Vec::new();
            wire::put_field(&mut body, fields::BODY_CONTENT, &content);
            body
        } else {
            entry.body.clone()
        };
        let mut message = message_of(entry);
        if state != MessageState::default() {
            message.state = Some(state);
        }
        wire::message(&message, &body)
    }
}

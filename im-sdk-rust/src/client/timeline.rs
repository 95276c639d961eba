//! The order of each conversation's entries, as a state machine without I/O.
//!
//! The rules are those of docs/PROTOCOL.md, "Delivery": per conversation the client holds
//! every entry up to `held`. An entry at `held + 1` is shown and moves `held` (past any entries
//! buffered after it); one at or below `held` is a repeat and is dropped; one further ahead
//! waits in a buffer while a pull from `held` fills the gap. Entries below a conversation's
//! `visible_from_seq` are not the user's to see and count as held. The user's own sends count
//! as entries once acknowledged.
//!
//! [`Timeline`] takes what arrived (an entry, a pull's page, a conversation's state) and answers
//! with the [`Action`]s to take, in order; the connection task does them (store writes, events,
//! pull frames). Nothing here waits or touches a socket, so the rules are tested on their own.

use std::collections::{BTreeMap, HashMap, HashSet};

use im_proto::v1;

use super::with_as_of;
use crate::types::{Body, Message};

/// One step for the connection task, to be done in the order given; if one fails, the rest are
/// not done and the session ends (the sync after the reconnect starts again from `held`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// Keep the entry in the local store (`LocalStore::put_message`).
    Store(Message),
    /// Write that the conversation is held up to `seq` (`LocalStore::set_held`), then report it
    /// with [`Timeline::held_stored`]. `held` moves in memory only once it is stored, so entries
    /// whose writing failed are pulled again after the reconnect rather than skipped.
    SetHeld {
        /// The conversation.
        conversation: String,
        /// The new `held`.
        seq: u64,
    },
    /// A run of entries is stored and held up to `held`: move the conversation's record there,
    /// count as unread those of `from_others` it did not count yet, and acknowledge delivery.
    Advance {
        /// The conversation.
        conversation: String,
        /// The new `held`, the record's `last_seq` at least.
        held: u64,
        /// The run's content entries from other users, by seq.
        from_others: Vec<u64>,
    },
    /// Show the entry to the app (`Event::Message` for content, `Event::Change` otherwise).
    Show(Message),
    /// Ask for the entries after `after_seq`; the answer goes to [`Timeline::on_page`] or
    /// [`Timeline::on_pull_refused`].
    Pull {
        /// The conversation.
        conversation: String,
        /// Its `held` when asked.
        after_seq: u64,
    },
}

/// Where each conversation stands: how far it is held, what waits after a gap, which
/// conversations have a pull on the wire.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    /// The authenticated user: its own entries are never unread.
    me: String,
    /// The highest seq up to which every entry is stored and shown, per conversation, as last
    /// reported stored ([`Action::SetHeld`]).
    held: HashMap<String, u64>,
    /// Entries that arrived ahead of a gap, by seq.
    buffered: HashMap<String, BTreeMap<u64, Message>>,
    /// Conversations with a pull on the wire: one at a time each.
    pulling: HashSet<String>,
}

/// The actions of one input, and where `held` will be once they are done.
#[derive(Default)]
struct Plan {
    actions: Vec<Action>,
    /// `held` of the conversations these actions move, ahead of [`Timeline::held_stored`]: the
    /// later entries of a page follow the earlier ones.
    moved: HashMap<String, u64>,
}

impl Timeline {
    /// Resumes from the `held` seqs of the local store.
    pub(super) fn new(held: HashMap<String, u64>) -> Self {
        Self {
            held,
            ..Self::default()
        }
    }

    /// The user the server authenticated (on every connection).
    pub(super) fn set_user(&mut self, user_id: &str) {
        user_id.clone_into(&mut self.me);
    }

    /// `held` per conversation, for the sync and delivery acknowledgements.
    pub(super) fn held(&self) -> &HashMap<String, u64> {
        &self.held
    }

    /// An [`Action::SetHeld`] was written to the store.
    pub(super) fn held_stored(&mut self, conversation: &str, seq: u64) {
        // `held` only moves forward.
        let held = self.held.entry(conversation.to_owned()).or_default();
        *held = (*held).max(seq);
    }

    /// The connection ended: the pulls on it will not be answered (the next sync pulls again).
    pub(super) fn connection_lost(&mut self) {
        self.pulling.clear();
    }

    /// An entry, pushed by the server or the user's own acknowledged send.
    pub(super) fn on_entry(&mut self, message: Message) -> Vec<Action> {
        let mut plan = Plan::default();
        self.place(&mut plan, message);
        plan.actions
    }

    /// The answer to the pull of `conversation`: the entries after the `held` it was asked from.
    pub(super) fn on_page(&mut self, conversation: &str, page: &v1::MessagePage) -> Vec<Action> {
        self.pulling.remove(conversation);
        let mut plan = Plan::default();
        self.floor(&mut plan, conversation, page.visible_from_seq);
        for message in &page.messages {
            self.place(&mut plan, with_as_of(Message::from(message), page.last_seq));
        }
        // A page that moved nothing would be asked again forever.
        if !page.messages.is_empty() && self.held_in(&plan, conversation) < page.last_seq {
            self.pull(&mut plan, conversation);
        }
        plan.actions
    }

    /// The pull of `conversation` was refused for good (the user left, say): nothing more comes
    /// for what is buffered, so it is dropped.
    pub(super) fn on_pull_refused(&mut self, conversation: &str) {
        self.pulling.remove(conversation);
        self.buffered.remove(conversation);
    }

    /// The first seq the user may see in `conversation` (from a sync or a push of its state):
    /// everything below counts as held.
    pub(super) fn on_visible_from(
        &mut self,
        conversation: &str,
        visible_from_seq: u64,
    ) -> Vec<Action> {
        let mut plan = Plan::default();
        self.floor(&mut plan, conversation, visible_from_seq);
        plan.actions
    }

    /// The newest seq of `conversation` (from a sync or a push of its state): pulls if behind.
    pub(super) fn on_last_seq(&mut self, conversation: &str, last_seq: u64) -> Vec<Action> {
        let mut plan = Plan::default();
        if last_seq > self.held_in(&plan, conversation) {
            self.pull(&mut plan, conversation);
        }
        plan.actions
    }

    fn held_in(&self, plan: &Plan, conversation: &str) -> u64 {
        plan.moved
            .get(conversation)
            .or_else(|| self.held.get(conversation))
            .copied()
            .unwrap_or(0)
    }

    /// An entry in its place: dropped as a repeat, buffered after a gap, or shown with the run
    /// of buffered entries it completes.
    fn place(&mut self, plan: &mut Plan, message: Message) {
        let conversation = message.conversation_id.clone();
        let held = self.held_in(plan, &conversation);
        if message.seq <= held {
            return;
        }
        if message.seq > held + 1 {
            self.buffered
                .entry(conversation.clone())
                .or_default()
                .insert(message.seq, message);
            self.pull(plan, &conversation);
            return;
        }
        let mut run = vec![message];
        let mut held = held + 1;
        while let Some(next) = self
            .buffered
            .get_mut(&conversation)
            .and_then(|b| b.remove(&(held + 1)))
        {
            held = next.seq;
            run.push(next);
        }
        self.drop_buffered_to(&conversation, held);
        // Stored, and held moved past them, before any is shown, so a failure part-way shows
        // nothing twice.
        let from_others = run
            .iter()
            .filter(|m| matches!(m.body, Body::Content(_)) && m.sender_user_id != self.me)
            .map(|m| m.seq)
            .collect();
        plan.actions.extend(run.iter().cloned().map(Action::Store));
        plan.actions.push(Action::SetHeld {
            conversation: conversation.clone(),
            seq: held,
        });
        plan.actions.push(Action::Advance {
            conversation: conversation.clone(),
            held,
            from_others,
        });
        plan.actions.extend(run.into_iter().map(Action::Show));
        plan.moved.insert(conversation, held);
    }

    /// Entries below `visible_from_seq` are not the user's to see: they count as held.
    fn floor(&mut self, plan: &mut Plan, conversation: &str, visible_from_seq: u64) {
        let floor = visible_from_seq.saturating_sub(1);
        if floor > self.held_in(plan, conversation) {
            plan.actions.push(Action::SetHeld {
                conversation: conversation.to_owned(),
                seq: floor,
            });
            plan.moved.insert(conversation.to_owned(), floor);
            self.drop_buffered_to(conversation, floor);
        }
    }

    fn drop_buffered_to(&mut self, conversation: &str, seq: u64) {
        if let Some(buffer) = self.buffered.get_mut(conversation) {
            buffer.retain(|buffered, _| *buffered > seq);
            if buffer.is_empty() {
                self.buffered.remove(conversation);
            }
        }
    }

    /// Asks for what follows `held`, unless a pull of the conversation is on the wire already
    /// (its answer asks again if it did not reach the end).
    fn pull(&mut self, plan: &mut Plan, conversation: &str) {
        if self.pulling.insert(conversation.to_owned()) {
            plan.actions.push(Action::Pull {
                conversation: conversation.to_owned(),
                after_seq: self.held_in(plan, conversation),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Content, EntryState};

    const CHAT: &str = "d:alice:bob";

    /// Entry `seq` of the chat, a text from `sender`, as a push carries it.
    fn from(sender: &str, seq: u64) -> Message {
        Message {
            conversation_id: CHAT.into(),
            seq,
            server_msg_id: format!("s{seq}"),
            sender_user_id: sender.into(),
            sender_device_id: "phone".into(),
            client_msg_id: format!("c{seq}"),
            server_time_ms: 1_764_000_000_000 + seq as i64,
            body: Body::Content(Content::text(format!("#{seq}"))),
            state: None,
        }
    }

    fn entry(seq: u64) -> Message {
        from("bob", seq)
    }

    /// Entry `seq` as a page read when the conversation's last seq was `as_of` carries it.
    fn paged(seq: u64, as_of: u64) -> Message {
        Message {
            state: Some(EntryState {
                as_of_seq: as_of,
                ..EntryState::default()
            }),
            ..entry(seq)
        }
    }

    /// The answer to a pull: `seqs` (read at `last_seq`), nothing below `visible_from_seq`.
    fn page(seqs: &[u64], last_seq: u64, visible_from_seq: u64) -> v1::MessagePage {
        v1::MessagePage {
            conversation_id: CHAT.into(),
            messages: seqs
                .iter()
                .map(|seq| v1::Message::from(&paged(*seq, 0)))
                .collect(),
            has_more: false,
            last_seq,
            visible_from_seq,
        }
    }

    /// Alice's timeline, held up to `held` in the chat.
    fn held_at(held: u64) -> Timeline {
        let mut timeline = Timeline::new(HashMap::from([(CHAT.to_owned(), held)]));
        timeline.set_user("alice");
        timeline
    }

    /// What the connection task does with `actions` when every store write succeeds: it
    /// reports each `held` stored. The actions, for the test to look at.
    fn done(timeline: &mut Timeline, actions: Vec<Action>) -> Vec<Action> {
        for action in &actions {
            if let Action::SetHeld { conversation, seq } = action {
                timeline.held_stored(conversation, *seq);
            }
        }
        actions
    }

    /// The actions of a run of entries shown together: every one stored, then held moved to
    /// the last, then the conversation's record, then every one shown.
    fn shown_run(run: &[Message], from_others: &[u64]) -> Vec<Action> {
        let held = run.last().map_or(0, |m| m.seq);
        let mut actions: Vec<Action> = run.iter().cloned().map(Action::Store).collect();
        actions.push(Action::SetHeld {
            conversation: CHAT.into(),
            seq: held,
        });
        actions.push(Action::Advance {
            conversation: CHAT.into(),
            held,
            from_others: from_others.to_vec(),
        });
        actions.extend(run.iter().cloned().map(Action::Show));
        actions
    }

    fn pull(after_seq: u64) -> Action {
        Action::Pull {
            conversation: CHAT.into(),
            after_seq,
        }
    }

    fn held_seq(timeline: &Timeline) -> Option<u64> {
        timeline.held().get(CHAT).copied()
    }

    #[test]
    fn entries_in_order_are_stored_held_and_shown_once_each() {
        let mut timeline = held_at(0);
        for seq in 1..=3 {
            let actions = timeline.on_entry(entry(seq));
            assert_eq!(
                done(&mut timeline, actions),
                shown_run(&[entry(seq)], &[seq])
            );
            assert_eq!(held_seq(&timeline), Some(seq));
        }
    }

    #[test]
    fn repeats_are_dropped() {
        let mut timeline = held_at(0);
        let actions = timeline.on_entry(entry(1));
        done(&mut timeline, actions);
        assert_eq!(timeline.on_entry(entry(1)), [], "the same push again");
        let actions = timeline.on_entry(entry(2));
        done(&mut timeline, actions);
        assert_eq!(timeline.on_entry(entry(1)), [], "an older one, late");
        assert_eq!(held_seq(&timeline), Some(2));
    }

    #[test]
    fn the_held_seq_of_the_store_is_where_a_resumed_timeline_starts() {
        let mut timeline = held_at(5);
        assert_eq!(timeline.on_entry(entry(5)), []);
        let actions = timeline.on_entry(entry(6));
        assert_eq!(done(&mut timeline, actions), shown_run(&[entry(6)], &[6]));
    }

    #[test]
    fn a_gap_buffers_the_entry_and_asks_for_one_pull_at_a_time() {
        let mut timeline = held_at(1);
        assert_eq!(timeline.on_entry(entry(3)), [pull(1)]);
        assert_eq!(
            timeline.on_entry(entry(4)),
            [],
            "a pull is on the wire already"
        );
        assert_eq!(timeline.on_entry(entry(3)), [], "a buffered entry again");
        assert_eq!(held_seq(&timeline), Some(1), "nothing shown, held stays");
    }

    #[test]
    fn the_page_fills_the_gap_and_releases_the_buffered_run_in_order() {
        let mut timeline = held_at(1);
        timeline.on_entry(entry(3));
        timeline.on_entry(entry(4));
        let actions = timeline.on_page(CHAT, &page(&[2], 4, 1));
        assert_eq!(
            done(&mut timeline, actions),
            shown_run(&[paged(2, 4), entry(3), entry(4)], &[2, 3, 4]),
            "the paged entry carries its state as of the page; the buffered ones as pushed"
        );
        assert_eq!(held_seq(&timeline), Some(4));
        assert_eq!(
            timeline.on_entry(entry(3)),
            [],
            "released entries are repeats now"
        );
    }

    #[test]
    fn entries_a_page_repeats_from_the_buffer_are_shown_once() {
        let mut timeline = held_at(0);
        timeline.on_entry(entry(2));
        let actions = timeline.on_page(CHAT, &page(&[1, 2, 3], 3, 1));
        assert_eq!(
            done(&mut timeline, actions),
            [
                shown_run(&[paged(1, 3), entry(2)], &[1, 2]),
                shown_run(&[paged(3, 3)], &[3]),
            ]
            .concat()
        );
    }

    #[test]
    fn a_page_that_ends_below_the_last_seq_asks_for_the_next() {
        let mut timeline = held_at(0);
        let actions = timeline.on_page(CHAT, &page(&[1, 2], 5, 1));
        let expected = [
            shown_run(&[paged(1, 5)], &[1]),
            shown_run(&[paged(2, 5)], &[2]),
            vec![pull(2)],
        ]
        .concat();
        assert_eq!(done(&mut timeline, actions), expected);
        let actions = timeline.on_page(CHAT, &page(&[3, 4, 5], 5, 1));
        assert!(
            !done(&mut timeline, actions).contains(&pull(5)),
            "at the end: no more pulls"
        );
        assert_eq!(held_seq(&timeline), Some(5));
    }

    #[test]
    fn an_empty_page_asks_for_nothing_more() {
        let mut timeline = held_at(1);
        timeline.on_entry(entry(3));
        assert_eq!(
            timeline.on_page(CHAT, &page(&[], 3, 1)),
            [],
            "pulling again would bring the same empty page, forever"
        );
        assert_eq!(
            timeline.on_entry(entry(4)),
            [pull(1)],
            "the pull is over: the next gap asks again"
        );
    }

    #[test]
    fn visible_from_moves_the_floor_and_drops_buffered_entries_below_it() {
        let mut timeline = held_at(0);
        timeline.on_entry(entry(3));
        timeline.on_entry(entry(6));
        let actions = timeline.on_visible_from(CHAT, 5);
        assert_eq!(
            done(&mut timeline, actions),
            [Action::SetHeld {
                conversation: CHAT.into(),
                seq: 4
            }],
            "what is below the first visible seq counts as held, and is not shown"
        );
        assert_eq!(timeline.on_entry(entry(4)), [], "below the floor");
        let actions = timeline.on_page(CHAT, &page(&[5, 6], 6, 5));
        assert_eq!(
            done(&mut timeline, actions),
            shown_run(&[paged(5, 6), entry(6)], &[5, 6]),
            "3 was dropped, 6 waited for 5"
        );
        assert_eq!(
            timeline.on_visible_from(CHAT, 2),
            [],
            "the floor never moves back"
        );
    }

    #[test]
    fn a_page_moves_the_floor_before_its_entries() {
        let mut timeline = held_at(0);
        let actions = timeline.on_page(CHAT, &page(&[8, 9], 9, 8));
        let expected = [
            vec![Action::SetHeld {
                conversation: CHAT.into(),
                seq: 7,
            }],
            shown_run(&[paged(8, 9)], &[8]),
            shown_run(&[paged(9, 9)], &[9]),
        ]
        .concat();
        assert_eq!(done(&mut timeline, actions), expected);
    }

    #[test]
    fn a_pull_refused_for_good_drops_the_buffered_entries() {
        let mut timeline = held_at(1);
        timeline.on_entry(entry(3));
        timeline.on_pull_refused(CHAT);
        let actions = timeline.on_entry(entry(2));
        assert_eq!(
            done(&mut timeline, actions),
            shown_run(&[entry(2)], &[2]),
            "3 is gone"
        );
        assert_eq!(
            timeline.on_entry(entry(4)),
            [pull(2)],
            "and may be pulled again"
        );
    }

    #[test]
    fn a_lost_connection_forgets_the_pulls_on_it() {
        let mut timeline = held_at(1);
        assert_eq!(timeline.on_entry(entry(3)), [pull(1)]);
        timeline.connection_lost();
        assert_eq!(timeline.on_entry(entry(4)), [pull(1)]);
    }

    #[test]
    fn own_sends_count_as_entries_but_not_as_unread() {
        let mut timeline = held_at(0);
        let own = from("alice", 1);
        let actions = timeline.on_entry(own.clone());
        assert_eq!(done(&mut timeline, actions), shown_run(&[own], &[]));
        // An own send acknowledged after a gap waits for the pull like any entry.
        assert_eq!(timeline.on_entry(from("alice", 3)), [pull(1)]);
        let actions = timeline.on_page(CHAT, &page(&[2], 3, 1));
        assert_eq!(
            done(&mut timeline, actions),
            shown_run(&[paged(2, 3), from("alice", 3)], &[2])
        );
    }

    #[test]
    fn only_content_from_others_counts_as_unread() {
        let mut timeline = held_at(0);
        let reaction = Message {
            body: Body::Reaction {
                target_seq: 1,
                key: "+1".into(),
                remove: false,
            },
            ..entry(2)
        };
        let notice = Message {
            body: Body::Notice(im_proto::v1::SystemNotice {
                text: "bob added cy".into(),
                ..Default::default()
            }),
            ..entry(3)
        };
        timeline.on_entry(notice.clone());
        timeline.on_entry(reaction.clone());
        let actions = timeline.on_entry(entry(1));
        assert_eq!(
            done(&mut timeline, actions),
            shown_run(&[entry(1), reaction, notice], &[1])
        );
    }

    #[test]
    fn the_last_seq_of_a_conversation_asks_for_a_pull_only_when_behind() {
        let mut timeline = held_at(3);
        assert_eq!(timeline.on_last_seq(CHAT, 3), []);
        assert_eq!(timeline.on_last_seq(CHAT, 5), [pull(3)]);
        assert_eq!(timeline.on_last_seq(CHAT, 6), [], "one pull at a time");
        assert_eq!(
            timeline.on_last_seq("g:new", 1),
            [Action::Pull {
                conversation: "g:new".into(),
                after_seq: 0
            }],
            "a conversation never seen is held at 0"
        );
    }

    #[test]
    fn held_moves_only_once_stored_so_a_failed_write_is_retried_not_skipped() {
        let mut timeline = held_at(0);
        let first = timeline.on_entry(entry(1));
        // The connection failed to store it: nothing was reported, nothing shown.
        assert_eq!(held_seq(&timeline), Some(0));
        assert_eq!(
            timeline.on_entry(entry(1)),
            first,
            "the entry, pulled again after the reconnect, goes through again"
        );
    }

    #[test]
    fn conversations_are_ordered_apart() {
        let mut timeline = held_at(0);
        let other = |seq| Message {
            conversation_id: "g:team".into(),
            ..entry(seq)
        };
        assert_eq!(timeline.on_entry(entry(2)), [pull(0)]);
        let actions = timeline.on_entry(other(1));
        done(&mut timeline, actions);
        assert_eq!(timeline.held().get("g:team"), Some(&1));
        assert_eq!(
            held_seq(&timeline),
            Some(0),
            "the chat still waits for its pull"
        );
    }
}

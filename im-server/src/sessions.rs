//! The sessions this node holds: who is connected on which device, the queue of frames waiting
//! for each connection, and which sessions watch whose presence.
//!
//! Frames are handed to a connection through a bounded queue. A connection whose queue is full
//! reads too slowly: it is closed with SLOW_CONSUMER (it reconnects and syncs) rather than
//! being allowed to hold unbounded memory.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use im_common::auth::Standing;
use im_proto::{
    DeviceId, UserId,
    v1::{ErrorCode, Platform},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How far apart the nodes' clocks may be (NTP keeps them much closer): a session opened on
/// another node replaces one here only if it is this much newer.
pub const CLOCK_MARGIN_MS: i64 = 1_000;

/// A frame for one connection.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The encoded `ServerFrame`.
    pub frame: Bytes,
    /// For a pushed entry: its conversation and seq, so it is resent until acknowledged.
    pub entry: Option<(Arc<str>, u64)>,
}

/// What the rest of the node holds of a connection.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Unique per connection.
    pub session_id: Arc<str>,
    /// The authenticated user.
    pub user: UserId,
    /// The same, shared (a key of rate limits and registries).
    pub user_id: Arc<str>,
    /// Its device.
    pub device_id: Arc<str>,
    /// The device's platform.
    pub platform: Platform,
    /// What a revocation of the session's token is measured against.
    pub token: Standing,
    /// When the session was opened: of two sessions of one device on different nodes, the
    /// later one stays.
    pub connected_at_ms: i64,
    /// The client handles the Resync push (its Hello listed CLIENT_FEATURE_RESYNC).
    pub resync: bool,
    /// Frames are shared: one allocation per frame, however many sessions it goes to.
    outbox: mpsc::Sender<Arc<Outbound>>,
    ending: Arc<Ending>,
    /// Frames were dropped for a full queue of a client that handles Resync: it is told to
    /// sync once its connection has written what was queued.
    overflowed: Arc<AtomicBool>,
}

/// How a connection is told to end, and why.
#[derive(Debug, Default)]
pub struct Ending {
    /// Cancelled when the connection must close.
    pub token: CancellationToken,
    /// The reason, set once by whoever ends it first.
    pub reason: OnceLock<ErrorCode>,
}

impl Ending {
    /// Ends the connection with `reason` (the first reason given wins); true for that first.
    pub fn end(&self, reason: ErrorCode) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }
}

impl SessionHandle {
    /// A handle for a new connection; the connection keeps the receiving end of its queue.
    pub fn new(
        user: UserId,
        device: &DeviceId,
        platform: Platform,
        token: Standing,
        queue: usize,
    ) -> (Self, mpsc::Receiver<Arc<Outbound>>) {
        let (outbox, inbox) = mpsc::channel(queue);
        let handle = Self {
            session_id: uuid::Uuid::new_v4().simple().to_string().into(),
            user_id: user.as_str().into(),
            user,
            device_id: device.as_str().into(),
            platform,
            token,
            connected_at_ms: im_common::now_ms(),
            resync: false,
            outbox,
            ending: Arc::default(),
            overflowed: Arc::default(),
        };
        (handle, inbox)
    }

    /// The connection's ending signal.
    pub fn ending(&self) -> &Arc<Ending> {
        &self.ending
    }

    /// Queues a frame if the queue has room; a full queue drops it and the connection lives
    /// on. For frames the client most likely has already (a replay).
    pub fn offer(&self, outbound: Arc<Outbound>) -> bool {
        match self.outbox.try_send(outbound) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("im_replay_dropped_total").increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame. A full queue drops it: a client that handles Resync is told to sync
    /// once its connection has caught up (a burst costs it no reconnect, and the sync brings
    /// what was dropped); any other client's connection ends as a slow consumer. The frames
    /// sent until the connection is gone are dropped without a word: the session is logged
    /// and counted once.
    pub fn send(&self, outbound: Arc<Outbound>) -> bool {
        match self.outbox.try_send(outbound) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) if self.resync => {
                if !self.overflowed.swap(true, Ordering::SeqCst) {
                    tracing::info!(session = %self.session_id, user = %self.user_id, "outbound queue full: the client syncs");
                    metrics::counter!("im_overflow_resyncs_total").increment(1);
                }
                false
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.ending.end(ErrorCode::SlowConsumer) {
                    tracing::info!(session = %self.session_id, user = %self.user_id, "slow consumer");
                    metrics::counter!("im_slow_consumers_total", "cause" => "outbound_queue")
                        .increment(1);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether frames were dropped since the last call, for a full queue of a client that
    /// handles Resync (which must then be told to sync).
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::SeqCst)
    }
}

/// A session as the presence store records it.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The user.
    pub user_id: Arc<str>,
    /// The connection.
    pub session_id: Arc<str>,
    /// The device's platform.
    pub platform: Platform,
}

/// Why a session could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The user holds the most sessions allowed.
    TooManyForUser,
}

#[derive(Default)]
struct Inner {
    by_user: HashMap<Arc<str>, Vec<SessionHandle>>,
    /// Watched user -> sessions watching it.
    watchers: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Session -> users it watches.
    watching: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Session -> its handle, for presence pushes.
    by_session: HashMap<Arc<str>, SessionHandle>,
}

/// The registry of this node's sessions.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
    max_per_user: usize,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.count())
            .finish()
    }
}

impl Sessions {
    /// A registry allowing `max_per_user` sessions per user.
    pub fn new(max_per_user: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_per_user,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions held now.
    pub fn count(&self) -> usize {
        self.lock().by_session.len()
    }

    /// Every session held now, for lease renewals.
    pub fn live(&self) -> Vec<LiveSession> {
        self.lock()
            .by_session
            .values()
            .map(|s| LiveSession {
                user_id: s.user_id.clone(),
                session_id: s.session_id.clone(),
                platform: s.platform,
            })
            .collect()
    }

    /// Adds a session. An older session of the same device is replaced: it is returned, and told
    /// to end with SESSION_REPLACED.
    pub fn register(&self, handle: SessionHandle) -> Result<Option<SessionHandle>, RegisterError> {
        let mut inner = self.lock();
        let sessions = inner.by_user.entry(handle.user_id.clone()).or_default();
        let replaced = sessions
            .iter()
            .position(|s| s.device_id == handle.device_id)
            .map(|at| sessions.swap_remove(at));
        if replaced.is_none() && sessions.len() >= self.max_per_user {
            if sessions.is_empty() {
                inner.by_user.remove(&handle.user_id);
            }
            return Err(RegisterError::TooManyForUser);
        }
        sessions.push(handle.clone());
        inner.by_session.insert(handle.session_id.clone(), handle);
        if let Some(old) = &replaced {
            inner.by_session.remove(&old.session_id);
            Self::unwatch_all(&mut inner, &old.session_id);
            old.ending.end(ErrorCode::SessionReplaced);
        }
        Ok(replaced)
    }

    /// Removes a session (if it is still registered) and its presence subscriptions.
    pub fn unregister(&self, handle: &SessionHandle) {
        let mut inner = self.lock();
        if let Some(sessions) = inner.by_user.get_mut(&handle.user_id) {
            sessions.retain(|s| s.session_id != handle.session_id);
            if sessions.is_empty() {
                inner.by_user.remove(&handle.user_id);
            }
        }
        inner.by_session.remove(&handle.session_id);
        Self::unwatch_all(&mut inner, &handle.session_id);
    }

    fn unwatch_all(inner: &mut Inner, session_id: &str) {
        for user in inner.watching.remove(session_id).unwrap_or_default() {
            if let Some(watchers) = inner.watchers.get_mut(&user) {
                watchers.remove(session_id);
                if watchers.is_empty() {
                    inner.watchers.remove(&user);
                }
            }
        }
    }

    /// Whether `user_id` has a session here.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.lock().by_user.contains_key(user_id)
    }

    /// Queues `frame` for every session of each user, except `exclude` (the session that
    /// caused it). Users with no session here are added to `offline`, when given.
    pub fn deliver<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        frame: Outbound,
        exclude: Option<&str>,
        offline: Option<&mut Vec<String>>,
    ) {
        let frame = Arc::new(frame);
        let targets = self.targets(users, exclude, offline);
        metrics::counter!("im_frames_queued_total").increment(targets.len() as u64);
        for session in targets {
            session.send(frame.clone());
        }
    }

    /// Queues `frame` as [`Self::deliver`] does, but only where a session's queue has room
    /// ([`SessionHandle::offer`]): for a replay, which must not cost a session.
    pub fn deliver_if_room<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        frame: Outbound,
        exclude: Option<&str>,
    ) {
        let frame = Arc::new(frame);
        let targets = self.targets(users, exclude, None);
        metrics::counter!("im_frames_queued_total").increment(targets.len() as u64);
        for session in targets {
            session.offer(frame.clone());
        }
    }

    /// The sessions of `users` but `exclude`; users with none here go to `offline`.
    fn targets<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        exclude: Option<&str>,
        mut offline: Option<&mut Vec<String>>,
    ) -> Vec<SessionHandle> {
        let targets: Vec<SessionHandle>;
        {
            let inner = self.lock();
            let mut found = Vec::new();
            for user in users {
                match inner.by_user.get(user) {
                    Some(sessions) => found.extend(
                        sessions
                            .iter()
                            .filter(|s| Some(&*s.session_id) != exclude)
                            .cloned(),
                    ),
                    None => {
                        if let Some(offline) = offline.as_deref_mut() {
                            offline.push(user.to_owned());
                        }
                    }
                }
            }
            targets = found;
        }
        targets
    }

    /// Ends every session of `user_id` (on `device_id` only, when given) whose token a
    /// revocation at `cut_off_ms` ends.
    pub fn end_sessions(
        &self,
        user_id: &str,
        device_id: Option<&str>,
        cut_off_ms: i64,
        reason: ErrorCode,
    ) -> usize {
        let inner = self.lock();
        let mut ended = 0;
        for session in inner.by_user.get(user_id).into_iter().flatten() {
            let device_matches = device_id.is_none_or(|d| *session.device_id == *d);
            if device_matches && session.token.revoked_by(device_id.is_none(), cut_off_ms) {
                session.ending.end(reason);
                ended += 1;
            }
        }
        ended
    }

    /// A session of `user_id` on `device_id` opened on another node at `connected_at_ms` (by
    /// that node's clock): ends this node's sessions of that device opened more than
    /// [`CLOCK_MARGIN_MS`] before it, with SESSION_REPLACED. Within the margin both stay (the
    /// older one ends by itself once its connection is gone): with clocks apart, ending the
    /// newer one would keep a live device offline, since a replaced client does not reconnect.
    /// Returns how many ended.
    pub fn replaced_elsewhere(
        &self,
        user_id: &str,
        device_id: &str,
        connected_at_ms: i64,
    ) -> usize {
        let inner = self.lock();
        let mut ended = 0;
        for session in inner.by_user.get(user_id).into_iter().flatten() {
            let older = session.connected_at_ms.saturating_add(CLOCK_MARGIN_MS) < connected_at_ms;
            if *session.device_id == *device_id && older {
                session.ending.end(ErrorCode::SessionReplaced);
                ended += 1;
            }
        }
        ended
    }

    /// Pushes to every session may have been lost: a session whose client handles it gets
    /// `resync()` (a Resync push, built per session: each waits its own time), the others, and
    /// one whose queue is full, end with UNAVAILABLE (a GoAway: the client reconnects and
    /// syncs). How many of each.
    pub fn resync_all(&self, resync: impl Fn() -> Bytes) -> (usize, usize) {
        let (mut pushed, mut ended) = (0, 0);
        for session in self.lock().by_session.values() {
            let queued = session.resync
                && session
                    .outbox
                    .try_send(Arc::new(Outbound {
                        frame: resync(),
                        entry: None,
                    }))
                    .is_ok();
            if queued {
                pushed += 1;
            } else {
                session.ending.end(ErrorCode::Unavailable);
                ended += 1;
            }
        }
        (pushed, ended)
    }

    /// Ends every session with `reason` (shutdown).
    pub fn end_all(&self, reason: ErrorCode) {
        for session in self.lock().by_session.values() {
            session.ending.end(reason);
        }
    }

    /// `session_id` watches the presence of `users`; fails (changing nothing) if that would take
    /// it past `max` users.
    pub fn watch(&self, session_id: &str, users: &[String], max: usize) -> bool {
        let mut inner = self.lock();
        let Some(session) = inner
            .by_session
            .get(session_id)
            .map(|s| s.session_id.clone())
        else {
            return false;
        };
        let watching = inner.watching.entry(session.clone()).or_default();
        let new: HashSet<&String> = users
            .iter()
            .filter(|u| !watching.contains(u.as_str()))
            .collect();
        if watching.len() + new.len() > max {
            return false;
        }
        let new: Vec<Arc<str>> = new.into_iter().map(|u| Arc::from(u.as_str())).collect();
        watching.extend(new.iter().cloned());
        for user in new {
            inner
                .watchers
                .entry(user)
                .or_default()
                .insert(session.clone());
        }
        true
    }

    /// `session_id` stops watching `users`.
    pub fn unwatch(&self, session_id: &str, users: &[String]) {
        let mut inner = self.lock();
        for user in users {
            if let Some(watching) = inner.watching.get_mut(session_id) {
                watching.remove(user.as_str());
            }
            if let Some(watchers) = inner.watchers.get_mut(user.as_str()) {
                watchers.remove(session_id);
                if watchers.is_empty() {
                    inner.watchers.remove(user.as_str());
                }
            }
        }
    }

    /// Queues `frame` for every session watching `user_id`.
    pub fn deliver_to_watchers(&self, user_id: &str, frame: Outbound) {
        let frame = Arc::new(frame);
        let targets: Vec<SessionHandle> = {
            let inner = self.lock();
            inner
                .watchers
                .get(user_id)
                .into_iter()
                .flatten()
                .filter_map(|s| inner.by_session.get(s).cloned())
                .collect()
        };
        for session in targets {
            session.send(frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(
        user: &str,
        device: &str,
        queue: usize,
    ) -> (SessionHandle, mpsc::Receiver<Arc<Outbound>>) {
        let (user, device) = (UserId::new(user).unwrap(), DeviceId::new(device).unwrap());
        SessionHandle::new(user, &device, Platform::Web, Standing::IssuedAt(0), queue)
    }

    fn frame(byte: u8) -> Outbound {
        Outbound {
            frame: Bytes::from(vec![byte]),
            entry: None,
        }
    }

    #[test]
    fn a_slow_consumer_is_logged_once_however_many_pushes_it_misses() {
        let lines = im_testkit::logs::Captured::default();
        let (amy, _inbox) = session("amy", "phone", 2);
        let queued = tracing::subscriber::with_default(lines.subscriber("info"), || {
            (0..240)
                .filter(|n| amy.send(Arc::new(frame(*n as u8))))
                .count()
        });
        assert_eq!(queued, 2);
        assert_eq!(amy.ending.reason.get(), Some(&ErrorCode::SlowConsumer));
        assert!(amy.ending.token.is_cancelled());
        let log = lines.text();
        assert_eq!(log.matches("slow consumer").count(), 1, "{log}");
        // A later reason does not replace the first.
        assert!(!amy.ending.end(ErrorCode::TokenRevoked));
    }

    #[test]
    fn a_device_connecting_on_another_node_replaces_only_its_older_session_here() {
        let sessions = Sessions::new(4);
        let (phone, _p) = session("amy", "phone", 4);
        let (laptop, _l) = session("amy", "laptop", 4);
        sessions.register(phone.clone()).unwrap();
        sessions.register(laptop.clone()).unwrap();
        let ended = |s: &SessionHandle| s.ending().reason.get().copied();
        // A session of the phone opened elsewhere before this one, or too close to it to
        // tell with clocks apart: this one stays.
        let at = phone.connected_at_ms;
        assert_eq!(sessions.replaced_elsewhere("amy", "phone", at - 1), 0);
        assert_eq!(
            sessions.replaced_elsewhere("amy", "phone", at + CLOCK_MARGIN_MS),
            0
        );
        assert_eq!(ended(&phone), None);
        // One opened clearly after it: this one ends, the laptop stays.
        let later = at + CLOCK_MARGIN_MS + 1;
        assert_eq!(sessions.replaced_elsewhere("amy", "phone", later), 1);
        assert_eq!(ended(&phone), Some(ErrorCode::SessionReplaced));
        assert_eq!(ended(&laptop), None);
    }

    #[test]
    fn one_session_per_device_and_a_cap_per_user() {
        let sessions = Sessions::new(2);
        let (phone, _p) = session("amy", "phone", 4);
        let (laptop, _l) = session("amy", "laptop", 4);
        let (tablet, _t) = session("amy", "tablet", 4);
        assert!(sessions.register(phone.clone()).unwrap().is_none());
        assert!(sessions.register(laptop).unwrap().is_none());
        assert_eq!(
            sessions.register(tablet).unwrap_err(),
            RegisterError::TooManyForUser
        );
        let (phone2, _p2) = session("amy", "phone", 4);
        let replaced = sessions.register(phone2).unwrap().expect("replaces");
        assert_eq!(replaced.session_id, phone.session_id);
        assert_eq!(
            phone.ending().reason.get(),
            Some(&ErrorCode::SessionReplaced)
        );
        assert_eq!(sessions.count(), 2);
    }

    #[test]
    fn a_full_queue_ends_the_session_as_a_slow_consumer() {
        let sessions = Sessions::new(4);
        let (amy, mut inbox) = session("amy", "phone", 2);
        sessions.register(amy.clone()).unwrap();
        for byte in 0..3 {
            sessions.deliver(["amy"], frame(byte), None, None);
        }
        assert_eq!(amy.ending().reason.get(), Some(&ErrorCode::SlowConsumer));
        assert_eq!(inbox.try_recv().unwrap().frame[0], 0);
        assert_eq!(inbox.try_recv().unwrap().frame[0], 1);
        assert!(
            inbox.try_recv().is_err(),
            "the queue never grew past its bound"
        );
        let mut offline = Vec::new();
        sessions.deliver(["amy", "bob"], frame(9), None, Some(&mut offline));
        assert_eq!(offline, ["bob"]);
    }

    #[test]
    fn a_full_queue_drops_and_flags_a_client_that_handles_resync_and_ends_any_other() {
        let user = UserId::new("amy").unwrap();
        let device = DeviceId::new("phone").unwrap();
        let frame = || {
            Arc::new(Outbound {
                frame: Bytes::from_static(b"f"),
                entry: None,
            })
        };
        let (mut syncing, _inbox) = SessionHandle::new(
            user.clone(),
            &device,
            Platform::Web,
            Standing::IssuedAt(0),
            1,
        );
        syncing.resync = true;
        assert!(syncing.send(frame()));
        assert!(!syncing.send(frame()), "dropped");
        assert!(!syncing.send(frame()));
        assert_eq!(syncing.ending().reason.get(), None, "the connection lives");
        assert!(syncing.take_overflow(), "and is told to sync");
        assert!(!syncing.take_overflow(), "once");
        let (other, _inbox) =
            SessionHandle::new(user, &device, Platform::Web, Standing::IssuedAt(0), 1);
        assert!(other.send(frame()));
        assert!(!other.send(frame()));
        assert_eq!(other.ending().reason.get(), Some(&ErrorCode::SlowConsumer));
    }

    #[test]
    fn a_resync_reaches_the_clients_that_handle_it_and_ends_the_others() {
        let sessions = Sessions::new(4);
        let (mut amy, mut amy_inbox) = session("amy", "phone", 2);
        amy.resync = true;
        let (mut bob, mut bob_inbox) = session("bob", "phone", 1);
        bob.resync = true;
        let (cy, _cy_inbox) = session("cy", "phone", 2);
        for handle in [&amy, &bob, &cy] {
            sessions.register(handle.clone()).unwrap();
        }
        // Bob's queue is full: his client would not see the push in time.
        sessions.deliver(["bob"], frame(1), None, None);
        let (pushed, ended) = sessions.resync_all(|| Bytes::from_static(b"R"));
        assert_eq!((pushed, ended), (1, 2));
        assert_eq!(&amy_inbox.try_recv().unwrap().frame[..], b"R");
        assert!(
            amy.ending().reason.get().is_none(),
            "amy's session lives on"
        );
        assert_eq!(bob.ending().reason.get(), Some(&ErrorCode::Unavailable));
        assert_eq!(bob_inbox.try_recv().unwrap().frame[0], 1);
        assert_eq!(cy.ending().reason.get(), Some(&ErrorCode::Unavailable));
    }

    #[test]
    fn watchers_are_bounded_and_leave_with_their_session() {
        let sessions = Sessions::new(4);
        let (amy, mut inbox) = session("amy", "phone", 8);
        sessions.register(amy.clone()).unwrap();
        let users = ["bob".to_owned(), "cy".to_owned()];
        assert!(!sessions.watch(&amy.session_id, &users, 1), "over the cap");
        assert!(sessions.watch(&amy.session_id, &users, 2));
        sessions.deliver_to_watchers("bob", frame(1));
        assert_eq!(inbox.try_recv().unwrap().frame[0], 1);
        sessions.unwatch(&amy.session_id, &users[..1]);
        sessions.deliver_to_watchers("bob", frame(2));
        assert!(inbox.try_recv().is_err());
        sessions.unregister(&amy);
        sessions.deliver_to_watchers("cy", frame(3));
        assert!(inbox.try_recv().is_err());
        assert_eq!(sessions.count(), 0);
    }
}

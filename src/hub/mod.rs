//! Who is connected and what they should hear: the registry of live sockets, fan-out of
//! committed messages, typing, read receipts and presence.
//!
//! * Messages reach the hub from the store's writer, batch by batch in commit order
//!   ([`run_fanout`]), never from request handlers, so every socket sees ids in order.
//! * Every socket has a bounded [`Outbox`]; the hub only ever `push`es (never waits), so one
//!   slow socket cannot slow fan-out for anyone else.
//! * A frame that delivers a queued message reports it back ([`Hub::delivered`]); the store's
//!   writer removes those queue entries with its next commit.
//!
//! Over the ~600-line guide (issue 17): most of it is the one `impl Hub` (about 500 lines).
//! The seam to split along next is by kind of event, one `impl Hub` per file as `store::reader`
//! does: the registry (register, close, join/leave), fan-out and unread counts,
//! typing and receipts, presence.

pub mod outbox;
pub mod presence;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use outbox::{Lane, Outbound, Outbox};
pub use presence::Presence;

use crate::events::{ChatEvent, ConversationEvent, NewMessageCopies};
use crate::store::{QueueKey, Store, StoreError, StoredMessage};

/// Relayed typing starts per (user, conversation) are at most one per this long.
const TYPING_THROTTLE: Duration = Duration::from_secs(1);
/// Conversations whose participant lists are cached (they never change once created).
const PARTICIPANT_CACHE: usize = 100_000;
/// Users whose unread totals one store read computes at most.
const UNREAD_BATCH: usize = 1024;

/// Which endpoint a socket is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws/chat/`: the user's socket (seed 002); drains the user's queue.
    Chat,
    /// `/ws/chat/{id}/`: one conversation (seeds 003/004).
    Conversation(u64),
    /// `/ws/notifications/`.
    Notifications,
}

/// Identifies a live socket.
pub type SessionId = u64;

#[derive(Debug)]
struct Session {
    user: u64,
    endpoint: Endpoint,
    outbox: Arc<Outbox>,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<SessionId, Session>,
    /// `/ws/chat/` sockets per user.
    chat: HashMap<u64, Vec<SessionId>>,
    /// Conversation sockets per conversation.
    conversation: HashMap<u64, Vec<SessionId>>,
    /// Notification sockets per user.
    notifications: HashMap<u64, Vec<SessionId>>,
    /// `/ws/chat/` sockets that joined a conversation, to hear its participants' presence.
    joined: HashMap<u64, HashSet<SessionId>>,
    /// The same, by socket, so a disconnect touches only its own conversations.
    joined_by: HashMap<SessionId, HashSet<u64>>,
    /// The last message fanned out: a socket registered after it never hears it live.
    fanned_out: u64,
}

impl Registry {
    fn index(&mut self, endpoint: Endpoint, user: u64) -> (&mut HashMap<u64, Vec<SessionId>>, u64) {
        match endpoint {
            Endpoint::Chat => (&mut self.chat, user),
            Endpoint::Conversation(conv) => (&mut self.conversation, conv),
            Endpoint::Notifications => (&mut self.notifications, user),
        }
    }

    fn outboxes<'a>(
        &'a self,
        ids: Option<&'a Vec<SessionId>>,
    ) -> impl Iterator<Item = (SessionId, &'a Session)> + 'a {
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.sessions.get(id).map(|s| (*id, s)))
    }
}

/// Users whose unread total is to be sent, and whether a task is sending them.
#[derive(Debug, Default)]
struct UnreadRequests {
    /// (user, socket that is not told), one per event to send, in request order.
    waiting: Vec<(u64, Option<SessionId>)>,
    sending: bool,
}

/// The hub: shared by every socket and by the request handlers that relay events.
#[derive(Debug)]
pub struct Hub {
    registry: Mutex<Registry>,
    next_session: AtomicU64,
    /// Who is online.
    pub presence: Presence,
    /// When each (user, conversation) last had a typing start relayed.
    typing: Mutex<HashMap<(u64, u64), Instant>>,
    participants: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    /// Unread totals waiting to be sent (see [`Hub::push_unread_count`]).
    unread: Mutex<UnreadRequests>,
    store: Store,
    /// How long a user stays "online" after their last socket closed.
    presence_grace: Duration,
    /// Where presence changes go to become webhook events, as (user, online, at Unix ms);
    /// `None` while webhooks are off.
    presence_log: Option<mpsc::UnboundedSender<(u64, bool, u64)>>,
}

impl Hub {
    /// A hub over `store`, whose writer removes the queue entries sockets deliver.
    pub fn new(store: Store, presence_grace: Duration) -> Self {
        Self {
            registry: Mutex::default(),
            next_session: AtomicU64::new(1),
            presence: Presence::default(),
            typing: Mutex::default(),
            participants: Mutex::default(),
            unread: Mutex::default(),
            store,
            presence_grace,
            presence_log: None,
        }
    }

    /// Reports each announced presence change on `log` too (for webhooks).
    pub fn with_presence_log(mut self, log: mpsc::UnboundedSender<(u64, bool, u64)>) -> Self {
        self.presence_log = Some(log);
        self
    }

    fn log_presence(&self, user: u64, online: bool, at_ms: u64) {
        if let Some(log) = &self.presence_log {
            let _ = log.send((user, online, at_ms));
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh session id (to put in `connection_established` before registering).
    pub fn new_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a socket; from now on it receives the events of its endpoint. Returns the last
    /// message id fanned out before: later ones (and only those) reach the socket live.
    pub fn register(
        &self,
        id: SessionId,
        user: u64,
        endpoint: Endpoint,
        outbox: Arc<Outbox>,
    ) -> u64 {
        let mut registry = self.registry();
        registry.sessions.insert(
            id,
            Session {
                user,
                endpoint,
                outbox,
            },
        );
        let (index, key) = registry.index(endpoint, user);
        index.entry(key).or_default().push(id);
        registry.fanned_out
    }

    /// Removes a socket.
    pub fn unregister(&self, id: SessionId) {
        let mut registry = self.registry();
        let Some(session) = registry.sessions.remove(&id) else {
            return;
        };
        let (index, key) = registry.index(session.endpoint, session.user);
        if let Some(ids) = index.get_mut(&key) {
            ids.retain(|s| *s != id);
            if ids.is_empty() {
                index.remove(&key);
            }
        }
        for conversation in registry.joined_by.remove(&id).unwrap_or_default() {
            if let Some(members) = registry.joined.get_mut(&conversation) {
                members.remove(&id);
                if members.is_empty() {
                    registry.joined.remove(&conversation);
                }
            }
        }
    }

    /// Number of live sockets.
    pub fn session_count(&self) -> usize {
        self.registry().sessions.len()
    }

    /// Whether the user has a `/ws/chat/` socket open.
    pub fn has_chat_socket(&self, user: u64) -> bool {
        self.registry().chat.contains_key(&user)
    }

    /// Closes every socket with `code` (1001 on shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for session in self.registry().sessions.values() {
            session.outbox.close(code, reason);
        }
    }

    /// Closes every socket of `user` with `code` at once (4403 when an operator disables or
    /// erases them); answers how many.
    pub fn close_user(&self, user: u64, code: u16, reason: &'static str) -> usize {
        let registry = self.registry();
        let mut closed = 0;
        for session in registry.sessions.values().filter(|s| s.user == user) {
            session.outbox.close(code, reason);
            closed += 1;
        }
        closed
    }

    /// Tells the participants' `/ws/chat/` sockets and the conversation's sockets that these
    /// messages are now tombstones.
    pub fn messages_deleted(&self, conversation: u64, participants: &[u64], message_ids: &[u64]) {
        let registry = self.registry();
        let chat = ChatEvent::MessageDeleted {
            conversation_id: conversation,
            message_ids,
        }
        .to_bytes();
        for user in participants {
            for (_, session) in registry.outboxes(registry.chat.get(user)) {
                let _ = session
                    .outbox
                    .push(Lane::Control, Outbound::event(chat.clone()));
            }
        }
        let room = ConversationEvent::MessageDeleted {
            conversation_id: conversation,
            message_ids,
        }
        .to_bytes();
        for (_, session) in registry.outboxes(registry.conversation.get(&conversation)) {
            let _ = session
                .outbox
                .push(Lane::Control, Outbound::event(room.clone()));
        }
    }

    /// Frames carrying these queue entries were written to a socket (one batch of its
    /// frames). The writer removes them with its next commit, at most its ride-along bound
    /// later (`store::engine::removals`); until then a drain, a peek, a reconnect's replay or
    /// a crash may return them again (clients and hosts drop repeats by id; docs/API.md).
    pub fn delivered(&self, keys: Vec<QueueKey>) {
        // Only fails once the writer is gone: the entries stay and are delivered again.
        let _ = self.store.writer().dequeue(keys);
    }

    /// `join_conversation` of a `/ws/chat/` socket (participation checked by the caller).
    pub fn join(&self, id: SessionId, conversation: u64) {
        let mut registry = self.registry();
        registry.joined.entry(conversation).or_default().insert(id);
        registry
            .joined_by
            .entry(id)
            .or_default()
            .insert(conversation);
    }

    pub fn leave(&self, id: SessionId, conversation: u64) {
        let mut registry = self.registry();
        if let Some(joined) = registry.joined_by.get_mut(&id) {
            joined.remove(&conversation);
        }
        if let Some(members) = registry.joined.get_mut(&conversation) {
            members.remove(&id);
            if members.is_empty() {
                registry.joined.remove(&conversation);
            }
        }
    }

    /// Participants of `conversation` (cached: they never change), or `None` if it does not exist.
    pub async fn participants(
        &self,
        conversation: u64,
    ) -> Result<Option<Arc<Vec<u64>>>, StoreError> {
        if let Some(found) = self
            .participants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conversation)
        {
            return Ok(Some(found.clone()));
        }
        let record = self
            .store
            .read(move |r| r.conversation(conversation))
            .await?;
        Ok(record.map(|record| {
            let list = Arc::new(record.participants);
            let mut cache = self.participants.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= PARTICIPANT_CACHE {
                cache.clear();
            }
            cache.insert(conversation, list.clone());
            list
        }))
    }

    /// Fan-out of one committed message to every socket that should see it; `chat_event` is
    /// its `new_message`.
    fn publish(self: &Arc<Self>, message: &StoredMessage, chat_event: Bytes) {
        let record = &message.record;
        let (id, sender) = (message.id, record.sender);
        let lane = Lane::Message(record.priority);
        let mut registry = self.registry();
        registry.fanned_out = id;
        let mut overflowed = Vec::new();
        let mut notification = None;
        for user in &message.participants {
            let delivers = (*user != sender).then_some((*user, record.priority.rank(), id));
            for (sid, session) in registry.outboxes(registry.chat.get(user)) {
                // The sending socket hears `message_sent`; the sender's other sockets an echo.
                if Some(sid) == message.origin {
                    continue;
                }
                let frame = Outbound::Text {
                    payload: chat_event.clone(),
                    delivers,
                    message_id: Some(id),
                    committed_ms: delivers.map(|_| record.created_at_ms),
                };
                if session.outbox.push(lane, frame).is_err() {
                    overflowed.push(sid);
                }
            }
            if *user != sender && registry.notifications.contains_key(user) {
                // The same event for every recipient: serialized once, only if needed.
                let event = notification
                    .get_or_insert_with(|| ChatEvent::notification(id, record).to_bytes());
                for (_, session) in registry.outboxes(registry.notifications.get(user)) {
                    let _ = session.outbox.push(lane, Outbound::event(event.clone()));
                }
            }
        }
        if let Some(sockets) = registry.conversation.get(&record.conversation) {
            let event = ConversationEvent::message(id, record, &message.plain).to_bytes();
            for (_, session) in registry.outboxes(Some(sockets)) {
                let _ = session.outbox.push(lane, Outbound::event(event.clone()));
            }
        }
        let notify_unread: Vec<u64> = message
            .participants
            .iter()
            .copied()
            .filter(|u| *u != sender && registry.notifications.contains_key(u))
            .collect();
        drop(registry);
        if !overflowed.is_empty() {
            tracing::debug!(sessions = ?overflowed, "slow consumers closed with 4008");
        }
        if !notify_unread.is_empty() {
            self.push_unread_counts(notify_unread.into_iter().map(|user| (user, None)));
        }
    }

    /// Sends `user` their total unread count on their notification sockets and on their
    /// `/ws/chat/` sockets other than `except`.
    pub fn push_unread_count(self: &Arc<Self>, user: u64, except: Option<SessionId>) {
        self.push_unread_counts([(user, except)]);
    }

    /// [`Hub::push_unread_count`] for each of `requests`. The totals are read off the runtime
    /// by one task at a time, which takes every request waiting and reads all their users'
    /// totals in one store read: a burst of messages costs a few reads, not a task and a read
    /// per message and recipient. And as the reads follow one another, the counts a socket
    /// hears never go back (tasks racing each other used to deliver a stale count last).
    fn push_unread_counts(
        self: &Arc<Self>,
        requests: impl IntoIterator<Item = (u64, Option<SessionId>)>,
    ) {
        let mut unread = self.unread.lock().unwrap_or_else(|e| e.into_inner());
        let before = unread.waiting.len();
        unread.waiting.extend(requests);
        if unread.sending || unread.waiting.len() == before {
            return;
        }
        unread.sending = true;
        drop(unread);
        tokio::spawn(self.clone().send_unread_counts());
    }

    /// Sends the waiting unread counts until none are left.
    async fn send_unread_counts(self: Arc<Self>) {
        loop {
            let requests: Vec<(u64, Option<SessionId>)> = {
                let mut unread = self.unread.lock().unwrap_or_else(|e| e.into_inner());
                if unread.waiting.is_empty() {
                    unread.sending = false;
                    return;
                }
                let take = unread.waiting.len().min(UNREAD_BATCH);
                unread.waiting.drain(..take).collect()
            };
            let mut users: Vec<u64> = requests.iter().map(|(user, _)| *user).collect();
            users.sort_unstable();
            users.dedup();
            let totals = self
                .store
                .read(move |r| {
                    users
                        .into_iter()
                        .map(|user| Ok((user, r.unread_total(user)?)))
                        .collect::<Result<HashMap<u64, u64>, StoreError>>()
                })
                .await;
            let totals = match totals {
                Ok(totals) => totals,
                Err(e) => {
                    // Only the counts are missing: the next change sends them again.
                    tracing::warn!(error = %e, users = requests.len(), "unread counts not sent");
                    continue;
                }
            };
            let registry = self.registry();
            // Encoded once per user and round: a burst of messages to a group asks for each
            // member's total once per message (each request still gets its frame), and one
            // read answered them all alike.
            let mut events: HashMap<u64, Bytes> = HashMap::new();
            for (user, except) in requests {
                let Some(total) = totals.get(&user) else {
                    continue;
                };
                let event = events
                    .entry(user)
                    .or_insert_with(|| {
                        ChatEvent::UnreadCount {
                            unread_count: *total,
                        }
                        .to_bytes()
                    })
                    .clone();
                let ids = registry
                    .notifications
                    .get(&user)
                    .into_iter()
                    .chain(registry.chat.get(&user))
                    .flatten()
                    .filter(|id| Some(**id) != except);
                for id in ids {
                    if let Some(session) = registry.sessions.get(id) {
                        let _ = session
                            .outbox
                            .push(Lane::Control, Outbound::event(event.clone()));
                    }
                }
            }
        }
    }

    /// Relays a typing change of `user` in `conversation` (a participant: checked by the
    /// caller). Starts are throttled to one per second; stops always go through.
    pub fn typing(
        &self,
        user: u64,
        username: Option<&str>,
        conversation: u64,
        participants: &[u64],
        is_typing: bool,
    ) {
        if is_typing {
            let mut typing = self.typing.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if typing
                .get(&(user, conversation))
                .is_some_and(|last| now.duration_since(*last) < TYPING_THROTTLE)
            {
                return;
            }
            if typing.len() > PARTICIPANT_CACHE {
                typing.retain(|_, last| now.duration_since(*last) < TYPING_THROTTLE);
            }
            typing.insert((user, conversation), now);
        }
        // A stop is always relayed, but it does not reset the throttle: alternating
        // start/stop cannot relay more than one start per second.
        let chat_event = ChatEvent::TypingIndicator {
            conversation_id: conversation,
            user_id: user,
            is_typing,
        }
        .to_bytes();
        let conv_event = ConversationEvent::Typing {
            user_id: user,
            username,
            is_typing,
        }
        .to_bytes();
        let registry = self.registry();
        for other in participants.iter().filter(|p| **p != user) {
            for (_, session) in registry.outboxes(registry.chat.get(other)) {
                let _ = session
                    .outbox
                    .push(Lane::Control, Outbound::event(chat_event.clone()));
            }
        }
        for (_, session) in registry.outboxes(registry.conversation.get(&conversation)) {
            if session.user != user {
                let _ = session
                    .outbox
                    .push(Lane::Control, Outbound::event(conv_event.clone()));
            }
        }
    }

    /// Relays that `reader` read `read` (message ids by sender) in `conversation`: to each
    /// sender's `/ws/chat/` sockets, to the conversation's sockets, and the reader's new
    /// unread count to their other sockets.
    pub fn read_receipt(
        self: &Arc<Self>,
        reader: u64,
        conversation: u64,
        read: &HashMap<u64, Vec<u64>>,
        read_at_ms: u64,
        from: Option<SessionId>,
    ) {
        {
            let registry = self.registry();
            for (sender, ids) in read.iter().filter(|(s, _)| **s != reader) {
                let event =
                    ChatEvent::read_receipt(conversation, ids, reader, read_at_ms).to_bytes();
                for (_, session) in registry.outboxes(registry.chat.get(sender)) {
                    let _ = session
                        .outbox
                        .push(Lane::Control, Outbound::event(event.clone()));
                }
            }
            if registry.conversation.contains_key(&conversation) {
                let mut all: Vec<u64> = read.values().flatten().copied().collect();
                all.sort_unstable();
                let event = ConversationEvent::ReadReceipt {
                    user_id: reader,
                    message_ids: &all,
                }
                .to_bytes();
                for (_, session) in registry.outboxes(registry.conversation.get(&conversation)) {
                    let _ = session
                        .outbox
                        .push(Lane::Control, Outbound::event(event.clone()));
                }
            }
        }
        self.push_unread_count(reader, from);
    }

    /// A socket of `user` opened: announce "online" to sockets that joined one of their
    /// conversations, unless already announced.
    pub fn connected(self: &Arc<Self>, user: u64) {
        let now_ms = crate::time::now_ms();
        if self.presence.connect(user, now_ms) {
            self.log_presence(user, true, now_ms);
            self.announce_presence(user);
        }
    }

    /// A socket of `user` closed: after the grace period, announce "offline" if none came back.
    pub fn disconnected(self: &Arc<Self>, user: u64, shutdown: &CancellationToken) {
        if !self.presence.disconnect(user, crate::time::now_ms()) {
            return;
        }
        let hub = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(hub.presence_grace) => {}
                // Nobody is left to tell when the daemon stops.
                _ = shutdown.cancelled() => return,
            }
            if hub.presence.settle_offline(user) {
                // When they left, not when the grace ran out.
                let left_ms = hub.presence.status(user).last_seen_ms.unwrap_or(0);
                hub.log_presence(user, false, left_ms);
                hub.announce_presence(user);
            }
        });
    }

    fn announce_presence(self: &Arc<Self>, user: u64) {
        if self.registry().joined.is_empty() {
            return;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            let Ok(conversations) = hub.store.read(move |r| r.conversation_ids(user)).await else {
                return;
            };
            let status = hub.presence.status(user);
            let event = ChatEvent::presence(user, status.online, status.last_seen_ms).to_bytes();
            let registry = hub.registry();
            let mut told = HashSet::new();
            for conv in conversations {
                for sid in registry.joined.get(&conv).into_iter().flatten() {
                    if told.insert(*sid)
                        && let Some(session) = registry.sessions.get(sid)
                    {
                        let _ = session
                            .outbox
                            .push(Lane::Control, Outbound::event(event.clone()));
                    }
                }
            }
        });
    }

    /// `conversation_updated` (the user's own view of a conversation) to `user`'s
    /// notification sockets.
    pub fn conversation_updated(&self, user: u64, event: Bytes) {
        let registry = self.registry();
        for (_, session) in registry.outboxes(registry.notifications.get(&user)) {
            let _ = session
                .outbox
                .push(Lane::Control, Outbound::event(event.clone()));
        }
    }

    /// Those of `users` with a notification socket open, the only ones a
    /// `conversation_updated` reaches: a caller with thousands to tell (a first broadcast)
    /// builds the events of these alone.
    pub fn with_notification_sockets(&self, users: impl IntoIterator<Item = u64>) -> HashSet<u64> {
        let registry = self.registry();
        users
            .into_iter()
            .filter(|u| registry.notifications.contains_key(u))
            .collect()
    }

    /// Pushes `event` to one socket.
    pub fn send_to(&self, id: SessionId, lane: Lane, event: Bytes) {
        if let Some(session) = self.registry().sessions.get(&id) {
            let _ = session.outbox.push(lane, Outbound::event(event));
        }
    }
}

/// Feeds committed messages to [`Hub::publish`] in commit order until the writer stops.
pub async fn run_fanout(hub: Arc<Hub>, mut committed: mpsc::UnboundedReceiver<Vec<StoredMessage>>) {
    while let Some(batch) = committed.recv().await {
        // A broadcast's copies (one per user) follow one another and share their text: that
        // part of their events is encoded once (see `NewMessageCopies`).
        let mut copies: Option<(&StoredMessage, NewMessageCopies)> = None;
        let mut previous: Option<&StoredMessage> = None;
        for message in &batch {
            let record = &message.record;
            let a_copy = previous.is_some_and(|p| same_content(p, message));
            if a_copy
                && !copies
                    .as_ref()
                    .is_some_and(|(like, _)| same_content(like, message))
            {
                copies = Some((message, NewMessageCopies::new(record, &message.plain)));
            }
            let event = match &copies {
                Some((like, copies)) if same_content(like, message) => {
                    copies.copy(message.id, record.conversation, record.receiver)
                }
                _ => ChatEvent::new_message(message.id, record, &message.plain).to_bytes(),
            };
            hub.publish(message, event);
            previous = Some(message);
        }
    }
}

/// Whether two messages' events differ only in their id, conversation and receiver: copies
/// of one message (they share its text, `plain`).
fn same_content(a: &StoredMessage, b: &StoredMessage) -> bool {
    let (x, y) = (&a.record, &b.record);
    Arc::ptr_eq(&a.plain, &b.plain)
        && x.sender == y.sender
        && x.created_at_ms == y.created_at_ms
        && x.priority == y.priority
        && x.message_type == y.message_type
}

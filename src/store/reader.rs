//! Queries on one read snapshot. Runs on the blocking pool via [`super::Store::read`].
//!
//! Everything here answers from indexes kept by the writer: listing a user's conversations
//! ranges over their memberships, a history page ranges over one conversation's index and
//! the unindexed tail ([`super::history`]).
//!
//! A record that cannot be read back (damaged on the disk) is left out of whatever view meets
//! it, and reported once ([`super::damage`]); only a failure to read at all fails a query.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata};

use redb::TableHandle;
use serde::Deserialize;

use super::StoreError;
use super::damage::DamagedRecords;
use super::history::{History, Tail, read_tail};
use super::records::decode;
use super::tables::{
    CONVERSATION_MESSAGES, CONVERSATIONS, DATA_KEYS, DISABLED_USERS, MEMBERSHIPS, MESSAGES, META,
    QUEUE, QUEUE_LENGTHS, USERNAMES, USERS, meta,
};
use crate::crypto::{Key, Keyring, OpenError};
use crate::model::{ConversationRecord, MembershipRecord, MessageBody, MessageRecord, UserRecord};

/// `convid_msgid`, opened for reading.
type HistoryIndex = ReadOnlyTable<(u64, u64), ()>;

/// One snapshot's history index and tail, owned for the length of a query.
struct SnapshotHistory {
    index: HistoryIndex,
    tail: Tail,
}

impl SnapshotHistory {
    fn view(&self) -> History<'_, HistoryIndex> {
        History {
            index: &self.index,
            tail: &self.tail,
        }
    }
}

/// A read snapshot plus the keys to open what it holds.
#[derive(Debug)]
pub struct Reader<'a> {
    txn: &'a ReadTransaction,
    keyring: &'a Keyring,
    /// Where a record that cannot be read back is reported before it is left out.
    damaged: &'a DamagedRecords,
    /// Senders' data keys this query has opened (`None`: the sender has none), kept for the
    /// query only: a key erased after the snapshot must not outlive it in a shared cache.
    data_keys: RefCell<HashMap<u64, Option<Arc<Keyring>>>>,
}

/// One user as an operator sees them (contract section 9), less what only the hub knows
/// (online, last seen).
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub id: u64,
    pub record: UserRecord,
    /// Since when (Unix ms) an operator disabled them, if they are.
    pub disabled_since_ms: Option<u64>,
    pub queue_length: u64,
    pub conversations: u64,
}

/// A message as one user sees it.
#[derive(Debug, Clone)]
pub struct MessageView {
    pub id: u64,
    pub record: MessageRecord,
    pub body: MessageBody,
    /// For a recipient: they have read it. For the sender: every recipient has.
    pub is_read: bool,
}

/// A conversation as one user sees it.
#[derive(Debug, Clone)]
pub struct ConversationView {
    pub id: u64,
    pub record: ConversationRecord,
    pub subject: Option<String>,
    pub membership: MembershipRecord,
    pub last_message: Option<MessageView>,
}

/// A place in one user's queue: (priority rank, message id).
pub type QueuePosition = (u8, u64);

/// A message read for delivery (queue replay or `sync`), opened.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Priority rank of the queue entry (see [`crate::model::Priority::rank`]).
    pub rank: u8,
    pub id: u64,
    pub record: MessageRecord,
    pub body: MessageBody,
}

/// One page of a conversation's history, oldest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    /// The first and last id the page covers: those of its first and last message, unless a
    /// damaged one was left out there. Links to the next pages continue from these.
    pub covers: Option<(u64, u64)>,
    /// Messages in the whole conversation.
    pub total: u64,
    /// Whether older messages exist before the first of this page.
    pub has_older: bool,
    /// Whether newer messages exist after the last of this page.
    pub has_newer: bool,
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest messages.
    Latest,
    /// The newest messages with ids below this one.
    Before(u64),
    /// The oldest messages with ids above this one.
    After(u64),
}

/// What `sync` sends: messages after an id, in id order.
#[derive(Debug, Clone)]
pub struct SyncPage {
    pub messages: Vec<QueuedMessage>,
    /// Whether more follow.
    pub more: bool,
    /// The newest id the page covers (a damaged message left out included): the next page
    /// starts after it.
    pub last_id: Option<u64>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        txn: &'a ReadTransaction,
        keyring: &'a Keyring,
        damaged: &'a DamagedRecords,
    ) -> Self {
        Self {
            txn,
            keyring,
            damaged,
            data_keys: RefCell::default(),
        }
    }

    /// `bytes`, the record at `key` of `table`, decoded; `None` if it cannot be (reported).
    fn decoded<T: for<'de> Deserialize<'de>>(
        &self,
        table: &impl TableHandle,
        key: impl std::fmt::Display,
        bytes: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.damaged.skip(table.name(), key, decode(bytes))
    }

    /// A counter of `name_value` (0 when absent).
    pub fn meta(&self, key: &str) -> Result<u64, StoreError> {
        Ok(meta::get(&self.table(META)?, key)?.unwrap_or(0))
    }

    /// The history index of this snapshot and its tail (read once per query).
    fn history(&self) -> Result<SnapshotHistory, StoreError> {
        let indexed_to = self.meta(meta::INDEXED_TO)?;
        let tail = read_tail(&self.table(MESSAGES)?, indexed_to, self.damaged)?;
        Ok(SnapshotHistory {
            index: self.table(CONVERSATION_MESSAGES)?,
            tail,
        })
    }

    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, StoreError> {
        Ok(self.txn.open_table(def)?)
    }

    /// Every user's id, name and whether they are a local account, for the directory. A
    /// record that cannot be read is left out (and reported): the daemon still starts, and
    /// that user's requests go on as for a user not recorded yet.
    pub fn user_names(&self) -> Result<Vec<(u64, Option<String>, bool)>, StoreError> {
        let table = self.table(USERS)?;
        let mut users = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
        for row in table.iter()? {
            let (id, bytes) = row?;
            let id = id.value();
            if let Some(record) = self.decoded::<UserRecord>(&USERS, id, bytes.value())? {
                users.push((id, record.username, record.password_hash.is_some()));
            }
        }
        Ok(users)
    }

    pub fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match self.table(USERS)?.get(id)? {
            Some(bytes) => self.decoded(&USERS, id, bytes.value()),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of `user`'s queue after `after` (a previous entry's rank and id),
    /// in delivery order (high priority first, then oldest first), with their messages opened;
    /// and the last entry looked at, to continue from. An entry whose message is gone or
    /// damaged is skipped, so one bad record never stalls a queue. It stays queued: nothing
    /// here writes, and the damage stays where it can be repaired.
    pub fn queued(
        &self,
        user: u64,
        after: Option<(u8, u64)>,
        limit: usize,
    ) -> Result<(Vec<QueuedMessage>, Option<QueuePosition>), StoreError> {
        let mut out = Vec::new();
        let mut last = None;
        let start = match after {
            Some((rank, id)) if id == u64::MAX => (user, rank.saturating_add(1), 0),
            Some((rank, id)) => (user, rank, id + 1),
            None => (user, 0, 0),
        };
        for entry in self
            .table(QUEUE)?
            .range(start..=(user, u8::MAX, u64::MAX))?
            .take(limit)
        {
            let (_, rank, id) = entry?.0.value();
            last = Some((rank, id));
            if let Some((record, body)) = self.readable_message(id)? {
                out.push(QueuedMessage {
                    rank,
                    id,
                    record,
                    body,
                });
            }
        }
        Ok((out, last))
    }

    /// The longest user queue.
    pub fn max_queue_length(&self) -> Result<u64, StoreError> {
        let mut max = 0;
        for entry in self.table(QUEUE_LENGTHS)?.iter()? {
            max = max.max(entry?.1.value());
        }
        Ok(max)
    }

    /// Ids of the user's conversations.
    pub fn conversation_ids(&self, user: u64) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            ids.push(entry?.0.value().1);
        }
        Ok(ids)
    }

    /// Messages of all the user's conversations with ids above `since`, in id order, at most
    /// `limit` ids (damaged ones left out); and whether more follow.
    pub fn messages_since(
        &self,
        user: u64,
        since: u64,
        limit: usize,
    ) -> Result<SyncPage, StoreError> {
        let snapshot = self.history()?;
        let history = snapshot.view();
        let mut ids = Vec::new();
        for conv in self.conversation_ids(user)? {
            // Each conversation contributes at most `limit + 1`: enough to know if more follow.
            for id in history
                .ids(conv, since.saturating_add(1)..=u64::MAX)?
                .take(limit + 1)
            {
                ids.push(id?);
            }
        }
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut messages = Vec::with_capacity(ids.len());
        for &id in &ids {
            if let Some((record, body)) = self.readable_message(id)? {
                messages.push(QueuedMessage {
                    rank: record.priority.rank(),
                    id,
                    record,
                    body,
                });
            }
        }
        Ok(SyncPage {
            messages,
            more,
            last_id: ids.last().copied(),
        })
    }

    /// The local account called `username`.
    pub fn account(&self, username: &str) -> Result<Option<(u64, UserRecord)>, StoreError> {
        let Some(id) = self.table(USERNAMES)?.get(username)?.map(|v| v.value()) else {
            return Ok(None);
        };
        Ok(self.user(id)?.map(|u| (id, u)))
    }

    /// Everyone who shares at least one conversation with `user` (not `user` themself).
    pub fn contacts(&self, user: u64) -> Result<std::collections::HashSet<u64>, StoreError> {
        let mut contacts = std::collections::HashSet::new();
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            let conv = entry?.0.value().1;
            if let Some(record) = self.conversation(conv)? {
                contacts.extend(record.participants.into_iter().filter(|p| *p != user));
            }
        }
        Ok(contacts)
    }

    /// The user's unread messages, oldest first, at most `limit`; and how many there are in all.
    /// Reads only the unread tail of each conversation that has one.
    pub fn unread_messages(
        &self,
        user: u64,
        limit: usize,
    ) -> Result<(u64, Vec<MessageView>), StoreError> {
        let snapshot = self.history()?;
        let history = snapshot.view();
        let mut total = 0;
        let mut found = Vec::new();
        for (conv, membership) in self.memberships(user)? {
            if membership.unread == 0 {
                continue;
            }
            total += membership.unread;
            // Only the oldest `limit` of this conversation can make the answer.
            let mut taken = 0;
            for item in history.ids(conv, membership.read_marker.saturating_add(1)..=u64::MAX)? {
                let id = item?;
                if let Some(record) = self.message(id)?
                    && record.sender != user
                {
                    found.push((id, record, conv));
                    taken += 1;
                    if taken == limit {
                        break;
                    }
                }
            }
            // Keep memory bounded: only the oldest `limit` can be returned.
            if found.len() > limit * 2 {
                found.sort_by_key(|(id, ..)| *id);
                found.truncate(limit);
            }
        }
        found.sort_by_key(|(id, ..)| *id);
        found.truncate(limit);
        let mut views = Vec::with_capacity(found.len());
        // Only the answer's bodies are opened (a damaged one leaves the answer one short).
        for (id, record, conv) in found {
            if let Some(body) = self.opened(id, &record)?
                && let Some(conversation) = self.conversation(conv)?
            {
                views.push(self.message_view(user, id, record, body, &conversation)?);
            }
        }
        Ok((total, views))
    }

    /// The user's memberships, by conversation id (damaged ones left out).
    fn memberships(&self, user: u64) -> Result<Vec<(u64, MembershipRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            let (key, value) = entry?;
            let conv = key.value().1;
            let key = format_args!("({user}, {conv})");
            if let Some(membership) = self.decoded(&MEMBERSHIPS, key, value.value())? {
                out.push((conv, membership));
            }
        }
        Ok(out)
    }

    /// A conversation record; `None` if there is none or it is damaged.
    pub fn conversation(&self, id: u64) -> Result<Option<ConversationRecord>, StoreError> {
        match self.table(CONVERSATIONS)?.get(id)? {
            Some(bytes) => self.decoded(&CONVERSATIONS, id, bytes.value()),
            None => Ok(None),
        }
    }

    /// A membership record; `None` if the user is not in the conversation or it is damaged.
    pub fn membership(&self, user: u64, conv: u64) -> Result<Option<MembershipRecord>, StoreError> {
        match self.table(MEMBERSHIPS)?.get((user, conv))? {
            Some(bytes) => self.decoded(
                &MEMBERSHIPS,
                format_args!("({user}, {conv})"),
                bytes.value(),
            ),
            None => Ok(None),
        }
    }

    /// A message record (its body still sealed); `None` if there is none or it is damaged.
    pub fn message(&self, id: u64) -> Result<Option<MessageRecord>, StoreError> {
        match self.table(MESSAGES)?.get(id)? {
            Some(bytes) => self.decoded(&MESSAGES, id, bytes.value()),
            None => Ok(None),
        }
    }

    /// A message with its body opened; `None` if there is none or it is damaged.
    pub fn readable_message(
        &self,
        id: u64,
    ) -> Result<Option<(MessageRecord, MessageBody)>, StoreError> {
        let Some(record) = self.message(id)? else {
            return Ok(None);
        };
        Ok(self.opened(id, &record)?.map(|body| (record, body)))
    }

    /// Message `id`'s sealed text and metadata, opened; `None` if they are damaged. A
    /// tombstone opens as an empty body.
    fn opened(&self, id: u64, record: &MessageRecord) -> Result<Option<MessageBody>, StoreError> {
        if record.is_deleted() {
            return Ok(Some(MessageBody::default()));
        }
        let opened = match self.keyring.open(&record.body) {
            Ok(plain) => Ok(plain),
            // Sealed by the sender's data key (a data key's id may collide with an at-rest
            // key's, which then fails to authenticate it).
            Err(e @ (OpenError::UnknownKey(_) | OpenError::Tampered)) => {
                match self.data_key(record.sender)? {
                    Some(ring) => ring.open(&record.body),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
        .map_err(StoreError::from)
        .and_then(|plain| decode(&plain));
        self.damaged.skip(MESSAGES.name(), id, opened)
    }

    /// `user`'s data key from this snapshot, opened; `None` if they have none (never sent
    /// since data keys exist, or erased).
    fn data_key(&self, user: u64) -> Result<Option<Arc<Keyring>>, StoreError> {
        if let Some(known) = self.data_keys.borrow().get(&user) {
            return Ok(known.clone());
        }
        let ring = match self.wrapped_data_key(user)? {
            Some(wrapped) => {
                let key = Key::unwrap(self.keyring, &wrapped)?;
                let ring =
                    Keyring::new(&key, &[]).map_err(|e| StoreError::Storage(e.to_string()))?;
                Some(Arc::new(ring))
            }
            None => None,
        };
        self.data_keys.borrow_mut().insert(user, ring.clone());
        Ok(ring)
    }

    /// `user`'s data key as stored (sealed by the at-rest key).
    pub fn wrapped_data_key(&self, user: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .table(DATA_KEYS)?
            .get(user)?
            .map(|v| v.value().to_vec()))
    }

    /// Every disabled (or erased) user.
    pub fn disabled_users(&self) -> Result<Vec<u64>, StoreError> {
        let mut users = Vec::new();
        for row in self.table(DISABLED_USERS)?.iter()? {
            users.push(row?.0.value());
        }
        Ok(users)
    }

    /// Users for operators, by id, whose id or name (username or display name, any case)
    /// matches `q`: the total, and `limit` of them after the first `skip`.
    pub fn user_summaries(
        &self,
        q: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> Result<(u64, Vec<UserSummary>), StoreError> {
        let q = q.map(str::to_lowercase).filter(|q| !q.is_empty());
        let matches = |id: u64, record: &UserRecord| {
            let Some(q) = &q else { return true };
            id.to_string() == *q
                || [&record.username, &record.display_name]
                    .into_iter()
                    .flatten()
                    .any(|name| name.to_lowercase().contains(q.as_str()))
        };
        let mut count = 0u64;
        let mut page = Vec::new();
        for row in self.table(USERS)?.iter()? {
            let (id, bytes) = row?;
            let id = id.value();
            let Some(record) = self.decoded::<UserRecord>(&USERS, id, bytes.value())? else {
                continue;
            };
            if !matches(id, &record) {
                continue;
            }
            count += 1;
            if count as usize > skip && page.len() < limit {
                page.push((id, record));
            }
        }
        let mut results = Vec::with_capacity(page.len());
        for (id, record) in page {
            results.push(self.summarize(id, record)?);
        }
        Ok((count, results))
    }

    /// One user for operators; `None` if the daemon has no record of them.
    pub fn user_summary(&self, id: u64) -> Result<Option<UserSummary>, StoreError> {
        match self.user(id)? {
            Some(record) => Ok(Some(self.summarize(id, record)?)),
            None => Ok(None),
        }
    }

    fn summarize(&self, id: u64, record: UserRecord) -> Result<UserSummary, StoreError> {
        Ok(UserSummary {
            id,
            record,
            disabled_since_ms: self.table(DISABLED_USERS)?.get(id)?.map(|v| v.value()),
            queue_length: self.table(QUEUE_LENGTHS)?.get(id)?.map_or(0, |v| v.value()),
            conversations: self
                .table(MEMBERSHIPS)?
                .range((id, 0)..=(id, u64::MAX))?
                .count() as u64,
        })
    }

    /// Opens a conversation's sealed subject; `None` if it has none or it is damaged.
    fn open_subject(&self, conv: u64, sealed: Option<&[u8]>) -> Result<Option<String>, StoreError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened = self
            .keyring
            .open(sealed)
            .map_err(StoreError::from)
            .and_then(|plain| {
                String::from_utf8(plain).map_err(|e| StoreError::Encoding(e.to_string()))
            });
        self.damaged.skip(CONVERSATIONS.name(), conv, opened)
    }

    /// The conversation as `user` sees it, or `None` if it does not exist or `user` is not in it.
    pub fn conversation_view(
        &self,
        user: u64,
        conv: u64,
    ) -> Result<Option<ConversationView>, StoreError> {
        let Some(membership) = self.membership(user, conv)? else {
            return Ok(None);
        };
        let Some(record) = self.conversation(conv)? else {
            return Ok(None);
        };
        let subject = self.open_subject(conv, record.subject.as_deref())?;
        // A damaged newest message leaves the conversation without a preview.
        let last_message = match record.last_message_id {
            Some(id) => match self.readable_message(id)? {
                Some((msg, body)) => Some(self.message_view(user, id, msg, body, &record)?),
                None => None,
            },
            None => None,
        };
        Ok(Some(ConversationView {
            id: conv,
            record,
            subject,
            membership,
            last_message,
        }))
    }

    /// The user's conversations (archived or not), most recently active first.
    pub fn user_conversations(
        &self,
        user: u64,
        archived: bool,
    ) -> Result<Vec<(u64, MembershipRecord)>, StoreError> {
        let mut out = self.memberships(user)?;
        out.retain(|(_, membership)| membership.archived == archived);
        // Most recently active first (created, or last message); ties by newest id.
        out.sort_by(|(a_id, a), (b_id, b)| {
            (b.last_activity_ms, b_id).cmp(&(a.last_activity_ms, a_id))
        });
        Ok(out)
    }

    /// Unread messages over all of the user's conversations.
    pub fn unread_total(&self, user: u64) -> Result<u64, StoreError> {
        Ok(self.memberships(user)?.iter().map(|(_, m)| m.unread).sum())
    }

    /// A message as `viewer` sees it, with its read state worked out.
    pub fn message_view(
        &self,
        viewer: u64,
        id: u64,
        record: MessageRecord,
        body: MessageBody,
        conversation: &ConversationRecord,
    ) -> Result<MessageView, StoreError> {
        let is_read = if viewer == record.sender {
            let mut all = true;
            for other in conversation.participants.iter().filter(|p| **p != viewer) {
                let marker = self
                    .membership(*other, record.conversation)?
                    .map(|m| m.read_marker);
                all &= marker.is_some_and(|m| m >= id);
            }
            all
        } else {
            self.membership(viewer, record.conversation)?
                .is_some_and(|m| m.read_marker >= id)
        };
        Ok(MessageView {
            id,
            record,
            body,
            is_read,
        })
    }

    /// Message `id` as `viewer` sees it, or `None` if it does not exist or `viewer` is not in
    /// its conversation; [`StoreError::Damaged`] if it cannot be read back.
    pub fn visible_message(&self, viewer: u64, id: u64) -> Result<Option<MessageView>, StoreError> {
        let damaged = || StoreError::Damaged {
            table: MESSAGES.name().to_owned(),
            key: id.to_string(),
        };
        let Some(bytes) = self.table(MESSAGES)?.get(id)? else {
            return Ok(None);
        };
        // Undecodable, it names no conversation to check the viewer against; all it tells
        // anyone is that the id was given, which later ids tell as well.
        let record = self
            .decoded::<MessageRecord>(&MESSAGES, id, bytes.value())?
            .ok_or_else(damaged)?;
        if self.membership(viewer, record.conversation)?.is_none() {
            return Ok(None);
        }
        let Some(conversation) = self.conversation(record.conversation)? else {
            return Ok(None);
        };
        let body = self.opened(id, &record)?.ok_or_else(damaged)?;
        self.message_view(viewer, id, record, body, &conversation)
            .map(Some)
    }

    /// One page of history of `conv` as `viewer` sees it.
    pub fn message_page(
        &self,
        viewer: u64,
        conv: u64,
        conversation: &ConversationRecord,
        cursor: Cursor,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let snapshot = self.history()?;
        let history = snapshot.view();
        let mut ids: Vec<u64> = Vec::with_capacity(limit);
        match cursor {
            Cursor::Latest | Cursor::Before(_) => {
                let below = match cursor {
                    Cursor::Before(0) => None,
                    Cursor::Before(b) => Some(0..=b - 1),
                    _ => Some(0..=u64::MAX),
                };
                if let Some(below) = below {
                    for id in history.ids(conv, below)?.rev().take(limit) {
                        ids.push(id?);
                    }
                }
                ids.reverse();
            }
            Cursor::After(a) => {
                for id in history
                    .ids(conv, a.saturating_add(1)..=u64::MAX)?
                    .take(limit)
                {
                    ids.push(id?);
                }
            }
        }
        let (has_older, has_newer) = match (ids.first(), ids.last()) {
            (Some(&first), Some(&last)) => (
                first > 0 && history.any(conv, 0..=first - 1)?,
                history.any(conv, last.saturating_add(1)..=u64::MAX)?,
            ),
            // An empty page: whatever lies on the far side of the cursor.
            _ => match cursor {
                Cursor::Latest => (false, false),
                Cursor::Before(b) => (false, history.any(conv, b..=u64::MAX)?),
                Cursor::After(a) => (history.any(conv, 0..=a)?, false),
            },
        };
        let mut messages = Vec::with_capacity(ids.len());
        for &id in &ids {
            if let Some((record, body)) = self.readable_message(id)? {
                messages.push(self.message_view(viewer, id, record, body, conversation)?);
            }
        }
        Ok(MessagePage {
            messages,
            covers: ids.first().zip(ids.last()).map(|(f, l)| (*f, *l)),
            total: conversation.message_count,
            has_older,
            has_newer,
        })
    }
}

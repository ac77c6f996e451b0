//! Queries on one read snapshot. Runs on the blocking pool via [`super::Store::read`].
//!
//! Everything here answers from indexes kept by the writer: listing a user's conversations
//! ranges over their memberships, a history page ranges over one conversation's index and
//! the unindexed tail ([`super::history`]).

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::StoreError;
use super::history::{History, Tail, read_tail};
use super::records::{
    ConversationRecord, MembershipRecord, MessageBody, MessageRecord, UserRecord, decode,
};
use super::tables::{
    CONVERSATION_MESSAGES, CONVERSATIONS, MEMBERSHIPS, MESSAGES, META, QUEUE, QUEUE_LENGTHS,
    USERNAMES, USERS, meta,
};
use crate::crypto::Keyring;

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
    /// Priority rank of the queue entry (see [`super::records::Priority::rank`]).
    pub rank: u8,
    pub id: u64,
    pub record: MessageRecord,
    pub body: MessageBody,
}

/// One page of a conversation's history, oldest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
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

impl<'a> Reader<'a> {
    pub(super) fn new(txn: &'a ReadTransaction, keyring: &'a Keyring) -> Self {
        Self { txn, keyring }
    }

    /// A counter of `name_value` (0 when absent).
    pub fn meta(&self, key: &str) -> Result<u64, StoreError> {
        Ok(meta::get(&self.table(META)?, key)?.unwrap_or(0))
    }

    /// The history index of this snapshot and its tail (read once per query).
    fn history(&self) -> Result<SnapshotHistory, StoreError> {
        let indexed_to = self.meta(meta::INDEXED_TO)?;
        let tail = read_tail(&self.table(MESSAGES)?, indexed_to)?;
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
    /// record that cannot be read is left out (and logged): the daemon still starts, and that
    /// user's requests fail as they did before the directory was loaded at start.
    pub fn user_names(&self) -> Result<Vec<(u64, Option<String>, bool)>, StoreError> {
        let table = self.table(USERS)?;
        let mut users = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
        for row in table.iter()? {
            let (id, bytes) = row?;
            match decode::<UserRecord>(bytes.value()) {
                Ok(record) => {
                    users.push((id.value(), record.username, record.password_hash.is_some()))
                }
                Err(e) => {
                    tracing::error!(user = id.value(), error = %e, "user record cannot be read; left out of the directory")
                }
            }
        }
        Ok(users)
    }

    pub fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match self.table(USERS)?.get(id)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of `user`'s queue after `after` (a previous entry's rank and id),
    /// in delivery order (high priority first, then oldest first), with their messages opened;
    /// and the last entry looked at, to continue from. An entry whose message is gone or
    /// cannot be opened is skipped (and logged), so one bad record never stalls a queue.
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
            let Some(record) = self.message(id)? else {
                continue;
            };
            match self.open_body(&record) {
                Ok(body) => out.push(QueuedMessage {
                    rank,
                    id,
                    record,
                    body,
                }),
                Err(e) => {
                    tracing::error!(message = id, error = %e, "queued message cannot be opened; skipped")
                }
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
    /// `limit`; and whether more follow.
    pub fn messages_since(
        &self,
        user: u64,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<QueuedMessage>, bool), StoreError> {
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
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.message(id)? {
                let body = self.open_body(&record)?;
                out.push(QueuedMessage {
                    rank: record.priority.rank(),
                    id,
                    record,
                    body,
                });
            }
        }
        Ok((out, more))
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
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            let (key, value) = entry?;
            let membership: MembershipRecord = decode(value.value())?;
            if membership.unread == 0 {
                continue;
            }
            total += membership.unread;
            let conv = key.value().1;
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
                found.sort_by_key(|(id, _, _)| *id);
                found.truncate(limit);
            }
        }
        found.sort_by_key(|(id, _, _)| *id);
        found.truncate(limit);
        let mut views = Vec::with_capacity(found.len());
        for (id, record, conv) in found {
            if let Some(conversation) = self.conversation(conv)? {
                views.push(self.message_view(user, id, record, &conversation)?);
            }
        }
        Ok((total, views))
    }

    pub fn conversation(&self, id: u64) -> Result<Option<ConversationRecord>, StoreError> {
        match self.table(CONVERSATIONS)?.get(id)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    pub fn membership(&self, user: u64, conv: u64) -> Result<Option<MembershipRecord>, StoreError> {
        match self.table(MEMBERSHIPS)?.get((user, conv))? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    pub fn message(&self, id: u64) -> Result<Option<MessageRecord>, StoreError> {
        match self.table(MESSAGES)?.get(id)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Opens a message's sealed text and metadata.
    pub fn open_body(&self, record: &MessageRecord) -> Result<MessageBody, StoreError> {
        decode(&self.keyring.open(&record.body)?)
    }

    /// Opens a sealed conversation subject.
    pub fn open_subject(&self, sealed: Option<&[u8]>) -> Result<Option<String>, StoreError> {
        sealed
            .map(|s| {
                String::from_utf8(self.keyring.open(s)?)
                    .map_err(|e| StoreError::Encoding(e.to_string()))
            })
            .transpose()
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
        let subject = self.open_subject(record.subject.as_deref())?;
        let last_message = match record.last_message_id {
            Some(id) => match self.message(id)? {
                Some(msg) => Some(self.message_view(user, id, msg, &record)?),
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
        let table = self.table(MEMBERSHIPS)?;
        let mut out = Vec::new();
        for entry in table.range((user, 0)..=(user, u64::MAX))? {
            let (key, value) = entry?;
            let membership: MembershipRecord = decode(value.value())?;
            if membership.archived == archived {
                out.push((key.value().1, membership));
            }
        }
        // Most recently active first (created, or last message); ties by newest id.
        out.sort_by(|(a_id, a), (b_id, b)| {
            (b.last_activity_ms, b_id).cmp(&(a.last_activity_ms, a_id))
        });
        Ok(out)
    }

    /// Unread messages over all of the user's conversations.
    pub fn unread_total(&self, user: u64) -> Result<u64, StoreError> {
        let table = self.table(MEMBERSHIPS)?;
        let mut total = 0;
        for entry in table.range((user, 0)..=(user, u64::MAX))? {
            let (_, value) = entry?;
            total += decode::<MembershipRecord>(value.value())?.unread;
        }
        Ok(total)
    }

    /// A message as `viewer` sees it: opened, with its read state worked out.
    pub fn message_view(
        &self,
        viewer: u64,
        id: u64,
        record: MessageRecord,
        conversation: &ConversationRecord,
    ) -> Result<MessageView, StoreError> {
        let body = self.open_body(&record)?;
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
    /// its conversation.
    pub fn visible_message(&self, viewer: u64, id: u64) -> Result<Option<MessageView>, StoreError> {
        let Some(record) = self.message(id)? else {
            return Ok(None);
        };
        if self.membership(viewer, record.conversation)?.is_none() {
            return Ok(None);
        }
        let Some(conversation) = self.conversation(record.conversation)? else {
            return Ok(None);
        };
        self.message_view(viewer, id, record, &conversation)
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
        for id in ids {
            if let Some(record) = self.message(id)? {
                messages.push(self.message_view(viewer, id, record, conversation)?);
            }
        }
        Ok(MessagePage {
            messages,
            total: conversation.message_count,
            has_older,
            has_newer,
        })
    }
}

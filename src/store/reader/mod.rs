//! Queries on one read snapshot. Runs on the blocking pool via [`super::Store::read`].
//!
//! Everything here answers from indexes kept by the writer: listing a user's conversations
//! ranges over their memberships, a history page ranges over one conversation's index and
//! the unindexed tail ([`super::history`]).
//!
//! A record that cannot be read back (damaged on the disk) is left out of whatever view meets
//! it, and reported once ([`super::damage`]); only a failure to read at all fails a query.
//!
//! The snapshot handle ([`Reader`]), its table access and the view types are here; the queries
//! are grouped by what they read, one `impl Reader` per file: `users`, `queues`,
//! `conversations`, `messages`, `outbox`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata};

use redb::TableHandle;
use serde::Deserialize;

mod conversations;
mod messages;
mod outbox;
mod queues;
mod users;

use super::StoreError;
use super::damage::DamagedRecords;
use super::history::{History, Tail, read_tail};
use super::records::{conversation_counters, decode};
use super::tables::{
    CONVERSATION_HOST_IDS, CONVERSATION_MESSAGES, CONVERSATIONS, DATA_KEYS, DISABLED_USERS,
    MEMBERSHIPS, MESSAGES, META, QUEUE, QUEUE_LENGTHS, READ_STEPS, USERNAMES, USERS, meta,
};
use crate::crypto::{Key, Keyring, OpenError};
use crate::model::{
    ConversationRecord, Membership, MembershipRecord, MessageBody, MessageRecord, UserRecord,
};

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
    /// When the receiver's read marker first covered it (Unix ms); without a named receiver,
    /// when the last of the other participants' did. `None` while unread, and for reads
    /// before schema 4, which recorded no time. The same for every viewer.
    pub read_at_ms: Option<u64>,
}

/// A conversation as one user sees it.
#[derive(Debug, Clone)]
pub struct ConversationView {
    pub id: u64,
    pub record: ConversationRecord,
    pub subject: Option<String>,
    pub membership: Membership,
    pub last_message: Option<MessageView>,
    /// The host app's id for it (contract 8.3), if its backend named it by one.
    pub host_id: Option<u64>,
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
}

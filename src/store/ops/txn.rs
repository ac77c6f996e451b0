//! [`Tables`]: the tables of one batch's write transaction, the records the batch has read,
//! and the counters it advances. Every op works on one of these.

use redb::{ReadableTable, Table, WriteTransaction};

use super::messages::StoredMessage;
use super::tail::WriterTail;
use super::write_back::WriteBack;
use super::{OpError, WriteError, rd, wr};
use crate::model::{ConversationRecord, MembershipRecord};
use crate::store::StoreError;
use crate::store::damage::DamagedRecords;
use crate::store::records::{decode, encode};
use crate::store::tables::{
    CLIENT_IDS, CONVERSATION_HOST_IDS, CONVERSATION_KEYS, CONVERSATION_MESSAGES, CONVERSATIONS,
    DATA_KEYS, DISABLED_USERS, EVENTS, HOST_CONVERSATIONS, MEMBERSHIPS, MESSAGES, META, QUEUE,
    QUEUE_LENGTHS, READ_STEPS, USERNAMES, USERS, meta,
};

/// A user's queue length as a batch sees it: what it is now, and what the table holds (0: no
/// row). A batch that adds as many entries as it removes, as a group message's does while the
/// previous message's delivered entries go, leaves the row as it was and writes nothing.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct QueueLength {
    now: u64,
    stored: u64,
}

/// The tables of one write transaction, plus the id counters it advances.
pub(in crate::store) struct Tables<'txn> {
    /// The unindexed tail, shared with the next batches (appends push, a fold empties it once
    /// committed).
    pub(super) tail: &'txn mut WriterTail,
    /// Where a message record that cannot be decoded is reported.
    pub(super) damaged: &'txn DamagedRecords,
    pub(in crate::store) meta: Table<'txn, &'static str, u64>,
    pub(super) users: Table<'txn, u64, &'static [u8]>,
    pub(super) usernames: Table<'txn, &'static str, u64>,
    conversations: Table<'txn, u64, &'static [u8]>,
    pub(super) conversation_keys: Table<'txn, &'static [u8], u64>,
    pub(super) messages: Table<'txn, u64, &'static [u8]>,
    pub(super) conversation_messages: Table<'txn, (u64, u64), ()>,
    pub(super) memberships: Table<'txn, (u64, u64), &'static [u8]>,
    pub(super) client_ids: Table<'txn, (u64, &'static str), u64>,
    pub(super) queue: Table<'txn, (u64, u8, u64), u64>,
    pub(super) queue_lengths: Table<'txn, u64, u64>,
    pub(super) host_conversations: Table<'txn, u64, u64>,
    pub(super) conversation_host_ids: Table<'txn, u64, u64>,
    pub(super) disabled_users: Table<'txn, u64, u64>,
    pub(super) data_keys: Table<'txn, u64, &'static [u8]>,
    /// The webhook outbox ([`super::outbox`]).
    pub(super) events: Table<'txn, u64, &'static [u8]>,
    read_steps: Table<'txn, (u64, u64, u64), u64>,
    /// Conversation records, memberships and queue lengths this batch has read, with the
    /// ones it changed written back once when the batch ends ([`Tables::flush`]): a batch of a
    /// thousand messages in one conversation rewrites its record, both memberships and the
    /// recipient's queue length once, not a thousand times. Every read and write of those
    /// three tables inside a batch goes through these, so they never disagree with the tables.
    pub(super) conversation_cache: WriteBack<u64, ConversationRecord>,
    pub(super) membership_cache: WriteBack<(u64, u64), MembershipRecord>,
    pub(super) queue_length_cache: WriteBack<u64, QueueLength>,
    /// Messages appended in this transaction, for fan-out once it commits.
    pub(in crate::store) stored: Vec<StoredMessage>,
    /// Queue lengths written back, as (user, non-empty), for the writer's set of users with
    /// queued entries once it commits.
    pub(in crate::store) queue_changes: Vec<(u64, bool)>,
    /// `queues.message_queue_max_size` (for a replay: the bound the batch was applied with).
    pub(super) queue_max: u64,
    /// Entries in all queues (saved to `name_value` at the end of the batch).
    pub(in crate::store) queue_pending: u64,
    /// Queue entries ever dead-lettered, and those added by this batch.
    pub(super) dead_letters: u64,
    pub(in crate::store) dead_letters_added: u64,
    pub(in crate::store) next_message_id: u64,
    pub(super) next_conversation_id: u64,
    /// `None` until the first local account is registered.
    pub(super) next_local_user_id: Option<u64>,
    /// Conversations created in this transaction, as (id, creator), for their webhook events.
    pub(super) conversations_created: Vec<(u64, u64)>,
    /// `None` until the first webhook event is written.
    pub(in crate::store) next_event_id: Option<u64>,
    /// Events in the outbox.
    pub(in crate::store) events_pending: u64,
    /// Events ever dropped by the outbox's bound, those this batch dropped, and the newest id
    /// among the latter.
    pub(super) events_dropped: u64,
    pub(in crate::store) events_dropped_added: u64,
    pub(in crate::store) events_dropped_through: u64,
}

impl<'txn> Tables<'txn> {
    pub(in crate::store) fn open(
        txn: &'txn WriteTransaction,
        queue_max: u64,
        tail: &'txn mut WriterTail,
        damaged: &'txn DamagedRecords,
    ) -> Result<Self, StoreError> {
        let table = txn.open_table(META)?;
        let next_message_id = meta::get(&table, meta::NEXT_MESSAGE_ID)?.unwrap_or(1);
        let next_conversation_id = meta::get(&table, meta::NEXT_CONVERSATION_ID)?.unwrap_or(1);
        let next_local_user_id = meta::get(&table, meta::NEXT_LOCAL_USER_ID)?;
        let queue_pending = meta::get(&table, meta::QUEUE_PENDING)?.unwrap_or(0);
        let dead_letters = meta::get(&table, meta::DEAD_LETTERS)?.unwrap_or(0);
        let next_event_id = meta::get(&table, meta::NEXT_EVENT_ID)?;
        let events_pending = meta::get(&table, meta::EVENTS_PENDING)?.unwrap_or(0);
        let events_dropped = meta::get(&table, meta::EVENTS_DROPPED)?.unwrap_or(0);
        Ok(Self {
            tail,
            damaged,
            meta: table,
            users: txn.open_table(USERS)?,
            usernames: txn.open_table(USERNAMES)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            conversation_keys: txn.open_table(CONVERSATION_KEYS)?,
            messages: txn.open_table(MESSAGES)?,
            conversation_messages: txn.open_table(CONVERSATION_MESSAGES)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            queue: txn.open_table(QUEUE)?,
            queue_lengths: txn.open_table(QUEUE_LENGTHS)?,
            host_conversations: txn.open_table(HOST_CONVERSATIONS)?,
            conversation_host_ids: txn.open_table(CONVERSATION_HOST_IDS)?,
            disabled_users: txn.open_table(DISABLED_USERS)?,
            data_keys: txn.open_table(DATA_KEYS)?,
            events: txn.open_table(EVENTS)?,
            read_steps: txn.open_table(READ_STEPS)?,
            conversation_cache: WriteBack::default(),
            membership_cache: WriteBack::default(),
            queue_length_cache: WriteBack::default(),
            stored: Vec::new(),
            queue_changes: Vec::new(),
            queue_max,
            queue_pending,
            dead_letters,
            dead_letters_added: 0,
            next_message_id,
            next_conversation_id,
            next_local_user_id,
            conversations_created: Vec::new(),
            next_event_id,
            events_pending,
            events_dropped,
            events_dropped_added: 0,
            events_dropped_through: 0,
        })
    }

    /// Writes back every cached record the batch changed (a failure aborts the batch).
    pub(in crate::store) fn flush(&mut self) -> Result<(), StoreError> {
        for (id, record) in self.conversation_cache.take_dirty() {
            self.conversations.insert(id, encode(record)?.as_slice())?;
        }
        for (key, record) in self.membership_cache.take_dirty() {
            self.memberships.insert(key, encode(record)?.as_slice())?;
        }
        for (user, length) in self.queue_length_cache.take_dirty() {
            if length.now == length.stored {
                continue;
            }
            length.stored = length.now;
            self.queue_changes.push((user, length.now > 0));
            if length.now == 0 {
                self.queue_lengths.remove(user)?;
            } else {
                self.queue_lengths.insert(user, length.now)?;
            }
        }
        Ok(())
    }

    /// Moves `user`'s read marker in `conversation` to `marker` at `now_ms`, recording when
    /// it did if the move covers messages from others (`unread` > 0, the user's unread count
    /// before the move): the read time of those messages (`convid_userid_marker_readms`).
    pub(super) fn move_read_marker(
        &mut self,
        user: u64,
        conversation: u64,
        membership: &mut MembershipRecord,
        unread: u64,
        marker: u64,
        now_ms: u64,
    ) -> Result<(), OpError> {
        if marker <= membership.read_marker {
            return Ok(());
        }
        if unread > 0 {
            self.read_steps
                .insert((conversation, user, marker), now_ms)
                .map_err(wr)?;
        }
        membership.read_marker = marker;
        membership.read_at_ms = now_ms;
        Ok(())
    }

    /// A conversation record (read through the batch's cache).
    pub(super) fn conversation(&mut self, id: u64) -> Result<Option<&ConversationRecord>, OpError> {
        let table = &self.conversations;
        self.conversation_cache
            .get(id, || match table.get(id).map_err(rd)? {
                Some(bytes) => Ok(Some(decode(bytes.value())?)),
                None => Ok(None),
            })
    }

    /// A membership record, or `None` if the user is not in the conversation.
    pub(super) fn membership(
        &mut self,
        user: u64,
        conversation: u64,
    ) -> Result<Option<MembershipRecord>, OpError> {
        let table = &self.memberships;
        let key = (user, conversation);
        let found = self
            .membership_cache
            .get(key, || match table.get(key).map_err(rd)? {
                Some(bytes) => Ok(Some(decode(bytes.value())?)),
                None => Ok(None),
            })?;
        Ok(found.copied())
    }

    /// A membership the caller must be in.
    pub(super) fn member(
        &mut self,
        user: u64,
        conversation: u64,
    ) -> Result<MembershipRecord, OpError> {
        self.membership(user, conversation)?
            .ok_or(WriteError::ConversationNotFound.into())
    }

    /// Entries in `user`'s queue. A failed read aborts the batch (`wr`, not `rd`): dequeue
    /// and expiry ask after they removed rows, so refusing just the one request would commit
    /// those removals with stale lengths.
    pub(super) fn queue_length(&mut self, user: u64) -> Result<u64, OpError> {
        let table = &self.queue_lengths;
        let found = self.queue_length_cache.get(user, || {
            Ok(table.get(user).map_err(wr)?.map(|v| QueueLength {
                now: v.value(),
                stored: v.value(),
            }))
        })?;
        Ok(found.map_or(0, |length| length.now))
    }

    /// Sets `user`'s queue length, written back at the end of the batch (a length of 0
    /// removes the row).
    pub(super) fn set_queue_length(&mut self, user: u64, length: u64) -> Result<(), OpError> {
        if let Some(cached) = self.queue_length_cache.get_mut(user) {
            cached.now = length;
            return Ok(());
        }
        // No row, or not read by this batch yet (the callers read it first): the stored
        // length is what the table holds.
        let stored = self.queue_length(user)?;
        self.queue_length_cache.put(
            user,
            QueueLength {
                now: length,
                stored,
            },
        );
        Ok(())
    }

    pub(in crate::store) fn save_counters(&mut self) -> Result<(), StoreError> {
        self.meta
            .insert(meta::NEXT_MESSAGE_ID, self.next_message_id)?;
        self.meta
            .insert(meta::NEXT_CONVERSATION_ID, self.next_conversation_id)?;
        if let Some(next) = self.next_local_user_id {
            self.meta.insert(meta::NEXT_LOCAL_USER_ID, next)?;
        }
        self.meta.insert(meta::QUEUE_PENDING, self.queue_pending)?;
        self.meta.insert(meta::DEAD_LETTERS, self.dead_letters)?;
        // Only once webhooks have written an event: a daemon without them keeps no counter
        // (and so reserves no ids for one).
        if let Some(next) = self.next_event_id {
            self.meta.insert(meta::NEXT_EVENT_ID, next)?;
            self.meta
                .insert(meta::EVENTS_PENDING, self.events_pending)?;
            self.meta
                .insert(meta::EVENTS_DROPPED, self.events_dropped)?;
        }
        Ok(())
    }

    /// Moves the tail's oldest `count` messages (all, if it holds fewer) into the history and
    /// client-id indexes, in key order, so each leaf is written once for all the entries in it.
    /// Returns the newest id now indexed: every message up to it is in both indexes.
    pub(in crate::store) fn fold_tail(&mut self, count: usize) -> Result<u64, StoreError> {
        let folded = count.max(1).min(self.tail.history.len());
        // Called after the batch's last append: folding the whole tail indexes every id below
        // the next one; part of it, every id up to the last one folded (the tail is in id
        // order, so the rest stays above it).
        let through = match self.tail.history.get(folded) {
            Some(_) => self.tail.history[folded - 1].1,
            None => self.next_message_id - 1,
        };
        let mut history = self.tail.history[..folded].to_vec();
        history.sort_unstable();
        for key in history {
            self.conversation_messages.insert(key, ())?;
        }
        let mut client_ids = self.tail.client_ids_through(through);
        client_ids.sort_unstable();
        for (sender, client_id, id) in client_ids {
            self.client_ids.insert((sender, client_id), id)?;
        }
        self.meta.insert(meta::INDEXED_TO, through)?;
        Ok(through)
    }

    /// Messages in the unindexed tail.
    pub(in crate::store) fn tail_len(&self) -> usize {
        self.tail.len()
    }
}

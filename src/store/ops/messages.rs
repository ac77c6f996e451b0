//! Appending a message (idempotent by the sender's `client_id`) and broadcasting one to many
//! users.

use std::sync::Arc;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::conversations::{self, NewConversation};
use super::{OpError, Tables, WriteError, moderation, queues, rd, wr};
use crate::model::{
    ConversationCounters, ConversationRecord, MembershipRecord, MessageBody, MessageRecord,
    Priority,
};
use crate::store::StoreError;
use crate::store::reader::{ConversationView, MessageView};
use crate::store::records::encode;

/// A message to append. The journal keeps what is stored; `plain` and `origin` only serve
/// the fan-out of the commit that stores it, and are not kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMessage {
    pub conversation: u64,
    pub sender: u64,
    pub receiver: Option<u64>,
    pub message_type: String,
    pub priority: Priority,
    pub client_id: Option<String>,
    /// Sealed [`MessageBody`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The same body in the clear, never stored: handed to fan-out after the commit.
    #[serde(skip)]
    pub plain: Arc<MessageBody>,
    /// The WebSocket session it came from, so fan-out does not echo it back there.
    #[serde(skip)]
    pub origin: Option<u64>,
}

/// Result of [`crate::store::WriterHandle::append_message`].
#[derive(Debug, Clone)]
pub enum MessageAppended {
    /// Stored now, durably. The record's `body` is left empty (the sealed body is in the
    /// table; the sender has it in the clear).
    Stored { id: u64, record: MessageRecord },
    /// The sender's `client_id` was used before: this is the message it named.
    Duplicate { id: u64 },
}

/// A message that has just been committed, in commit order, for fan-out.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: u64,
    /// Without its sealed `body` (`plain` has it in the clear).
    pub record: MessageRecord,
    pub plain: Arc<MessageBody>,
    /// Everyone in the conversation.
    pub participants: Vec<u64>,
    pub origin: Option<u64>,
}

/// A broadcast: the same message to each recipient.
#[derive(Debug, Serialize, Deserialize)]
pub struct Broadcast {
    pub sender: u64,
    pub message_type: String,
    pub priority: Priority,
    pub recipients: Vec<u64>,
    /// The sealed body, stored once per recipient (the same encryption of the same text).
    pub body: Arc<Vec<u8>>,
    #[serde(skip)]
    pub plain: Arc<MessageBody>,
}

/// Result of [`crate::store::WriterHandle::broadcast`].
#[derive(Debug, Clone, Default)]
pub struct Broadcasted {
    /// How many recipients got the message.
    pub delivered: u64,
    /// The one-to-one conversations it created, in recipient order, so that their
    /// participants can be told (a first broadcast to 10,000 users creates 10,000).
    pub created: Vec<BroadcastConversation>,
}

/// A conversation a broadcast created, as the broadcast left it: everything its participants'
/// views are made of, so announcing it reads nothing back from the store.
#[derive(Debug, Clone)]
pub struct BroadcastConversation {
    pub id: u64,
    pub record: ConversationRecord,
    /// Each participant's membership, in the order of `record.participants`.
    pub memberships: Vec<(u64, MembershipRecord)>,
    /// The broadcast's message in it, its only one.
    pub message: u64,
    /// Without its sealed `body`, which is the broadcast's.
    pub message_record: MessageRecord,
}

impl BroadcastConversation {
    /// `user`'s view of it right after the broadcast's commit, the one
    /// [`crate::store::reader::Reader::conversation_view`] would read then; `None` if
    /// `user` is not in it. `sealed` and `plain` are the broadcast's body (the stored record
    /// has the sealed one: without it the message would look like a tombstone).
    pub fn view(&self, user: u64, sealed: &[u8], plain: &MessageBody) -> Option<ConversationView> {
        let (_, membership) = self.memberships.iter().find(|(u, _)| *u == user)?;
        // The conversation is new and holds only this message: nobody but its sender has a
        // read marker on it, so it is unread for the recipient and, for the sender, not yet
        // read by "every recipient"; and nobody's marker has ever covered it (no `read_at`).
        // A new conversation has no host id either: one is recorded only for a conversation
        // that exists (`conversations::host`).
        let last_message = MessageView {
            id: self.message,
            record: MessageRecord {
                body: sealed.to_vec(),
                ..self.message_record.clone()
            },
            body: plain.clone(),
            is_read: false,
            read_at_ms: None,
        };
        Some(ConversationView {
            id: self.id,
            record: self.record.clone(),
            subject: None,
            membership: membership.view(&ConversationCounters::from(&self.record)),
            last_message: Some(last_message),
            host_id: None,
        })
    }
}

/// Stores a message: the record, the conversation's counters, the sender's read state, and a
/// queue entry for each recipient (the other members' rows are not touched: their view
/// follows from the conversation's counters). A `client_id` the sender used before answers with the message it
/// named instead.
pub(super) fn append(
    t: &mut Tables<'_>,
    new: NewMessage,
    now_ms: u64,
) -> Result<MessageAppended, OpError> {
    // Read phase: everything checked and decoded before anything is written.
    let Some(conversation) = t.conversation(new.conversation)? else {
        return Err(WriteError::ConversationNotFound.into());
    };
    let participants = conversation.participants.clone();
    let count_before = conversation.message_count;
    if !participants.contains(&new.sender) {
        return Err(WriteError::ConversationNotFound.into());
    }
    moderation::may_send(t, new.sender)?;
    let receiver = match new.receiver {
        Some(r) if r == new.sender => return Err(WriteError::ReceiverIsSender.into()),
        Some(r) if !participants.contains(&r) => {
            return Err(WriteError::ReceiverNotParticipant(r).into());
        }
        Some(r) => Some(r),
        None if participants.len() == 2 => participants.iter().copied().find(|p| *p != new.sender),
        None => None,
    };
    if let Some(client_id) = &new.client_id {
        let earlier = match t.tail.client_id(new.sender, client_id) {
            Some(id) => Some(id),
            None => t
                .client_ids
                .get((new.sender, client_id.as_str()))
                .map_err(rd)?
                .map(|v| v.value()),
        };
        if let Some(id) = earlier {
            return Ok(MessageAppended::Duplicate { id });
        }
    }
    // Only the sender's own row changes: what the message changes for everyone else (their
    // unread count, the newest message, the activity time, an archive undone) follows from
    // the conversation's record (`MembershipRecord::view`).
    let sender_membership = t
        .membership(new.sender, new.conversation)?
        .unwrap_or_default();
    // Loaded now so that `enqueue` below reads them from the cache and cannot fail half-way
    // through this request's writes.
    for user in participants.iter().filter(|u| **u != new.sender) {
        t.queue_length(*user)?;
    }

    let id = t.next_message_id;
    let mut record = MessageRecord {
        conversation: new.conversation,
        sender: new.sender,
        receiver,
        message_type: new.message_type,
        priority: new.priority,
        client_id: new.client_id,
        created_at_ms: now_ms,
        body: new.body,
    };
    let record_bytes = encode(&record)?;
    // Stored; the answer and the fan-out carry the body in the clear (`plain`), so the sealed
    // one is not copied into them. The record they carry therefore has an empty `body`: do not
    // ask it `is_deleted()` (which means an empty body in a stored record) or build message
    // JSON from it; read the message back for that, as the HTTP send does.
    record.body = Vec::new();

    // Write phase.
    t.next_message_id += 1;
    t.messages.insert(id, record_bytes.as_slice()).map_err(wr)?;
    // The history and client-id indexes get it at the next fold.
    let client = record.client_id.clone().map(|c| (new.sender, c));
    t.tail.push(new.conversation, id, client);
    if let Some(conversation) = t.conversation_cache.get_mut(new.conversation) {
        conversation.last_message_id = Some(id);
        conversation.updated_at_ms = now_ms;
        conversation.message_count += 1;
    }
    let count = count_before + 1;
    let mut membership = sender_membership;
    // Your own message is read by you, and everything before it too.
    let unread = count_before.saturating_sub(membership.read_count);
    t.move_read_marker(
        new.sender,
        new.conversation,
        &mut membership,
        unread,
        id,
        now_ms,
    )?;
    membership.read_count = count;
    // Your own message does not bring back a conversation you archived (a message from
    // someone else does: the counts differ from then on).
    if membership.archived_at_count.is_some() {
        membership.archived_at_count =
            (membership.archived_at_count == Some(count_before)).then_some(count);
    }
    t.membership_cache
        .put((new.sender, new.conversation), membership);
    // Every recipient gets a queue entry; it leaves once delivered to a live socket.
    let rank = record.priority.rank();
    for user in &participants {
        if *user != new.sender {
            queues::enqueue(t, *user, rank, id, now_ms)?;
        }
    }
    t.stored.push(StoredMessage {
        id,
        record: record.clone(),
        plain: new.plain,
        participants,
        origin: new.origin,
    });
    Ok(MessageAppended::Stored { id, record })
}

/// One message per recipient in their one-to-one conversation with the sender (created when
/// missing); answers how many got it and which conversations it created. All or nothing: a
/// failure part-way rolls the batch back rather than leave half a broadcast behind an error.
pub(super) fn broadcast(
    t: &mut Tables<'_>,
    broadcast: Broadcast,
    now_ms: u64,
) -> Result<Broadcasted, OpError> {
    broadcast_all(t, broadcast, now_ms).map_err(|e| match e {
        OpError::Refused(WriteError::Store(e)) => OpError::Abort(e),
        other => other,
    })
}

fn broadcast_all(
    t: &mut Tables<'_>,
    broadcast: Broadcast,
    now_ms: u64,
) -> Result<Broadcasted, OpError> {
    // Before anything is written: a refusal from the first recipient's message would keep the
    // conversation created for it.
    moderation::may_send(t, broadcast.sender)?;
    let mut done = Broadcasted::default();
    for user in broadcast.recipients {
        if user == broadcast.sender {
            continue;
        }
        let conversation = conversations::create(
            t,
            NewConversation {
                creator: broadcast.sender,
                participants: vec![user],
                property: None,
                booking: None,
                subject: None,
            },
            now_ms,
        )?;
        let appended = append(
            t,
            NewMessage {
                conversation: conversation.id,
                sender: broadcast.sender,
                receiver: Some(user),
                message_type: broadcast.message_type.clone(),
                priority: broadcast.priority,
                client_id: None,
                body: broadcast.body.to_vec(),
                plain: broadcast.plain.clone(),
                origin: None,
            },
            now_ms,
        )?;
        done.delivered += 1;
        if let (true, MessageAppended::Stored { id, record }) = (conversation.created, appended) {
            // Read back from the batch's cache, where the two writes above left them. They are
            // there: missing, they mean a broken batch, which must not commit half a broadcast.
            let missing = || {
                let what = format!(
                    "conversation {} left the batch that created it",
                    conversation.id
                );
                OpError::Abort(StoreError::Storage(what))
            };
            let conversation_record = t
                .conversation(conversation.id)?
                .cloned()
                .ok_or_else(missing)?;
            let mut memberships = Vec::with_capacity(conversation_record.participants.len());
            for member in &conversation_record.participants {
                let membership = t
                    .membership(*member, conversation.id)?
                    .ok_or_else(missing)?;
                memberships.push((*member, membership));
            }
            done.created.push(BroadcastConversation {
                id: conversation.id,
                record: conversation_record,
                memberships,
                message: id,
                message_record: record,
            });
        }
    }
    Ok(done)
}

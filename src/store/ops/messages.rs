//! Appending a message (idempotent by the sender's `client_id`) and broadcasting one to many
//! users.

use std::sync::Arc;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::conversations::{self, NewConversation};
use super::{OpError, Tables, WriteError, moderation, queues, rd, wr};
use crate::model::{MessageBody, MessageRecord, Priority};
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
/// missing); answers how many got it. All or nothing: a failure part-way rolls the batch back
/// rather than leave half a broadcast behind an error.
pub(super) fn broadcast(
    t: &mut Tables<'_>,
    broadcast: Broadcast,
    now_ms: u64,
) -> Result<u64, OpError> {
    broadcast_all(t, broadcast, now_ms).map_err(|e| match e {
        OpError::Refused(WriteError::Store(e)) => OpError::Abort(e),
        other => other,
    })
}

fn broadcast_all(t: &mut Tables<'_>, broadcast: Broadcast, now_ms: u64) -> Result<u64, OpError> {
    // Before anything is written: a refusal from the first recipient's message would keep the
    // conversation created for it.
    moderation::may_send(t, broadcast.sender)?;
    let mut delivered = 0;
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
        )?
        .id;
        append(
            t,
            NewMessage {
                conversation,
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
        delivered += 1;
    }
    Ok(delivered)
}

//! What operators do to users and messages (contract section 9): disable and enable a user,
//! give each sender a data key, delete one message (a tombstone), erase a user.
//!
//! A tombstone is the message record with an empty body: who sent it, when and where stay (the
//! conversation's history and counters keep their shape), what was written is gone. Erasure
//! tombstones every message the user sent, removes their account, profile, queue, read state
//! and data key, and leaves them disabled so the tokens they still hold are refused. The
//! writer follows both ops with a scrub of the files ([`Op::scrubs`](super::Op::scrubs)).

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{OpError, Tables, WriteError, queues, rd, wr};
use crate::model::{MessageRecord, UserRecord};
use crate::store::records::{decode, encode};

/// Messages an op turned into tombstones, by conversation: for `message_deleted` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstoned {
    pub conversation: u64,
    /// Everyone in the conversation, who hears of it.
    pub participants: Vec<u64>,
    /// In id order.
    pub message_ids: Vec<u64>,
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    /// The user's messages, now tombstones (those that already were are not listed).
    pub tombstoned: Vec<Tombstoned>,
    /// Queue entries removed.
    pub queue_entries: u64,
    /// Conversations whose read state was removed.
    pub memberships: u64,
}

/// Whether the daemon knows `user`: a record, or a conversation they are in (a sender named
/// only by the service API has no record).
fn known(t: &mut Tables<'_>, user: u64) -> Result<bool, OpError> {
    if t.users.get(user).map_err(rd)?.is_some() {
        return Ok(true);
    }
    let mut range = t
        .memberships
        .range((user, 0)..=(user, u64::MAX))
        .map_err(rd)?;
    Ok(range.next().is_some())
}

/// Disables or enables `user`. Enabling a user who is not disabled, or disabling one twice,
/// changes nothing (and keeps the first `since`).
pub(super) fn set_disabled(
    t: &mut Tables<'_>,
    user: u64,
    disabled: bool,
    now_ms: u64,
) -> Result<(), OpError> {
    let is_disabled = t.disabled_users.get(user).map_err(rd)?.is_some();
    if !is_disabled && !known(t, user)? {
        return Err(WriteError::UserNotFound.into());
    }
    match (disabled, is_disabled) {
        (true, false) => {
            t.disabled_users.insert(user, now_ms).map_err(wr)?;
        }
        (false, true) => {
            t.disabled_users.remove(user).map_err(wr)?;
        }
        _ => {}
    }
    Ok(())
}

/// Stores `wrapped` as `user`'s data key unless they have one; answers the one stored.
pub(super) fn ensure_data_key(
    t: &mut Tables<'_>,
    user: u64,
    wrapped: Vec<u8>,
) -> Result<Vec<u8>, OpError> {
    if let Some(existing) = t.data_keys.get(user).map_err(rd)? {
        return Ok(existing.value().to_vec());
    }
    t.data_keys.insert(user, wrapped.as_slice()).map_err(wr)?;
    Ok(wrapped)
}

/// Turns message `id` into a tombstone (again, if it is one: the answer is the same).
pub(super) fn delete_message(t: &mut Tables<'_>, id: u64) -> Result<Tombstoned, OpError> {
    let Some(mut record) = message(t, id)? else {
        return Err(WriteError::MessageNotFound.into());
    };
    let participants = match t.conversation(record.conversation)? {
        Some(conversation) => conversation.participants.clone(),
        None => Vec::new(),
    };
    if !record.is_deleted() {
        tombstone(t, id, &mut record)?;
    }
    Ok(Tombstoned {
        conversation: record.conversation,
        participants,
        message_ids: vec![id],
    })
}

/// Erases `user` (see the module's comment).
pub(super) fn erase_user(t: &mut Tables<'_>, user: u64, now_ms: u64) -> Result<Erased, OpError> {
    // Read phase: everything found and decoded before the first write.
    if !known(t, user)? && t.disabled_users.get(user).map_err(rd)?.is_none() {
        return Err(WriteError::UserNotFound.into());
    }
    let record: Option<UserRecord> = match t.users.get(user).map_err(rd)? {
        Some(bytes) => Some(decode(bytes.value())?),
        None => None,
    };
    let mut conversations = Vec::new();
    for row in t
        .memberships
        .range((user, 0)..=(user, u64::MAX))
        .map_err(rd)?
    {
        conversations.push(row.map_err(rd)?.0.value().1);
    }
    let mut queued = Vec::new();
    for row in t
        .queue
        .range((user, 0, 0)..=(user, u8::MAX, u64::MAX))
        .map_err(rd)?
    {
        queued.push(row.map_err(rd)?.0.value());
    }
    // Their messages: only in their conversations, found through each one's history (the
    // index, then the tail the writer has not folded in yet), never a scan of every message.
    let mut doomed = Vec::new();
    for &conversation in &conversations {
        let mut ids = Vec::new();
        for row in t
            .conversation_messages
            .range((conversation, 0)..=(conversation, u64::MAX))
            .map_err(rd)?
        {
            ids.push(row.map_err(rd)?.0.value().1);
        }
        ids.extend(
            t.tail
                .history
                .iter()
                .filter(|(c, _)| *c == conversation)
                .map(|(_, id)| *id),
        );
        ids.sort_unstable();
        ids.dedup();
        let mut mine = Vec::new();
        for id in ids {
            if let Some(record) = message(t, id)?
                && record.sender == user
                && !record.is_deleted()
            {
                mine.push((id, record));
            }
        }
        if !mine.is_empty() {
            let participants = match t.conversation(conversation)? {
                Some(c) => c.participants.clone(),
                None => Vec::new(),
            };
            doomed.push((conversation, participants, mine));
        }
    }

    // Write phase.
    let mut tombstoned = Vec::with_capacity(doomed.len());
    for (conversation, participants, messages) in doomed {
        let mut message_ids = Vec::with_capacity(messages.len());
        for (id, mut record) in messages {
            tombstone(t, id, &mut record).map_err(abort)?;
            message_ids.push(id);
        }
        tombstoned.push(Tombstoned {
            conversation,
            participants,
            message_ids,
        });
    }
    let queue_entries = queues::dequeue(t, &queued).map_err(abort)?.len() as u64;
    for &conversation in &conversations {
        t.memberships.remove((user, conversation)).map_err(wr)?;
        t.membership_cache.forget((user, conversation));
    }
    if let Some(name) = record.as_ref().and_then(|r| {
        // Only a local account owns its name in `username_userid`.
        r.password_hash.as_ref().and(r.username.as_deref())
    }) {
        t.usernames.remove(name).map_err(wr)?;
    }
    t.users.remove(user).map_err(wr)?;
    t.data_keys.remove(user).map_err(wr)?;
    if t.disabled_users.get(user).map_err(wr)?.is_none() {
        t.disabled_users.insert(user, now_ms).map_err(wr)?;
    }
    Ok(Erased {
        tombstoned,
        queue_entries,
        memberships: conversations.len() as u64,
    })
}

/// Whether `sender` may send: not disabled (nor erased). Checked by every append, in commit
/// order, so nothing a user sends lands after the op that disabled or erased them.
pub(super) fn may_send(t: &Tables<'_>, sender: u64) -> Result<(), OpError> {
    if t.disabled_users.get(sender).map_err(rd)?.is_some() {
        return Err(WriteError::UserDisabled.into());
    }
    Ok(())
}

fn message(t: &Tables<'_>, id: u64) -> Result<Option<MessageRecord>, OpError> {
    match t.messages.get(id).map_err(rd)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// Writes `record` back without its body.
fn tombstone(t: &mut Tables<'_>, id: u64, record: &mut MessageRecord) -> Result<(), OpError> {
    record.body = Vec::new();
    let bytes = encode(&*record)?;
    t.messages.insert(id, bytes.as_slice()).map_err(wr)?;
    Ok(())
}

/// A failure after the first write of an erasure: it must not commit half done.
fn abort(e: OpError) -> OpError {
    match e {
        OpError::Refused(WriteError::Store(e)) => OpError::Abort(e),
        other => other,
    }
}

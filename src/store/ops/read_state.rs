//! A user's state in a conversation: how far they have read, and whether they archived it.

use redb::{ReadableTable, TableHandle};

use super::{OpError, Tables, WriteError, rd};
use crate::model::MessageRecord;
use crate::store::history::History;
use crate::store::records::decode;
use crate::store::tables::MESSAGES;

/// Result of [`crate::store::WriterHandle::mark_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedRead {
    /// The read marker after the request (never moves backwards).
    pub read_marker: u64,
    /// Whether the marker moved.
    pub advanced: bool,
    /// The reader's unread messages left in the conversation.
    pub unread: u64,
}

/// Moves `user`'s read marker in `conversation` up to `up_to` (the newest message if `None`),
/// never back, and counts what is left unread.
pub(super) fn mark_read(
    t: &mut Tables<'_>,
    user: u64,
    conversation: u64,
    up_to: Option<u64>,
    now_ms: u64,
) -> Result<MarkedRead, OpError> {
    let mut membership = t.member(user, conversation)?;
    let (count, newest) = counters(t, conversation)?;
    let unread = count.saturating_sub(membership.read_count);
    let target = match up_to {
        Some(id) => id.min(newest),
        None => newest,
    };
    if target <= membership.read_marker {
        return Ok(MarkedRead {
            read_marker: membership.read_marker,
            advanced: false,
            unread,
        });
    }
    t.move_read_marker(user, conversation, &mut membership, unread, target, now_ms)?;
    // Only the unread tail is counted again, never the whole history. Every message above the
    // marker is from someone else (sending moves it), but a damaged one is left out, as every
    // view does.
    let left = if target >= newest {
        0
    } else {
        let mut left = 0;
        let history = History {
            index: &t.conversation_messages,
            tail: &t.tail.history,
        };
        for id in history.ids(conversation, target + 1..=u64::MAX)? {
            let id = id?;
            if let Some(bytes) = t.messages.get(id).map_err(rd)? {
                let record: Option<MessageRecord> =
                    t.damaged.skip(MESSAGES.name(), id, decode(bytes.value()))?;
                left += u64::from(record.is_some_and(|r| r.sender != user));
            }
        }
        left
    };
    membership.read_count = count.saturating_sub(left);
    t.membership_cache.put((user, conversation), membership);
    Ok(MarkedRead {
        read_marker: membership.read_marker,
        advanced: true,
        unread: left,
    })
}

/// Archives or unarchives `conversation` for `user`.
pub(super) fn set_archived(
    t: &mut Tables<'_>,
    user: u64,
    conversation: u64,
    archived: bool,
) -> Result<(), OpError> {
    let mut membership = t.member(user, conversation)?;
    let (count, _) = counters(t, conversation)?;
    if (membership.archived_at_count == Some(count)) != archived {
        membership.archived_at_count = archived.then_some(count);
        t.membership_cache.put((user, conversation), membership);
    }
    Ok(())
}

/// The conversation's message count and newest message id (0 if none), which every member's
/// unread count and archive state are measured against (`MembershipRecord::view`).
fn counters(t: &mut Tables<'_>, conversation: u64) -> Result<(u64, u64), OpError> {
    match t.conversation(conversation)? {
        Some(record) => Ok((record.message_count, record.last_message_id.unwrap_or(0))),
        None => Err(WriteError::ConversationNotFound.into()),
    }
}

//! A user's state in a conversation: how far they have read, and whether they archived it.

use redb::{ReadableTable, TableHandle};

use super::{OpError, Tables, rd};
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
    let target = match up_to {
        Some(id) => id.min(membership.last_message_id),
        None => membership.last_message_id,
    };
    if target <= membership.read_marker {
        return Ok(MarkedRead {
            read_marker: membership.read_marker,
            advanced: false,
            unread: membership.unread,
        });
    }
    t.move_read_marker(user, conversation, &mut membership, target, now_ms)?;
    // Only the unread tail is counted again, never the whole history.
    membership.unread = if target >= membership.last_message_id {
        0
    } else {
        let mut unread = 0;
        let history = History {
            index: &t.conversation_messages,
            tail: &t.tail.history,
        };
        for id in history.ids(conversation, target + 1..=u64::MAX)? {
            let id = id?;
            if let Some(bytes) = t.messages.get(id).map_err(rd)? {
                // A damaged record has no sender to tell: left out, as every view does.
                let record: Option<MessageRecord> =
                    t.damaged.skip(MESSAGES.name(), id, decode(bytes.value()))?;
                unread += u64::from(record.is_some_and(|r| r.sender != user));
            }
        }
        unread
    };
    t.membership_cache.put((user, conversation), membership);
    Ok(MarkedRead {
        read_marker: membership.read_marker,
        advanced: true,
        unread: membership.unread,
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
    if membership.archived != archived {
        membership.archived = archived;
        t.membership_cache.put((user, conversation), membership);
    }
    Ok(())
}

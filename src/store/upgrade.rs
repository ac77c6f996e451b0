//! Rewriting the records of an older schema at open, in the transaction that stamps the new
//! version: the file is either all old (and the old version) or all new.
//!
//! 5: a membership row holds only what its user's own actions change (read marker, the count
//! of messages up to it, archived at which count); the newest message, the activity time and
//! the unread count come from the conversation's record ([`MembershipRecord::view`]).

use std::collections::HashMap;

use redb::{ReadableTable, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::records::{decode, encode};
use super::tables::{CONVERSATIONS, MEMBERSHIPS};
use crate::model::{ConversationRecord, MembershipRecord};

/// A membership row as schemas 1 to 4 stored it: every field rewritten for every member by
/// every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MembershipRecordV4 {
    pub read_marker: u64,
    pub read_at_ms: u64,
    /// Messages from others above `read_marker`.
    pub unread: u64,
    pub archived: bool,
    pub last_message_id: u64,
    pub last_activity_ms: u64,
}

/// Rewrites every membership row of a file older than schema 5 into its schema-5 form,
/// keeping each user's unread count and archive state as they were: `read_count` is the
/// conversation's message count less the row's unread count, and an archived row is archived
/// at the current count. Answers how many rows it rewrote.
///
/// A row or a conversation record that does not decode is left as found and logged at ERROR
/// (as [`super::damage`] does for every damaged record): it was unreadable before too.
pub(super) fn memberships_to_v5(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let conversations = txn.open_table(CONVERSATIONS)?;
    let mut memberships = txn.open_table(MEMBERSHIPS)?;
    // Message counts by conversation (`None`: no readable record).
    let mut counts: HashMap<u64, Option<u64>> = HashMap::new();
    let mut rewritten = Vec::new();
    for row in memberships.iter()? {
        let (key, value) = row?;
        let (user, conversation) = key.value();
        let old: MembershipRecordV4 = match decode(value.value()) {
            Ok(old) => old,
            Err(e) => {
                tracing::error!(
                    table = MEMBERSHIPS.name(),
                    key = %format_args!("({user}, {conversation})"),
                    error = %e,
                    "damaged membership left as found by the schema upgrade"
                );
                continue;
            }
        };
        let count = match counts.get(&conversation) {
            Some(count) => *count,
            None => {
                let count = match conversations.get(conversation)? {
                    Some(bytes) => match decode::<ConversationRecord>(bytes.value()) {
                        Ok(record) => Some(record.message_count),
                        Err(e) => {
                            tracing::error!(
                                table = CONVERSATIONS.name(),
                                key = conversation,
                                error = %e,
                                "damaged conversation: its members' unread counts start at 0"
                            );
                            None
                        }
                    },
                    None => None,
                };
                counts.insert(conversation, count);
                count
            }
        };
        // Without a readable conversation nothing shows the row; its counts start at 0.
        let count = count.unwrap_or(0);
        let new = MembershipRecord {
            read_marker: old.read_marker,
            read_at_ms: old.read_at_ms,
            read_count: count.saturating_sub(old.unread),
            archived_at_count: old.archived.then_some(count),
        };
        rewritten.push(((user, conversation), encode(&new)?));
    }
    for (key, bytes) in &rewritten {
        memberships.insert(*key, bytes.as_slice())?;
    }
    Ok(rewritten.len() as u64)
}

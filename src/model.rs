//! What a message, a conversation, a user's view of one and a user *are*: the types the store
//! keeps and the layers above it (messaging, the hub, the HTTP and WebSocket views) read.
//!
//! They live below both, so neither has to import the other for them: the store imports this
//! module and nothing above it, the domain imports the store and this module.
//!
//! The records are stored as they are (postcard, in field order: see `crate::store::records`),
//! so changing a record's fields changes the data file: any such change bumps
//! `crate::store::tables::SCHEMA_VERSION` and comes with a migration (docs/STORAGE.md). The
//! parts a user wrote travel as bytes sealed by [`crate::crypto::Keyring`]; their plaintext form
//! ([`MessageBody`]) exists only in memory.

use serde::{Deserialize, Serialize};

/// Delivery priority of a message; the order of per-user queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    /// Sort key in queues: high first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    pub fn from_rank(rank: u8) -> Self {
        match rank {
            0 => Priority::High,
            1 => Priority::Normal,
            _ => Priority::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// The `message_type` of a system message (the service API's broadcasts, by default), which
/// seed 003's conversation socket shows as a `notification`, not as a `message`.
pub const SYSTEM_MESSAGE_TYPE: &str = "system";

/// A message. `body` is a sealed [`MessageBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub conversation: u64,
    pub sender: u64,
    pub receiver: Option<u64>,
    /// `text` unless the sender said otherwise: a-z, 0-9 and `_` (checked where sends arrive).
    pub message_type: String,
    pub priority: Priority,
    pub client_id: Option<String>,
    /// Unix milliseconds, assigned by the store's writer at commit.
    pub created_at_ms: u64,
    /// As bytes, not a sequence of `u8`: the same postcard encoding, written in one copy.
    /// Empty once the message was deleted by an operator or erased with its sender: a
    /// tombstone (a sealed body is never empty).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl MessageRecord {
    /// Whether the message is a tombstone: deleted by an operator, or erased with its sender.
    pub fn is_deleted(&self) -> bool {
        self.body.is_empty()
    }
}

/// What a user wrote in a message; sealed at rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBody {
    pub text: String,
    /// The `metadata` object as JSON text (postcard cannot carry free-form JSON values).
    pub metadata_json: String,
}

/// A conversation. `subject` is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// Sorted, without duplicates.
    pub participants: Vec<u64>,
    pub property: Option<u64>,
    pub booking: Option<u64>,
    #[serde(with = "serde_bytes")]
    pub subject: Option<Vec<u8>>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_message_id: Option<u64>,
    /// Messages in the conversation, kept for `count` in listings.
    pub message_count: u64,
}

/// One user's own state in one conversation: what only that user's actions change (reading,
/// archiving, sending). Everything a new message changes for every member (the newest message,
/// the activity time, the unread count, an archive undone) is derived from the conversation's
/// record instead ([`MembershipRecord::view`]), so a message to a group of a hundred writes
/// the sender's row and the conversation's, not a hundred rows. Schema 5; until 4 the row held
/// the derived fields too, rewritten for every member on every message (`Membership`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    /// Highest message id the user has read (their own messages count as read, so every
    /// message above it is from someone else).
    pub read_marker: u64,
    /// When the read marker last moved (Unix ms), 0 if never.
    pub read_at_ms: u64,
    /// The conversation's `message_count` less the user's unread messages: their unread count
    /// is `message_count - read_count`.
    pub read_count: u64,
    /// `Some(count)`: archived when the conversation had `count` messages (the user's own
    /// messages since then move it along). A message from someone else makes the count differ,
    /// which brings the conversation back: archived means "and nothing new from others since".
    pub archived_at_count: Option<u64>,
}

impl MembershipRecord {
    /// The user's view of the conversation whose counters (its record's) are `conversation`.
    pub fn view(&self, conversation: &ConversationCounters) -> Membership {
        Membership {
            read_marker: self.read_marker,
            read_at_ms: self.read_at_ms,
            unread: conversation.message_count.saturating_sub(self.read_count),
            archived: self.archived_at_count == Some(conversation.message_count),
            last_message_id: conversation.last_message_id.unwrap_or(0),
            last_activity_ms: conversation.updated_at_ms,
        }
    }
}

/// The fields of a [`ConversationRecord`] that a message changes and every member's view is
/// derived from ([`MembershipRecord::view`]); `crate::store::records::conversation_counters`
/// reads them from the stored bytes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCounters {
    pub updated_at_ms: u64,
    pub last_message_id: Option<u64>,
    pub message_count: u64,
}

impl From<&ConversationRecord> for ConversationCounters {
    fn from(record: &ConversationRecord) -> Self {
        Self {
            updated_at_ms: record.updated_at_ms,
            last_message_id: record.last_message_id,
            message_count: record.message_count,
        }
    }
}

/// One user's view of one conversation, as the lists, counts and events show it: derived
/// from their [`MembershipRecord`] and the conversation's record, never stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Membership {
    /// Highest message id the user has read (their own messages count as read).
    pub read_marker: u64,
    /// When the read marker last moved (Unix ms), 0 if never.
    pub read_at_ms: u64,
    /// Messages from others above `read_marker`.
    pub unread: u64,
    /// Archived, and no message from someone else since.
    pub archived: bool,
    /// Id of the newest message, or 0.
    pub last_message_id: u64,
    /// When the conversation was created or last got a message (Unix ms): orders the list.
    pub last_activity_ms: u64,
}

/// A user known to the daemon, from a token or a local account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The account name, or the token's `username` claim for external users.
    pub username: Option<String>,
    pub display_name: Option<String>,
    /// Argon2id PHC string; only local accounts have one.
    pub password_hash: Option<String>,
    pub created_at_ms: u64,
}

/// A webhook event waiting in the outbox (`eventid_event`) until the host app acknowledged it.
/// It holds ids, never what a user wrote: the delivery reads the message or conversation when
/// it builds the POST, so nothing is stored twice and nothing in here needs sealing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When the change that caused it was committed (Unix ms).
    pub created_at_ms: u64,
    pub event: Event,
}

/// What happened, for [`EventRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A message was stored; each recipient, and whether they had a socket open when it was
    /// sent.
    MessageCreated {
        message: u64,
        recipients_online: Vec<(u64, bool)>,
    },
    /// `reader`'s read marker in `conversation` moved up to `up_to` at `read_at_ms`.
    MessageRead {
        conversation: u64,
        reader: u64,
        up_to: u64,
        read_at_ms: u64,
    },
    /// `creator` created `conversation`.
    ConversationCreated { conversation: u64, creator: u64 },
    /// The user's first socket opened (`online`), or their last closed and the presence grace
    /// ran out; at `at_ms`.
    Presence { user: u64, online: bool, at_ms: u64 },
}

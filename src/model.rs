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

/// One user's view of one conversation, kept up to date on every write so that listing and
/// counting cost O(conversations), never a scan of history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    /// Highest message id the user has read (their own messages count as read).
    pub read_marker: u64,
    /// When the read marker last moved (Unix ms), 0 if never.
    pub read_at_ms: u64,
    /// Messages from others above `read_marker`.
    pub unread: u64,
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

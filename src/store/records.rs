//! The records stored in the tables of [`super::tables`], and the domain types they carry.
//!
//! Records are postcard-encoded. Fields a user wrote travel as `Vec<u8>` sealed by
//! [`crate::crypto::Keyring`]; the plaintext forms ([`MessageBody`]) exist only in memory.

use serde::{Deserialize, Serialize};

use super::StoreError;

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

/// A stored message. `body` is a sealed [`MessageBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub conversation: u64,
    pub sender: u64,
    pub receiver: Option<u64>,
    pub message_type: String,
    pub priority: Priority,
    pub client_id: Option<String>,
    /// Unix milliseconds, assigned by the writer at commit.
    pub created_at_ms: u64,
    /// As bytes, not a sequence of `u8`: the same postcard encoding, written in one copy.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What a user wrote in a message; sealed at rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBody {
    pub text: String,
    /// The `metadata` object as JSON text (postcard cannot carry free-form JSON values).
    pub metadata_json: String,
}

/// A stored conversation. `subject` is sealed.
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

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    // Most records fit: one allocation instead of a doubling series.
    postcard::to_extend(record, Vec::with_capacity(256))
        .map_err(|e| StoreError::Encoding(e.to_string()))
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Encoding(e.to_string()))
}

/// The conversation of an encoded [`MessageRecord`], read without decoding the rest: it is
/// the record's first field, so postcard puts it first. For scanning the history tail.
pub fn message_conversation(bytes: &[u8]) -> Result<u64, StoreError> {
    postcard::take_from_bytes::<u64>(bytes)
        .map(|(conversation, _)| conversation)
        .map_err(|e| StoreError::Encoding(e.to_string()))
}

#[cfg(test)]
mod tests {
    //! `body` and `subject` are serialized as bytes since they were a `Vec<u8>` sequence: files
    //! written before must read the same, and the encoding must not change.

    use super::*;

    /// The record as it was first stored.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct MessageRecordV1 {
        conversation: u64,
        sender: u64,
        receiver: Option<u64>,
        message_type: String,
        priority: Priority,
        client_id: Option<String>,
        created_at_ms: u64,
        body: Vec<u8>,
    }

    #[test]
    fn bytes_fields_keep_the_sequence_encoding() {
        let body: Vec<u8> = (0..=255u8).chain(0..40).collect();
        let old = MessageRecordV1 {
            conversation: 3,
            sender: 1,
            receiver: Some(2),
            message_type: "text".into(),
            priority: Priority::High,
            client_id: Some("c1".into()),
            created_at_ms: 1_764_590_400_123,
            body: body.clone(),
        };
        let new = MessageRecord {
            conversation: 3,
            sender: 1,
            receiver: Some(2),
            message_type: "text".into(),
            priority: Priority::High,
            client_id: Some("c1".into()),
            created_at_ms: 1_764_590_400_123,
            body,
        };
        let old_bytes = postcard::to_allocvec(&old).expect("encode");
        assert_eq!(encode(&new).expect("encode"), old_bytes);
        assert_eq!(decode::<MessageRecord>(&old_bytes).expect("decode"), new);

        let conversation = |subject: Option<Vec<u8>>| ConversationRecord {
            participants: vec![1, 2],
            property: Some(7),
            booking: None,
            subject,
            created_at_ms: 1,
            updated_at_ms: 2,
            last_message_id: Some(9),
            message_count: 1,
        };
        for subject in [None, Some(vec![1u8, 2, 3, 250])] {
            let record = conversation(subject.clone());
            let as_seq = postcard::to_allocvec(&(
                &record.participants,
                record.property,
                record.booking,
                &subject,
                record.created_at_ms,
                record.updated_at_ms,
                record.last_message_id,
                record.message_count,
            ))
            .expect("encode");
            assert_eq!(encode(&record).expect("encode"), as_seq);
            assert_eq!(
                decode::<ConversationRecord>(&as_seq).expect("decode"),
                record
            );
        }
    }

    #[test]
    fn the_conversation_is_read_from_the_front_of_a_record() {
        for conversation in [0, 1, 127, 128, 300, u64::MAX] {
            let record = MessageRecord {
                conversation,
                sender: 9,
                receiver: None,
                message_type: "text".into(),
                priority: Priority::Low,
                client_id: None,
                created_at_ms: 5,
                body: vec![1, 2, 3],
            };
            let bytes = encode(&record).expect("encode");
            assert_eq!(message_conversation(&bytes).expect("peek"), conversation);
        }
        assert!(
            message_conversation(&[0xff]).is_err(),
            "a truncated varint is an error"
        );
    }
}

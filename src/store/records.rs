//! How the records the tables hold are written: postcard, in field order.
//!
//! The records are the model's types ([`crate::model`]: messages, conversations, memberships,
//! users); the store adds no fields of its own. postcard does not describe its own layout, so
//! the tests below pin the bytes of each record: a change to a record's fields fails them,
//! and must come with a `SCHEMA_VERSION` bump and a migration (docs/STORAGE.md).

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::model::ConversationCounters;

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    // Most records fit: one allocation instead of a doubling series.
    postcard::to_extend(record, Vec::with_capacity(256))
        .map_err(|e| StoreError::Encoding(e.to_string()))
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Encoding(e.to_string()))
}

/// The conversation of an encoded [`crate::model::MessageRecord`], read without decoding the rest: it is
/// the record's first field, so postcard puts it first. For scanning the history tail.
pub fn message_conversation(bytes: &[u8]) -> Result<u64, StoreError> {
    postcard::take_from_bytes::<u64>(bytes)
        .map(|(conversation, _)| conversation)
        .map_err(|e| StoreError::Encoding(e.to_string()))
}

/// The counters of an encoded [`crate::model::ConversationRecord`] that every member's view is
/// derived from ([`crate::model::MembershipRecord::view`]), read without allocating its
/// participants and subject: listing a user's conversations and their unread total read one
/// per conversation, and a group's record holds every member.
pub fn conversation_counters(bytes: &[u8]) -> Result<ConversationCounters, StoreError> {
    fn take<'a, T: Deserialize<'a>>(bytes: &mut &'a [u8]) -> Result<T, StoreError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| StoreError::Encoding(e.to_string()))?;
        *bytes = rest;
        Ok(value)
    }
    let mut rest = bytes;
    // In field order: participants (a length, then the ids), property, booking, subject.
    let participants: u64 = take(&mut rest)?;
    for _ in 0..participants {
        take::<u64>(&mut rest)?;
    }
    take::<Option<u64>>(&mut rest)?;
    take::<Option<u64>>(&mut rest)?;
    take::<Option<&[u8]>>(&mut rest)?;
    let _created_at_ms: u64 = take(&mut rest)?;
    Ok(ConversationCounters {
        updated_at_ms: take(&mut rest)?,
        last_message_id: take(&mut rest)?,
        message_count: take(&mut rest)?,
    })
}

#[cfg(test)]
mod tests {
    //! `body` and `subject` are serialized as bytes since they were a `Vec<u8>` sequence: files
    //! written before must read the same, and the encoding must not change.

    use super::*;
    use crate::model::{ConversationRecord, MembershipRecord, MessageRecord, Priority, UserRecord};

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

    /// The bytes of every kind of record, written out: a change to any record's fields (the
    /// model's types) changes them, and the data file with them.
    #[test]
    fn every_record_keeps_its_stored_bytes() {
        let message = MessageRecord {
            conversation: 3,
            sender: 1,
            receiver: Some(2),
            message_type: "text".into(),
            priority: Priority::Low,
            client_id: Some("c".into()),
            created_at_ms: 300,
            body: vec![9, 8],
        };
        let conversation = ConversationRecord {
            participants: vec![1, 2],
            property: Some(7),
            booking: None,
            subject: Some(vec![5]),
            created_at_ms: 1,
            updated_at_ms: 2,
            last_message_id: Some(4),
            message_count: 1,
        };
        let membership = MembershipRecord {
            read_marker: 4,
            read_at_ms: 200,
            read_count: 1,
            archived_at_count: Some(5),
        };
        let user = UserRecord {
            username: Some("ann".into()),
            display_name: None,
            password_hash: Some("h".into()),
            created_at_ms: 129,
        };
        let bytes = [
            encode(&message).expect("encode"),
            encode(&conversation).expect("encode"),
            encode(&membership).expect("encode"),
            encode(&user).expect("encode"),
        ];
        let expected: [&[u8]; 4] = [
            &[
                3, 1, 1, 2, 4, b't', b'e', b'x', b't', 2, 1, 1, b'c', 172, 2, 2, 9, 8,
            ],
            &[2, 1, 2, 1, 7, 0, 1, 1, 5, 1, 2, 1, 4, 1],
            &[4, 200, 1, 1, 1, 5],
            &[1, 3, b'a', b'n', b'n', 0, 1, 1, b'h', 129, 1],
        ];
        for (bytes, expected) in bytes.iter().zip(expected) {
            assert_eq!(bytes.as_slice(), expected);
        }
    }

    /// The counters read from the bytes are the full record's, whatever its participants and
    /// subject (a long subject's length takes more than one byte).
    #[test]
    fn conversation_counters_read_the_records_own() {
        for (participants, subject, last) in [
            (vec![1, 2], None, None),
            (
                (1..=100).map(|u| u * 1_000_003).collect(),
                Some(vec![7u8; 300]),
                Some(u64::MAX - 1),
            ),
        ] {
            let record = ConversationRecord {
                participants,
                property: Some(u64::MAX),
                booking: None,
                subject,
                created_at_ms: 1_764_590_400_123,
                updated_at_ms: 1_764_590_400_999,
                last_message_id: last,
                message_count: 70_000,
            };
            let bytes = encode(&record).expect("encode");
            assert_eq!(
                conversation_counters(&bytes).expect("counters"),
                ConversationCounters::from(&record)
            );
            assert!(conversation_counters(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}

//! A journal record's payload: what the writer writes down for each batch, and reads back to
//! redo it ([`super::redo`]).
//!
//! ```text
//! batch time (Unix ms) u64 | first message id u64 | next message id u64 | queue bound u64
//! | ops, postcard, back to back
//! ```
//!
//! The ops are the batch's requests as they came, without their reply slots: the same
//! [`Op`] values the writer applied. What a replay needs besides the data file comes from the
//! record, never from today's config: the batch's time, the message ids it gave (checked by
//! the replay), and the queue bound it was applied with, so that a restart with another
//! `queues.message_queue_max_size` brings back the queues that were acknowledged. Logging the
//! ops rather than the rows they changed keeps a record small (a message's sealed body and a
//! few ids, not its queue entries, memberships and counters), at the price of the ops staying
//! deterministic (see [`crate::store::ops`]).
//!
//! [`super::journal`] stores the records; this module knows what they mean.

use super::batch::BatchReport;
use super::journal::RECORD_HEADER;
use crate::store::StoreError;
use crate::store::ops::Op;

/// Bytes of a record's payload before its ops: time, first and next message id, and the
/// queue bound (`queues.message_queue_max_size`) the batch was applied with.
pub(super) const FIELDS: usize = 32;

/// A journal record for a batch of `ops`, applied at `now_ms` with queues bounded to
/// `queue_max`; its message ids are left to [`fill`] and its front to
/// [`super::journal::Journal::seal`].
pub(super) fn encode<'a>(
    ops: impl IntoIterator<Item = &'a Op>,
    now_ms: u64,
    queue_max: u64,
) -> Result<Vec<u8>, StoreError> {
    let mut record = vec![0; RECORD_HEADER + FIELDS];
    let fields = &mut record[RECORD_HEADER..];
    fields[..8].copy_from_slice(&now_ms.to_le_bytes());
    fields[24..32].copy_from_slice(&queue_max.to_le_bytes());
    for op in ops {
        record =
            postcard::to_extend(op, record).map_err(|e| StoreError::Encoding(e.to_string()))?;
    }
    Ok(record)
}

/// Completes a record once its batch committed: the message ids it gave.
pub(super) fn fill(record: &mut [u8], report: &BatchReport) {
    let fields = &mut record[RECORD_HEADER..][..FIELDS];
    fields[8..16].copy_from_slice(&report.first_message_id.to_le_bytes());
    fields[16..24].copy_from_slice(&report.next_message_id.to_le_bytes());
}

/// A journal record's batch, read back.
#[derive(Debug)]
pub(crate) struct Logged {
    pub now_ms: u64,
    /// The message ids it gave: first, and the next after its last.
    pub ids: (u64, u64),
    /// The queue bound it was applied with.
    pub queue_max: u64,
    pub ops: Vec<Op>,
}

/// The message ids a record's batch gave (first, and the next after its last), as the record
/// says; `None` for a payload too short to say.
pub(super) fn message_ids(payload: &[u8]) -> Option<(u64, u64)> {
    let field = |i: usize| Some(u64::from_le_bytes(payload.get(i..i + 8)?.try_into().ok()?));
    Some((field(8)?, field(16)?))
}

/// A record's payload, read back.
pub(crate) fn decode(payload: &[u8]) -> Result<Logged, String> {
    if payload.len() < FIELDS {
        return Err(format!("{} bytes, shorter than its fields", payload.len()));
    }
    let field = |i: usize| u64::from_le_bytes(payload[i * 8..][..8].try_into().expect("8 bytes"));
    let mut rest = &payload[FIELDS..];
    let mut ops = Vec::new();
    while !rest.is_empty() {
        let (op, after) = postcard::take_from_bytes::<Op>(rest).map_err(|e| e.to_string())?;
        ops.push(op);
        rest = after;
    }
    Ok(Logged {
        now_ms: field(0),
        ids: (field(1), field(2)),
        queue_max: field(3),
        ops,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Priority;
    use crate::store::ops::{Broadcast, NewAccount, NewMessage};
    use crate::store::testing::{one_to_one, test_message};

    #[test]
    fn every_logged_request_reads_back_as_written() {
        let ops = vec![
            Op::CreateConversation(one_to_one(1, 2)),
            Op::AppendMessage(NewMessage {
                client_id: Some("c".into()),
                ..test_message(1, 2, Priority::Normal)
            }),
            Op::EnsureUser {
                id: 5,
                username: Some("x".into()),
            },
            Op::MarkRead {
                user: 1,
                conversation: 2,
                up_to: Some(3),
            },
            Op::SetArchived {
                user: 1,
                conversation: 2,
                archived: true,
            },
            Op::Dequeue(vec![(1, 0, 2)]),
            Op::Drain(vec![(3, 1, 4)]),
            Op::Expire(99),
            Op::RegisterAccount(NewAccount {
                username: "u".into(),
                display_name: None,
                password_hash: "h".into(),
                id_base: 8,
            }),
            Op::Broadcast(Broadcast {
                sender: 1,
                message_type: "system".into(),
                priority: Priority::High,
                recipients: vec![2, 3],
                body: Arc::new(vec![4, 5]),
                plain: Arc::default(),
            }),
        ];
        let written = encode(&ops, 1234, 77).expect("encode");
        let mut record = written.clone();
        let report = BatchReport {
            first_message_id: 10,
            next_message_id: 12,
            ..BatchReport::default()
        };
        fill(&mut record, &report);
        let back = decode(&record[RECORD_HEADER..]).expect("decode");
        assert_eq!(
            (back.now_ms, back.ids, back.queue_max),
            (1234, (10, 12), 77)
        );
        // Every op comes back, in order, alike: logged again, they give the same bytes.
        assert_eq!(back.ops.len(), ops.len());
        assert_eq!(encode(&back.ops, 1234, 77).expect("encode"), written);
    }
}

//! Per-user delivery queues: an entry per recipient of each message until it is delivered,
//! bounded per user (the oldest lowest-priority entry is dead-lettered past the bound) and
//! swept by age.

use std::collections::HashMap;

use redb::ReadableTable;

use super::{OpError, Tables, wr};

/// A queue entry: (user, priority rank, message id).
pub type QueueKey = (u64, u8, u64);

/// Most queue entries one expiry op removes, so a sweep after a long downtime never holds the
/// writer for long: the sweeper repeats until nothing is left.
pub const EXPIRE_BATCH: u64 = 10_000;

/// Adds a queue entry; past the queue bound the user's oldest lowest-priority entry is
/// dead-lettered (the message stays in history).
pub(super) fn enqueue(
    t: &mut Tables<'_>,
    user: u64,
    rank: u8,
    id: u64,
    now_ms: u64,
) -> Result<(), OpError> {
    t.queue.insert((user, rank, id), now_ms).map_err(wr)?;
    let mut length = t.queue_length(user)? + 1;
    t.queue_pending += 1;
    while length > t.queue_max {
        let mut victim = None;
        for lowest in (0..=2u8).rev() {
            let first = t
                .queue
                .range((user, lowest, 0)..=(user, lowest, u64::MAX))
                .map_err(wr)?
                .next();
            if let Some(entry) = first {
                victim = Some(entry.map_err(wr)?.0.value());
                break;
            }
        }
        let Some(key) = victim else { break };
        t.queue.remove(key).map_err(wr)?;
        length -= 1;
        t.queue_pending -= 1;
        dead_letter(t, 1);
    }
    t.set_queue_length(user, length)?;
    Ok(())
}

fn dead_letter(t: &mut Tables<'_>, count: u64) {
    t.dead_letters += count;
    t.dead_letters_added += count;
}

/// Removes queue entries; returns those that were there.
pub(super) fn dequeue(t: &mut Tables<'_>, entries: &[QueueKey]) -> Result<Vec<QueueKey>, OpError> {
    let mut removed = Vec::with_capacity(entries.len());
    let mut per_user: HashMap<u64, u64> = HashMap::new();
    for key in entries {
        if t.queue.remove(key).map_err(wr)?.is_some() {
            removed.push(*key);
            *per_user.entry(key.0).or_default() += 1;
        }
    }
    for (user, gone) in per_user {
        shorten(t, user, gone)?;
    }
    Ok(removed)
}

/// Removes delivered queue entries (nobody waits for which were there). In key order, so a
/// batch of the many entries a group message or a broadcast leaves walks each user's part of
/// the queue once, and each user's length is looked up once per run of their entries.
pub(super) fn dequeue_delivered(
    t: &mut Tables<'_>,
    mut entries: Vec<QueueKey>,
) -> Result<(), OpError> {
    entries.sort_unstable();
    entries.dedup();
    let (Some(first), Some(last)) = (entries.first().copied(), entries.last().copied()) else {
        return Ok(());
    };
    let removed = if t.queue_pending <= SWEEP_FACTOR * entries.len() as u64 + SWEEP_SLACK {
        sweep(t, &entries, first, last)?
    } else {
        let mut removed = Vec::with_capacity(entries.len());
        for key in entries {
            if t.queue.remove(key).map_err(wr)?.is_some() {
                removed.push(key);
            }
        }
        removed
    };
    let mut run: Option<(u64, u64)> = None;
    for key in &removed {
        run = match run {
            Some((user, gone)) if user == key.0 => Some((user, gone + 1)),
            Some((user, gone)) => {
                shorten(t, user, gone)?;
                Some((key.0, 1))
            }
            None => Some((key.0, 1)),
        };
    }
    if let Some((user, gone)) = run {
        shorten(t, user, gone)?;
    }
    Ok(())
}

/// One sweep over the queue from the first of the delivered entries to the last is used while
/// the whole queue holds at most this many entries per entry removed (plus [`SWEEP_SLACK`]),
/// so that it never reads far more than it removes.
const SWEEP_FACTOR: u64 = 4;
const SWEEP_SLACK: u64 = 4096;

/// Removes `sorted` (sorted, distinct) in one pass over the range they span; answers those
/// that were there, in order. redb rewrites a leaf once per pass for all the entries it
/// removes from it, where a `remove` per key rebuilds it per key whenever the leaf is small
/// (a short queue, the usual case: entries go as soon as they are delivered), which was the
/// larger part of the writer's work for a group message's 99 removals.
fn sweep(
    t: &mut Tables<'_>,
    sorted: &[QueueKey],
    first: QueueKey,
    last: QueueKey,
) -> Result<Vec<QueueKey>, OpError> {
    let mut removed = Vec::with_capacity(sorted.len());
    let mut wanted = sorted.iter().copied().peekable();
    t.queue
        .retain_in(first..=last, |key, _| {
            // Both in key order: skip the wanted keys that are not in the table.
            while wanted.next_if(|w| *w < key).is_some() {}
            if wanted.next_if_eq(&key).is_some() {
                removed.push(key);
                false
            } else {
                true
            }
        })
        .map_err(wr)?;
    Ok(removed)
}

fn shorten(t: &mut Tables<'_>, user: u64, gone: u64) -> Result<(), OpError> {
    let left = t.queue_length(user)?.saturating_sub(gone);
    // Written back at the end of the batch; a length of 0 removes the row.
    t.set_queue_length(user, left)?;
    t.queue_pending = t.queue_pending.saturating_sub(gone);
    Ok(())
}

/// Dead-letters entries enqueued before `before_ms`. Within one user and priority, ids — and
/// so enqueue times — increase, so the expired entries are a prefix of each range.
pub(super) fn expire(t: &mut Tables<'_>, before_ms: u64) -> Result<u64, OpError> {
    // The scan below reads the lengths table itself: bring it up to date first.
    t.flush().map_err(OpError::Abort)?;
    let mut users = Vec::new();
    for entry in t.queue_lengths.iter().map_err(wr)? {
        users.push(entry.map_err(wr)?.0.value());
    }
    let mut expired = 0;
    for user in users {
        if expired >= EXPIRE_BATCH {
            break;
        }
        let mut stale = Vec::new();
        for rank in 0..=2u8 {
            for entry in t
                .queue
                .range((user, rank, 0)..=(user, rank, u64::MAX))
                .map_err(wr)?
            {
                let (key, enqueued) = entry.map_err(wr)?;
                if enqueued.value() >= before_ms || expired + stale.len() as u64 >= EXPIRE_BATCH {
                    break;
                }
                stale.push(key.value());
            }
        }
        if stale.is_empty() {
            continue;
        }
        for key in &stale {
            t.queue.remove(key).map_err(wr)?;
        }
        let gone = stale.len() as u64;
        shorten(t, user, gone)?;
        dead_letter(t, gone);
        expired += gone;
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    //! Queue bookkeeping that the HTTP tests cannot reach in reasonable time: expiry by age.

    use redb::{Database, ReadableDatabase, ReadableTable};

    use crate::model::Priority;
    use crate::store::engine::batch::testing::{run_batch, unanswered};
    use crate::store::engine::handle::Request;
    use crate::store::ops::{NewConversation, Op};
    use crate::store::tables::{META, QUEUE, QUEUE_LENGTHS, meta};
    use crate::store::testing::test_message;

    /// A fresh database holding one conversation, created by user 1 with `others`.
    fn conversation_of_1_with(others: Vec<u64>) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("q.redb")).expect("db");
        let new = NewConversation {
            creator: 1,
            participants: others,
            property: None,
            booking: None,
            subject: None,
        };
        run_batch(&db, vec![unanswered(Op::CreateConversation(new))]);
        (dir, db)
    }

    #[test]
    fn entries_past_retention_become_dead_letters() {
        let (_dir, db) = conversation_of_1_with(vec![2]);
        // Two messages, then the retention boundary, then one more.
        let mut boundary = 0;
        for priority in [Priority::Low, Priority::High, Priority::Normal] {
            if priority == Priority::Normal {
                std::thread::sleep(std::time::Duration::from_millis(5));
                boundary = crate::time::now_ms();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let new = test_message(1, 1, priority);
            run_batch(&db, vec![unanswered(Op::AppendMessage(new))]);
        }
        let (request, expired) = Request::answered::<u64>(Op::Expire(boundary));
        run_batch(&db, vec![request]);
        assert_eq!(expired.try_done().expect("answered").expect("ok"), 2);

        let rows = Rows::read(&db);
        assert_eq!(rows.queue, vec![(2, Priority::Normal.rank(), 3)]);
        assert_eq!(rows.meta(meta::DEAD_LETTERS), Some(2));
        assert_eq!(rows.meta(meta::QUEUE_PENDING), Some(1));
        assert_eq!(rows.length(2), Some(1));
    }

    /// A batch writes each user's queue length back once, at its end, and not at all when it
    /// ends where it began; an expiry writes the lengths back half-way through a batch, so a
    /// length that then returns to what the table held before must still be written.
    #[test]
    fn a_length_written_half_way_through_a_batch_and_changed_back_is_written_again() {
        let (_dir, db) = conversation_of_1_with(vec![2]);
        let rank = Priority::Normal.rank();
        // User 2's queue: empty, then one entry, written back by the expiry (which expires
        // nothing), then empty again.
        run_batch(
            &db,
            vec![
                unanswered(Op::AppendMessage(test_message(1, 1, Priority::Normal))),
                unanswered(Op::Expire(0)),
                unanswered(Op::Dequeue(vec![(2, rank, 1)])),
            ],
        );
        let rows = Rows::read(&db);
        assert_eq!(rows.queue, vec![]);
        assert_eq!(rows.length(2), None);
        assert_eq!(rows.meta(meta::QUEUE_PENDING), Some(0));

        // One delivered and one new in the same batch: the length is what it was.
        run_batch(
            &db,
            vec![unanswered(Op::AppendMessage(test_message(
                1,
                1,
                Priority::Normal,
            )))],
        );
        run_batch(
            &db,
            vec![
                unanswered(Op::Dequeue(vec![(2, rank, 2)])),
                unanswered(Op::AppendMessage(test_message(1, 1, Priority::Normal))),
            ],
        );
        let rows = Rows::read(&db);
        assert_eq!(rows.queue, vec![(2, rank, 3)]);
        assert_eq!(rows.length(2), Some(1));
    }

    /// Against a long queue, delivered entries are removed one by one rather than in one
    /// sweep over the range they span (which would read the entries in between): the same
    /// entries go, and the lengths follow.
    #[test]
    fn delivered_entries_leave_a_long_queue_with_the_right_lengths() {
        let (_dir, db) = conversation_of_1_with(vec![2, 3]);
        // 2,100 messages: 4,200 entries, more than a sweep is allowed to read for three.
        let messages = (0..2_100)
            .map(|_| unanswered(Op::AppendMessage(test_message(1, 1, Priority::Normal))))
            .collect();
        run_batch(&db, messages);
        let rank = Priority::Normal.rank();
        let delivered = vec![(3, rank, 2_000), (2, rank, 7), (2, rank, 7), (9, rank, 1)];
        run_batch(&db, vec![unanswered(Op::Dequeue(delivered))]);

        let rows = Rows::read(&db);
        assert_eq!(rows.queue.len(), 4_198);
        assert!(!rows.queue.contains(&(2, rank, 7)));
        assert!(!rows.queue.contains(&(3, rank, 2_000)));
        assert!(rows.queue.contains(&(2, rank, 8)));
        assert!(rows.queue.contains(&(3, rank, 7)));
        assert_eq!(
            (rows.length(2), rows.length(3), rows.length(9)),
            (Some(2_099), Some(2_099), None)
        );
        assert_eq!(rows.meta(meta::QUEUE_PENDING), Some(4_198));
    }

    /// What the queue tables hold after a test's batches.
    struct Rows {
        txn: redb::ReadTransaction,
        queue: Vec<(u64, u8, u64)>,
    }

    impl Rows {
        fn read(db: &Database) -> Self {
            let txn = db.begin_read().expect("read");
            let queue = txn
                .open_table(QUEUE)
                .expect("queue")
                .iter()
                .expect("iter")
                .map(|e| e.expect("entry").0.value())
                .collect();
            Self { txn, queue }
        }

        fn meta(&self, key: &str) -> Option<u64> {
            let meta = self.txn.open_table(META).expect("meta");
            meta.get(key).expect("get").map(|v| v.value())
        }

        fn length(&self, user: u64) -> Option<u64> {
            let lengths = self.txn.open_table(QUEUE_LENGTHS).expect("lengths");
            lengths.get(user).expect("get").map(|v| v.value())
        }
    }

    /// Delivered entries come back from many sockets in any order, some twice (a replay and
    /// its live copy) and some gone already (drained): each present one goes once, and every
    /// user's length and the total follow.
    #[test]
    fn delivered_entries_in_any_order_leave_the_right_lengths() {
        let (_dir, db) = conversation_of_1_with(vec![2, 3, 4]);
        // Messages 1 to 3 from user 1: an entry each for users 2, 3 and 4.
        for _ in 0..3 {
            let new = test_message(1, 1, Priority::Normal);
            run_batch(&db, vec![unanswered(Op::AppendMessage(new))]);
        }
        let rank = Priority::Normal.rank();
        let delivered = vec![
            (4, rank, 2),
            (2, rank, 1),
            (3, rank, 3),
            (2, rank, 3),
            (4, rank, 2),
            (3, rank, 1),
            (9, rank, 1),
        ];
        run_batch(&db, vec![unanswered(Op::Dequeue(delivered))]);

        let rows = Rows::read(&db);
        assert_eq!(
            rows.queue,
            vec![(2, rank, 2), (3, rank, 2), (4, rank, 1), (4, rank, 3)]
        );
        assert_eq!(
            (
                rows.length(2),
                rows.length(3),
                rows.length(4),
                rows.length(9)
            ),
            (Some(1), Some(1), Some(2), None)
        );
        assert_eq!(rows.meta(meta::QUEUE_PENDING), Some(4));
    }
}

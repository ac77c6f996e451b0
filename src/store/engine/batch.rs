//! One batch: its requests' ops applied in one write transaction, and committed.
//!
//! The writer ([`super::writer`]) and a replay ([`super::redo`]) both commit through
//! [`commit_batch`]: a replayed batch goes through the code that applied it the first time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadTransaction};

use super::handle::{Reply, Request};
use super::ids;
use crate::model::MessageRecord;
use crate::store::StoreError;
use crate::store::damage::DamagedRecords;
use crate::store::history::{fold_count, scan_tail};
use crate::store::ops::{Answer, OpError, StoredMessage, Tables, WriteError, WriterTail};
use crate::store::records::decode;
use crate::store::tables::{MESSAGES, META, meta};

/// How [`commit_batch`] commits one batch.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct Plan {
    /// The batch's number: every batch the writer attempts takes the next one.
    pub seq: u64,
    /// A durable redb commit (a checkpoint), rather than one the journal makes durable.
    pub durable: bool,
    /// The batch's time: now, or what the journal recorded, for a replay.
    pub now_ms: u64,
    /// For a replay: the message ids the batch gave the first time (first, and the next after
    /// its last). Any other ids fail the batch before its commit, so nothing renumbered is
    /// kept: redb's close would make even a non-durable commit durable.
    pub expect_ids: Option<(u64, u64)>,
}

/// One request's answer, held until the fate of its batch is known.
#[derive(Debug)]
pub(in crate::store) struct Completion {
    reply: Reply,
    /// What its op answered, or why it was refused.
    result: Result<Answer, WriteError>,
}

impl Completion {
    /// A completion for `reply`, if anyone waits for one.
    fn new(reply: Option<Reply>, result: Result<Answer, WriteError>) -> Option<Self> {
        reply.map(|reply| Completion { reply, result })
    }

    /// Answers the request: its op's answer if the batch is durable, else the batch's error.
    pub(in crate::store) fn finish(self, commit: Result<(), &StoreError>) {
        let answer = match commit {
            Ok(()) => self.result,
            Err(e) => Err(WriteError::Store(e.clone())),
        };
        // The requester may have gone away (client disconnected); the write stands
        // regardless.
        let _ = self.reply.send(answer);
    }
}

/// Applies `batch` in one transaction and commits it as `plan` says. On any storage error
/// nothing of the batch is kept, and every request hears the error.
pub(in crate::store) fn commit_batch(
    db: &Database,
    batch: &mut Vec<Request>,
    state: &mut WriterState,
    queue_max: u64,
    plan: Plan,
) -> (Vec<Completion>, BatchReport, Result<(), StoreError>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut report = BatchReport::default();
    let mut pending = batch.drain(..);
    let tail_before = state.tail.len();
    let mut folded = None;
    let mut folded_count = 0;
    let mut reserved = false;
    let outcome = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        if !plan.durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        {
            let mut tables = Tables::open(&txn, queue_max, &mut state.tail, &state.damaged)?;
            let first_message_id = tables.next_message_id;
            for Request { op, reply } in pending.by_ref() {
                let (result, abort) = match op.apply(&mut tables, plan.now_ms) {
                    Ok(answer) => (Ok(answer), None),
                    Err(OpError::Refused(e)) => (Err(e), None),
                    Err(OpError::Abort(e)) => (Err(WriteError::Store(e.clone())), Some(e)),
                };
                completions.extend(Completion::new(reply, result));
                if let Some(e) = abort {
                    return Err(e);
                }
            }
            // The oldest part of the tail only: a fold of all of it stalled every request
            // waiting behind this batch (docs/PERFORMANCE.md, "Open loop: the tail").
            let count = fold_count(tables.tail_len());
            if count > 0 {
                folded_count = count;
                folded = Some(tables.fold_tail(count)?);
            }
            tables.flush()?;
            tables.save_counters()?;
            reserved = ids::reserve(&mut tables.meta)?;
            // Durable or not: see `meta::APPLIED_SEQ`.
            tables.meta.insert(meta::APPLIED_SEQ, plan.seq)?;
            if let Some(recorded) = plan.expect_ids {
                let gave = (first_message_id, tables.next_message_id);
                if gave != recorded {
                    return Err(StoreError::ReplayDiverged { gave, recorded });
                }
            }
            report = BatchReport {
                stored: std::mem::take(&mut tables.stored),
                queue_changes: std::mem::take(&mut tables.queue_changes),
                dead_letters: tables.dead_letters_added,
                queue_pending: tables.queue_pending,
                first_message_id,
                next_message_id: tables.next_message_id,
                outbox: tables
                    .next_event_id
                    .map(|next_event_id| super::OutboxProgress {
                        next_event_id,
                        pending: tables.events_pending,
                    }),
                events_dropped: tables.events_dropped_added,
                events_dropped_through: tables.events_dropped_through,
                durable: plan.durable || reserved,
                sync: Duration::ZERO,
                folded: folded_count,
            };
        }
        // Its ids passed the durable reservation: the new one must be durable before any of
        // them is handed out, and with it the batch itself.
        if reserved && !plan.durable {
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        // Before the commit: a reader that sees this batch reads its seq (see `Progress`).
        state.committing.store(plan.seq, Ordering::SeqCst);
        let syncing = Instant::now();
        txn.commit()?;
        report.sync = syncing.elapsed();
        Ok(())
    })();
    // Requests not reached because an earlier one hit a storage error fail with it too.
    let failure = outcome.as_ref().err().cloned();
    for Request { reply, .. } in pending {
        let err = WriteError::Store(failure.clone().unwrap_or(StoreError::Closed));
        completions.extend(Completion::new(reply, Err(err)));
    }
    match outcome {
        Ok(()) => {
            // Folded and committed: those messages are in the index now.
            if let Some(through) = folded {
                state.tail.folded(through);
            }
        }
        Err(_) => {
            state.tail.truncate(tail_before);
            report = BatchReport::default();
        }
    }
    (completions, report, outcome)
}

/// Answers every request of `batch` with `err`, without applying any (emptying it).
pub(in crate::store) fn refuse(batch: &mut Vec<Request>, err: &WriteError) -> Vec<Completion> {
    batch
        .drain(..)
        .filter_map(|Request { reply, .. }| Completion::new(reply, Err(err.clone())))
        .collect()
}

/// What a committed batch changed, for fan-out and metrics.
#[derive(Debug, Default)]
pub(in crate::store) struct BatchReport {
    pub stored: Vec<StoredMessage>,
    /// (user, queue non-empty) for each queue length the batch wrote, in order.
    pub queue_changes: Vec<(u64, bool)>,
    pub dead_letters: u64,
    pub queue_pending: u64,
    /// The message ids the batch gave: from the first up to (not including) the next.
    pub first_message_id: u64,
    pub next_message_id: u64,
    /// The webhook outbox after the batch (`None` before its first event).
    pub outbox: Option<super::OutboxProgress>,
    /// Webhook events the batch dropped (`webhooks.max_pending`), and the newest id among them.
    pub events_dropped: u64,
    pub events_dropped_through: u64,
    /// The commit was durable (a checkpoint): planned so, or made so by a new id reservation
    /// ([`ids::reserve`]).
    pub durable: bool,
    /// How long redb's `commit()` took: for a checkpoint, writing its pages and `fdatasync`.
    pub sync: Duration,
    /// Messages the batch folded from the history tail into its indexes.
    pub folded: usize,
}

/// What the writer carries from one batch to the next.
#[derive(Debug, Default)]
pub(in crate::store) struct WriterState {
    pub(super) clock: Clock,
    tail: WriterTail,
    /// The seq of the last batch attempted.
    pub(super) seq: u64,
    /// Shared with readers: see [`super::durability::Progress`].
    pub(super) committing: Arc<AtomicU64>,
    /// Where a message record the writer cannot decode is reported (the store's, once the
    /// writer runs).
    pub(super) damaged: Arc<DamagedRecords>,
}

impl WriterState {
    /// Now, as a batch's time (never before the last batch's).
    pub(in crate::store) fn now_ms(&mut self) -> u64 {
        self.clock.now_ms()
    }

    /// The tail as of `txn`: every message above `indexed_to`.
    pub(in crate::store) fn load(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Self::load_with(txn, Arc::default())
    }

    /// [`WriterState::load`], reporting damaged records to `damaged`.
    pub(super) fn load_with(
        txn: &ReadTransaction,
        damaged: Arc<DamagedRecords>,
    ) -> Result<Self, StoreError> {
        let indexed_to = meta::get(&txn.open_table(META)?, meta::INDEXED_TO)?.unwrap_or(0);
        let mut tail = WriterTail::default();
        scan_tail(
            &txn.open_table(MESSAGES)?,
            indexed_to,
            &damaged,
            |bytes| decode::<MessageRecord>(bytes),
            |id, record| {
                let client = record.client_id.map(|c| (record.sender, c));
                tail.push(record.conversation, id, client);
            },
        )?;
        Ok(Self {
            tail,
            damaged,
            ..Self::default()
        })
    }
}

/// Commit timestamps that never go backwards, even if the wall clock does.
#[derive(Debug, Default)]
pub(super) struct Clock {
    last_ms: u64,
}

impl Clock {
    fn now_ms(&mut self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_ms = self.last_ms.max(wall);
        self.last_ms
    }
}

/// One-off batches on a bare test database.
#[cfg(test)]
pub(in crate::store) mod testing {
    use redb::{Database, ReadableDatabase};

    use super::{Completion, Plan, WriterState, commit_batch};
    use crate::store::StoreError;
    use crate::store::engine::handle::Request;
    use crate::store::ops::Op;

    impl Plan {
        /// A durable commit at the current time, as the tests' one-off batches are.
        pub(in crate::store) fn checkpoint_now() -> Plan {
            Plan {
                seq: 0,
                durable: true,
                now_ms: crate::time::now_ms(),
                expect_ids: None,
            }
        }
    }

    /// The writer's state for a test database (empty while its tables do not exist yet).
    pub(in crate::store) fn test_state(db: &Database) -> WriterState {
        db.begin_read()
            .map_err(StoreError::from)
            .and_then(|txn| WriterState::load(&txn))
            .unwrap_or_default()
    }

    /// `op`, its answer going nowhere.
    pub(in crate::store) fn unanswered(op: Op) -> Request {
        Request { op, reply: None }
    }

    /// Commits `batch` as one durable batch on a test database and answers its requests.
    pub(in crate::store) fn run_batch(db: &Database, mut batch: Vec<Request>) {
        let (completions, _, outcome) = commit_batch(
            db,
            &mut batch,
            &mut test_state(db),
            u64::MAX,
            Plan::checkpoint_now(),
        );
        for done in completions {
            Completion::finish(done, outcome.as_ref().map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Regression: one request whose stored record cannot be decoded used to fail every other
    //! request of its batch (and its own reply was dropped, which read as "shutting down").

    use redb::{Database, ReadableDatabase};

    use super::testing::{run_batch, unanswered};
    use crate::model::Priority;
    use crate::store::StoreError;
    use crate::store::engine::handle::Request;
    use crate::store::ops::{MessageAppended, Op, WriteError};
    use crate::store::tables::{CONVERSATIONS, MESSAGES};
    use crate::store::testing::{one_to_one, test_message};

    #[test]
    fn a_bad_record_fails_only_its_own_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        for other in [2, 3] {
            run_batch(
                &db,
                vec![unanswered(Op::CreateConversation(one_to_one(1, other)))],
            );
        }
        // Damage conversation 2's record.
        let txn = db.begin_write().expect("txn");
        txn.open_table(CONVERSATIONS)
            .expect("table")
            .insert(2, [0xffu8; 3].as_slice())
            .expect("insert");
        txn.commit().expect("commit");

        let (good, good_rx) = Request::answered::<MessageAppended>(Op::AppendMessage(
            test_message(1, 1, Priority::Normal),
        ));
        let (bad, bad_rx) = Request::answered::<MessageAppended>(Op::AppendMessage(test_message(
            2,
            1,
            Priority::Normal,
        )));
        run_batch(&db, vec![good, bad]);
        let good = good_rx.try_done().expect("good answered");
        assert!(
            matches!(good, Ok(MessageAppended::Stored { id: 1, .. })),
            "{good:?}"
        );
        let bad = bad_rx.try_done().expect("bad answered, not dropped");
        assert!(
            matches!(bad, Err(WriteError::Store(StoreError::Encoding(_)))),
            "{bad:?}"
        );
        let read = db.begin_read().expect("read");
        let messages = read.open_table(MESSAGES).expect("table");
        assert!(
            messages.get(1).expect("get").is_some(),
            "good message committed"
        );
        assert!(
            messages.get(2).expect("get").is_none(),
            "nothing of the bad one"
        );
    }
}

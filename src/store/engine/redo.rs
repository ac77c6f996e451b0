//! Redoing the journal's batches after a crash: each record's ops applied again, as the
//! writer applied them, on the state the last checkpoint left.
//!
//! Redoing a batch means applying the same ops in the same order at the same time with the
//! same queue bound through the same code ([`super::batch::commit_batch`]): that gives the
//! same rows, which the recorded message ids check ([`super::record`] says what a record
//! holds).

use redb::{Database, ReadableDatabase};

use super::batch::{Plan, WriterState, commit_batch};
use super::handle::Request;
use super::journal::{Journal, Record};
use super::record;
use crate::store::StoreError;
use crate::store::tables::{META, meta};

/// What [`replay`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replayed {
    /// The seq the writer continues from.
    pub seq: u64,
    /// Journal records applied.
    pub batches: usize,
    /// Messages they stored.
    pub messages: usize,
}

/// The seq of the newest batch the data file holds: the journal's records after it are not in
/// it yet.
pub(super) fn applied_seq(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    Ok(meta::get(&txn.open_table(META)?, meta::APPLIED_SEQ)?.unwrap_or(0))
}

/// Applies `records`, the journal's batches after the newest one the data file holds (its
/// last checkpoint after a crash; a later batch if redb was closed without one), each as the
/// writer applied it (same ops, same time, same queue bound), then checkpoints: the data
/// file then holds every batch that was durable when the daemon stopped. Refuses to go on if a
/// batch gives other message ids than it gave the first time, rather than renumber
/// acknowledged messages.
pub(super) fn replay(
    db: &Database,
    journal: &Journal,
    records: &[Record],
) -> Result<Replayed, StoreError> {
    let (replayed, mut state) = replay_unsynced(db, journal, records)?;
    if replayed.batches > 0 {
        let plan = Plan {
            seq: replayed.seq,
            durable: true,
            now_ms: state.now_ms(),
            expect_ids: None,
        };
        // No ops: no queue is bounded by it.
        commit_batch(db, &mut Vec::new(), &mut state, u64::MAX, plan).2?;
    }
    Ok(replayed)
}

/// [`replay`] without its checkpoint: the batches are in redb's memory only, as durable as
/// the journal that still holds them. The writer reopens the data file this way after a
/// failed write, so that readers see every acknowledged batch while the disk stays full.
pub(super) fn replay_unsynced(
    db: &Database,
    journal: &Journal,
    records: &[Record],
) -> Result<(Replayed, WriterState), StoreError> {
    let damaged = |message: String| StoreError::Journal {
        path: journal.path().to_owned(),
        message,
    };
    let (applied, mut state) = {
        let txn = db.begin_read()?;
        let applied = meta::get(&txn.open_table(META)?, meta::APPLIED_SEQ)?.unwrap_or(0);
        (applied, WriterState::load(&txn)?)
    };
    let mut replayed = Replayed {
        seq: applied,
        batches: 0,
        messages: 0,
    };
    for record in records.iter().filter(|r| r.seq > applied) {
        let logged = record::decode(&record.payload)
            .map_err(|e| damaged(format!("record {} cannot be read: {e}", record.seq)))?;
        let plan = Plan {
            seq: record.seq,
            durable: false,
            now_ms: logged.now_ms,
            expect_ids: Some(logged.ids),
        };
        // Nobody waits for a replay's answers.
        let mut batch: Vec<Request> = logged
            .ops
            .into_iter()
            .map(|op| Request { op, reply: None })
            .collect();
        let (_, report, outcome) = commit_batch(db, &mut batch, &mut state, logged.queue_max, plan);
        outcome.map_err(|e| match e {
            StoreError::ReplayDiverged { .. } => damaged(format!("record {} {e}", record.seq)),
            other => other,
        })?;
        replayed.seq = record.seq;
        replayed.batches += 1;
        replayed.messages += report.stored.len();
    }
    Ok((replayed, state))
}

#[cfg(test)]
mod tests {
    //! A crash loses everything redb had not committed durably; the journal must give all of it
    //! back. The files a crash leaves, opened again, must hold exactly the rows the same store
    //! holds after a clean stop.

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::Priority;
    use crate::store::engine::journal::{self, RECORD_HEADER};
    use crate::store::engine::record::FIELDS;
    use crate::store::history::FOLD_AT;
    use crate::store::testing::{TempStore, one_to_one, test_message};
    use crate::store::{
        Broadcast, MessageAppended, NewAccount, NewConversation, NewMessage, WriteError,
        WriterHandle, WriterOptions,
    };

    fn message(conversation: u64, sender: u64, client_id: Option<String>) -> NewMessage {
        NewMessage {
            client_id,
            ..test_message(conversation, sender, Priority::Normal)
        }
    }

    /// Every kind of request, many in one batch and one to a batch, enough messages to fold
    /// the history tail once. Returns how many messages it stored.
    async fn script(writer: &WriterHandle) -> u64 {
        let one = writer
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("conversation")
            .id;
        let group = writer
            .create_conversation(NewConversation {
                creator: 3,
                participants: vec![1, 2],
                property: Some(7),
                booking: None,
                subject: Some(vec![1, 2, 3]),
            })
            .await
            .expect("group")
            .id;
        let again = writer
            .create_conversation(one_to_one(2, 1))
            .await
            .expect("same");
        assert!(!again.created);
        let mut stored = 0;
        let mut ids = Vec::new();
        for round in 0..22 {
            let sends: Vec<_> = (0..50u64)
                .map(|i| {
                    let (conversation, sender) = match i % 3 {
                        0 => (group, 3),
                        1 => (one, 1),
                        _ => (one, 2),
                    };
                    let client_id = (i % 4 == 0).then(|| format!("{round}-{i}"));
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        writer
                            .append_message(message(conversation, sender, client_id))
                            .await
                    })
                })
                .collect();
            for send in sends {
                if let MessageAppended::Stored { id, .. } =
                    send.await.expect("task").expect("append")
                {
                    stored += 1;
                    ids.push(id);
                }
            }
        }
        let duplicate = writer
            .append_message(message(group, 3, Some("0-0".into())))
            .await
            .expect("duplicate");
        assert!(matches!(duplicate, MessageAppended::Duplicate { .. }));
        let refused = writer.append_message(message(one, 9, None)).await;
        assert!(matches!(refused, Err(WriteError::ConversationNotFound)));
        writer
            .mark_read(2, one, Some(ids[40]))
            .await
            .expect("mark read");
        writer.mark_read(3, group, None).await.expect("mark all");
        writer.set_archived(1, group, true).await.expect("archive");
        let normal = Priority::Normal.rank();
        writer
            .dequeue(ids[..30].iter().map(|id| (2, normal, *id)).collect())
            .expect("dequeue");
        let drained = writer
            .drain(ids[30..60].iter().map(|id| (1, normal, *id)).collect())
            .await
            .expect("drain");
        assert!(!drained.is_empty());
        let account = NewAccount {
            username: "ann".into(),
            display_name: Some("Ann".into()),
            password_hash: "$argon2id$stand-in".into(),
            id_base: 1_000_000,
        };
        writer
            .register_account(account.clone())
            .await
            .expect("register");
        let taken = writer.register_account(account).await;
        assert!(matches!(taken, Err(WriteError::UsernameTaken)));
        writer
            .submit_ensure_user(42, Some("zed".into()))
            .await
            .expect("submit")
            .done()
            .await
            .expect("ensure user");
        let broadcasted = writer
            .broadcast(Broadcast {
                sender: 1,
                message_type: "system".into(),
                priority: Priority::High,
                recipients: vec![4, 5, 6],
                body: Arc::new(vec![9; 10]),
                plain: Arc::default(),
            })
            .await
            .expect("broadcast");
        stored += broadcasted.delivered;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let boundary = crate::time::now_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        writer
            .append_message(message(one, 2, None))
            .await
            .expect("after the boundary");
        assert!(writer.expire(boundary).await.expect("expire") > 0);
        stored + 1
    }

    fn without_applied_seq(rows: Vec<String>) -> Vec<String> {
        rows.into_iter()
            .filter(|row| !row.starts_with("name_value \"applied_seq\""))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_journal_rebuilds_every_row() {
        let temp = TempStore::new();
        // A first batch reserves ids of every kind, in a durable commit of its own (see `ids`):
        // none of the script's batches passes a reservation, so the journal holds them all.
        let (store, thread) = temp.open();
        let account = NewAccount {
            username: "first".into(),
            display_name: None,
            password_hash: "$argon2id$stand-in".into(),
            id_base: 1_000_000,
        };
        store
            .writer()
            .register_account(account)
            .await
            .expect("register");
        thread.finish(store.writer()).await;
        drop(store);
        let (store, thread) = temp.open_journal_only();
        let stored = script(store.writer()).await;
        let crashed = temp.crash_copy();
        thread.finish(store.writer()).await;
        drop(store);
        let expected = without_applied_seq(temp.dump());
        let messages = expected
            .iter()
            .filter(|row| row.starts_with("msgid_message "))
            .count();
        assert_eq!(messages as u64, stored);
        assert!(messages > FOLD_AT, "the script folds the tail once");

        // What the crash left in the data file itself: none of it.
        assert_eq!(
            messages_in(&crashed),
            0,
            "nothing was checkpointed during the run"
        );
        let (store, thread) = crashed.open();
        thread.finish(store.writer()).await;
        drop(store);
        assert_eq!(without_applied_seq(crashed.dump()), expected);

        // Replayed once, and checkpointed: a second start has nothing to replay and changes
        // nothing.
        let (store, thread) = crashed.open();
        thread.finish(store.writer()).await;
        drop(store);
        assert_eq!(without_applied_seq(crashed.dump()), expected);
    }

    /// A conversation, checkpointed by a stop, then three messages, none checkpointed before
    /// the next stop: the store stopped cleanly, and a copy of its files taken just before
    /// (as a crash leaves them).
    async fn three_messages_in_the_journal() -> (TempStore, TempStore) {
        let temp = TempStore::new();
        let conversation = temp.with_conversation().await;
        let (store, thread) = temp.open_journal_only();
        let writer = store.writer().clone();
        for _ in 0..3 {
            writer
                .append_message(message(conversation, 1, None))
                .await
                .expect("append");
        }
        let crashed = temp.crash_copy();
        thread.finish(&writer).await;
        drop(store);
        (temp, crashed)
    }

    fn messages_in(store: &TempStore) -> usize {
        store
            .dump()
            .iter()
            .filter(|row| row.starts_with("msgid_message "))
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_a_stopped_replay_applied_are_not_applied_again() {
        let (_stopped, crashed) = three_messages_in_the_journal().await;

        // After the crash's records, one that carries a good tag but does not decode (as
        // a newer build's request would read to this one): the open stops there.
        let path = crashed.path().join(journal::JOURNAL_FILE);
        let as_crashed = std::fs::read(&path).expect("read");
        let journal = Journal::read_only(crashed.path()).expect("journal");
        let records = journal.scan(0).expect("scan").records;
        assert_eq!(records.len(), 3, "the three messages");
        let end = journal::RECORDS_START as usize
            + records
                .iter()
                .map(|r| journal::RECORD_HEADER + r.payload.len())
                .sum::<usize>();
        let mut unreadable = vec![0u8; RECORD_HEADER + FIELDS + 3];
        unreadable[RECORD_HEADER + FIELDS..].fill(0xff);
        journal.seal(&mut unreadable, records[2].seq + 1);
        drop(journal);
        std::fs::write(&path, [&as_crashed[..end], &unreadable[..]].concat()).expect("write");
        let refused = crashed
            .try_open(WriterOptions::standalone(64))
            .expect_err("the unreadable record stops the open");
        assert!(refused.to_string().contains("cannot be read"), "{refused}");

        // Closing redb made the three batches replayed before it durable. The journal as the
        // crash left it must still open, with each of them applied once.
        std::fs::write(&path, &as_crashed[..end]).expect("write");
        let (store, thread) = crashed.open();
        thread.finish(store.writer()).await;
        drop(store);
        assert_eq!(messages_in(&crashed), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_replays_to_other_ids_is_refused_and_not_kept() {
        let (_stopped, crashed) = three_messages_in_the_journal().await;
        // The last record says it gave other ids than the replay will: the replay must stop
        // there, keeping nothing of it, at every start.
        let path = crashed.path().join(journal::JOURNAL_FILE);
        let journal = Journal::read_only(crashed.path()).expect("journal");
        let records = journal.scan(0).expect("scan").records;
        let mut file =
            std::fs::read(&path).expect("read")[..journal::RECORDS_START as usize].to_vec();
        for (i, record) in records.iter().enumerate() {
            let mut payload = record.payload.clone();
            if i == records.len() - 1 {
                payload[8..16].copy_from_slice(&1000u64.to_le_bytes());
            }
            let mut bytes = vec![0u8; journal::RECORD_HEADER];
            bytes.extend_from_slice(&payload);
            journal.seal(&mut bytes, record.seq);
            file.extend_from_slice(&bytes);
        }
        drop(journal);
        std::fs::write(&path, &file).expect("write");
        for _ in 0..2 {
            let refused = crashed
                .try_open(WriterOptions::standalone(64))
                .expect_err("refused");
            assert!(
                refused.to_string().contains("again, not 1000.."),
                "{refused}"
            );
            assert_eq!(messages_in(&crashed), 2, "the two batches before it, once");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_bounds_queues_as_the_batches_were_bounded_when_written() {
        let temp = TempStore::new();
        let conversation = temp.with_conversation().await;
        let (store, thread) = temp.open_with(WriterOptions {
            queue_max: 3,
            checkpoint_interval: Duration::from_secs(3600),
            ..WriterOptions::standalone(64)
        });
        for _ in 0..10 {
            store
                .writer()
                .append_message(message(conversation, 1, None))
                .await
                .expect("append");
        }
        let crashed = temp.crash_copy();
        thread.finish(store.writer()).await;
        drop(store);
        let expected = without_applied_seq(temp.dump());
        let queued = |rows: &[String]| {
            rows.iter()
                .filter(|r| r.starts_with("userid_prio_msgid_enqueuedms "))
                .count()
        };
        assert_eq!(queued(&expected), 3);
        // Opened with another bound, as a restart with another config would.
        let (store, thread) = crashed.open_with(WriterOptions {
            queue_max: 100,
            ..WriterOptions::standalone(64)
        });
        thread.finish(store.writer()).await;
        drop(store);
        assert_eq!(without_applied_seq(crashed.dump()), expected);
    }
}

//! The journal's records: what the writer writes down for each batch, and how a restart
//! redoes them.
//!
//! A record holds the batch's requests as they came (postcard, without their reply
//! channels), the time the writer gave the batch, the message ids it gave out, and the queue
//! bound it was applied with. Redoing them means applying the same requests in the same order
//! at the same time with the same settings through the same code ([`super::writer`]'s
//! `commit_batch`), on the state the last checkpoint left: that gives the same rows, which the
//! recorded message ids check. What the replay needs comes from the record, never from today's
//! config: a restart with another `queues.message_queue_max_size` must bring back the queues
//! that were acknowledged, not the ones the new bound would have made. Logging the requests
//! rather than the rows they changed keeps a record small (a message's sealed body and a few
//! ids, not its queue entries, memberships and counters), at the price of that code staying
//! deterministic: it reads the clock only through the batch's time and orders everything it
//! iterates.
//! [`super::journal`] stores the records; this module knows what they mean.

use redb::{Database, ReadableDatabase};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::journal::{self, Damage, Journal, Record};
use super::tables::{META, meta};
use super::writer::{
    BatchReport, Broadcast, Command, NewAccount, NewConversation, NewMessage, Plan, QueueKey,
    WriterState, commit_batch,
};
use super::{Reply, StoreError};

/// A [`Command`] as the journal holds it: the request without its reply channel. Encoded from
/// a borrowed command; read back as [`Logged`], which must keep the same variants in the same
/// order (postcard numbers them): append new ones at the end, never reorder.
#[derive(Debug, Serialize)]
enum LoggedRef<'a> {
    CreateConversation(&'a NewConversation),
    AppendMessage(&'a NewMessage),
    EnsureUser {
        id: u64,
        username: &'a Option<String>,
    },
    RegisterAccount(&'a NewAccount),
    MarkRead {
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
    },
    SetArchived {
        user: u64,
        conversation: u64,
        archived: bool,
    },
    Dequeue(&'a [QueueKey]),
    Drain(&'a [QueueKey]),
    Expire(u64),
    Broadcast(&'a Broadcast),
}

/// What [`LoggedRef`] encodes, read back for a replay.
#[derive(Debug, Deserialize)]
enum Logged {
    CreateConversation(NewConversation),
    AppendMessage(NewMessage),
    EnsureUser {
        id: u64,
        username: Option<String>,
    },
    RegisterAccount(NewAccount),
    MarkRead {
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
    },
    SetArchived {
        user: u64,
        conversation: u64,
        archived: bool,
    },
    Dequeue(Vec<QueueKey>),
    Drain(Vec<QueueKey>),
    Expire(u64),
    Broadcast(Broadcast),
}

impl Command {
    /// What the journal keeps of this request (nothing of the control commands).
    fn logged(&self) -> Option<LoggedRef<'_>> {
        Some(match self {
            Command::CreateConversation(new, _) => LoggedRef::CreateConversation(new),
            Command::AppendMessage(new, _) => LoggedRef::AppendMessage(new),
            Command::EnsureUser { id, username, .. } => LoggedRef::EnsureUser { id: *id, username },
            Command::RegisterAccount(new, _) => LoggedRef::RegisterAccount(new),
            Command::MarkRead {
                user,
                conversation,
                up_to,
                ..
            } => LoggedRef::MarkRead {
                user: *user,
                conversation: *conversation,
                up_to: *up_to,
            },
            Command::SetArchived {
                user,
                conversation,
                archived,
                ..
            } => LoggedRef::SetArchived {
                user: *user,
                conversation: *conversation,
                archived: *archived,
            },
            Command::Dequeue(entries) => LoggedRef::Dequeue(entries),
            Command::Drain(entries, _) => LoggedRef::Drain(entries),
            Command::Expire(before_ms, _) => LoggedRef::Expire(*before_ms),
            Command::Broadcast(broadcast, _) => LoggedRef::Broadcast(broadcast),
            Command::Stop => return None,
        })
    }
}

impl From<Logged> for Command {
    /// The request again, its answer going nowhere: nobody waits for a replay.
    fn from(logged: Logged) -> Self {
        fn nobody<T>() -> Reply<T> {
            oneshot::channel().0
        }
        match logged {
            Logged::CreateConversation(new) => Command::CreateConversation(new, nobody()),
            Logged::AppendMessage(new) => Command::AppendMessage(new, nobody()),
            Logged::EnsureUser { id, username } => Command::EnsureUser {
                id,
                username,
                reply: nobody(),
            },
            Logged::RegisterAccount(new) => Command::RegisterAccount(new, nobody()),
            Logged::MarkRead {
                user,
                conversation,
                up_to,
            } => Command::MarkRead {
                user,
                conversation,
                up_to,
                reply: nobody(),
            },
            Logged::SetArchived {
                user,
                conversation,
                archived,
            } => Command::SetArchived {
                user,
                conversation,
                archived,
                reply: nobody(),
            },
            Logged::Dequeue(entries) => Command::Dequeue(entries),
            Logged::Drain(entries) => Command::Drain(entries, nobody()),
            Logged::Expire(before_ms) => Command::Expire(before_ms, nobody()),
            Logged::Broadcast(broadcast) => Command::Broadcast(broadcast, nobody()),
        }
    }
}

/// Bytes of a record's payload before its requests: time, first and next message id, and the
/// queue bound (`queues.message_queue_max_size`) the batch was applied with.
const RECORD_FIELDS: usize = 32;
/// The same in journals of formats 1 and 2, which had no queue bound: theirs is today's.
const RECORD_FIELDS_BEFORE_3: usize = 24;

/// A journal record for `batch`, applied at `now_ms` with queues bounded to `queue_max`; its
/// message ids are left to [`fill_record`] and its front to [`Journal::seal`].
pub(super) fn encode_record(
    batch: &[Command],
    now_ms: u64,
    queue_max: u64,
) -> Result<Vec<u8>, StoreError> {
    let mut record = vec![0; journal::RECORD_HEADER + RECORD_FIELDS];
    let fields = &mut record[journal::RECORD_HEADER..];
    fields[..8].copy_from_slice(&now_ms.to_le_bytes());
    fields[24..32].copy_from_slice(&queue_max.to_le_bytes());
    for logged in batch.iter().filter_map(Command::logged) {
        record = postcard::to_extend(&logged, record)
            .map_err(|e| StoreError::Encoding(e.to_string()))?;
    }
    Ok(record)
}

/// Completes a record once its batch committed: the message ids it gave.
pub(super) fn fill_record(record: &mut [u8], report: &BatchReport) {
    let fields = &mut record[journal::RECORD_HEADER..][..RECORD_FIELDS];
    fields[8..16].copy_from_slice(&report.first_message_id.to_le_bytes());
    fields[16..24].copy_from_slice(&report.next_message_id.to_le_bytes());
}

/// A journal record's batch, read back.
struct LoggedBatch {
    now_ms: u64,
    /// The message ids it gave: first, and the next after its last.
    ids: (u64, u64),
    /// The queue bound it was applied with (`None` in journals of formats 1 and 2).
    queue_max: Option<u64>,
    commands: Vec<Command>,
}

/// The message ids a record's batch gave (first, and the next after its last), as the record
/// says; `None` for a payload too short to say.
pub(super) fn message_ids(payload: &[u8]) -> Option<(u64, u64)> {
    let field = |i: usize| Some(u64::from_le_bytes(payload.get(i..i + 8)?.try_into().ok()?));
    Some((field(8)?, field(16)?))
}

/// A record's payload, from a journal of `format`, read back.
fn decode_record(payload: &[u8], format: u32) -> Result<LoggedBatch, String> {
    let fields = if format >= 3 {
        RECORD_FIELDS
    } else {
        RECORD_FIELDS_BEFORE_3
    };
    if payload.len() < fields {
        return Err(format!("{} bytes, shorter than its fields", payload.len()));
    }
    let field = |i: usize| u64::from_le_bytes(payload[i * 8..][..8].try_into().expect("8 bytes"));
    let mut rest = &payload[fields..];
    let mut commands = Vec::new();
    while !rest.is_empty() {
        let (logged, after) =
            postcard::take_from_bytes::<Logged>(rest).map_err(|e| e.to_string())?;
        commands.push(Command::from(logged));
        rest = after;
    }
    Ok(LoggedBatch {
        now_ms: field(0),
        ids: (field(1), field(2)),
        queue_max: (fields == RECORD_FIELDS).then(|| field(3)),
        commands,
    })
}

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
/// writer applied it (same requests, same time, same queue bound), then checkpoints: the data
/// file then holds every batch that was durable when the daemon stopped. Refuses to go on if a
/// batch gives other message ids than it gave the first time, rather than renumber
/// acknowledged messages. `queue_max` is today's bound, for journals written before records
/// carried theirs.
pub(super) fn replay(
    db: &Database,
    journal: &Journal,
    records: &[Record],
    queue_max: u64,
) -> Result<Replayed, StoreError> {
    let (replayed, mut state) = replay_unsynced(db, journal, records, queue_max)?;
    if replayed.batches > 0 {
        let plan = Plan {
            seq: replayed.seq,
            durable: true,
            now_ms: state.now_ms(),
            expect_ids: None,
        };
        commit_batch(db, &mut Vec::new(), &mut state, queue_max, plan).2?;
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
    queue_max: u64,
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
        let logged = decode_record(&record.payload, journal.format())
            .map_err(|e| damaged(format!("record {} cannot be read: {e}", record.seq)))?;
        let plan = Plan {
            seq: record.seq,
            durable: false,
            now_ms: logged.now_ms,
            expect_ids: Some(logged.ids),
        };
        let mut batch = logged.commands;
        let bound = logged.queue_max.unwrap_or(queue_max);
        let (_, report, outcome) = commit_batch(db, &mut batch, &mut state, bound, plan);
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

/// What a damaged journal puts at stake, in the words of the messages that report it: how
/// many records a start can still replay, and what the damage costs (records, batches and the
/// message ids they gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stake {
    /// Records before the damage, which a start that accepts the loss replays.
    replayable: usize,
    /// Whole records the damage cuts off (with a damaged header, every record).
    lost: usize,
    /// Their seqs, first and last.
    batches: Option<(u64, u64)>,
    /// The message ids lost, first and last: from the first the replay does not reach (the
    /// damaged record's, when a record is damaged) to the last a lost record gave.
    message_ids: Option<(u64, u64)>,
    /// The damage is in the header.
    header: bool,
    /// The lost records were checked; if not, they are what they say of themselves.
    checked: bool,
}

impl Stake {
    /// The stake of `damage`, given the `records` the journal can still replay and the data
    /// file in `db`.
    pub(super) fn new(
        db: &Database,
        records: &[Record],
        damage: &Damage,
    ) -> Result<Stake, StoreError> {
        let next_in_file = {
            let txn = db.begin_read()?;
            meta::get(&txn.open_table(META)?, meta::NEXT_MESSAGE_ID)?.unwrap_or(1)
        };
        let first = records
            .last()
            .and_then(|r| message_ids(&r.payload))
            .map_or(next_in_file, |(_, next)| next);
        let last = damage
            .lost
            .iter()
            .filter_map(|r| message_ids(&r.payload))
            .map(|(_, next)| next)
            .max()
            .and_then(|next| next.checked_sub(1))
            .filter(|last| *last >= first);
        let seqs = damage.lost.iter().map(|r| r.seq);
        Ok(Stake {
            replayable: records.len(),
            lost: damage.lost.len(),
            batches: seqs.clone().min().zip(seqs.max()),
            message_ids: last.map(|last| (first, last)),
            header: damage.offset < journal::RECORDS_START,
            checked: damage.checked,
        })
    }

    /// Whole records the damage cuts off.
    pub(super) fn lost(&self) -> usize {
        self.lost
    }

    /// The message ids lost, first and last.
    pub(super) fn message_ids(&self) -> Option<(u64, u64)> {
        self.message_ids
    }
}

impl std::fmt::Display for Stake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = |f: &mut std::fmt::Formatter<'_>| {
            let mut parts = Vec::new();
            if let Some((first, last)) = self.batches {
                parts.push(format!("batches {first}..={last}"));
            }
            if let Some((first, last)) = self.message_ids {
                parts.push(format!("message ids {first}..={last}"));
            }
            if !self.checked {
                parts.push("as the records say of themselves: nothing can check them".into());
            }
            if parts.is_empty() {
                return Ok(());
            }
            write!(f, " ({})", parts.join(", "))
        };
        match (self.header, self.lost) {
            (true, 0) => write!(
                f,
                "its {} records can still be replayed; nothing lies past the damage",
                self.replayable
            ),
            (true, lost) => {
                write!(f, "the {lost} records behind it")?;
                what(f)?;
                write!(f, " cannot be replayed")
            }
            (false, lost) => {
                write!(f, "the damaged record and the {lost} records past it")?;
                what(f)?;
                write!(
                    f,
                    " cannot be replayed; the {} records before it can",
                    self.replayable
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A crash loses everything redb had not committed durably; the journal must give all of it
    //! back. The files a crash leaves, opened again, must hold exactly the rows the same store
    //! holds after a clean stop.

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::history::FOLD_AT;
    use crate::store::records::Priority;
    use crate::store::testing::{TempStore, one_to_one};
    use crate::store::writer::{
        MessageAppended, WriteError, WriterHandle, WriterOptions, test_message,
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
            .await
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
            .await
            .expect("answer")
            .expect("ensure user");
        let recipients = writer
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
        stored += recipients;
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
        let mut unreadable = vec![0u8; journal::RECORD_HEADER + RECORD_FIELDS + 3];
        unreadable[journal::RECORD_HEADER + RECORD_FIELDS..].fill(0xff);
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

    /// Rewrites a closed store's files as the first builds with a journal left them:
    /// `checkpoint_seq` in the data file, and a format-1 journal (crc32 records, whose
    /// payloads had no queue bound).
    fn as_the_first_journal_builds_wrote_it(store: &TempStore) {
        let records = Journal::read_only(store.path())
            .expect("journal")
            .scan(0)
            .expect("scan")
            .records;
        assert!(!records.is_empty());
        let db = Database::open(store.path().join(crate::store::DATABASE_FILE)).expect("db");
        let txn = db.begin_write().expect("write");
        let journal_id = {
            let mut table = txn.open_table(META).expect("meta");
            let applied = table
                .remove(meta::APPLIED_SEQ)
                .expect("remove")
                .map(|v| v.value());
            if let Some(seq) = applied {
                table
                    .insert(meta::CHECKPOINT_SEQ_BEFORE, seq)
                    .expect("insert");
            }
            meta::get(&table, meta::JOURNAL_ID)
                .expect("get")
                .expect("journal id")
        };
        txn.commit().expect("commit");
        drop(db);
        let payloads: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                let p = &r.payload;
                [&p[..RECORD_FIELDS_BEFORE_3], &p[RECORD_FIELDS..]].concat()
            })
            .collect();
        let records: Vec<(u64, &[u8])> = records
            .iter()
            .zip(&payloads)
            .map(|(r, p)| (r.seq, p.as_slice()))
            .collect();
        let file = journal::format_1_file(journal_id, &records);
        std::fs::write(store.path().join(journal::JOURNAL_FILE), &file).expect("write");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_the_first_journal_builds_left_open_with_each_batch_once() {
        // After a crash, the journal's records are newer than the data file; after a clean
        // stop, the data file holds them all and its applied seq says so.
        let (stopped, crashed) = three_messages_in_the_journal().await;
        for left in [crashed, stopped] {
            as_the_first_journal_builds_wrote_it(&left);
            for _ in 0..2 {
                let (store, thread) = left.open();
                thread.finish(store.writer()).await;
                drop(store);
                assert_eq!(messages_in(&left), 3);
                assert!(!left.dump().iter().any(|row| row.contains("checkpoint_seq")));
            }
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

    #[test]
    fn every_logged_request_reads_back_as_written() {
        let commands = vec![
            Command::CreateConversation(one_to_one(1, 2), oneshot::channel().0),
            Command::AppendMessage(message(1, 2, Some("c".into())), oneshot::channel().0),
            Command::EnsureUser {
                id: 5,
                username: Some("x".into()),
                reply: oneshot::channel().0,
            },
            Command::MarkRead {
                user: 1,
                conversation: 2,
                up_to: Some(3),
                reply: oneshot::channel().0,
            },
            Command::SetArchived {
                user: 1,
                conversation: 2,
                archived: true,
                reply: oneshot::channel().0,
            },
            Command::Dequeue(vec![(1, 0, 2)]),
            Command::Drain(vec![(3, 1, 4)], oneshot::channel().0),
            Command::Expire(99, oneshot::channel().0),
            Command::RegisterAccount(
                NewAccount {
                    username: "u".into(),
                    display_name: None,
                    password_hash: "h".into(),
                    id_base: 8,
                },
                oneshot::channel().0,
            ),
            Command::Broadcast(
                Broadcast {
                    sender: 1,
                    message_type: "system".into(),
                    priority: Priority::High,
                    recipients: vec![2, 3],
                    body: Arc::new(vec![4, 5]),
                    plain: Arc::default(),
                },
                oneshot::channel().0,
            ),
            Command::Stop,
        ];
        let written = encode_record(&commands, 1234, 77).expect("encode");
        let mut record = written.clone();
        let report = BatchReport {
            first_message_id: 10,
            next_message_id: 12,
            ..BatchReport::default()
        };
        fill_record(&mut record, &report);
        let back =
            decode_record(&record[journal::RECORD_HEADER..], journal::FORMAT).expect("decode");
        assert_eq!(
            (back.now_ms, back.ids, back.queue_max),
            (1234, (10, 12), Some(77))
        );
        let back = back.commands;
        // The control command is not logged; the rest come back in order, alike: logged
        // again, they give the same bytes.
        assert_eq!(back.len(), commands.len() - 1);
        assert_eq!(encode_record(&back, 1234, 77).expect("encode"), written);
    }
}

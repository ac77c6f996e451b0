//! Which messages belong to a conversation, in id order: for history pages, `sync` and unread
//! counts.
//!
//! The index `convid_msgid` is keyed by conversation, so a commit that appends to fifty
//! conversations dirties fifty of its leaves, and a commit writes every dirty leaf (measured:
//! with 50 busy conversations, leaving the index out of appends halved the open-loop p50 and
//! added ~15% to the closed-loop rate; `docs/PERFORMANCE.md`). So appends do not write it, nor
//! `senderid_clientid_msgid`, keyed by sender, for the same reason (the writer answers
//! idempotency for the tail from memory). Every message id up to `name_value["indexed_to"]`
//! is in both indexes; the ids above it, the *tail*, are found in `msgid_message`, whose keys
//! only grow. Once the tail holds [`FOLD_AT`] messages, the writer folds its oldest
//! [`FOLD_CHUNK`] (more if the batch alone added more: [`fold_count`]) into the indexes within
//! a batch, and the next chunk when it holds `FOLD_AT` again: each leaf is then written once
//! per chunk instead of once per commit. Not the whole
//! tail at once: at 5,000 messages/s that stalled the writer for ~1 ms (several on a busy
//! machine) every 0.2 s, and every request waiting behind that batch with it (measured:
//! `docs/PERFORMANCE.md`, "Open loop: the tail"). The fold's progress is `indexed_to` itself,
//! committed with the batch: a replay folds the same chunks in the same batches, and a
//! restart rebuilds the tail from whatever was left above it.
//!
//! Every tail id is above every indexed id, so a conversation's ids in order are its indexed
//! ids followed by its tail ids.

use std::ops::RangeInclusive;

use redb::{ReadableTable, TableHandle};

use super::StoreError;
use super::damage::DamagedRecords;
use super::records::message_conversation;
use super::tables::MESSAGES;

/// Tail length at which the writer folds it into the index. A reader scans at most this many
/// records (plus one batch) to find a conversation's newest messages.
pub const FOLD_AT: usize = 1024;

/// What a batch folds of a tail that reached [`FOLD_AT`] under small batches: the tail's
/// oldest, the rest left for the batches after it. A quarter of `FOLD_AT`: a fold's stall is
/// a quarter of a whole tail's, and each chunk still holds several entries per busy
/// conversation's leaf.
pub const FOLD_CHUNK: usize = 256;

/// How many of a tail of `len` messages the batch that made it folds: none under
/// [`FOLD_AT`]; from there, all but `FOLD_AT - FOLD_CHUNK` of them. That is one chunk when
/// batches are small, and more when one batch added more than a chunk, so however large the
/// batches the tail never holds more than `FOLD_AT` plus one batch (a fixed chunk per batch
/// let it grow without bound under batches of more than a chunk, and every history read
/// scans the whole tail).
pub fn fold_count(len: usize) -> usize {
    if len < FOLD_AT {
        0
    } else {
        len - (FOLD_AT - FOLD_CHUNK)
    }
}

/// The messages above the indexed id, as (conversation, message id), in id order.
pub type Tail = Vec<(u64, u64)>;

/// Reads the tail: every message with an id above `indexed_to`.
pub fn read_tail(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    indexed_to: u64,
    damaged: &DamagedRecords,
) -> Result<Tail, StoreError> {
    let mut tail = Vec::new();
    scan_tail(
        messages,
        indexed_to,
        damaged,
        message_conversation,
        |id, conversation| tail.push((conversation, id)),
    )?;
    Ok(tail)
}

/// Calls `found` with each tail message's id and what `read` takes from its record, in id
/// order. A record `read` cannot decode is left out (and reported to `damaged`), so one bad
/// record never stops the daemon or breaks every history query.
pub fn scan_tail<T>(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    indexed_to: u64,
    damaged: &DamagedRecords,
    read: impl Fn(&[u8]) -> Result<T, StoreError>,
    mut found: impl FnMut(u64, T),
) -> Result<(), StoreError> {
    if indexed_to == u64::MAX {
        return Ok(());
    }
    for row in messages.range(indexed_to + 1..)? {
        let (id, bytes) = row?;
        let id = id.value();
        if let Some(value) = damaged.skip(MESSAGES.name(), id, read(bytes.value()))? {
            found(id, value);
        }
    }
    Ok(())
}

/// One snapshot's view of every conversation's message ids: the index and the tail.
#[derive(Debug)]
pub struct History<'a, I> {
    pub index: &'a I,
    pub tail: &'a [(u64, u64)],
}

impl<'a, I: ReadableTable<(u64, u64), ()>> History<'a, I> {
    /// Ids of `conv` within `ids`, ascending (`.rev()` for descending).
    pub fn ids(
        &self,
        conv: u64,
        ids: RangeInclusive<u64>,
    ) -> Result<impl DoubleEndedIterator<Item = Result<u64, StoreError>> + 'a, StoreError> {
        let (from, to) = (*ids.start(), *ids.end());
        // redb refuses a range whose start is past its end.
        let indexed = if from <= to {
            Some(self.index.range((conv, from)..=(conv, to))?)
        } else {
            None
        };
        let indexed = indexed
            .into_iter()
            .flatten()
            .map(|row| Ok(row?.0.value().1));
        let tail = self
            .tail
            .iter()
            .filter(move |(c, id)| *c == conv && (from..=to).contains(id))
            .map(|(_, id)| Ok(*id));
        Ok(indexed.chain(tail))
    }

    /// Whether `conv` has any message within `ids`.
    pub fn any(&self, conv: u64, ids: RangeInclusive<u64>) -> Result<bool, StoreError> {
        self.ids(conv, ids)?
            .next()
            .transpose()
            .map(|id| id.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageRecord, Priority};
    use crate::store::records::encode;
    use redb::{Database, ReadableDatabase, TableDefinition};

    const INDEX: TableDefinition<(u64, u64), ()> = TableDefinition::new("i");
    const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("m");

    /// Indexed ids first, then the tail, each filtered by conversation and range, and the
    /// tail read back from the message records.
    #[test]
    fn ids_join_the_index_and_the_tail_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("h.redb")).expect("db");
        let txn = db.begin_write().expect("write");
        {
            let mut index = txn.open_table(INDEX).expect("index");
            let mut messages = txn.open_table(MESSAGES).expect("messages");
            for (conv, id) in [(1, 1), (2, 2), (1, 3), (1, 4), (2, 5), (1, 6)] {
                let record = MessageRecord {
                    conversation: conv,
                    sender: 1,
                    receiver: None,
                    message_type: "text".into(),
                    priority: Priority::Normal,
                    client_id: None,
                    created_at_ms: 0,
                    body: Vec::new(),
                };
                let bytes = encode(&record).expect("encode");
                messages.insert(id, bytes.as_slice()).expect("insert");
                if id <= 3 {
                    index.insert((conv, id), ()).expect("index");
                }
            }
            // A damaged record in the tail is left out, not an error for every reader.
            messages.insert(7, [0xffu8].as_slice()).expect("insert");
        }
        txn.commit().expect("commit");

        let read = db.begin_read().expect("read");
        let index = read.open_table(INDEX).expect("index");
        let damaged = DamagedRecords::default();
        let tail =
            read_tail(&read.open_table(MESSAGES).expect("messages"), 3, &damaged).expect("tail");
        assert_eq!(tail, vec![(1, 4), (2, 5), (1, 6)]);
        assert_eq!(damaged.count(), 1, "message 7 reported");
        let history = History {
            index: &index,
            tail: &tail,
        };
        let ids = |conv, range: RangeInclusive<u64>| -> Vec<u64> {
            history
                .ids(conv, range)
                .expect("ids")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(ids(1, 0..=u64::MAX), vec![1, 3, 4, 6]);
        assert_eq!(ids(2, 0..=u64::MAX), vec![2, 5]);
        assert_eq!(ids(1, 3..=4), vec![3, 4]);
        assert_eq!(ids(1, 7..=u64::MAX), Vec::<u64>::new());
        // A start past the end (a cursor at the newest id) is empty, not an error.
        assert_eq!(ids(1, RangeInclusive::new(5, 2)), Vec::<u64>::new());
        let newest_first: Vec<u64> = history
            .ids(1, 0..=5)
            .expect("ids")
            .rev()
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(newest_first, vec![4, 3, 1]);
        assert!(history.any(2, 3..=5).expect("any"));
        assert!(!history.any(2, 6..=u64::MAX).expect("any"));
    }
}

#[cfg(test)]
mod fold_tests {
    //! The history as the daemon answers it, across a fold and a restart: the same ids,
    //! pages, unread counts and `sync` results whether a message sits in the index or the tail.

    use std::sync::Arc;

    use crate::model::{MessageBody, Priority};
    use crate::store::reader::Cursor;
    use crate::store::records::encode;
    use crate::store::tables::meta;
    use crate::store::testing::{TempStore, one_to_one};
    use crate::store::{MessageAppended, NewMessage, Store};

    use super::{FOLD_AT, read_tail};

    fn text(store: &Store, conversation: u64, client_id: Option<String>) -> NewMessage {
        let plain = MessageBody {
            text: "t".into(),
            metadata_json: "{}".into(),
        };
        NewMessage {
            conversation,
            sender: 1,
            receiver: None,
            message_type: "text".into(),
            priority: Priority::Normal,
            client_id,
            body: store.keyring().seal(&encode(&plain).expect("encode")),
            plain: Arc::new(plain),
            origin: None,
        }
    }

    /// What a client sees of conversation `a` (user 2's): every id by paging back from the
    /// newest, the same by paging forward, `sync` since 0, and the unread count.
    async fn seen(store: &Store, a: u64) -> (Vec<u64>, Vec<u64>, Vec<u64>, u64) {
        store
            .read(move |r| {
                let conversation = r.conversation(a)?.expect("exists");
                let mut back = Vec::new();
                let mut cursor = Cursor::Latest;
                loop {
                    let page = r.message_page(2, a, &conversation, cursor, 100)?;
                    let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
                    back.splice(0..0, ids.iter().copied());
                    match ids.first() {
                        Some(&first) if page.has_older => cursor = Cursor::Before(first),
                        _ => break,
                    }
                }
                let mut forward = Vec::new();
                let mut cursor = Cursor::After(0);
                loop {
                    let page = r.message_page(2, a, &conversation, cursor, 100)?;
                    forward.extend(page.messages.iter().map(|m| m.id));
                    match forward.last() {
                        Some(&last) if page.has_newer => cursor = Cursor::After(last),
                        _ => break,
                    }
                }
                let since = r.messages_since(2, 0, 10 * FOLD_AT)?;
                assert!(!since.more);
                let (unread, _) = r.unread_messages(2, 10)?;
                Ok((
                    back,
                    forward,
                    since.messages.iter().map(|m| m.id).collect(),
                    unread,
                ))
            })
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn history_reads_the_same_across_a_fold_and_a_restart() {
        let temp = TempStore::new();
        let (store, thread) = temp.open();
        let writer = store.writer();
        let a = writer
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("a")
            .id;
        let b = writer
            .create_conversation(one_to_one(1, 3))
            .await
            .expect("b")
            .id;
        // Two of every three messages go to `a`; enough for one fold and a tail after it.
        let mut pending = Vec::new();
        for i in 0..FOLD_AT + 300 {
            let conv = if i % 3 == 2 { b } else { a };
            pending.push((
                conv,
                writer
                    .submit_append(text(&store, conv, Some(format!("c{i}"))))
                    .await
                    .expect("submit"),
            ));
        }
        let mut in_a = Vec::new();
        let mut all = Vec::new();
        for (conv, append) in pending {
            let MessageAppended::Stored { id, .. } = append.done().await.expect("append") else {
                panic!("stored")
            };
            all.push(id);
            if conv == a {
                in_a.push(id);
            }
        }
        let indexed_to = store
            .read(|r| r.meta(meta::INDEXED_TO))
            .await
            .expect("meta");
        let last = *in_a.last().expect("some");
        assert!(indexed_to > 0, "a fold happened");
        assert!(indexed_to < last, "and a tail followed it");

        let expected = (in_a.clone(), in_a.clone(), in_a.clone(), in_a.len() as u64);
        assert_eq!(seen(&store, a).await, expected);
        // The writer's own recount reads the index and the tail too.
        let middle = in_a[in_a.len() / 4];
        let marked = writer.mark_read(2, a, Some(middle)).await.expect("mark");
        let left = in_a.iter().filter(|id| **id > middle).count() as u64;
        assert_eq!(marked.unread, left);
        // A resent client id is answered with its first message, folded or not.
        let n = all.len();
        let resend = |store: Store, i: usize| async move {
            let conv = if i % 3 == 2 { b } else { a };
            let new = text(&store, conv, Some(format!("c{i}")));
            match store.writer().append_message(new).await.expect("resend") {
                MessageAppended::Duplicate { id } => id,
                MessageAppended::Stored { id, .. } => panic!("c{i} stored again as {id}"),
            }
        };
        assert!(all[0] <= indexed_to && all[n - 1] > indexed_to);
        assert_eq!(resend(store.clone(), 0).await, all[0], "from the index");
        assert_eq!(
            resend(store.clone(), n - 1).await,
            all[n - 1],
            "from the tail"
        );
        thread.finish(writer).await;
        drop(store);

        // After a restart the tail is rebuilt from the messages table.
        let (store, thread) = temp.open();
        let (back, forward, since, unread) = seen(&store, a).await;
        assert_eq!((back, forward, since), (in_a.clone(), in_a.clone(), in_a));
        assert_eq!(unread, left);
        assert_eq!(resend(store.clone(), 0).await, all[0]);
        assert_eq!(
            resend(store.clone(), n - 1).await,
            all[n - 1],
            "tail rebuilt at start"
        );
        thread.finish(store.writer()).await;
    }

    /// Batches larger than a fold's chunk must not let the tail outgrow `FOLD_AT`: readers
    /// scan the whole tail on every history read, and the writer keeps it in memory.
    #[tokio::test]
    async fn large_batches_leave_the_tail_under_the_fold_threshold() {
        use crate::store::engine::WriterOptions;

        let temp = TempStore::new();
        let (store, thread) = temp.open_with(WriterOptions::standalone(4096));
        let writer = store.writer();
        let a = writer
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("a")
            .id;
        // Submitted before any answer is awaited: while one batch commits, the next hundreds
        // queue up, so most batches hold far more than a chunk.
        let mut pending = Vec::new();
        for _ in 0..4 * FOLD_AT {
            pending.push(
                writer
                    .submit_append(text(&store, a, None))
                    .await
                    .expect("submit"),
            );
        }
        let mut last = 0;
        for append in pending {
            let MessageAppended::Stored { id, .. } = append.done().await.expect("append") else {
                panic!("stored")
            };
            last = last.max(id);
        }
        let indexed_to = store
            .read(|r| r.meta(meta::INDEXED_TO))
            .await
            .expect("meta");
        assert!(
            last - indexed_to < FOLD_AT as u64,
            "{} messages left in the tail after the last batch",
            last - indexed_to
        );
        let (back, ..) = seen(&store, a).await;
        assert_eq!(back.len(), 4 * FOLD_AT);
        thread.finish(writer).await;
    }

    /// A version 1 file indexed every message at append: after the upgrade no message is
    /// both indexed and in the tail (it would be listed twice), and none is missing.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded_without_listing_a_message_twice() {
        use crate::store::tables::{CONVERSATION_MESSAGES, MESSAGES, META, SCHEMA_VERSION};

        let temp = TempStore::new();
        let (store, thread) = temp.open();
        let a = store
            .writer()
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("a")
            .id;
        for _ in 0..5 {
            store
                .writer()
                .append_message(text(&store, a, None))
                .await
                .expect("append");
        }
        thread.finish(store.writer()).await;
        drop(store);

        // Make it the file version 1 wrote: every message indexed, no watermark.
        temp.write_raw(|txn| {
            let ids: Vec<(u64, u64)> = {
                let messages = txn.open_table(MESSAGES).expect("messages");
                read_tail(&messages, 0, &Default::default()).expect("all")
            };
            let mut index = txn.open_table(CONVERSATION_MESSAGES).expect("index");
            for key in ids {
                index.insert(key, ()).expect("index");
            }
            let mut meta_table = txn.open_table(META).expect("meta");
            meta_table.remove(meta::INDEXED_TO).expect("remove");
            meta_table.insert(meta::SCHEMA_VERSION, 1).expect("v1");
        });

        let (store, thread) = temp.open();
        let (version, indexed_to, ids) = store
            .read(move |r| {
                let conversation = r.conversation(a)?.expect("exists");
                let page = r.message_page(2, a, &conversation, Cursor::Latest, 100)?;
                Ok((
                    r.meta(meta::SCHEMA_VERSION)?,
                    r.meta(meta::INDEXED_TO)?,
                    page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
                ))
            })
            .await
            .expect("read");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(indexed_to, 5);
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        thread.finish(store.writer()).await;
    }
}

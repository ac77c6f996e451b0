//! A journal that cannot be written must not lose an acknowledged write, nor acknowledge
//! one that is not durable: the writer falls back to checkpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::Database;

use super::journal::Journal;
use super::{DataFile, spawn};
use crate::metrics::Metrics;
use crate::model::Priority;
use crate::store::testing::{TempStore, one_to_one, test_message};
use crate::store::{
    MessageAppended, StoreError, WriteError, WriterHandle, WriterOptions, WriterThread,
};

fn count(metrics: &Metrics, name: &str) -> u64 {
    let text = metrics.encode();
    let line = format!("{name}_count ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_falls_back_to_checkpoints() {
    let temp = TempStore::new();
    let (store, thread) = temp.open();
    thread.finish(store.writer()).await;
    drop(store);

    let db = Arc::new(Database::open(temp.path().join(crate::store::DATABASE_FILE)).expect("db"));
    let journal = Journal::read_only(temp.path()).expect("journal");
    let options = WriterOptions::standalone(16);
    let metrics = options.metrics.clone();
    let path = temp.path().join(crate::store::DATABASE_FILE);
    let file = DataFile {
        dir: temp.path().to_owned(),
        open: Box::new(move || {
            Database::open(&path).map_err(|e| StoreError::Open {
                path: path.clone(),
                message: e.to_string(),
            })
        }),
    };
    let (writer, thread) =
        spawn(db.clone(), options, Some(journal), 0, Arc::default(), file).expect("spawn");
    let conversation = writer
        .create_conversation(one_to_one(1, 2))
        .await
        .expect("answered once a checkpoint made it durable")
        .id;
    // A crash now: what was acknowledged must be in the data file itself.
    let crashed = temp.crash_copy();
    let (copy, copy_thread) = crashed.open();
    let found = copy
        .read(move |r| r.conversation(conversation))
        .await
        .expect("read");
    assert!(found.is_some(), "an acknowledged conversation was lost");
    copy_thread.finish(copy.writer()).await;
    drop(copy);
    let mut ids = Vec::new();
    for _ in 0..3 {
        match writer
            .append_message(test_message(conversation, 1, Priority::Normal))
            .await
        {
            Ok(MessageAppended::Stored { id, .. }) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    let crashed_later = temp.crash_copy();
    assert_eq!(count(&metrics, "indaba_journal_sync_seconds"), 0);
    // The checkpoint after the failed write, then one per batch.
    assert!(count(&metrics, "indaba_checkpoint_seconds") >= 4);
    assert!(writer.is_healthy());
    thread.finish(&writer).await;
    drop(writer);
    drop(db);

    let (store, thread) = crashed_later.open();
    let found = store
        .read(move |r| {
            ids.iter()
                .map(|id| r.message(*id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .expect("read");
    assert!(found.iter().all(Option::is_some), "{found:?}");
    thread.finish(store.writer()).await;
}

/// The data file's writes and syncs fail while `fail` is set: a full disk.
#[derive(Debug)]
struct FailingDisk {
    inner: redb::backends::FileBackend,
    fail: Arc<AtomicBool>,
}

impl FailingDisk {
    /// A database on the data file in `dir`, on a disk that fails while `fail` is set.
    fn open(dir: &std::path::Path, fail: &Arc<AtomicBool>) -> Result<Database, StoreError> {
        let path = dir.join(crate::store::DATABASE_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("file");
        let disk = FailingDisk {
            inner: redb::backends::FileBackend::new(file)
                .map_err(|e| StoreError::Unavailable(format!("cannot lock the file yet: {e}")))?,
            fail: fail.clone(),
        };
        Database::builder()
            .create_with_backend(disk)
            .map_err(|e| StoreError::Open {
                path,
                message: e.to_string(),
            })
    }

    fn check(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl redb::StorageBackend for FailingDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
}

/// A writer on `temp`'s data file on a [`FailingDisk`], with a journal that cannot be
/// written, and a store handle on it.
async fn on_failing_disk(
    temp: &TempStore,
    fail: &Arc<AtomicBool>,
) -> (crate::store::Store, WriterThread) {
    let db = Arc::new(FailingDisk::open(temp.path(), fail).expect("db"));
    // Room in the file for the batches below: growing it syncs, which the failing disk
    // refuses.
    const SCRATCH: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("scratch");
    let txn = db.begin_write().expect("write");
    txn.open_table(SCRATCH)
        .expect("table")
        .insert(0, vec![0u8; 1 << 20].as_slice())
        .expect("insert");
    txn.commit().expect("commit");
    let txn = db.begin_write().expect("write");
    txn.delete_table(SCRATCH).expect("delete");
    txn.commit().expect("commit");
    // redb's first write after an open syncs once more; get it done before the disk fails.
    for durability in [redb::Durability::Immediate, redb::Durability::None] {
        let mut txn = db.begin_write().expect("write");
        txn.set_durability(durability).expect("durability");
        txn.commit().expect("commit");
    }
    let journal = Journal::read_only(temp.path()).expect("journal");
    let file = {
        let (dir, fail) = (temp.path().to_owned(), fail.clone());
        DataFile {
            dir: dir.clone(),
            open: Box::new(move || FailingDisk::open(&dir, &fail)),
        }
    };
    let (writer, thread) = spawn(
        db,
        WriterOptions::standalone(16),
        Some(journal),
        0,
        Arc::default(),
        file,
    )
    .expect("spawn");
    let store = crate::store::Store {
        writer,
        keyring: temp.keyring(),
        damaged: Arc::default(),
        data_keys: Arc::default(),
    };
    (store, thread)
}

fn refused(result: &Result<MessageAppended, WriteError>) -> bool {
    matches!(result, Err(WriteError::Store(StoreError::Unavailable(_))))
}

/// A store whose disk fails while `fail` is set, and the send that met it failing (the
/// journal cannot be written, and the checkpoint meant to cover that fails too).
struct FailedWrite {
    temp: TempStore,
    fail: Arc<AtomicBool>,
    store: crate::store::Store,
    thread: WriterThread,
    writer: WriterHandle,
    conversation: u64,
}

async fn failed_write() -> FailedWrite {
    let temp = TempStore::new();
    let conversation = temp.with_conversation().await;
    let fail = Arc::new(AtomicBool::new(false));
    let (store, thread) = on_failing_disk(&temp, &fail).await;
    let writer = store.writer().clone();
    fail.store(true, Ordering::SeqCst);
    let sent = writer
        .append_message(test_message(conversation, 1, Priority::Normal))
        .await;
    assert!(refused(&sent), "{sent:?}");
    FailedWrite {
        temp,
        fail,
        store,
        thread,
        writer,
        conversation,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_made_durable_is_never_shown_and_the_store_recovers() {
    let failed = failed_write().await;
    let (writer, conversation) = (&failed.writer, failed.conversation);
    // The message was in redb's memory, and a crash loses it: no reader may see it.
    let seen = failed.store.read(|r| r.message(1)).await;
    assert!(
        matches!(seen, Ok(None) | Err(StoreError::Unavailable(_))),
        "a reader was answered: {seen:?}"
    );
    assert!(!writer.is_healthy());
    let later = writer
        .append_message(test_message(conversation, 1, Priority::Normal))
        .await;
    assert!(refused(&later), "{later:?}");

    // Space is back: writes resume by themselves.
    failed.fail.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let sent = writer
            .append_message(test_message(conversation, 1, Priority::Normal))
            .await;
        match sent {
            Ok(MessageAppended::Stored { id, .. }) => break id,
            other => assert!(refused(&other), "{other:?}"),
        }
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(writer.is_healthy());
    let found = failed.store.read(move |r| r.message(id)).await;
    assert!(found.expect("read").is_some());
    failed.thread.finish(writer).await;
    assert!(!writer.failed(), "a clean stop after the recovery");
    drop(failed.store);

    // Durable: there after a restart.
    let (store, thread) = failed.temp.open();
    let found = store.read(move |r| r.message(id)).await.expect("read");
    assert!(found.is_some());
    thread.finish(store.writer()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_disk_fails_is_not_a_clean_one() {
    let failed = failed_write().await;
    failed.thread.finish(&failed.writer).await;
    assert!(
        failed.writer.failed(),
        "stopped without its final checkpoint"
    );
}

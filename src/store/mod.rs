//! Durable storage: one redb file, one group-commit writer, many readers.
//!
//! What is stored:
//! * [`tables`] declares every table, once, and the schema version; the records they hold are
//!   the model's types ([`crate::model`]), written as [`records`] says.
//! * [`data_keys`]: each sender's data key, which seals what they write (erasure destroys it).
//! * [`data_file`] opens the file and checks its schema version and keys at every start
//!   ([`keys`] does the key check for `indaba check-config` too).
//!
//! Writing:
//! * [`ops`] says what each kind of write means: one serializable [`Op`] per write, applied by
//!   the rules of its concern (conversations, messages, queues, read state, accounts).
//! * [`engine`] makes ops durable: a dedicated thread folds every pending request into one
//!   transaction, makes most batches durable with one contiguous journal write and the rest
//!   with a checkpoint, answers each request only once its batch is durable, replays the
//!   journal after a crash, and rides out a full disk. [`WriterHandle`] is its queue.
//!
//! Reading:
//! * [`reader`] answers queries on a snapshot, off the async runtime ([`Store::read`]).
//! * [`history`] finds a conversation's messages: an index folded in bulk, plus its tail.
//! * [`damage`] leaves a record that cannot be read back out of every view, and reports it.
//! * [`backup`] copies one snapshot of every table into a fresh file, for `indaba backup`.
//!
//! A new kind of write is an [`Op`] variant, its rule in [`ops`], and a [`WriterHandle`]
//! method; the journal, replay and batching carry it without change. A new table is one entry
//! in [`tables`]; creating it, backups and the tests' dumps go through that list.
//!
//! [`Store`] is the cheap, cloneable handle the rest of the daemon holds.

/// `impl From<redb error> for $target`, carrying the message as `$target::Storage`: redb's
/// errors are ours to log, not the caller's to match. Shared by [`StoreError`] and
/// [`backup::BackupError`].
macro_rules! storage_error_from {
    ($target:ident: $($t:ty),*) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> Self {
                $target::Storage(e.to_string())
            }
        }
    )*};
}

pub mod backup;
pub mod damage;
pub mod data_file;
pub mod data_keys;
pub mod engine;
pub mod error;
pub mod history;
pub mod keys;
pub mod ops;
pub mod reader;
pub mod records;
pub mod tables;
#[cfg(test)]
pub(crate) mod testing;
mod upgrade;

use std::path::Path;
use std::sync::Arc;

use crate::crypto::Keyring;

pub use data_file::DATABASE_FILE;
pub use engine::{
    CommitSink, OutboxProgress, PendingAppend, WriterHandle, WriterOptions, WriterThread,
};
pub use error::StoreError;
pub use ops::{
    Broadcast, BroadcastConversation, Broadcasted, ConversationCreated, EXPIRE_BATCH, Emit, Erased,
    EventKinds, MarkedRead, MessageAppended, NewAccount, NewConversation, NewMessage, Op,
    PresenceChange, Profile, QueueKey, StoredMessage, Tombstoned, WriteError,
};

/// Longest a read waits for the writer to reopen the data file after a failed write, before it
/// is refused with [`StoreError::Unavailable`].
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What [`Store::open`] does with a journal that is damaged beyond a torn last write: a bad
/// header, or a damaged record with whole records after it. Either hides batches that were
/// acknowledged, which only the journal holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DamagedJournal {
    /// Refuse to open, with an error naming the file, the offset and what is at stake, and
    /// leave the file as it is (the default): what to give up is the operator's decision.
    #[default]
    Refuse,
    /// `indaba serve --accept-journal-loss`: replay what can be, move the file aside (never
    /// delete it), log at ERROR what was lost, and go on with ids above every one that may
    /// have been handed out.
    MoveAside,
}

/// Handle to the store: the writer's queue (and through it the database readers read), the
/// keys.
#[derive(Clone, Debug)]
pub struct Store {
    writer: WriterHandle,
    keyring: Arc<Keyring>,
    /// Records found damaged, left out of every view.
    damaged: Arc<damage::DamagedRecords>,
    /// Senders' opened data keys, for sealing.
    data_keys: Arc<data_keys::DataKeys>,
}

impl Store {
    /// Opens (or creates) the data file in `data_dir`, checks its schema version and keys, and
    /// starts the writer thread. The returned [`WriterThread`] must be joined on
    /// shutdown so pending writes are committed.
    ///
    /// Messages committed from then on are reported, batch by batch in commit order, on the
    /// options' sink.
    ///
    /// A journal left by a crash is replayed first: the store opens holding every batch that
    /// was acknowledged. A journal damaged beyond a torn last write is refused, or moved aside,
    /// as `options.damaged_journal` says.
    pub fn open(
        data_dir: &Path,
        keyring: Arc<Keyring>,
        options: WriterOptions,
    ) -> Result<(Store, WriterThread), StoreError> {
        engine::compact::remove_leftover(data_dir)?;
        let db = data_file::open_database(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let journal_id = data_file::check_schema_and_keys(&db, &path, &keyring)?;
        let (journal, seq) =
            engine::recovery::recover(&db, data_dir, journal_id, options.damaged_journal)?;
        // With the journal off, the file was only read: every commit is durable by itself.
        let journal = options.journal.then_some(journal);
        let db = Arc::new(db);
        let damaged = Arc::new(damage::DamagedRecords::new(
            options.metrics.damaged_records.clone(),
        ));
        let dir = data_dir.to_owned();
        let file = engine::DataFile {
            dir: dir.clone(),
            open: Box::new(move || data_file::open_database(&dir)),
        };
        let (handle, thread) = engine::spawn(db, options, journal, seq, damaged.clone(), file)?;
        Ok((
            Store {
                writer: handle,
                keyring,
                damaged,
                data_keys: Arc::default(),
            },
            thread,
        ))
    }

    /// Damaged records met since the store opened (see [`damage`]).
    pub fn damaged_records(&self) -> u64 {
        self.damaged.count()
    }

    /// The queue of the group-commit writer.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// The keys that seal and open user content.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Writes a consistent snapshot of every table into `dest` (an empty file, opened for
    /// reading and writing) on the blocking pool; stops early once `cancel` fires. Returns
    /// once everything the snapshot holds is durable.
    pub async fn backup(
        &self,
        dest: std::fs::File,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<backup::Summary, backup::BackupError> {
        let progress = self.writer.progress().clone();
        let (summary, ticket) = tokio::task::spawn_blocking(move || {
            let (txn, ticket) = progress
                .begin_read()
                .map_err(|e| backup::BackupError::Storage(e.to_string()))?;
            Ok::<_, backup::BackupError>((
                backup::write_copy(&txn, dest, &|| cancel.is_cancelled())?,
                ticket,
            ))
        })
        .await
        .map_err(|e| backup::BackupError::Storage(format!("backup task failed: {e}")))??;
        self.writer
            .progress()
            .settled(ticket)
            .await
            .map_err(|e| backup::BackupError::Storage(e.to_string()))?;
        Ok(summary)
    }

    /// Runs a read-only query on a consistent snapshot, on the blocking pool. Answers once
    /// every batch the snapshot holds is durable, so nothing a crash could take back (and
    /// whose ids could be given again) is ever shown.
    pub async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&reader::Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let keyring = self.keyring.clone();
        let damaged = self.damaged.clone();
        let progress = self.writer.progress().clone();
        progress.wait_open(REOPEN_WAIT).await;
        let (answer, ticket) = tokio::task::spawn_blocking(move || {
            let (txn, ticket) = progress.begin_read()?;
            let reader = reader::Reader::new(&txn, &keyring, &damaged);
            Ok::<_, StoreError>((query(&reader)?, ticket))
        })
        .await
        .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))??;
        self.writer.progress().settled(ticket).await?;
        Ok(answer)
    }
}

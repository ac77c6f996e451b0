//! Durable storage: one redb file, one group-commit writer, many readers.
//!
//! * [`tables`] defines every table and the schema version.
//! * [`records`] defines what the tables hold.
//! * [`writer`] owns the only write path: a dedicated thread that folds every pending request
//!   into one transaction and commits it.
//! * [`journal`] makes most of those commits durable with one contiguous write of the batch's
//!   requests ([`redo`]: written down, and redone after a crash); a periodic checkpoint commits
//!   to the redb file durably; [`durability`] answers each request only once its batch is
//!   durable.
//! * [`ids`] reserves ids durably ahead of use, so that none is handed out twice after a crash.
//! * [`reader`] answers queries on a snapshot, off the async runtime.
//! * [`history`] finds a conversation's messages: an index folded in bulk, plus its tail.
//! * [`damage`] leaves a record that cannot be read back out of every view, and reports it.
//! * [`backup`] copies one snapshot of every table into a fresh file, for `indaba backup`.
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
pub mod durability;
pub mod history;
pub mod ids;
pub mod journal;
pub mod keys;
pub mod reader;
pub mod records;
pub mod redo;
pub mod tables;
pub mod writer;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::Keyring;
use tables::{KEY_CHECKS, META, SCHEMA_VERSION, meta};
pub use writer::{WriteError, WriterHandle};

/// File name of the database inside the data dir.
pub const DATABASE_FILE: &str = "indaba.redb";

/// Longest a read waits for the writer to reopen the data file after a failed write, before it
/// is refused with [`StoreError::Unavailable`].
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Plaintext of the per-key canary in [`tables::KEY_CHECKS`].
const KEY_CHECK_PLAINTEXT: &[u8] = b"indaba key check v1";

/// Why the store failed. Open-time variants name the file; run-time ones are our fault, never
/// the client's, and map to 500/503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("cannot open data file {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("data file {path} is already in use by another process (is indaba already running?)")]
    AlreadyOpen { path: PathBuf },
    #[error(
        "data file {path} has schema version {found}, newer than this indaba supports ({supported}); upgrade indaba"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "the encryption key does not match data file {path}: its data was sealed with key id(s) {stored}, the configured key(s) are {configured}; configure the right storage.encryption_key_file (retired keys go in storage.old_encryption_key_files)"
    )]
    WrongKey {
        path: PathBuf,
        stored: String,
        configured: String,
    },
    #[error("journal {path}: {message}")]
    Journal { path: PathBuf, message: String },
    /// The journal is damaged beyond a torn last write; see [`DamagedJournal`].
    #[error(
        "journal {path} is damaged at offset {offset}: {what}; {stake}. The journal was left as it is; to start without what it loses, run `indaba serve --accept-journal-loss`, which moves it aside"
    )]
    JournalDamaged {
        path: PathBuf,
        offset: u64,
        what: String,
        stake: String,
    },
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("stored record cannot be decoded: {0}")]
    Encoding(String),
    #[error("stored value cannot be decrypted: {0}")]
    Sealed(#[from] crate::crypto::OpenError),
    /// A record asked for by its key cannot be read back (see [`damage`]).
    #[error("{table} record {key} is damaged in the data file and cannot be read")]
    Damaged { table: String, key: String },
    #[error("the store is shut down")]
    Closed,
    /// The data file cannot be written (the disk is full or failing): writes are refused until
    /// the writer has reopened it and checkpointed; see `writer::Outage`. Maps to 503
    /// `storage_unavailable`.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A replayed journal record gave other message ids than it gave the first time.
    #[error(
        "gave message ids {}..{} again, not {}..{} as the first time",
        gave.0, gave.1, recorded.0, recorded.1
    )]
    ReplayDiverged {
        gave: (u64, u64),
        recorded: (u64, u64),
    },
}

impl StoreError {
    /// Whether this is one record that cannot be read back (bytes changed on the disk), not a
    /// failure to read at all: see [`damage`].
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Encoding(_) | StoreError::Sealed(_))
    }
}

impl StoreError {
    /// redb's error as ours. An I/O error is [`StoreError::Unavailable`]: redb refuses every
    /// later use of a handle that met one, so only reopening the file helps.
    fn from_redb(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Storage(other.to_string()),
        }
    }
}

macro_rules! store_error_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from_redb(e.into())
            }
        }
    )*};
}

store_error_from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

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
}

impl Store {
    /// Opens (or creates) the data file in `data_dir`, checks its schema version and keys, and
    /// starts the writer thread. The returned [`writer::WriterThread`] must be joined on
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
        options: writer::WriterOptions,
    ) -> Result<(Store, writer::WriterThread), StoreError> {
        let db = open_database(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let journal_id = check_schema_and_keys(&db, &path, &keyring)?;
        let (journal, opened) = journal::Journal::open(data_dir, journal_id)?;
        if opened == journal::Opened::Replaced {
            tracing::warn!(
                path = %journal.path().display(),
                "the journal belonged to another data file (a restored backup?); started a new one"
            );
        }
        let scan = journal.scan(redo::applied_seq(&db)?)?;
        if let Some(offset) = scan.torn_at {
            tracing::info!(
                path = %journal.path().display(),
                offset,
                "the journal ends in a write the crash cut short (never acknowledged); replaying what precedes it"
            );
        }
        let damage = match scan.damage {
            Some(damage) => {
                let stake = redo::Stake::new(&db, &scan.records, &damage)?;
                if options.damaged_journal == DamagedJournal::Refuse {
                    let error = StoreError::JournalDamaged {
                        path: journal.path().to_owned(),
                        offset: damage.offset,
                        what: damage.what,
                        stake: stake.to_string(),
                    };
                    tracing::error!(
                        path = %journal.path().display(),
                        offset = damage.offset,
                        records_lost = stake.lost(),
                        "{error}"
                    );
                    return Err(error);
                }
                Some((damage, stake))
            }
            None => None,
        };
        let replayed = redo::replay(&db, &journal, &scan.records, options.queue_max)?;
        if replayed.batches > 0 {
            tracing::info!(
                batches = replayed.batches,
                messages = replayed.messages,
                "journal replayed into the data file"
            );
        }
        let mut journal = journal;
        if let Some((damage, stake)) = &damage {
            // What could be replayed is in the data file, durably: only what the damage hides
            // goes, and its file stays on the disk.
            let damaged = journal.path().to_owned();
            let (fresh, aside) = journal.move_aside()?;
            journal = fresh;
            let (first_id, last_id) = stake.message_ids().unzip();
            tracing::error!(
                path = %damaged.display(),
                moved_to = %aside.display(),
                offset = damage.offset,
                records_lost = stake.lost(),
                first_message_id_lost = first_id,
                last_message_id_lost = last_id,
                "journal {} was damaged at offset {}: {}; {}. Started without it (--accept-journal-loss): moved it to {}",
                damaged.display(),
                damage.offset,
                damage.what,
                stake,
                aside.display()
            );
        }
        // Batches may be lost whose ids clients were given: a journal damaged, missing (a new
        // one was created beside a file that had batches), or another data file's.
        if damage.is_some() || opened != journal::Opened::Existing {
            for skipped in ids::skip_reserved(&db)? {
                tracing::warn!(
                    ids = skipped.name,
                    from = skipped.from,
                    to = skipped.to,
                    "the journal could not be replayed whole: ids continue above every one that may have been handed out"
                );
            }
        }
        // Everything it held is in the data file now, durably: empty it, with a new key.
        journal.clear()?;
        // With the journal off, the file was only read: every commit is durable by itself.
        let journal = options.journal.then_some(journal);
        let db = Arc::new(db);
        let damaged = Arc::new(damage::DamagedRecords::new(
            options.metrics.damaged_records.clone(),
        ));
        let dir = data_dir.to_owned();
        let file = writer::DataFile {
            dir: dir.clone(),
            open: Box::new(move || open_database(&dir)),
        };
        let (handle, thread) =
            writer::spawn(db, options, journal, replayed.seq, damaged.clone(), file)?;
        Ok((
            Store {
                writer: handle,
                keyring,
                damaged,
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

fn open_database(data_dir: &Path) -> Result<Database, StoreError> {
    let dir_error = |message: String| StoreError::DataDir {
        path: data_dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| dir_error(e.to_string()))?;
    if !data_dir.is_dir() {
        return Err(dir_error("not a directory".to_owned()));
    }
    let path = data_dir.join(DATABASE_FILE);
    // An empty file is one a crash left between creating and initialising it.
    let initialised = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
    let result = if initialised {
        // `open` never creates or truncates: a file that is not a redb database stays as it was.
        Database::builder().open(&path)
    } else {
        probe_writable(data_dir).map_err(|e| dir_error(format!("not writable: {e}")))?;
        // Only the daemon's user may read the file, sealed or not.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| dir_error(format!("cannot create {}: {e}", path.display())))?;
        Database::builder().create(&path)
    };
    result.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen { path: path.clone() },
        other => StoreError::Open {
            path: path.clone(),
            message: other.to_string(),
        },
    })
}

/// Creates and removes a file, so an unwritable directory fails with a clear message before redb
/// reports something vaguer.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".indaba-write-probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

/// Refuses a newer schema and a key that did not seal the existing data; records the current
/// key's canary so the next start can check it. Returns the file's journal id (given one now
/// if it has none).
fn check_schema_and_keys(db: &Database, path: &Path, keyring: &Keyring) -> Result<u64, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    let journal_id = {
        let mut meta_table = txn.open_table(META)?;
        let found = meta::get(&meta_table, meta::SCHEMA_VERSION)?;
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.to_owned(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) if found < SCHEMA_VERSION => {
                // Version 1 indexed every message as it was appended. Version 2 had no journal:
                // with no applied seq, nothing is replayed into it.
                if found == 1 {
                    let next = meta::get(&meta_table, meta::NEXT_MESSAGE_ID)?.unwrap_or(1);
                    meta_table.insert(meta::INDEXED_TO, next.saturating_sub(1))?;
                }
                meta_table.insert(meta::SCHEMA_VERSION, SCHEMA_VERSION)?;
                tracing::info!(
                    from = found,
                    to = SCHEMA_VERSION,
                    "data file schema upgraded"
                );
            }
            Some(_) => {}
            None => {
                meta_table.insert(meta::SCHEMA_VERSION, SCHEMA_VERSION)?;
            }
        }
        let renamed = meta_table
            .remove(meta::CHECKPOINT_SEQ_BEFORE)?
            .map(|seq| seq.value());
        if let Some(seq) = renamed {
            meta_table.insert(meta::APPLIED_SEQ, seq)?;
        }
        let journal_id = match meta::get(&meta_table, meta::JOURNAL_ID)? {
            Some(id) => id,
            None => {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).map_err(|e| {
                    StoreError::Storage(format!("no randomness for a journal id: {e}"))
                })?;
                let id = u64::from_le_bytes(bytes);
                meta_table.insert(meta::JOURNAL_ID, id)?;
                id
            }
        };

        // Create every table up front, so readers never meet a missing one.
        txn.open_table(tables::USERS)?;
        txn.open_table(tables::USERNAMES)?;
        txn.open_table(tables::CONVERSATIONS)?;
        txn.open_table(tables::CONVERSATION_KEYS)?;
        txn.open_table(tables::MESSAGES)?;
        txn.open_table(tables::CONVERSATION_MESSAGES)?;
        txn.open_table(tables::MEMBERSHIPS)?;
        txn.open_table(tables::CLIENT_IDS)?;
        txn.open_table(tables::QUEUE)?;
        txn.open_table(tables::QUEUE_LENGTHS)?;

        let mut checks = txn.open_table(KEY_CHECKS)?;
        let (stored, missing) = keys::unopened(&checks, keyring)?;
        if !missing.is_empty() {
            return Err(StoreError::WrongKey {
                path: path.to_owned(),
                stored: keys::format_ids(stored),
                configured: keys::format_ids(keyring.key_ids()),
            });
        }
        let current = keyring.current_key_id();
        if !stored.contains(&current) {
            checks.insert(current, keyring.seal(KEY_CHECK_PLAINTEXT).as_slice())?;
        }
        journal_id
    };
    txn.commit()?;
    Ok(journal_id)
}

/// A reply slot for one write request.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// Sends `command` to the writer and waits for its durable answer.
pub(crate) async fn request<T>(
    tx: &mpsc::Sender<writer::Command>,
    make: impl FnOnce(Reply<T>) -> writer::Command,
) -> Result<T, WriteError> {
    let (reply, answer) = oneshot::channel();
    tx.send(make(reply))
        .await
        .map_err(|_| WriteError::Store(StoreError::Closed))?;
    answer
        .await
        .map_err(|_| WriteError::Store(StoreError::Closed))?
}

/// Helpers for tests that open a real store, close it and open it again.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::Store;
    use super::writer::{NewConversation, WriterOptions, WriterThread};
    use crate::crypto::{Key, Keyring};

    /// A temporary data dir with one key, reopened as often as a test likes.
    pub struct TempStore {
        dir: tempfile::TempDir,
        keyring: Arc<Keyring>,
    }

    impl TempStore {
        pub fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
                keyring: Arc::new(Keyring::new(&Key::generate().expect("key"), &[]).expect("ring")),
            }
        }

        /// Opens the store (drop the `Store` and finish the thread before opening again).
        pub fn open(&self) -> (Store, WriterThread) {
            self.open_with(WriterOptions::standalone(64))
        }

        /// The data dir.
        pub fn path(&self) -> &std::path::Path {
            self.dir.path()
        }

        /// The store's keys.
        pub fn keyring(&self) -> Arc<Keyring> {
            self.keyring.clone()
        }

        pub fn open_with(&self, options: WriterOptions) -> (Store, WriterThread) {
            self.try_open(options).expect("open")
        }

        /// Opens the store with no checkpoint for an hour: every batch of a test stays in the
        /// journal, and a crash copy holds nothing of them in the data file itself.
        pub fn open_journal_only(&self) -> (Store, WriterThread) {
            self.open_with(WriterOptions {
                checkpoint_interval: std::time::Duration::from_secs(3600),
                ..WriterOptions::standalone(64)
            })
        }

        /// Opens the store, creates the conversation of users 1 and 2, and stops the store
        /// again (with a checkpoint): the conversation's id.
        pub async fn with_conversation(&self) -> u64 {
            let (store, thread) = self.open();
            let conversation = store
                .writer()
                .create_conversation(one_to_one(1, 2))
                .await
                .expect("conversation")
                .id;
            thread.finish(store.writer()).await;
            conversation
        }

        /// Opens the store, or says why it cannot.
        pub fn try_open(
            &self,
            options: WriterOptions,
        ) -> Result<(Store, WriterThread), super::StoreError> {
            Store::open(self.dir.path(), self.keyring.clone(), options)
        }

        /// The files as `kill -9` would leave them now: the data file as of its last durable
        /// commit (what is not durable lives only in redb's memory) and the journal.
        pub fn crash_copy(&self) -> TempStore {
            let copy = TempStore {
                dir: tempfile::tempdir().expect("tempdir"),
                keyring: self.keyring.clone(),
            };
            for file in [super::DATABASE_FILE, super::journal::JOURNAL_FILE] {
                std::fs::copy(self.dir.path().join(file), copy.dir.path().join(file))
                    .expect("copy");
            }
            copy
        }

        /// Every row of every table of the closed store, as text, in key order.
        pub fn dump(&self) -> Vec<String> {
            use redb::{Key, ReadTransaction, ReadableDatabase, TableDefinition, Value};

            fn rows<K: Key + 'static, V: Value + 'static>(
                txn: &ReadTransaction,
                table: TableDefinition<K, V>,
                out: &mut Vec<String>,
            ) where
                for<'a> K::SelfType<'a>: std::fmt::Debug,
                for<'a> V::SelfType<'a>: std::fmt::Debug,
            {
                use redb::{ReadableTable, TableHandle};
                let name = table.name().to_owned();
                for row in txn.open_table(table).expect("table").iter().expect("iter") {
                    let (key, value) = row.expect("row");
                    out.push(format!("{name} {:?} {:?}", key.value(), value.value()));
                }
            }

            use super::tables::*;
            let db = redb::Database::open(self.dir.path().join(super::DATABASE_FILE)).expect("db");
            let txn = db.begin_read().expect("read");
            let mut out = Vec::new();
            rows(&txn, META, &mut out);
            rows(&txn, KEY_CHECKS, &mut out);
            rows(&txn, USERS, &mut out);
            rows(&txn, USERNAMES, &mut out);
            rows(&txn, CONVERSATIONS, &mut out);
            rows(&txn, CONVERSATION_KEYS, &mut out);
            rows(&txn, MESSAGES, &mut out);
            rows(&txn, CONVERSATION_MESSAGES, &mut out);
            rows(&txn, MEMBERSHIPS, &mut out);
            rows(&txn, CLIENT_IDS, &mut out);
            rows(&txn, QUEUE, &mut out);
            rows(&txn, QUEUE_LENGTHS, &mut out);
            out
        }

        /// Changes the file of the closed store directly, as damage or an older version
        /// would have left it.
        pub fn write_raw(&self, change: impl FnOnce(&redb::WriteTransaction)) {
            let db = redb::Database::open(self.dir.path().join(super::DATABASE_FILE)).expect("db");
            let txn = db.begin_write().expect("write");
            change(&txn);
            txn.commit().expect("commit");
        }
    }

    /// A conversation of `creator` with `other` and nothing else.
    pub fn one_to_one(creator: u64, other: u64) -> NewConversation {
        NewConversation {
            creator,
            participants: vec![other],
            property: None,
            booking: None,
            subject: None,
        }
    }
}

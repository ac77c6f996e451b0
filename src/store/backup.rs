//! Consistent copies of the data file, for `indaba backup`.
//!
//! Copying `indaba.redb` byte by byte while the daemon runs is not safe: a commit may land
//! halfway through the copy, and the result mixes two states of the file. Instead the copy reads
//! every table inside ONE read transaction — a snapshot of one commit — and writes the rows into
//! a fresh redb file, which is also compact (no free pages carried over).
//!
//! Values are copied as stored: what was sealed stays sealed with the same key ids, so a backup
//! opens with the same `storage.encryption_key_file` (and retired keys) as the original, and
//! nothing here needs a key. The schema version travels in `name_value` like any other row.
//!
//! The tables copied are [`tables::every_table`], the one list of them. A table created
//! outside it is caught twice: a unit test compares what a backup copies with every table
//! `tables.rs` defines, and every backup compares what it copied with the tables the snapshot
//! holds ([`BackupError::TableNotCopied`]), so a backup never silently leaves data behind.
//!
//! Everything here blocks on file I/O: call it from `spawn_blocking` or a CLI, never from the
//! async runtime.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    Database, DatabaseError, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableError, TableHandle, Value,
    WriteTransaction,
};

use super::tables::{self, TableVisitor};

/// Rows copied between two checks of the cancellation flag.
const CANCEL_CHECK_ROWS: u64 = 4096;

/// Rows in one table of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// The table's `key_value` name.
    pub name: String,
    /// Rows it holds.
    pub rows: u64,
}

/// What a backup file holds, table by table (sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub tables: Vec<TableCount>,
}

impl Summary {
    /// Rows in all tables together.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    fn sorted(mut tables: Vec<TableCount>) -> Self {
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Self { tables }
    }
}

/// Why a backup copy could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no data file at {path} (is --data-dir or storage.data_dir right?)")]
    SourceMissing { path: PathBuf },
    #[error(
        "data file {path} is open in another process, and no indaba admin socket answered for it"
    )]
    SourceInUse { path: PathBuf },
    #[error(
        "data file {path} was not closed cleanly (did indaba crash?): indaba repairs it and replays its journal at its next start; back up the running daemon then"
    )]
    SourceNeedsRepair { path: PathBuf },
    #[error("cannot open data file {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "table `{0}` is in the data file but not copied: declare it in the tables! list of src/store/tables.rs"
    )]
    TableNotCopied(String),
    #[error("backup file {path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("the backup was cancelled: the daemon is stopping")]
    Cancelled,
    #[error("storage failure during the backup: {0}")]
    Storage(String),
}

storage_error_from!(
    BackupError: redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::DatabaseError
);

/// Writes a snapshot of `db` into `dest`, an empty file opened for reading and writing.
///
/// One read transaction covers the whole copy, so the result is the state after one commit,
/// whatever the writer commits meanwhile. `cancelled` is polled every few thousand rows.
pub fn snapshot(
    db: &impl ReadableDatabase,
    dest: File,
    cancelled: &dyn Fn() -> bool,
) -> Result<Summary, BackupError> {
    let txn = db.begin_read()?;
    write_copy(&txn, dest, cancelled)
}

/// Backs up the data file at `source` while no daemon has it open, into `dest` (an empty file).
///
/// The file is opened read-only, which redb refuses while a daemon holds it for writing
/// ([`BackupError::SourceInUse`]), so the copy cannot race a writer; the source is never
/// modified, not even repaired.
pub fn copy_data_file(source: &Path, dest: File) -> Result<Summary, BackupError> {
    let db = Database::builder()
        .open_read_only(source)
        .map_err(|e| match e {
            DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::NotFound =>
            {
                BackupError::SourceMissing {
                    path: source.to_owned(),
                }
            }
            DatabaseError::DatabaseAlreadyOpen => BackupError::SourceInUse {
                path: source.to_owned(),
            },
            DatabaseError::RepairAborted => BackupError::SourceNeedsRepair {
                path: source.to_owned(),
            },
            other => BackupError::Open {
                path: source.to_owned(),
                message: other.to_string(),
            },
        })?;
    snapshot(&db, dest, &|| false)
}

/// Checks a finished backup file: every page's checksum (redb's integrity check), then counts
/// the rows of every table. A backup that was never read back is no backup.
pub fn verify(path: &Path) -> Result<Summary, BackupError> {
    let damaged = |message: String| BackupError::Damaged {
        path: path.to_owned(),
        message,
    };
    let mut db = Database::builder()
        .open(path)
        .map_err(|e| damaged(e.to_string()))?;
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => return Err(damaged("failed redb's integrity check".to_owned())),
        Err(e) => return Err(damaged(e.to_string())),
    }
    let txn = db.begin_read()?;
    count_rows(&txn)
}

/// Rows per table of everything `txn` sees, read without knowing the tables' types.
fn count_rows(txn: &ReadTransaction) -> Result<Summary, BackupError> {
    let mut tables = Vec::new();
    for handle in txn.list_tables()? {
        let rows = txn.open_untyped_table(handle.clone())?.len()?;
        tables.push(TableCount {
            name: handle.name().to_owned(),
            rows,
        });
    }
    Ok(Summary::sorted(tables))
}

/// Writes what `src` sees into `dest`, an empty file (see [`snapshot`]).
pub(super) fn write_copy(
    src: &ReadTransaction,
    dest: File,
    cancelled: &dyn Fn() -> bool,
) -> Result<Summary, BackupError> {
    copy_into(src, dest, cancelled, Purpose::Backup)
}

/// Writes what `src` sees into `dest`, an empty file, to take the data file's place (see
/// [`crate::store::engine::compact`]): the journal id and applied seq travel with the rest,
/// since the same journal goes on with it.
pub(super) fn write_replacement(src: &ReadTransaction, dest: File) -> Result<Summary, BackupError> {
    copy_into(src, dest, &|| false, Purpose::Replacement)
}

/// What a copy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A data file of its own.
    Backup,
    /// The same data file, rewritten.
    Replacement,
}

fn copy_into(
    src: &ReadTransaction,
    dest: File,
    cancelled: &dyn Fn() -> bool,
    purpose: Purpose,
) -> Result<Summary, BackupError> {
    let db = Database::builder().create_with_backend(FileBackend::new(dest)?)?;
    // Default durability (immediate): the commit is on disk before the file is streamed.
    let dst = db.begin_write()?;
    let mut copier = Copier {
        src,
        dst: &dst,
        cancelled,
        copied: Vec::new(),
    };
    tables::every_table(&mut copier)?;
    let mut copied = copier.copied;
    // A backup is a data file of its own: opened, it gets a journal id of its own, so no
    // journal is ever replayed into it, and it holds everything without one.
    if purpose == Purpose::Backup {
        let mut meta_table = dst.open_table(tables::META)?;
        let mut left_out = 0;
        for key in [tables::meta::JOURNAL_ID, tables::meta::APPLIED_SEQ] {
            left_out += u64::from(meta_table.remove(key)?.is_some());
        }
        if let Some(meta_count) = copied.iter_mut().find(|t| t.name == tables::META.name()) {
            meta_count.rows -= left_out;
        }
    }

    // The snapshot must hold nothing that was not copied.
    let names: BTreeSet<&str> = copied.iter().map(|t| t.name.as_str()).collect();
    for handle in src.list_tables()? {
        if !names.contains(handle.name()) {
            return Err(BackupError::TableNotCopied(handle.name().to_owned()));
        }
    }
    if let Some(handle) = src.list_multimap_tables()?.next() {
        return Err(BackupError::TableNotCopied(handle.name().to_owned()));
    }
    dst.commit()?;
    // Dropping the database marks the file cleanly closed, so it opens without a repair.
    drop(db);
    Ok(Summary::sorted(copied))
}

/// Copies typed tables from a snapshot into the backup's one write transaction.
struct Copier<'a> {
    /// The snapshot being copied.
    src: &'a ReadTransaction,
    /// The backup file's write transaction, committed once everything is in.
    dst: &'a WriteTransaction,
    /// Polled between batches of rows: the daemon is stopping.
    cancelled: &'a dyn Fn() -> bool,
    /// Tables copied so far, to compare with what the snapshot holds.
    copied: Vec<TableCount>,
}

impl TableVisitor for Copier<'_> {
    type Error = BackupError;

    fn visit<K, V>(&mut self, definition: TableDefinition<'static, K, V>) -> Result<(), BackupError>
    where
        K: Key + 'static,
        V: Value + 'static,
    {
        let source = match self.src.open_table(definition) {
            Ok(table) => table,
            // A file from before this table existed: nothing to copy, and the daemon creates
            // it empty when it opens the backup.
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut target = self.dst.open_table(definition)?;
        let mut rows = 0u64;
        for entry in source.iter()? {
            let (key, value) = entry?;
            target.insert(key.value(), value.value())?;
            rows += 1;
            if rows.is_multiple_of(CANCEL_CHECK_ROWS) && (self.cancelled)() {
                return Err(BackupError::Cancelled);
            }
        }
        self.copied.push(TableCount {
            name: definition.name().to_owned(),
            rows,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::{Key as CryptoKey, Keyring};
    use crate::store::Store;
    use crate::store::WriterOptions;

    /// The table names `tables.rs` defines, read from its source text, so a table defined there
    /// but neither created at open nor copied is still noticed.
    fn names_in_tables_rs() -> BTreeSet<String> {
        const MARKER: &str = "TableDefinition::new(\"";
        let text = include_str!("tables.rs");
        text.match_indices(MARKER)
            .filter_map(|(at, _)| {
                let rest = &text[at + MARKER.len()..];
                rest.split('"').next().map(str::to_owned)
            })
            .collect()
    }

    /// A data file made by [`Store::open`] (every table created, schema and key check rows
    /// written), plus a few rows written directly into typed tables.
    async fn populated_store(dir: &Path) -> Database {
        let keyring =
            Arc::new(Keyring::new(&CryptoKey::generate().expect("key"), &[]).expect("ring"));
        let (store, writer) =
            Store::open(dir, keyring, WriterOptions::standalone(16)).expect("open");
        writer.finish(store.writer()).await;
        drop(store);
        let db = Database::open(dir.join(crate::store::DATABASE_FILE)).expect("reopen");
        let txn = db.begin_write().expect("txn");
        {
            let mut messages = txn.open_table(tables::MESSAGES).expect("messages");
            for id in 1..=10_000u64 {
                messages
                    .insert(id, format!("sealed {id}").as_bytes())
                    .expect("insert");
            }
            let mut client_ids = txn.open_table(tables::CLIENT_IDS).expect("client ids");
            client_ids.insert((7, "c-1"), 3).expect("insert");
            let mut queue = txn.open_table(tables::QUEUE).expect("queue");
            queue.insert((7, 1, 3), 1_700_000_000_000).expect("insert");
        }
        txn.commit().expect("commit");
        db
    }

    fn empty_file(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .expect("create backup file")
    }

    /// A backup restored over a data file whose journal holds batches from after the backup
    /// must open as the backup: those batches were applied to another state, and replaying
    /// them into the copy would give its message ids to other messages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_backup_does_not_replay_the_journal_beside_it() {
        use crate::model::Priority;
        use crate::store::testing::{TempStore, one_to_one};
        use crate::store::{MessageAppended, NewMessage};

        let temp = TempStore::new();
        let (store, thread) = temp.open_journal_only();
        let writer = store.writer().clone();
        let conversation = writer
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("conversation")
            .id;
        let send = |text: &str| NewMessage {
            conversation,
            sender: 1,
            receiver: None,
            message_type: "text".into(),
            priority: Priority::Normal,
            client_id: None,
            body: text.as_bytes().to_vec(),
            plain: Arc::default(),
            origin: None,
        };
        let appended = |result| match result {
            Ok(MessageAppended::Stored { id, .. }) => id,
            other => panic!("{other:?}"),
        };
        let kept = appended(writer.append_message(send("in the backup")).await);
        let backup = tempfile::tempdir().expect("tempdir");
        let backup_file = backup.path().join("b.redb");
        store
            .backup(
                empty_file(&backup_file),
                tokio_util::sync::CancellationToken::new(),
            )
            .await
            .expect("backup");
        let later = appended(writer.append_message(send("after the backup")).await);
        let crashed = temp.crash_copy();
        thread.finish(&writer).await;
        drop(store);

        // Restored as docs/OPERATIONS.md says: the backup replaces the data file; the journal
        // the crash left stays where it is.
        std::fs::copy(
            &backup_file,
            crashed.path().join(crate::store::DATABASE_FILE),
        )
        .expect("restore");
        let (store, thread) = crashed.open();
        let (kept, later) = store
            .read(move |r| Ok((r.message(kept)?, r.message(later)?)))
            .await
            .expect("read");
        assert_eq!(kept.expect("in the backup").body, b"in the backup");
        assert!(later.is_none(), "the journal was replayed into the backup");
        thread.finish(store.writer()).await;
    }

    #[tokio::test]
    async fn every_table_in_tables_rs_is_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = populated_store(&dir.path().join("data")).await;
        let source_tables: BTreeSet<String> = {
            let txn = db.begin_read().expect("read");
            txn.list_tables()
                .expect("list")
                .map(|h| h.name().to_owned())
                .collect()
        };
        let copy = dir.path().join("copy.redb");
        let summary = snapshot(&db, empty_file(&copy), &|| false).expect("backup");
        let copied: BTreeSet<String> = summary.tables.iter().map(|t| t.name.clone()).collect();

        assert_eq!(
            copied,
            names_in_tables_rs(),
            "what a backup copies and tables.rs disagree"
        );
        assert_eq!(
            copied, source_tables,
            "the backup and the data file hold different tables"
        );
        assert_eq!(verify(&copy).expect("verify"), summary);
    }

    #[tokio::test]
    async fn the_copy_holds_the_same_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = populated_store(&dir.path().join("data")).await;
        let copy = dir.path().join("copy.redb");
        let summary = snapshot(&db, empty_file(&copy), &|| false).expect("backup");
        let rows = |name: &str| {
            summary
                .tables
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.rows)
        };
        assert_eq!(rows("msgid_message"), Some(10_000));
        assert_eq!(rows("keyid_canary"), Some(1));
        drop(db);

        let copied = Database::open(&copy).expect("open copy");
        let txn = copied.begin_read().expect("read");
        let messages = txn.open_table(tables::MESSAGES).expect("messages");
        assert_eq!(
            messages.get(4321).expect("get").map(|v| v.value().to_vec()),
            Some(b"sealed 4321".to_vec())
        );
        let client_ids = txn.open_table(tables::CLIENT_IDS).expect("client ids");
        assert_eq!(
            client_ids.get((7, "c-1")).expect("get").map(|v| v.value()),
            Some(3)
        );
        let meta = txn.open_table(tables::META).expect("meta");
        assert_eq!(
            meta.get(tables::meta::SCHEMA_VERSION)
                .expect("get")
                .map(|v| v.value()),
            Some(tables::SCHEMA_VERSION)
        );
    }

    #[tokio::test]
    async fn a_table_not_in_the_list_fails_the_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = populated_store(&dir.path().join("data")).await;
        let txn = db.begin_write().expect("txn");
        {
            let stray: TableDefinition<u64, u64> = TableDefinition::new("stray_table");
            txn.open_table(stray)
                .expect("stray")
                .insert(1, 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
        let err = snapshot(&db, empty_file(&dir.path().join("copy.redb")), &|| false)
            .expect_err("must refuse");
        assert!(
            matches!(&err, BackupError::TableNotCopied(name) if name == "stray_table"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cancelling_stops_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = populated_store(&dir.path().join("data")).await;
        let err = snapshot(&db, empty_file(&dir.path().join("copy.redb")), &|| true)
            .expect_err("cancelled");
        assert!(matches!(err, BackupError::Cancelled), "{err}");
    }

    #[tokio::test]
    async fn a_file_open_elsewhere_is_refused_and_a_missing_one_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let db = populated_store(&data).await;
        let source = data.join(crate::store::DATABASE_FILE);
        let err =
            copy_data_file(&source, empty_file(&dir.path().join("a.redb"))).expect_err("in use");
        assert!(matches!(err, BackupError::SourceInUse { .. }), "{err}");
        drop(db);
        let summary =
            copy_data_file(&source, empty_file(&dir.path().join("b.redb"))).expect("closed file");
        assert!(summary.rows() > 10_000, "{summary:?}");

        let missing = dir.path().join("nowhere.redb");
        let err =
            copy_data_file(&missing, empty_file(&dir.path().join("c.redb"))).expect_err("missing");
        assert!(matches!(err, BackupError::SourceMissing { .. }), "{err}");
    }
}

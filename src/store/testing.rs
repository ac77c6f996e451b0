//! Helpers for tests that open a real store, crash it, close it and open it again.

use std::sync::Arc;

use redb::{Key as TableKey, ReadTransaction, TableDefinition, Value};

use super::tables::TableVisitor;
use super::{NewConversation, NewMessage, Store, WriterOptions, WriterThread};
use crate::crypto::{Key, Keyring};
use crate::model::{MessageBody, Priority};

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
        for file in [super::DATABASE_FILE, super::engine::journal::JOURNAL_FILE] {
            std::fs::copy(self.dir.path().join(file), copy.dir.path().join(file)).expect("copy");
        }
        copy
    }

    /// Every row of every table of the closed store, as text, in key order.
    pub fn dump(&self) -> Vec<String> {
        use redb::ReadableDatabase;
        let db = redb::Database::open(self.dir.path().join(super::DATABASE_FILE)).expect("db");
        let txn = db.begin_read().expect("read");
        let mut dump = Dump {
            txn: &txn,
            rows: Vec::new(),
        };
        let Ok(()) = super::tables::every_table(&mut dump);
        dump.rows
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

/// A one-character text message, its body sealed by nobody: for tests that look at rows, not
/// at what a reader opens.
pub fn test_message(conversation: u64, sender: u64, priority: Priority) -> NewMessage {
    NewMessage {
        conversation,
        sender,
        receiver: None,
        message_type: "text".into(),
        priority,
        client_id: None,
        body: vec![7],
        plain: Arc::new(MessageBody {
            text: "t".into(),
            metadata_json: "{}".into(),
        }),
        origin: None,
    }
}

/// Every row of every table, as `name key value`, in key order.
struct Dump<'a> {
    txn: &'a ReadTransaction,
    rows: Vec<String>,
}

impl TableVisitor for Dump<'_> {
    type Error = std::convert::Infallible;

    fn visit<K, V>(&mut self, table: TableDefinition<'static, K, V>) -> Result<(), Self::Error>
    where
        K: TableKey + 'static,
        V: Value + 'static,
        for<'a> K::SelfType<'a>: std::fmt::Debug,
        for<'a> V::SelfType<'a>: std::fmt::Debug,
    {
        use redb::{ReadableTable, TableHandle};
        let name = table.name().to_owned();
        for row in self
            .txn
            .open_table(table)
            .expect("table")
            .iter()
            .expect("iter")
        {
            let (key, value) = row.expect("row");
            self.rows
                .push(format!("{name} {:?} {:?}", key.value(), value.value()));
        }
        Ok(())
    }
}

//! Why the store failed: [`StoreError`], one enum for opening, reading and writing.
//!
//! Open-time variants name the file and say what to do; run-time ones are our fault, never the
//! client's, and map to 500/503 in [`crate::error`].

use std::path::PathBuf;

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
    /// The journal is damaged beyond a torn last write; see [`super::DamagedJournal`].
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
    /// A record asked for by its key cannot be read back (see [`super::damage`]).
    #[error("{table} record {key} is damaged in the data file and cannot be read")]
    Damaged { table: String, key: String },
    #[error("the store is shut down")]
    Closed,
    /// The data file cannot be written (the disk is full or failing): writes are refused until
    /// the writer has reopened it and checkpointed; see `engine::outage`. Maps to 503
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
    /// failure to read at all: see [`super::damage`].
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Encoding(_) | StoreError::Sealed(_))
    }

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

//! The data file: opening (or creating) it, and the checks every start makes before anything
//! reads it: its schema version, and whether the configured keys open what it holds.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use redb::{Database, Key, TableDefinition, Value, WriteTransaction};

use super::StoreError;
use super::keys;
use super::tables::{self, KEY_CHECKS, META, SCHEMA_VERSION, TableVisitor, meta};
use super::upgrade;
use crate::crypto::Keyring;

/// File name of the database inside the data dir.
pub const DATABASE_FILE: &str = "indaba.redb";

/// Plaintext of the per-key canary in [`tables::KEY_CHECKS`].
const KEY_CHECK_PLAINTEXT: &[u8] = b"indaba key check v1";

pub(super) fn open_database(data_dir: &Path) -> Result<Database, StoreError> {
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
pub(super) fn check_schema_and_keys(
    db: &Database,
    path: &Path,
    keyring: &Keyring,
) -> Result<u64, StoreError> {
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
                // Up to 4, every member's row held the counts a message changes.
                let memberships = if found < 5 {
                    upgrade::memberships_to_v5(&txn)?
                } else {
                    0
                };
                meta_table.insert(meta::SCHEMA_VERSION, SCHEMA_VERSION)?;
                tracing::info!(
                    from = found,
                    to = SCHEMA_VERSION,
                    memberships,
                    "data file schema upgraded"
                );
            }
            Some(_) => {}
            None => {
                meta_table.insert(meta::SCHEMA_VERSION, SCHEMA_VERSION)?;
            }
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

        drop(meta_table);
        // Create every table up front, so readers never meet a missing one.
        tables::every_table(&mut Create(&txn))?;

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

/// Creates each table it visits that does not exist yet.
struct Create<'a>(&'a WriteTransaction);

impl TableVisitor for Create<'_> {
    type Error = StoreError;

    fn visit<K, V>(&mut self, table: TableDefinition<'static, K, V>) -> Result<(), StoreError>
    where
        K: Key + 'static,
        V: Value + 'static,
    {
        self.0.open_table(table)?;
        Ok(())
    }
}

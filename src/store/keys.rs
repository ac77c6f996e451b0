//! Does a key ring open a data file? At start ([`super::Store::open`]) and, without opening the
//! file for writing, for `indaba check-config` after a key rotation.
//!
//! Every key that ever sealed data leaves a sealed canary in [`KEY_CHECKS`] under its key id; a
//! ring fits the file when it opens every canary.

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable};

use super::StoreError;
use super::tables::KEY_CHECKS;
use crate::crypto::Keyring;

/// The key ids of a data file's canaries, and those of them `keyring` cannot open (not
/// configured, or configured with other key material under a colliding id).
pub(super) fn unopened(
    checks: &impl ReadableTable<u32, &'static [u8]>,
    keyring: &Keyring,
) -> Result<(Vec<u32>, Vec<u32>), StoreError> {
    let mut stored = Vec::new();
    let mut missing = Vec::new();
    for entry in checks.iter()? {
        let (id, canary) = entry?;
        let id = id.value();
        stored.push(id);
        if keyring.open(canary.value()).is_err() {
            missing.push(id);
        }
    }
    Ok((stored, missing))
}

/// What [`check_data_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// No data file yet: the first start creates it with the current key.
    NoDataFile,
    /// The ring opens everything sealed in the file (these key ids).
    Opens { stored: Vec<u32> },
    /// Data in the file was sealed with keys the ring lacks.
    Missing {
        path: PathBuf,
        stored: Vec<u32>,
        missing: Vec<u32>,
    },
    /// A running daemon holds the file: it cannot be read from outside.
    InUse { path: PathBuf },
    /// A crash left the file unclean; only the daemon repairs it (at its next start).
    NeedsRepair { path: PathBuf },
}

/// Checks `keyring` against the data file in `data_dir`, opening it read-only: the file is
/// never modified, not even repaired.
pub fn check_data_file(data_dir: &Path, keyring: &Keyring) -> Result<KeyCheck, StoreError> {
    let path = data_dir.join(super::DATABASE_FILE);
    if !path.exists() {
        return Ok(KeyCheck::NoDataFile);
    }
    let db = match Database::builder().open_read_only(&path) {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => return Ok(KeyCheck::InUse { path }),
        Err(DatabaseError::RepairAborted) => return Ok(KeyCheck::NeedsRepair { path }),
        Err(e) => {
            return Err(StoreError::Open {
                path,
                message: e.to_string(),
            });
        }
    };
    let txn = db.begin_read()?;
    let checks = match txn.open_table(KEY_CHECKS) {
        Ok(table) => table,
        // A file made before its first key was recorded: nothing sealed yet.
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(KeyCheck::Opens { stored: Vec::new() });
        }
        Err(e) => return Err(e.into()),
    };
    let (stored, missing) = unopened(&checks, keyring)?;
    Ok(if missing.is_empty() {
        KeyCheck::Opens { stored }
    } else {
        KeyCheck::Missing {
            path,
            stored,
            missing,
        }
    })
}

/// Key ids the way logs and errors show them: 8 hex digits, comma-separated.
pub fn format_ids(ids: impl IntoIterator<Item = u32>) -> String {
    ids.into_iter()
        .map(|id| format!("{id:08x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;
    use crate::store::testing::TempStore;

    #[tokio::test]
    async fn a_rotated_ring_without_the_old_key_is_found_missing_it() {
        let temp = TempStore::new();
        let old_id = temp.keyring().current_key_id();
        let (store, thread) = temp.open();
        assert!(matches!(
            check_data_file(temp.path(), &temp.keyring()),
            Ok(KeyCheck::InUse { .. })
        ));
        thread.finish(store.writer()).await;
        drop(store);

        let rotated = Keyring::new(&Key::generate().expect("key"), &[]).expect("ring");
        match check_data_file(temp.path(), &rotated).expect("check") {
            KeyCheck::Missing {
                stored, missing, ..
            } => {
                assert_eq!(stored, vec![old_id]);
                assert_eq!(missing, vec![old_id]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check_data_file(temp.path(), &temp.keyring()).expect("check"),
            KeyCheck::Opens {
                stored: vec![old_id]
            }
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            check_data_file(empty.path(), &rotated).expect("check"),
            KeyCheck::NoDataFile
        );
    }
}

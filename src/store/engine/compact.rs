//! Scrubbing the files after an op removed user content (a moderation delete, an erasure):
//! what makes "erased" hold for the raw files, not only for the API.
//!
//! redb never writes a page in place: a commit writes changed pages elsewhere and frees the old
//! ones, which keep their bytes until reused. The journal's records stay in its file after a
//! checkpoint until newer records overwrite them. So after such a batch (always a checkpoint),
//! the writer
//! 1. empties the journal ([`super::journal::Journal::clear`]: a new key, the file cut to its
//!    header), and, for an erasure,
//! 2. rewrites the data file: one snapshot's rows copied into a fresh file (the backup's
//!    copier), which takes the old file's name by an atomic rename. The old inode, free pages
//!    and all, goes back to the file system once the last reader lets go of it.
//!
//! Messages sealed under the erased user's data key are noise in any copy left anywhere once
//! that key is gone; the rewrite is what removes the key's own old copies (and messages sealed
//! before data keys existed, under the at-rest key). Limits: docs/STORAGE.md, "Erasure".

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use redb::ReadableDatabase;

use super::writer::Writer;
use crate::store::ops::Scrub;
use crate::store::{DATABASE_FILE, StoreError, backup};

/// The fresh copy while it is written, in the data dir (same file system: the rename is
/// atomic). One left by a crash is removed at the next start ([`remove_leftover`]).
pub const COMPACT_FILE: &str = ".indaba-compact.redb";

/// Removes a copy a crash left half-written (it holds nothing the data file lacks).
pub fn remove_leftover(data_dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(data_dir.join(COMPACT_FILE)) {
        Ok(()) => {
            tracing::info!("removed a data file rewrite left unfinished by a crash");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::DataDir {
            path: data_dir.to_owned(),
            message: format!("cannot remove {COMPACT_FILE}: {e}"),
        }),
    }
}

impl Writer {
    /// Scrubs the files after a checkpoint that holds an op asking for it (see the module).
    /// A failure is logged at ERROR: the op itself is durable either way, and what a failed
    /// scrub leaves is the ciphertext of content whose key is gone, or old page copies the
    /// next erasure's rewrite removes.
    pub(super) fn scrub(&mut self, scrub: Scrub) {
        if let Some(cursor) = &mut self.journal {
            // The checkpoint holds every batch journaled so far.
            match cursor.journal.clear() {
                Ok(()) => cursor.start_over(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot empty the journal after an erasure or deletion: its old records stay in the file until overwritten");
                    cursor.break_off();
                }
            }
        }
        if scrub == Scrub::Compact {
            let started = Instant::now();
            match self.rewrite_data_file() {
                Ok(bytes) => tracing::info!(
                    bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "data file rewritten after an erasure"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot rewrite the data file after an erasure: old copies of what was erased may stay in its free pages until the next erasure's rewrite"
                ),
            }
        }
    }

    /// Copies the data file into a fresh one and puts it in its place; answers its size.
    fn rewrite_data_file(&mut self) -> Result<u64, StoreError> {
        let Some(db) = self.db.clone() else {
            return Ok(0);
        };
        let dir = self.file.dir.clone();
        let fresh = dir.join(COMPACT_FILE);
        let copy = || -> Result<u64, StoreError> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&fresh)
                .map_err(|e| StoreError::Storage(format!("cannot create {COMPACT_FILE}: {e}")))?;
            let txn = db.begin_read()?;
            backup::write_replacement(&txn, file.try_clone().map_err(io)?)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            file.sync_all().map_err(io)?;
            file.metadata().map(|m| m.len()).map_err(io)
        };
        let bytes = match copy() {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = std::fs::remove_file(&fresh);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&fresh, dir.join(DATABASE_FILE)) {
            let _ = std::fs::remove_file(&fresh);
            return Err(io(e));
        }
        // From here on the name is the copy's: the old handle writes to a file no start opens.
        let reopened = File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
            .and_then(|()| (self.file.open)());
        match reopened {
            Ok(new) => {
                let new = Arc::new(new);
                self.durable.swap(new.clone());
                self.db = Some(new);
                Ok(bytes)
            }
            Err(e) => {
                // The outage's reopen retries opening the copy (the journal is empty, or
                // holds only what the copy has).
                self.start_outage(&e);
                Err(e)
            }
        }
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Storage(e.to_string())
}

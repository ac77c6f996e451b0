//! The writer's place in the journal: where the next record goes, whether a checkpoint is due,
//! and what happens when the file cannot be written.

use std::time::{Duration, Instant};

use super::{CAPACITY, CHECKPOINT_BYTES, Journal, RECORD_HEADER, RECORDS_START};

/// The journal and where its next record goes.
#[derive(Debug)]
pub(in crate::store::engine) struct JournalCursor {
    pub(in crate::store::engine) journal: Journal,
    /// Offset of the next record in the journal file.
    pub(in crate::store::engine) offset: u64,
    /// When the first batch after the last checkpoint was journaled.
    pub(in crate::store::engine) since: Option<Instant>,
    /// A write or sync failed: every batch is a checkpoint until the journal is emptied again
    /// ([`JournalCursor::mend`]).
    broken: bool,
    /// When a broken journal was last tried again.
    tried: Option<Instant>,
}

/// How long a broken journal stays unused before it is emptied and tried again.
const JOURNAL_RETRY: Duration = Duration::from_secs(5);

impl JournalCursor {
    pub(in crate::store::engine) fn new(journal: Journal) -> Self {
        Self {
            journal,
            offset: RECORDS_START,
            since: None,
            broken: false,
            tried: None,
        }
    }

    /// A write at the end of the journal failed: no more appends until it is emptied again.
    /// The failed record may have reached the file whole (a failed sync): its length is
    /// zeroed, best effort, so that no recovery replays a batch its requests heard fail.
    pub(in crate::store::engine) fn break_off(&mut self) {
        self.broken = true;
        self.tried = Some(Instant::now());
        let _ = self.journal.write_at(self.offset, &[0; RECORD_HEADER]);
    }

    /// Called right after a checkpoint, which holds every batch journaled so far: a broken
    /// journal is emptied (with a new key) and used again, at most every [`JOURNAL_RETRY`]
    /// (`now`: right after an outage). If that fails, it stays broken.
    pub(in crate::store::engine) fn mend(&mut self, now: bool) {
        let due = now || self.tried.is_none_or(|t| t.elapsed() >= JOURNAL_RETRY);
        if !self.broken || !due {
            return;
        }
        self.tried = Some(Instant::now());
        match self.journal.clear() {
            Ok(()) => {
                self.broken = false;
                self.start_over();
                tracing::warn!("the journal can be written again: batches are journaled again");
            }
            Err(e) => {
                tracing::debug!(error = %e, "the journal still cannot be written");
            }
        }
    }

    /// Whether the next batch must be a checkpoint whatever its size: the journal failed, or
    /// holds batches older than `interval` or more than [`CHECKPOINT_BYTES`] of them.
    pub(in crate::store::engine) fn checkpoint_due(&self, interval: Duration) -> bool {
        self.broken
            || self.since.is_some_and(|since| since.elapsed() >= interval)
            || self.offset - RECORDS_START >= CHECKPOINT_BYTES
    }

    /// Whether a record of `len` bytes fits before the journal's bound.
    pub(in crate::store::engine) fn fits(&self, len: usize) -> bool {
        self.offset + len as u64 <= RECORDS_START + CAPACITY
    }

    /// Seals `record` as batch `seq`'s, appends it and syncs it: the batch is durable once
    /// this returns `Ok`.
    pub(in crate::store::engine) fn append(
        &mut self,
        record: &mut [u8],
        seq: u64,
        started: Instant,
    ) -> std::io::Result<()> {
        self.journal.seal(record, seq);
        self.journal.write_at(self.offset, record)?;
        self.journal.sync()?;
        self.offset += record.len() as u64;
        self.since.get_or_insert(started);
        Ok(())
    }

    /// A checkpoint committed: everything journaled so far is in the data file.
    pub(in crate::store::engine) fn start_over(&mut self) {
        self.offset = RECORDS_START;
        self.since = None;
    }
}

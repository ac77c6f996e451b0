//! What the writer does while the data file cannot be written (the disk is full, or failing):
//! an [`Outage`]. Writes are refused with [`StoreError::Unavailable`] while reads go on from a
//! reopened handle holding what is durable, and writes resume by themselves once a checkpoint
//! goes through again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::ReadableDatabase;
use tokio::sync::mpsc;

use super::batch::WriterState;
use super::handle::Command;
use super::journal::RECORDS_START;
use super::redo;
use super::writer::Writer;
use crate::store::StoreError;
use crate::store::ops::WriteError;

/// How often the writer looks at its queue during an outage (answering each request at once),
/// and tries to reopen a data file it closed.
pub(super) const OUTAGE_TICK: Duration = Duration::from_millis(20);
/// The first wait before a checkpoint is tried again in an outage, and the longest.
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// Free space a checkpoint is tried with at least, besides twice the journal's bytes.
const ROOM_MIN: u64 = 1 << 20;

/// Whether `bytes` more fit on the disk of `dir`: written (and removed) in a file of their own.
/// A failed redb commit spends its handle, so the writer asks this first: while the disk stays
/// full, the reopened handle readers use is left alone.
fn has_room(dir: &std::path::Path, bytes: u64) -> bool {
    use std::io::Write;
    let path = dir.join(".indaba-space-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok::<_, std::io::Error>(())
    })();
    let _ = std::fs::remove_file(&path);
    written.is_ok()
}

/// A time the data file could not be written. redb refuses every later use of a handle that
/// met an I/O error, and a batch may sit in its memory that will never be durable, so the
/// writer closes the handle, opens the file again (which holds what was checkpointed) and
/// replays the journal into it without a sync: readers then see every acknowledged batch and
/// nothing else. Writes are refused meanwhile; once a checkpoint goes through, the journal is
/// emptied and writes resume. A failed checkpoint closes the handle again, and the next is
/// tried after a growing wait.
#[derive(Debug)]
pub(super) struct Outage {
    /// What requests hear meanwhile.
    pub(super) refusal: StoreError,
    /// When it began.
    since: Instant,
    /// When the next checkpoint may be tried, and the wait after that one if it fails.
    next_try: Instant,
    backoff: Duration,
    /// When the data file, closed, may be reopened, and the wait after that if it fails: a
    /// tick at first (a reader may hold the old handle for a moment, and the file stays locked
    /// until it lets go), growing while it fails (the disk may fail reads too).
    next_reopen: Instant,
    reopen_backoff: Duration,
}

impl Writer {
    /// In an outage: answers every request waiting with the outage's refusal, for about
    /// [`OUTAGE_TICK`]. True once asked to stop (or every handle is gone).
    pub(super) fn refuse_queued(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let refusal = match &self.outage {
            Some(outage) => outage.refusal.clone(),
            None => return false,
        };
        let until = Instant::now() + OUTAGE_TICK;
        loop {
            match rx.try_recv() {
                Ok(Command::Stop) => return true,
                // Refused like every request nobody waits for: a redelivery at worst.
                Ok(Command::Removals) => drop(self.removals.take()),
                Ok(Command::Write(request)) => {
                    if request.op.is_append() {
                        self.metrics.persistence_failures.inc();
                    }
                    if let Some(reply) = request.reply {
                        // Nobody may wait any more: the refusal stands regardless.
                        let _ = reply.send(Err(WriteError::Store(refusal.clone())));
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(5)));
                }
            }
        }
    }

    /// The data file could not be written (`cause`): close its handle and refuse writes until
    /// [`Writer::recover`] succeeds. See [`Outage`].
    pub(super) fn start_outage(&mut self, cause: &StoreError) {
        if self.outage.is_none() {
            tracing::error!(
                error = %cause,
                "the data file cannot be written: writes are refused (503 storage_unavailable) until it can; reads go on from what is durable"
            );
            let now = Instant::now();
            let cause = match cause {
                StoreError::Unavailable(detail) => detail.clone(),
                other => other.to_string(),
            };
            self.outage = Some(Outage {
                refusal: StoreError::Unavailable(format!(
                    "the data file cannot be written ({cause}); writes resume by themselves once it can"
                )),
                since: now,
                next_try: now + RETRY_FIRST,
                backoff: RETRY_FIRST,
                next_reopen: now,
                reopen_backoff: OUTAGE_TICK,
            });
        }
        self.guard.0.last_commit_ok.store(false, Ordering::Relaxed);
        self.db = None;
        self.durable.close();
    }

    /// One step out of an outage: reopen the data file if it is closed, then, when due (or
    /// `now`) and the disk has room, try a checkpoint. Writes resume once one goes through.
    pub(super) fn recover(&mut self, now: bool) {
        let Some(outage) = &mut self.outage else {
            return;
        };
        if self.db.is_none() {
            if !now && Instant::now() < outage.next_reopen {
                return;
            }
            if let Err(e) = self.reopen() {
                if let Some(outage) = &mut self.outage {
                    outage.next_reopen = Instant::now() + outage.reopen_backoff;
                    outage.reopen_backoff = (outage.reopen_backoff * 2).min(RETRY_MAX);
                    // Quiet while it may only be a reader letting go of the old handle.
                    if outage.reopen_backoff >= RETRY_FIRST {
                        tracing::warn!(error = %e, "cannot reopen the data file; reads are refused meanwhile");
                    }
                }
                return;
            }
        }
        let Some(outage) = &mut self.outage else {
            return;
        };
        if !now && Instant::now() < outage.next_try {
            return;
        }
        let pending = self
            .journal
            .as_ref()
            .map_or(0, |cursor| cursor.offset - RECORDS_START);
        if !has_room(&self.file.dir, ROOM_MIN + 2 * pending) {
            outage.next_try = Instant::now() + RETRY_FIRST;
            return;
        }
        match self.checkpoint() {
            Ok(seq) => {
                self.durable.settle(seq);
                if let Some(cursor) = &mut self.journal {
                    // The checkpoint holds everything: a failed journal is tried again now.
                    cursor.mend(true);
                }
                let since = self.outage.take().map(|o| o.since.elapsed());
                tracing::warn!(
                    seconds = since.unwrap_or_default().as_secs(),
                    "the data file can be written again: writes resumed"
                );
            }
            Err(e) => {
                if let Some(outage) = &mut self.outage {
                    outage.backoff = (outage.backoff * 2).min(RETRY_MAX);
                    outage.next_try = Instant::now() + outage.backoff;
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = outage.backoff.as_millis() as u64,
                        "the data file still cannot be written"
                    );
                }
                // The handle is spent (redb refuses it after an I/O error): open it again at
                // the next tick, so reads go on meanwhile.
                if let Some(outage) = &mut self.outage {
                    outage.reopen_backoff = OUTAGE_TICK;
                }
                self.db = None;
                self.durable.close();
            }
        }
    }

    /// Opens the data file again and replays the journal into it without a sync, then hands it
    /// to readers: it holds every acknowledged batch and nothing else. Seqs go on from the
    /// newest attempted, so no reader waiting on an older one is answered from the new handle.
    pub(super) fn reopen(&mut self) -> Result<(), StoreError> {
        let db = (self.file.open)()?;
        let replayed = match &self.journal {
            Some(cursor) => {
                // The writer's own journal: damage here is not a torn write of a crash, and
                // replaying past it would show readers less than was acknowledged.
                let scan = cursor.journal.scan(redo::applied_seq(&db)?)?;
                if let Some(damage) = scan.damage {
                    return Err(StoreError::Journal {
                        path: cursor.journal.path().to_owned(),
                        message: format!(
                            "damaged at offset {} while reopening the data file: {}",
                            damage.offset, damage.what
                        ),
                    });
                }
                redo::replay_unsynced(&db, &cursor.journal, &scan.records)?
                    .0
                    .seq
            }
            None => 0,
        };
        let txn = db.begin_read()?;
        let mut state = WriterState::load_with(&txn, self.state.damaged.clone())?;
        drop(txn);
        state.clock = std::mem::take(&mut self.state.clock);
        state.committing = self.state.committing.clone();
        state.seq = self.state.seq.max(replayed);
        self.state = state;
        let db = Arc::new(db);
        self.durable.publish(db.clone(), self.state.seq);
        self.db = Some(db);
        if let Some(outage) = &mut self.outage {
            outage.reopen_backoff = OUTAGE_TICK;
        }
        tracing::info!("data file reopened: reads go on from what is durable");
        Ok(())
    }
}

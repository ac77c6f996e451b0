//! The writer thread: the only code that writes to the database.
//!
//! It blocks for the first request, takes every other request already waiting (up to
//! `commit_batch_max`), applies their ops in one write transaction ([`super::batch`]) and
//! commits it. Most commits are not synced: the thread appends the batch's journal record in
//! one write and syncs that ([`super::journal`], [`super::record`]); every
//! `storage.checkpoint_interval` a batch is committed durably instead (a checkpoint). Only then
//! are the batch's requests answered and its messages fanned out ([`super::durability`]).
//! Requests that arrive meanwhile wait in the queue and make the next batch. A thousand
//! concurrent senders therefore cost one commit and one journal write, not a thousand, and
//! nobody hears "sent" before their message would survive `kill -9`. Under a steady stream of
//! small batches the writer lets a batch grow a little before committing it, and requests
//! nobody waits for ride along with the next that someone does ([`super::group_commit`]).
//!
//! A disk that refuses a write begins an outage ([`super::outage`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::mpsc;

use super::DataFile;
use super::batch::{self, BatchReport, Completion, Plan, WriterState, commit_batch};
use super::durability::{Committed, Durable};
use super::group_commit::GroupCommit;
use super::handle::{Command, Request};
use super::health::RunningGuard;
use super::journal::cursor::JournalCursor;
use super::outage::Outage;
use super::record;
use super::removals::Removals;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::store::ops::{Op, WriteError};

/// The writer thread: everything it owns.
pub(super) struct Writer {
    /// `None` while it is closed in an outage.
    pub(super) db: Option<Arc<Database>>,
    pub(super) file: DataFile,
    /// `None` with `storage.journal = false`: every batch is then a checkpoint.
    pub(super) journal: Option<JournalCursor>,
    pub(super) batch_max: usize,
    pub(super) queue_max: u64,
    pub(super) checkpoint_interval: Duration,
    /// Where each batch goes once durable.
    pub(super) durable: Durable,
    pub(super) metrics: Arc<Metrics>,
    pub(super) guard: RunningGuard,
    pub(super) state: WriterState,
    /// While the data file cannot be written: see [`super::outage::Outage`].
    pub(super) outage: Option<Outage>,
    /// When to commit: see [`super::group_commit`].
    pub(super) group: GroupCommit,
    /// When the writer last took requests from its queue (for the arrival rate).
    pub(super) last_take: Instant,
    /// Delivered queue entries waiting for a commit: each batch takes them all.
    pub(super) removals: Arc<Removals>,
}

/// What one take from the queue brought.
#[derive(Debug, Default, Clone, Copy)]
struct Taken {
    /// Requests someone waits for.
    answered: usize,
    /// A stop came: commit, checkpoint and end.
    stop: bool,
}

/// Wakes the writer thread when a request arrives while it waits with a deadline.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The next command, or `None` once `deadline` passed (or every handle is gone). Like
/// `blocking_recv`, with a deadline: tokio's queue has none for a thread outside the runtime.
fn recv_until(
    rx: &mut mpsc::Receiver<Command>,
    deadline: Instant,
    waker: &Waker,
) -> Option<Command> {
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(command) = rx.poll_recv(&mut cx) {
            return command;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // Woken early by a request (or spuriously): the poll above looks again.
        std::thread::park_timeout(left);
    }
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.batch_max.min(4096));
        // Wakes this thread when a request arrives while it waits with a deadline.
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut stopping = false;
        while !stopping {
            if self.outage.is_some() {
                // Reopen first, so readers wait for the file as briefly as can be.
                self.recover(false);
                stopping = self.refuse_queued(&mut rx);
                continue;
            }
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let taken = self.take(Some(first), &mut batch, &mut rx);
            stopping = taken.stop || self.gather(&mut batch, &mut rx, taken.answered, &waker);
            // The last batch is a checkpoint: a stopped daemon leaves nothing to replay.
            if !batch.is_empty()
                || self.removals.since().is_some()
                || (stopping && self.uncheckpointed())
            {
                self.commit(&mut batch, stopping);
            }
        }
        // Every handle is gone without a stop: still leave nothing to replay.
        if self.outage.is_none() && (self.uncheckpointed() || self.removals.since().is_some()) {
            self.commit(&mut batch, true);
        }
        if self.outage.is_some() {
            // One last try: space may be back.
            self.recover(true);
        }
        if let Some(outage) = &self.outage {
            tracing::error!(
                error = %outage.refusal,
                "store writer stopped without its final checkpoint: the data file could not be written; every acknowledged write is in the journal (or was checkpointed) and is replayed at the next start"
            );
            self.guard.0.failed.store(true, Ordering::SeqCst);
            return;
        }
        tracing::debug!("store writer stopped");
    }

    /// Adds `first` (if any) and every request already waiting to `batch`, up to `batch_max`,
    /// and notes how many of them someone waits for.
    fn take(
        &mut self,
        first: Option<Command>,
        batch: &mut Vec<Request>,
        rx: &mut mpsc::Receiver<Command>,
    ) -> Taken {
        let mut taken = Taken::default();
        let mut next = first;
        while let Some(command) = next {
            match command {
                Command::Stop => {
                    taken.stop = true;
                    break;
                }
                // Nothing to add: the commit takes them from `removals`.
                Command::Removals => {}
                Command::Write(request) => {
                    taken.answered += usize::from(request.reply.is_some());
                    batch.push(request);
                }
            }
            next = if batch.len() < self.batch_max {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let now = Instant::now();
        self.group
            .arrived(now.duration_since(self.last_take), taken.answered);
        self.last_take = now;
        taken
    }

    /// Lets `batch` grow before it is committed when that costs nobody much
    /// ([`super::group_commit`]): requests nobody waits for wait for one that someone does,
    /// and a small batch under a steady stream is held briefly. `answered`: how many requests
    /// in it someone waits for. Whether a stop came meanwhile.
    fn gather(
        &mut self,
        batch: &mut Vec<Request>,
        rx: &mut mpsc::Receiver<Command>,
        mut answered: usize,
        waker: &Waker,
    ) -> bool {
        let Some(ride_along) = self.group.ride_along() else {
            return false;
        };
        if answered == 0 {
            // Delivered entries wait from when the first of them was handed over, the
            // batch's other requests from now.
            let now = Instant::now();
            let deadline = self.removals.since().unwrap_or(now).min(now) + ride_along;
            while answered == 0 && batch.len() < self.batch_max {
                // The deadline passed (or every handle is gone): commit them alone.
                let Some(next) = recv_until(rx, deadline, waker) else {
                    return false;
                };
                let more = self.take(Some(next), batch, rx);
                if more.stop {
                    return true;
                }
                answered += more.answered;
            }
        }
        let hold = self.group.hold(answered, batch.len() >= self.batch_max);
        if hold.is_zero() {
            return false;
        }
        std::thread::sleep(hold);
        let more = self.take(rx.try_recv().ok(), batch, rx);
        self.group.held(more.answered);
        more.stop
    }

    /// Whether the journal holds batches no checkpoint covers yet.
    fn uncheckpointed(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.since.is_some())
    }

    /// Commits `batch` (emptying it), makes it durable and reports it.
    fn commit(&mut self, batch: &mut Vec<Request>, checkpoint: bool) {
        let started = Instant::now();
        // The delivered entries waiting, as one op ahead of the batch's requests: journaled
        // with them, and leaving room in the queues before they add to them.
        if let Some(delivered) = self.removals.take() {
            batch.insert(
                0,
                Request {
                    op: Op::Dequeue(delivered),
                    reply: None,
                },
            );
        }
        let size = batch.len();
        let appends = batch.iter().filter(|r| r.op.is_append()).count();
        // A batch that removes user content is a checkpoint, and the files are scrubbed after it.
        let scrub = batch.iter().filter_map(|r| r.op.scrubs()).max();
        let checkpoint = checkpoint || scrub.is_some();
        self.state.seq += 1;
        let seq = self.state.seq;
        let now_ms = self.state.now_ms();
        let interval = self.checkpoint_interval;
        let record = match &self.journal {
            Some(cursor) if !checkpoint && !cursor.checkpoint_due(interval) => {
                match record::encode(batch.iter().map(|r| &r.op), now_ms, self.queue_max) {
                    Ok(record) if cursor.fits(record.len()) => Some(record),
                    Ok(_) => None,
                    Err(e) => {
                        // Unreachable with serde-derived types; a checkpoint is still durable.
                        tracing::error!(error = %e, "cannot encode a journal record; checkpointing instead");
                        None
                    }
                }
            }
            _ => None,
        };
        let plan = Plan {
            seq,
            durable: record.is_none(),
            now_ms,
            expect_ids: None,
        };
        let (completions, report, outcome) = self.apply(batch, plan);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.commit_batch_size.observe(size as f64);
        if report.folded > 0 {
            self.metrics.history_fold_size.observe(report.folded as f64);
        }
        let committed = Committed {
            completions,
            report,
        };
        match (outcome, record) {
            (Ok(()), Some(mut record)) if !committed.report.durable => {
                record::fill(&mut record, &committed.report);
                self.journal_and_report(seq, &mut record, committed, started);
            }
            // A checkpoint as planned, or one its new id reservation made of it.
            (Ok(()), _) => {
                self.checkpointed(&committed.report);
                tracing::trace!(batch = size, seq, "committed, checkpoint");
                self.durable.report(seq, committed);
                if let Some(scrub) = scrub {
                    self.scrub(scrub);
                }
            }
            (Err(error), _) => {
                tracing::error!(batch = size, error = %error, "commit failed; batch rolled back");
                if matches!(error, StoreError::Unavailable(_)) {
                    // redb refuses this handle from now on, and the batch may be in its memory.
                    self.durable.abandon(committed.completions, &error, appends);
                    self.start_outage(&error);
                } else {
                    self.durable
                        .fail(seq, committed.completions, &error, appends);
                }
            }
        }
    }

    /// Makes a batch committed without a sync durable through its journal record, then reports
    /// it. If the journal cannot be written, a checkpoint makes it durable instead, and later
    /// batches are checkpoints until the journal can be written again. If that checkpoint
    /// fails too, its requests hear the error and an outage begins: the batch is in redb's
    /// memory, where readers see it, and only closing the handle takes it back; settling it
    /// would show readers rows a crash loses (and whose message ids would then be given out
    /// again).
    fn journal_and_report(
        &mut self,
        seq: u64,
        record: &mut [u8],
        committed: Committed,
        started: Instant,
    ) {
        let cursor = self.journal.as_mut().expect("a record means a journal");
        let syncing = Instant::now();
        match cursor.append(record, seq, started) {
            Ok(()) => {
                self.metrics
                    .journal_sync_seconds
                    .observe(syncing.elapsed().as_secs_f64());
                tracing::trace!(seq, bytes = record.len(), "committed, journaled");
                self.durable.report(seq, committed);
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; every batch is a checkpoint until it can be written again");
                cursor.break_off();
                // An empty checkpoint: it makes this batch, committed already, durable.
                match self.checkpoint() {
                    Ok(checkpoint) => {
                        self.durable.report(seq, committed);
                        self.durable.settle(checkpoint);
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "the checkpoint after a failed journal write failed too");
                        let appends = committed.report.stored.len();
                        let error = StoreError::Unavailable(format!(
                            "journal write failed ({e}) and so did the checkpoint after it ({error})"
                        ));
                        self.durable.abandon(committed.completions, &error, appends);
                        self.start_outage(&error);
                    }
                }
            }
        }
    }

    /// An empty durable commit, with a seq of its own: everything committed before it is
    /// durable once it returns that seq. Answers nobody and settles nothing.
    pub(super) fn checkpoint(&mut self) -> Result<u64, StoreError> {
        self.state.seq += 1;
        let plan = Plan {
            seq: self.state.seq,
            durable: true,
            now_ms: self.state.now_ms(),
            expect_ids: None,
        };
        let (_, report, outcome) = self.apply(&mut Vec::new(), plan);
        outcome?;
        self.checkpointed(&report);
        Ok(plan.seq)
    }

    /// [`commit_batch`] on this writer's database and state; `/health` learns whether it went
    /// through.
    fn apply(
        &mut self,
        batch: &mut Vec<Request>,
        plan: Plan,
    ) -> (Vec<Completion>, BatchReport, Result<(), StoreError>) {
        let Some(db) = &self.db else {
            // Never reached: an outage commits nothing before it reopened the file.
            let closed = StoreError::Unavailable("the data file is closed".to_owned());
            let completions = batch::refuse(batch, &WriteError::Store(closed.clone()));
            return (completions, BatchReport::default(), Err(closed));
        };
        let applied = commit_batch(db, batch, &mut self.state, self.queue_max, plan);
        self.guard
            .0
            .last_commit_ok
            .store(applied.2.is_ok(), Ordering::Relaxed);
        applied
    }

    /// A checkpoint committed: everything journaled so far is in the data file.
    fn checkpointed(&mut self, report: &BatchReport) {
        self.metrics
            .checkpoint_seconds
            .observe(report.sync.as_secs_f64());
        if let Some(cursor) = &mut self.journal {
            cursor.start_over();
            cursor.mend(false);
        }
    }
}

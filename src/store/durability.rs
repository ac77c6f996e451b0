//! Where a committed batch waits until it is durable, and from where it is answered.
//!
//! The writer ([`super::writer`]) applies a batch, commits it to redb and hands it here, then
//! goes on with the next batch while this one syncs. This thread makes batches durable in the
//! order they were committed — every batch waiting at once in one journal write and one
//! `fdatasync` ([`super::journal`]), or through a checkpoint the writer committed durably —
//! and only then reports each: queue bookkeeping, fan-out, the requests' answers, and the
//! *settled* seq that readers wait for ([`Progress`]).
//!
//! If the journal cannot be written, the batches it should have held wait for the next
//! checkpoint, and the writer makes every batch a checkpoint from then on (it reads
//! [`JournalHealth`]); an acknowledgement is never sent for a batch that is not durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::StoreError;
use super::journal::Journal;
use super::writer::{BatchReport, Command, CommitSink, Completion, QueuedUsers, WriterHealth};
use crate::metrics::Metrics;

/// Committed batches waiting for this thread: one. The writer does not commit while a sync is
/// under way ([`SyncGate`]), so it never has more than one to hand over, and this thread finds
/// it waiting when it is done reporting the last one: neither thread sleeps on the hand-over.
pub(super) const JOBS_IN_FLIGHT: usize = 1;

/// Whether this thread is writing and syncing the journal. The writer holds its next commit
/// until it is not: the requests that arrive meanwhile would wait for the end of this sync and
/// then for the next one whatever the writer did, so they may as well share one commit, and
/// the next sync starts as soon as this one ends. Committing them as they came cut them into
/// more commits, each paying the writer's page copies (docs/PERFORMANCE.md).
#[derive(Debug, Default)]
pub(super) struct SyncGate {
    syncing: Mutex<bool>,
    done: Condvar,
}

impl SyncGate {
    /// Returns once no sync is under way.
    pub(super) fn wait(&self) {
        let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        while *syncing {
            syncing = self.done.wait(syncing).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Closed by the writer as it hands a batch over, so it cannot race ahead of the sync;
    /// opened by this thread once the sync is done.
    pub(super) fn close(&self) {
        self.set(true);
    }

    pub(super) fn open(&self) {
        self.set(false);
    }

    fn set(&self, value: bool) {
        *self.syncing.lock().unwrap_or_else(|e| e.into_inner()) = value;
        if !value {
            self.done.notify_all();
        }
    }
}

/// Opens the gate however the durability thread ends, so the writer never waits on a thread
/// that is gone.
struct OpenOnDrop<'a>(&'a SyncGate);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A batch the writer has dealt with, in commit order.
pub(super) enum Job {
    /// Committed to redb without a sync: durable once `record` is in the journal at `offset`
    /// (or once a later checkpoint committed).
    Journaled {
        seq: u64,
        offset: u64,
        record: Vec<u8>,
        batch: Committed,
    },
    /// Committed durably by redb: a checkpoint, which also covers every batch before it.
    Checkpoint { seq: u64, batch: Committed },
    /// Rolled back, or its commit failed: its requests hear `error`.
    Failed {
        seq: u64,
        error: StoreError,
        completions: Vec<Completion>,
        /// Messages it would have stored, for `persistence_failures`.
        appends: usize,
        /// Whether it was to be a checkpoint.
        checkpoint: bool,
    },
}

impl Job {
    fn seq(&self) -> u64 {
        match self {
            Job::Journaled { seq, .. } | Job::Checkpoint { seq, .. } | Job::Failed { seq, .. } => {
                *seq
            }
        }
    }
}

/// A committed batch's answers and what it changed.
pub(super) struct Committed {
    pub completions: Vec<Completion>,
    pub report: BatchReport,
}

/// How far commits have got, as readers need it: a reader must not answer with what a batch
/// wrote before that batch is durable (a crash could still take it back, and its message ids
/// would then be given again to other messages).
#[derive(Debug, Clone)]
pub struct Progress {
    /// The seq of the newest batch whose commit has begun: set by the writer just before
    /// `commit()`, so a reader that sees a batch's rows reads at least its seq after.
    committing: Arc<AtomicU64>,
    /// Every batch up to this seq is durable or failed.
    settled: watch::Receiver<u64>,
}

impl Progress {
    /// A start at `seq` (what the store holds at open): the writer's side and the readers'.
    pub(super) fn new(seq: u64) -> (Progress, Arc<AtomicU64>, watch::Sender<u64>) {
        let committing = Arc::new(AtomicU64::new(seq));
        let (settled_tx, settled) = watch::channel(seq);
        (
            Progress {
                committing: committing.clone(),
                settled,
            },
            committing,
            settled_tx,
        )
    }

    /// The newest batch a snapshot begun before this call can hold.
    pub fn committing(&self) -> u64 {
        self.committing.load(Ordering::SeqCst)
    }

    /// Waits until every batch up to `seq` is durable (or failed).
    pub async fn settled(&self, seq: u64) -> Result<(), StoreError> {
        if *self.settled.borrow() >= seq {
            return Ok(());
        }
        self.settled
            .clone()
            .wait_for(|settled| *settled >= seq)
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Closed)
    }
}

/// Whether the journal still takes writes; the writer reads it before each batch.
#[derive(Debug, Default)]
pub(super) struct JournalHealth {
    broken: AtomicBool,
}

impl JournalHealth {
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

/// What the durability thread works with.
pub(super) struct Durability {
    pub jobs: Receiver<Job>,
    /// `None` with `storage.journal = false`: every batch is then a checkpoint.
    pub journal: Option<Journal>,
    pub journal_health: Arc<JournalHealth>,
    pub gate: Arc<SyncGate>,
    /// To ask the writer for a checkpoint when the journal failed; weak, so it does not keep
    /// the writer's queue open.
    pub writer: mpsc::WeakSender<Command>,
    pub settled: watch::Sender<u64>,
    pub sink: CommitSink,
    pub metrics: Arc<Metrics>,
    pub health: Arc<WriterHealth>,
    pub queued: Arc<QueuedUsers>,
}

impl Durability {
    /// Runs until the writer has gone and every job it sent is answered.
    pub(super) fn run(mut self) {
        // Jobs behind a journaled batch whose record could not be synced, in order: they wait
        // for a checkpoint (or for the failure of the one meant to cover them).
        let mut held: Vec<Job> = Vec::new();
        let gate = self.gate.clone();
        let _open = OpenOnDrop(&gate);
        while let Ok(first) = self.jobs.recv() {
            let mut jobs = vec![first];
            jobs.extend(self.jobs.try_iter().take(16));
            let synced = self.sync_journal(&jobs);
            gate.open();
            let mut settled = None;
            for (index, job) in jobs.into_iter().enumerate() {
                let seq = job.seq();
                match job {
                    Job::Checkpoint { batch, .. } => {
                        for waiting in held.drain(..) {
                            self.finish(waiting, None);
                        }
                        self.report(batch);
                    }
                    Job::Failed {
                        checkpoint: true,
                        ref error,
                        ..
                    } if !held.is_empty() => {
                        let error = error.clone();
                        for waiting in held.drain(..) {
                            self.finish(waiting, Some(&error));
                        }
                        self.finish(job, None);
                    }
                    job if !held.is_empty()
                        || (matches!(job, Job::Journaled { .. }) && index >= synced) =>
                    {
                        held.push(job);
                        continue;
                    }
                    job => self.finish(job, None),
                }
                settled = Some(seq);
            }
            if let Some(seq) = settled {
                self.settled.send_replace(seq);
            }
        }
        // The writer is gone: no checkpoint will come for what is held.
        for waiting in held {
            self.finish(waiting, Some(&StoreError::Closed));
        }
        tracing::debug!("store durability thread stopped");
    }

    /// Makes the journaled jobs durable, in one write per contiguous run and one sync. Returns
    /// how many jobs from the start of `jobs` are durable now: all, unless the journal failed.
    fn sync_journal(&mut self, jobs: &[Job]) -> usize {
        // A checkpoint covers every job before it: only what follows the last one is written.
        let from = jobs
            .iter()
            .rposition(|job| matches!(job, Job::Checkpoint { .. }))
            .map_or(0, |i| i + 1);
        let records: Vec<(u64, &[u8])> = jobs[from..]
            .iter()
            .filter_map(|job| match job {
                Job::Journaled { offset, record, .. } => Some((*offset, record.as_slice())),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return jobs.len();
        }
        let Some(journal) = &self.journal else {
            // Unreachable: without a journal the writer never sends a journaled job.
            return from;
        };
        let started = Instant::now();
        match write_runs(journal, &records).and_then(|()| journal.sync()) {
            Ok(()) => {
                self.metrics
                    .journal_sync_seconds
                    .observe(started.elapsed().as_secs_f64());
                jobs.len()
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; every batch is a checkpoint from now on");
                self.journal_health.broken.store(true, Ordering::Relaxed);
                // The writer may be idle: ask it for the checkpoint the held batches wait for.
                if let Some(writer) = self.writer.upgrade() {
                    let _ = writer.try_send(Command::Checkpoint);
                }
                from
            }
        }
    }

    /// Answers a job: a committed one as durable unless `error` says it never will be.
    fn finish(&self, job: Job, error: Option<&StoreError>) {
        match (job, error) {
            (Job::Journaled { batch, .. } | Job::Checkpoint { batch, .. }, None) => {
                self.report(batch)
            }
            (Job::Journaled { batch, .. } | Job::Checkpoint { batch, .. }, Some(error)) => {
                let appends = batch.report.stored.len();
                self.fail(batch.completions, error, appends)
            }
            (
                Job::Failed {
                    error,
                    completions,
                    appends,
                    ..
                },
                _,
            ) => self.fail(completions, &error, appends),
        }
    }

    /// A durable batch: bookkeeping, fan-out, then the answers.
    fn report(&self, batch: Committed) {
        let Committed {
            completions,
            report,
        } = batch;
        self.metrics
            .messages_persisted
            .inc_by(report.stored.len() as u64);
        self.metrics.dead_letters.inc_by(report.dead_letters);
        self.health
            .queue_pending
            .store(report.queue_pending, Ordering::Relaxed);
        // Before fan-out: see `QueuedUsers`.
        self.queued.apply(&report.queue_changes);
        // Fan-out first, in commit order; nobody listens in benches and store tests.
        if !report.stored.is_empty() {
            let _ = self.sink.send(report.stored);
        }
        for done in completions {
            done(Ok(()));
        }
    }

    fn fail(&self, completions: Vec<Completion>, error: &StoreError, appends: usize) {
        self.metrics.persistence_failures.inc_by(appends as u64);
        for done in completions {
            done(Err(error));
        }
    }
}

/// Writes records, joining those that follow each other in the file into one write (a lone
/// record is written as it is).
fn write_runs(journal: &Journal, records: &[(u64, &[u8])]) -> std::io::Result<()> {
    let mut rest = records;
    while let Some(&(start, first)) = rest.first() {
        let mut end = start + first.len() as u64;
        let run = 1 + rest[1..]
            .iter()
            .take_while(|(offset, record)| {
                let next = *offset == end;
                end += record.len() as u64;
                next
            })
            .count();
        if run == 1 {
            journal.write_at(start, first)?;
        } else {
            journal.write_at(
                start,
                &rest[..run]
                    .iter()
                    .flat_map(|(_, r)| *r)
                    .copied()
                    .collect::<Vec<u8>>(),
            )?;
        }
        rest = &rest[run..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What the thread answers, and when: nothing is acknowledged before it is durable, also
    //! when the journal cannot be written.

    use std::sync::Mutex;

    use super::*;
    use crate::store::journal::RECORDS_START;

    /// Answers heard, in order: (request name, ok?).
    type Heard = Arc<Mutex<Vec<(&'static str, bool)>>>;

    fn committed(name: &'static str, heard: &Heard) -> Committed {
        let heard = heard.clone();
        Committed {
            completions: vec![Box::new(move |result: Result<(), &StoreError>| {
                heard.lock().expect("lock").push((name, result.is_ok()));
            })],
            report: BatchReport::default(),
        }
    }

    fn journaled(seq: u64, name: &'static str, heard: &Heard) -> Job {
        let mut record = vec![0; crate::store::journal::RECORD_HEADER + 3];
        crate::store::journal::seal(&mut record, seq);
        Job::Journaled {
            seq,
            offset: RECORDS_START + (seq - 1) * record.len() as u64,
            record,
            batch: committed(name, heard),
        }
    }

    /// A durability thread over `journal`, and what a test watches it through.
    struct Started {
        jobs: std::sync::mpsc::SyncSender<Job>,
        progress: Progress,
        /// The writer's queue, where it asks for checkpoints (kept open by `_writer`).
        writer: mpsc::Receiver<Command>,
        _writer: mpsc::Sender<Command>,
        thread: std::thread::JoinHandle<()>,
        health: Arc<JournalHealth>,
    }

    fn start(journal: Journal) -> Started {
        let (jobs_tx, jobs) = std::sync::mpsc::sync_channel(JOBS_IN_FLIGHT);
        let (writer_tx, writer_rx) = mpsc::channel(4);
        let (progress, _, settled) = Progress::new(0);
        let journal_health = Arc::new(JournalHealth::default());
        let (sink, _) = mpsc::unbounded_channel();
        let durability = Durability {
            jobs,
            journal: Some(journal),
            journal_health: journal_health.clone(),
            gate: Arc::default(),
            writer: writer_tx.downgrade(),
            settled,
            sink,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(WriterHealth::for_tests()),
            queued: Arc::new(QueuedUsers::default()),
        };
        Started {
            jobs: jobs_tx,
            progress,
            writer: writer_rx,
            _writer: writer_tx,
            thread: std::thread::spawn(move || durability.run()),
            health: journal_health,
        }
    }

    #[tokio::test]
    async fn journaled_batches_are_answered_once_synced_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, _) = Journal::open(dir.path(), 1).expect("journal");
        let Started {
            jobs,
            progress,
            thread,
            ..
        } = start(journal);
        let heard = Heard::default();
        jobs.send(journaled(1, "a", &heard)).expect("send");
        jobs.send(journaled(2, "b", &heard)).expect("send");
        progress.settled(2).await.expect("settled");
        assert_eq!(*heard.lock().expect("lock"), [("a", true), ("b", true)]);
        drop(jobs);
        thread.join().expect("thread");
        // And they are in the file, for a replay.
        let (journal, _) = Journal::open(dir.path(), 1).expect("journal");
        let seqs: Vec<u64> = journal
            .records(0)
            .expect("records")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert!(matches!(progress.settled(3).await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn a_failed_journal_write_holds_answers_until_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Journal::open(dir.path(), 1).expect("journal"));
        let Started {
            jobs,
            progress,
            mut writer,
            _writer: _open,
            thread,
            health,
        } = start(Journal::read_only(dir.path()).expect("read-only"));
        let heard = Heard::default();
        jobs.send(journaled(1, "a", &heard)).expect("send");
        jobs.send(journaled(2, "b", &heard)).expect("send");
        // The write failed: the writer is asked for a checkpoint, and nobody hears anything.
        assert!(matches!(writer.recv().await, Some(Command::Checkpoint)));
        assert!(health.is_broken());
        assert!(heard.lock().expect("lock").is_empty());
        let waiting = tokio::time::timeout(Duration::from_millis(50), progress.settled(1)).await;
        assert!(
            waiting.is_err(),
            "seq 1 is not settled before the checkpoint"
        );

        // The checkpoint covers both: everything is answered, in order.
        jobs.send(Job::Checkpoint {
            seq: 3,
            batch: committed("c", &heard),
        })
        .expect("send");
        progress.settled(3).await.expect("settled");
        assert_eq!(
            *heard.lock().expect("lock"),
            [("a", true), ("b", true), ("c", true)]
        );

        // Held again, and the checkpoint meant to cover them fails: they fail with it.
        jobs.send(journaled(4, "d", &heard)).expect("send");
        jobs.send(Job::Failed {
            seq: 5,
            error: StoreError::Storage("disk gone".into()),
            completions: committed("e", &heard).completions,
            appends: 1,
            checkpoint: true,
        })
        .expect("send");
        progress.settled(5).await.expect("settled");
        assert_eq!(
            heard.lock().expect("lock")[3..],
            [("d", false), ("e", false)]
        );
        drop(jobs);
        thread.join().expect("thread");
    }
}

//! What happens to a committed batch once it is durable, and how readers learn how far that
//! has got.
//!
//! The writer ([`super::writer`]) commits a batch to redb, then makes it durable: it appends
//! the batch's journal record and syncs it ([`super::journal`]), or the commit was a durable
//! checkpoint. Only then does it hand the batch to [`Durable::report`]: queue bookkeeping,
//! fan-out, the requests' answers and the *settled* seq readers wait for ([`Progress`]). A
//! batch that failed goes to [`Durable::fail`] instead. Both are called in commit order, by
//! the writer thread alone.
//!
//! The database readers read is published here too. When the disk fails a write, redb refuses
//! every later use of its handle, and a batch may sit in its memory that will never be
//! durable: the writer then closes the handle ([`Durable::close`]) and publishes a reopened one
//! ([`Durable::publish`]) holding only what is durable. Each handle is a *generation*; a reader
//! whose snapshot came from a closed generation is refused rather than answered with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::watch;

use super::CommitSink;
use super::batch::{BatchReport, Completion};
use super::health::{QueuedUsers, WriterHealth};
use crate::metrics::Metrics;
use crate::store::StoreError;

/// The database readers open snapshots on, and its generation; `None` while the writer
/// reopens the file after a failure.
type Published = Arc<RwLock<Option<(u64, Arc<Database>)>>>;

/// How far commits have got, in which generation of the database handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settled {
    /// Every batch up to this seq is durable or failed.
    seq: u64,
    /// The handle these batches went through; a new one begins when the writer closes one.
    generation: u64,
}

/// How far commits have got, as readers need it: a reader must not answer with what a batch
/// wrote before that batch is durable (a crash could still take it back, and its message ids
/// would then be given again to other messages).
#[derive(Debug, Clone)]
pub struct Progress {
    /// The seq of the newest batch whose commit has begun: set by the writer just before
    /// `commit()`, so a reader that sees a batch's rows reads at least its seq after.
    committing: Arc<AtomicU64>,
    settled: watch::Receiver<Settled>,
    /// The database to read.
    published: Published,
}

/// What a snapshot must wait for before it is answered: see [`Progress::begin_read`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    seq: u64,
    generation: u64,
}

impl Progress {
    /// A start on `db` at `seq` (what the store holds at open): the readers' side, and the
    /// writer's.
    pub(super) fn new(db: Arc<Database>, seq: u64) -> (Progress, Arc<AtomicU64>, Publisher) {
        let committing = Arc::new(AtomicU64::new(seq));
        let published = Arc::new(RwLock::new(Some((0, db))));
        let (settled, receiver) = watch::channel(Settled { seq, generation: 0 });
        (
            Progress {
                committing: committing.clone(),
                settled: receiver,
                published: published.clone(),
            },
            committing,
            Publisher { settled, published },
        )
    }

    /// The newest batch a snapshot begun before this call can hold.
    pub fn committing(&self) -> u64 {
        self.committing.load(Ordering::SeqCst)
    }

    /// Begins a read transaction on the published database (it blocks: call it off the async
    /// runtime), with the ticket to wait on ([`Progress::settled`]) before answering from it.
    /// [`StoreError::Unavailable`] while the writer reopens the file.
    pub fn begin_read(&self) -> Result<(ReadTransaction, Ticket), StoreError> {
        let published = self
            .published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((generation, db)) = published else {
            // The writer is gone (it takes the handle with it), or reopening the file.
            return Err(match self.settled.has_changed() {
                Err(_) => StoreError::Closed,
                Ok(_) => StoreError::Unavailable("the data file is being reopened".to_owned()),
            });
        };
        let txn = db.begin_read()?;
        // After the snapshot began: at least the seq of every batch it holds.
        let seq = self.committing();
        Ok((txn, Ticket { seq, generation }))
    }

    /// Waits, up to `limit`, while the writer reopens the data file after a failed write (a
    /// few milliseconds), so a read that arrives meanwhile is answered rather than refused.
    pub async fn wait_open(&self, limit: std::time::Duration) {
        let open = || {
            self.published
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        };
        if open() {
            return;
        }
        let mut changes = self.settled.clone();
        let _ = tokio::time::timeout(limit, async {
            while !open() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Waits until every batch the ticket's snapshot can hold is durable (or failed). A
    /// snapshot of a generation that ended meanwhile may hold a batch that never will be:
    /// [`StoreError::Unavailable`].
    pub async fn settled(&self, ticket: Ticket) -> Result<(), StoreError> {
        let done = |s: &Settled| s.generation != ticket.generation || s.seq >= ticket.seq;
        let now = *self.settled.borrow();
        let settled = if done(&now) {
            now
        } else {
            *self
                .settled
                .clone()
                .wait_for(done)
                .await
                .map_err(|_| StoreError::Closed)?
        };
        if settled.generation != ticket.generation {
            return Err(StoreError::Unavailable(
                "the data file was reopened after a failed write while this read ran".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The writer's side of [`Progress`].
#[derive(Debug)]
pub(in crate::store) struct Publisher {
    settled: watch::Sender<Settled>,
    published: Published,
}

impl Drop for Publisher {
    /// The writer is gone, however it ended: the database closes once the last reader lets go
    /// of it (redb's close makes what is committed durable), not when the last store handle
    /// is dropped.
    fn drop(&mut self) {
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A committed batch's answers and what it changed.
pub(in crate::store) struct Committed {
    pub completions: Vec<Completion>,
    pub report: BatchReport,
}

/// Where durable batches go: everything that learns of a batch only once it is durable.
pub(in crate::store) struct Durable {
    pub publisher: Publisher,
    pub sink: CommitSink,
    pub metrics: Arc<Metrics>,
    pub health: Arc<WriterHealth>,
    pub queued: Arc<QueuedUsers>,
}

impl Durable {
    /// Batch `seq` is durable: bookkeeping, fan-out, then the answers.
    pub(super) fn report(&self, seq: u64, batch: Committed) {
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
            done.finish(Ok(()));
        }
        self.settle(seq);
    }

    /// Batch `seq` failed and left nothing behind: its requests hear `error`. `appends` is how
    /// many messages it would have stored.
    pub(super) fn fail(
        &self,
        seq: u64,
        completions: Vec<Completion>,
        error: &StoreError,
        appends: usize,
    ) {
        self.abandon(completions, error, appends);
        self.settle(seq);
    }

    /// A batch that readers can see could not be made durable: its requests hear `error`, and
    /// it is never settled, so no reader is answered with it.
    pub(super) fn abandon(&self, completions: Vec<Completion>, error: &StoreError, appends: usize) {
        self.metrics.persistence_failures.inc_by(appends as u64);
        for done in completions {
            done.finish(Err(error));
        }
    }

    /// Every batch up to `seq` is answered. Never moves back: the checkpoint that covers a
    /// batch whose journal write failed is reported after that batch, and settles both.
    pub(super) fn settle(&self, seq: u64) {
        self.publisher.settled.send_if_modified(|settled| {
            let advanced = seq > settled.seq;
            settled.seq = settled.seq.max(seq);
            advanced
        });
    }

    /// The writer gives up its database handle: new readers hear
    /// [`StoreError::Unavailable`] until [`Durable::publish`], and those with a snapshot of it
    /// that are still waiting are refused (it may hold a batch that will never be durable).
    pub(super) fn close(&self) {
        // Under the lock, so no reader pairs this handle with the next generation.
        let mut published = self
            .publisher
            .published
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *published = None;
        self.publisher
            .settled
            .send_modify(|settled| settled.generation += 1);
    }

    /// Readers go on with `db`, a handle on a rewritten copy of the data file holding exactly
    /// what the current one does ([`super::compact`]): snapshots already taken stay good, so
    /// the generation does not change.
    pub(super) fn swap(&self, db: Arc<Database>) {
        let mut published = self
            .publisher
            .published
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, current)) = published.as_mut() {
            *current = db;
        }
    }

    /// Readers go on with `db`, a reopened handle that holds only what is durable: every batch
    /// up to `seq` (the newest the writer attempted) is settled in it.
    pub(super) fn publish(&self, db: Arc<Database>, seq: u64) {
        let mut published = self
            .publisher
            .published
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let generation = self.publisher.settled.borrow().generation;
        *published = Some((generation, db));
        // Always a change: readers waiting for the file to reopen look again.
        self.publisher
            .settled
            .send_modify(|settled| settled.seq = settled.seq.max(seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_wait_until_their_batch_settles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Database::create(dir.path().join("p.redb")).expect("db"));
        let (progress, committing, publisher) = Progress::new(db, 4);
        assert_eq!(progress.committing(), 4);
        let (_, ticket) = progress.begin_read().expect("read");
        progress.settled(ticket).await.expect("already settled");
        committing.store(5, Ordering::SeqCst);
        let (_, ticket) = progress.begin_read().expect("read");
        let waiting = tokio::spawn({
            let progress = progress.clone();
            async move { progress.settled(ticket).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "batch 5 is not settled yet");
        publisher.settled.send_modify(|s| s.seq = 5);
        waiting.await.expect("task").expect("settled");
        // The writer is gone: nobody will settle 6.
        committing.store(6, Ordering::SeqCst);
        let (_, ticket) = progress.begin_read().expect("read");
        drop(publisher);
        assert!(matches!(
            progress.settled(ticket).await,
            Err(StoreError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_snapshot_of_a_closed_handle_is_never_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Database::create(dir.path().join("p.redb")).expect("db"));
        let (progress, committing, publisher) = Progress::new(db.clone(), 4);
        let durable = Durable {
            publisher,
            sink: tokio::sync::mpsc::unbounded_channel().0,
            metrics: Arc::default(),
            health: Arc::new(WriterHealth::new(0)),
            queued: Arc::default(),
        };
        // Batch 5 is in redb's memory, where this snapshot sees it, and will never be durable.
        committing.store(5, Ordering::SeqCst);
        let (_, stale) = progress.begin_read().expect("read");
        durable.close();
        assert!(matches!(
            progress.begin_read(),
            Err(StoreError::Unavailable(_))
        ));
        // Reopened without batch 5; the next batches settle in the new generation.
        durable.publish(db, 5);
        assert!(matches!(
            progress.settled(stale).await,
            Err(StoreError::Unavailable(_))
        ));
        let (_, fresh) = progress.begin_read().expect("read");
        progress.settled(fresh).await.expect("settled");
    }
}

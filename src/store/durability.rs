//! What happens to a committed batch once it is durable, and how readers learn how far that
//! has got.
//!
//! The writer ([`super::writer`]) commits a batch to redb, then makes it durable: it appends
//! the batch's journal record and syncs it ([`super::journal`]), or the commit was a durable
//! checkpoint. Only then does it hand the batch to [`Durable::report`]: queue bookkeeping,
//! fan-out, the requests' answers and the *settled* seq readers wait for ([`Progress`]). A
//! batch that failed goes to [`Durable::fail`] instead. Both are called in commit order, by
//! the writer thread alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::StoreError;
use super::writer::{BatchReport, CommitSink, Completion, QueuedUsers, WriterHealth};
use crate::metrics::Metrics;

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
    /// A start at `seq` (what the store holds at open): the readers' side, and the writer's.
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

/// A committed batch's answers and what it changed.
pub(super) struct Committed {
    pub completions: Vec<Completion>,
    pub report: BatchReport,
}

/// Where durable batches go: everything that learns of a batch only once it is durable.
pub(super) struct Durable {
    pub settled: watch::Sender<u64>,
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
            done(Ok(()));
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
            done(Err(error));
        }
    }

    /// Every batch up to `seq` is answered. Never moves back: the checkpoint that covers a
    /// batch whose journal write failed is reported after that batch, and settles both.
    pub(super) fn settle(&self, seq: u64) {
        self.settled.send_if_modified(|settled| {
            let advanced = seq > *settled;
            *settled = (*settled).max(seq);
            advanced
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_wait_until_their_batch_settles() {
        let (progress, committing, settled) = Progress::new(4);
        assert_eq!(progress.committing(), 4);
        progress.settled(4).await.expect("already settled");
        committing.store(5, Ordering::SeqCst);
        let waiting = tokio::spawn({
            let progress = progress.clone();
            async move { progress.settled(5).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "batch 5 is not settled yet");
        settled.send_replace(5);
        waiting.await.expect("task").expect("settled");
        // The writer is gone: nobody will settle 6.
        drop(settled);
        assert!(matches!(progress.settled(6).await, Err(StoreError::Closed)));
    }
}

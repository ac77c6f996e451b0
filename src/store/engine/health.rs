//! What the rest of the daemon learns about the writer without asking it: whether it runs and
//! its commits go through (`/health`), and which users may have queued messages.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

/// The users whose queue held entries after the last commit, so a socket with nothing to
/// replay skips the queue read (a blocking-pool hand-off and a read transaction per connect).
///
/// It may name a user whose queue is empty (a removal not yet committed), never the reverse:
/// the writer adds a user before the batch that queued for them reaches fan-out, so a socket
/// that registers in the hub and then finds its user absent receives every later message live.
#[derive(Debug, Default)]
pub(in crate::store) struct QueuedUsers(Mutex<HashSet<u64>>);

impl QueuedUsers {
    /// Starts from the users whose queues hold entries now.
    pub(super) fn new(users: HashSet<u64>) -> Self {
        Self(Mutex::new(users))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` may have entries queued.
    pub(super) fn contains(&self, user: u64) -> bool {
        self.lock().contains(&user)
    }

    /// Applies a committed batch's queue lengths (later entries win).
    pub(super) fn apply(&self, changes: &[(u64, bool)]) {
        if changes.is_empty() {
            return;
        }
        let mut users = self.lock();
        for &(user, non_empty) in changes {
            if non_empty {
                users.insert(user);
            } else {
                users.remove(&user);
            }
        }
    }
}

/// What `/health` needs to know about the writer.
#[derive(Debug)]
pub(in crate::store) struct WriterHealth {
    /// False once the thread has ended (stopped, or panicked).
    pub(super) running: AtomicBool,
    /// False while the latest commit failed, and all through an outage (see
    /// [`super::outage`]): writes are being refused.
    pub(super) last_commit_ok: AtomicBool,
    /// Entries in all queues after the last durable batch.
    pub(super) queue_pending: AtomicU64,
    /// The thread ended on an error: it panicked, or it stopped while the data file could not
    /// be written (without its final checkpoint).
    pub(super) failed: AtomicBool,
    /// Cancelled when the thread ends, however it ends.
    pub(super) ended: CancellationToken,
    /// The webhook outbox after the last durable batch, for the delivery to wait on.
    pub(super) outbox: tokio::sync::watch::Sender<OutboxProgress>,
}

/// How far the webhook outbox has got, as of the last durable batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxProgress {
    /// Every event below this id is durable (acknowledged or dropped since, perhaps).
    pub next_event_id: u64,
    /// Events waiting in the outbox.
    pub pending: u64,
}

impl WriterHealth {
    pub(super) fn new(queue_pending: u64) -> Self {
        Self {
            running: AtomicBool::new(true),
            last_commit_ok: AtomicBool::new(true),
            queue_pending: AtomicU64::new(queue_pending),
            failed: AtomicBool::new(false),
            ended: CancellationToken::new(),
            outbox: tokio::sync::watch::Sender::new(OutboxProgress::default()),
        }
    }
}

/// Sets `running` to false however the writer thread ends, and says so.
pub(super) struct RunningGuard(pub(super) std::sync::Arc<WriterHealth>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::SeqCst);
        }
        self.0.running.store(false, Ordering::Relaxed);
        self.0.ended.cancel();
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Priority;
    use crate::store::MessageAppended;
    use crate::store::testing::test_message;

    /// A socket skips its queue read when `may_have_queued` says no: that must never be
    /// said of a user whose queue holds an entry, before or after a restart.
    #[tokio::test]
    async fn queued_users_follow_committed_queues_and_survive_reopen() {
        use crate::store::testing::{TempStore, one_to_one};
        let temp = TempStore::new();
        let open = || {
            let (store, thread) = temp.open();
            (store.writer().clone(), thread)
        };
        let (writer, thread) = open();
        let conversation = writer
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("conversation")
            .id;
        assert!(!writer.may_have_queued(2), "nothing queued yet");
        let new = test_message(conversation, 1, Priority::Normal);
        let MessageAppended::Stored { id, .. } = writer.append_message(new).await.expect("append")
        else {
            panic!("a first send is stored")
        };
        assert!(writer.may_have_queued(2), "the recipient has an entry");
        assert!(
            !writer.may_have_queued(1),
            "the sender's own message is not queued for them"
        );
        thread.finish(&writer).await;

        // Reopened: the set is rebuilt from the file.
        let (writer, thread) = open();
        assert!(writer.may_have_queued(2), "loaded at start");
        writer
            .dequeue(vec![(2, Priority::Normal.rank(), id)])
            .expect("dequeue");
        // Dequeues are not answered; every commit takes the removals waiting, so an answered
        // request sent after one commits it.
        writer.expire(0).await.expect("barrier");
        assert!(!writer.may_have_queued(2), "emptied by the dequeue");
        thread.finish(&writer).await;
        let (writer, thread) = open();
        assert!(!writer.may_have_queued(2), "still empty after a restart");
        thread.finish(&writer).await;
    }
}

//! The writer's queue, as the rest of the daemon sees it: [`WriterHandle`] turns each call into
//! an [`Op`] and its reply slot, and waits for the durable answer.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::durability::Progress;
use super::health::{QueuedUsers, WriterHealth};
use super::removals::Removals;
use crate::store::StoreError;
use crate::store::ops::{
    Answer, Broadcast, Broadcasted, ConversationCreated, Emit, Erased, MarkedRead, MessageAppended,
    NewAccount, NewConversation, NewMessage, Op, PresenceChange, Profile, QueueKey, Tombstoned,
    WriteError,
};

/// What goes down the writer's queue.
#[derive(Debug)]
pub(in crate::store) enum Command {
    Write(Request),
    /// Delivered queue entries wait in [`Removals`], the first of them added since the last
    /// commit took them: commit them once their wait is over ([`super::removals`]).
    Removals,
    /// Commit everything queued before this, then stop. Sent by [`WriterThread::finish`].
    Stop,
}

/// Where an op's answer goes: its value, or why it failed.
pub(in crate::store) type Reply = oneshot::Sender<Result<Answer, WriteError>>;

/// One write request: the op, and where its answer goes (`None`: nobody waits for it).
#[derive(Debug)]
pub(in crate::store) struct Request {
    pub op: Op,
    pub reply: Option<Reply>,
}

impl Request {
    /// A request for `op` whose answer arrives on the returned [`Pending`].
    pub(in crate::store) fn answered<T>(op: Op) -> (Request, Pending<T>) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            op,
            reply: Some(reply),
        };
        let pending = Pending {
            answer,
            kind: PhantomData,
        };
        (request, pending)
    }
}

/// The writer is gone.
fn closed() -> WriteError {
    WriteError::Store(StoreError::Closed)
}

/// A request in the writer's queue; await [`Pending::done`] for its durable answer, as the
/// type `T` its op answers with.
#[derive(Debug)]
pub struct Pending<T> {
    answer: oneshot::Receiver<Result<Answer, WriteError>>,
    kind: PhantomData<fn() -> T>,
}

/// An append in the writer's queue ([`WriterHandle::submit_append`]).
pub type PendingAppend = Pending<MessageAppended>;

impl<T> Pending<T> {
    /// Whether the answer is there: [`Pending::done`] returns at once. (False too if the
    /// writer went away without one: `done` then fails at once.)
    pub fn is_answered(&self) -> bool {
        !self.answer.is_empty()
    }
}

impl<T: TryFrom<Answer, Error = Answer>> Pending<T> {
    pub async fn done(self) -> Result<T, WriteError> {
        typed(self.answer.await.map_err(|_| closed())??)
    }
}

/// An op's answer as the type `T` its op answers with.
fn typed<T: TryFrom<Answer, Error = Answer>>(answer: Answer) -> Result<T, WriteError> {
    T::try_from(answer).map_err(|other| {
        // Each method sends the op whose answer it takes: a mismatch is our bug.
        WriteError::Store(StoreError::Storage(format!(
            "the writer answered with {}",
            other.kind()
        )))
    })
}

/// Cloneable sender side of the writer's queue.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) health: Arc<WriterHealth>,
    pub(super) queued: Arc<QueuedUsers>,
    pub(super) progress: Progress,
    /// Delivered queue entries waiting for the next commit.
    pub(super) removals: Arc<Removals>,
}

impl WriterHandle {
    /// Whether writes can succeed: the thread runs and its last commit went through.
    pub fn is_healthy(&self) -> bool {
        self.health.running.load(Ordering::Relaxed)
            && self.health.last_commit_ok.load(Ordering::Relaxed)
    }

    /// Resolves once the writer thread has ended, however it ended.
    pub async fn ended(&self) {
        self.health.ended.cancelled().await;
    }

    /// Whether the writer ended on an error: it panicked (the daemon cannot write again before
    /// a restart), or it was stopped while the data file could not be written, so its final
    /// checkpoint was not made.
    pub fn failed(&self) -> bool {
        self.health.failed.load(Ordering::SeqCst)
    }

    /// False only if `user`'s queue was empty after the last commit (see [`QueuedUsers`]).
    pub fn may_have_queued(&self, user: u64) -> bool {
        self.queued.contains(user)
    }

    /// How far commits have got, for readers that must not see what is not durable yet.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Entries waiting in all queues, as of the last commit.
    pub fn queue_pending(&self) -> u64 {
        self.health.queue_pending.load(Ordering::Relaxed)
    }

    /// The webhook outbox as of the last durable batch; changes as batches become durable.
    pub fn outbox(&self) -> tokio::sync::watch::Receiver<super::OutboxProgress> {
        self.health.outbox.subscribe()
    }

    /// Queues `op` now, and returns where its durable answer will arrive. (The op is built
    /// and moved into the queue here, in one async layer: each layer between a caller and the
    /// queue keeps a copy of it in its future.)
    async fn submit<T>(&self, op: Op) -> Result<Pending<T>, WriteError> {
        let (request, pending) = Request::answered(op);
        self.tx
            .send(Command::Write(request))
            .await
            .map_err(|_| closed())?;
        Ok(pending)
    }

    /// Sends `op` and waits for its durable answer.
    async fn request<T: TryFrom<Answer, Error = Answer>>(&self, op: Op) -> Result<T, WriteError> {
        let (request, pending) = Request::answered(op);
        self.tx
            .send(Command::Write(request))
            .await
            .map_err(|_| closed())?;
        pending.done().await
    }

    pub async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<ConversationCreated, WriteError> {
        self.request(Op::CreateConversation(new)).await
    }

    /// Sets a user's name from the host app.
    pub async fn set_profile(&self, profile: Profile) -> Result<(), WriteError> {
        self.request(Op::SetProfile(profile)).await
    }

    pub async fn append_message(&self, new: NewMessage) -> Result<MessageAppended, WriteError> {
        self.request(Op::AppendMessage(new)).await
    }

    /// Queues an append now and returns a handle to await its durable result. Appends
    /// submitted one after another by one task are committed in that order, while the
    /// submitter goes on (a WebSocket keeps reading while its sends commit).
    pub async fn submit_append(&self, new: NewMessage) -> Result<PendingAppend, WriteError> {
        self.submit(Op::AppendMessage(new)).await
    }

    /// Removes queue entries; answers with those that were still queued.
    pub async fn drain(&self, entries: Vec<QueueKey>) -> Result<Vec<QueueKey>, WriteError> {
        self.request(Op::Drain(entries)).await
    }

    /// Dead-letters queue entries enqueued before `before_ms`.
    pub async fn expire(&self, before_ms: u64) -> Result<u64, WriteError> {
        self.request(Op::Expire(before_ms)).await
    }

    /// Stores a broadcast; answers how many recipients got it and which conversations it
    /// created.
    pub async fn broadcast(&self, broadcast: Broadcast) -> Result<Broadcasted, WriteError> {
        self.request(Op::Broadcast(broadcast)).await
    }

    /// Removes delivered queue entries with the writer's next commit, without waiting for it
    /// (nor for a place in its queue): at most [`super::group_commit::GroupCommit::ride_along`]
    /// later if no other write comes first ([`super::removals`]).
    pub fn dequeue(&self, entries: Vec<QueueKey>) -> Result<(), WriteError> {
        if self.tx.is_closed() {
            return Err(closed());
        }
        if entries.is_empty() || !self.removals.add(entries) {
            return Ok(());
        }
        match self.tx.try_send(Command::Removals) {
            // Full: the writer has requests queued, and the commit they make takes these too.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(closed()),
        }
    }

    /// Queues `op` with nobody waiting for its answer.
    async fn send_unanswered(&self, op: Op) -> Result<(), WriteError> {
        let request = Request { op, reply: None };
        self.tx
            .send(Command::Write(request))
            .await
            .map_err(|_| closed())
    }

    /// Queues the recording of a user seen in a token and returns without waiting for its
    /// commit. Nothing waits on that record (messages, queues and memberships name users by
    /// id, and `auth/me` falls back to the token), so a connect storm of new users is not held
    /// up by one commit each; writes submitted after this one still land after it. The
    /// answer arrives once the commit did (or failed).
    pub async fn submit_ensure_user(
        &self,
        id: u64,
        username: Option<String>,
    ) -> Result<Pending<()>, WriteError> {
        self.submit(Op::EnsureUser { id, username }).await
    }

    /// Sends `op` with the webhook events of what it does ([`Op::emitting`]) and waits for
    /// its durable answer, as the type `T` that `op` answers with.
    pub async fn request_emitting<T: TryFrom<Answer, Error = Answer>>(
        &self,
        op: Op,
        emit: Option<Emit>,
    ) -> Result<T, WriteError> {
        self.request(op.emitting(emit)).await
    }

    /// [`WriterHandle::submit_append`], with the webhook events of the message.
    pub async fn submit_append_emitting(
        &self,
        new: NewMessage,
        emit: Option<Emit>,
    ) -> Result<PendingAppend, WriteError> {
        self.submit(Op::AppendMessage(new).emitting(emit)).await
    }

    /// Queues a presence change's webhook event, without waiting for its commit (the change
    /// itself is announced at once; the event follows with the next batch).
    pub async fn record_presence(&self, change: PresenceChange) -> Result<(), WriteError> {
        self.send_unanswered(Op::RecordPresence(change)).await
    }

    /// Removes the webhook events up to `up_to`, which the host acknowledged; answers how
    /// many were still there.
    pub async fn ack_events(&self, up_to: u64) -> Result<u64, WriteError> {
        self.request(Op::AckEvents(up_to)).await
    }

    pub async fn register_account(&self, new: NewAccount) -> Result<u64, WriteError> {
        self.request(Op::RegisterAccount(new)).await
    }

    pub async fn mark_read(
        &self,
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
    ) -> Result<MarkedRead, WriteError> {
        self.request(Op::MarkRead {
            user,
            conversation,
            up_to,
        })
        .await
    }

    /// An operator disables (`true`) or enables `user`.
    pub async fn set_disabled(&self, user: u64, disabled: bool) -> Result<(), WriteError> {
        self.request(Op::SetDisabled { user, disabled }).await
    }

    /// Stores `wrapped` as `user`'s data key unless they have one; answers the one stored.
    pub async fn ensure_data_key(
        &self,
        user: u64,
        wrapped: Vec<u8>,
    ) -> Result<Vec<u8>, WriteError> {
        self.request(Op::EnsureDataKey { user, wrapped }).await
    }

    /// Turns a message into a tombstone; answered once the batch is durable and the journal
    /// no longer holds its record.
    pub async fn delete_message(&self, id: u64) -> Result<Tombstoned, WriteError> {
        self.request(Op::DeleteMessage { id }).await
    }

    /// Erases `user`; answered once durable (the data file is rewritten right after).
    pub async fn erase_user(&self, user: u64) -> Result<Erased, WriteError> {
        self.request(Op::EraseUser { user }).await
    }

    pub async fn set_archived(
        &self,
        user: u64,
        conversation: u64,
        archived: bool,
    ) -> Result<(), WriteError> {
        self.request(Op::SetArchived {
            user,
            conversation,
            archived,
        })
        .await
    }
}

#[cfg(test)]
impl<T: TryFrom<Answer, Error = Answer>> Pending<T> {
    /// The answer if it is there already (for tests that commit batches by hand); `None` if
    /// none came yet.
    pub(in crate::store) fn try_done(mut self) -> Option<Result<T, WriteError>> {
        let answer = self.answer.try_recv().ok()?;
        Some(answer.and_then(|a| {
            T::try_from(a).map_err(|other| {
                WriteError::Store(StoreError::Storage(format!(
                    "answered with {}",
                    other.kind()
                )))
            })
        }))
    }
}

/// The writer thread; [`WriterThread::finish`] commits what is queued, checkpoints, and
/// waits for it.
#[derive(Debug)]
pub struct WriterThread {
    pub(super) join: JoinHandle<()>,
}

impl WriterThread {
    /// Commits every request queued so far, stops the writer and waits for it. Requests sent
    /// later fail with [`StoreError::Closed`].
    pub async fn finish(self, handle: &WriterHandle) {
        // If the thread is already gone the send fails, and joining below is all there is to do.
        let _ = handle.tx.send(Command::Stop).await;
        let joined = tokio::task::spawn_blocking(move || self.join.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("store writer thread panicked");
        }
    }
}

//! The group-commit writer: the only code that writes to the database.
//!
//! One thread owns the write side. It blocks for the first request, takes every other request
//! already waiting (up to `commit_batch_max`), applies them all in one write transaction and
//! commits it. Most commits are not synced: the thread appends the batch's requests to the
//! journal in one write and syncs that ([`super::journal`], [`super::redo`]); every
//! `storage.checkpoint_interval` a batch is committed durably instead (a checkpoint). Only then
//! are the batch's requests answered and its messages fanned out ([`super::durability`]).
//! Requests that arrive meanwhile wait in the queue and make the next batch. A thousand
//! concurrent senders therefore cost one commit and one journal write, not a thousand, and
//! nobody hears "sent" before their message would survive `kill -9`.
//!
//! Each request is checked before it mutates anything, so a request that is refused (unknown
//! conversation, ...) fails alone; a storage failure fails the whole batch, which is rolled back.
//! Because one thread assigns ids inside the transaction, message ids follow commit order.
//!
//! A disk that refuses a write (full, or failing) begins an *outage* ([`Outage`]): writes are
//! refused with [`StoreError::Unavailable`] while reads go on from a reopened handle holding
//! what is durable, and writes resume by themselves once a checkpoint goes through again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableHandle,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::damage::DamagedRecords;
use super::durability::{Committed, Durable, Progress};
use super::history::{FOLD_AT, History, Tail, scan_tail};
use super::ids;
use super::journal::{self, Journal};
use super::records::{
    ConversationRecord, MembershipRecord, MessageBody, MessageRecord, Priority, UserRecord, decode,
    encode,
};
use super::redo::{self, encode_record, fill_record};
use super::tables::{
    CLIENT_IDS, CONVERSATION_KEYS, CONVERSATION_MESSAGES, CONVERSATIONS, MEMBERSHIPS, MESSAGES,
    META, QUEUE, QUEUE_LENGTHS, USERNAMES, USERS, meta,
};
use super::{Reply, StoreError, request};
use crate::metrics::Metrics;

/// Most queue entries one expiry command removes, so a sweep after a long downtime never
/// holds the writer for long: the sweeper repeats until nothing is left.
pub const EXPIRE_BATCH: u64 = 10_000;

/// Requests waiting for the writer beyond this many make senders wait (back-pressure).
const QUEUE_CAPACITY: usize = 65_536;

/// Why a write request was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No such conversation, or the caller is not in it (indistinguishable by design).
    #[error("conversation not found")]
    ConversationNotFound,
    /// The named receiver is not a participant of the conversation.
    #[error("receiver {0} is not a participant of this conversation")]
    ReceiverNotParticipant(u64),
    /// A conversation needs someone besides its creator.
    #[error("a conversation needs at least one participant besides you")]
    TooFewParticipants,
    /// A message cannot be addressed to its own sender.
    #[error("receiver must be another participant, not yourself")]
    ReceiverIsSender,
    /// A local account with this name exists.
    #[error("this username is taken")]
    UsernameTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A conversation to create (the writer de-duplicates it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewConversation {
    pub creator: u64,
    /// Everyone in it; the creator is added if missing.
    pub participants: Vec<u64>,
    pub property: Option<u64>,
    pub booking: Option<u64>,
    /// Sealed subject.
    #[serde(with = "serde_bytes")]
    pub subject: Option<Vec<u8>>,
}

/// Result of [`WriterHandle::create_conversation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCreated {
    pub id: u64,
    /// False when an identical conversation already existed and is returned instead.
    pub created: bool,
}

/// A message to append. The journal keeps what is stored; `plain` and `origin` only serve
/// the fan-out of the commit that stores it, and are not kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMessage {
    pub conversation: u64,
    pub sender: u64,
    pub receiver: Option<u64>,
    pub message_type: String,
    pub priority: Priority,
    pub client_id: Option<String>,
    /// Sealed [`super::records::MessageBody`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The same body in the clear, never stored: handed to fan-out after the commit.
    #[serde(skip)]
    pub plain: Arc<MessageBody>,
    /// The WebSocket session it came from, so fan-out does not echo it back there.
    #[serde(skip)]
    pub origin: Option<u64>,
}

/// A message that has just been committed, in commit order, for fan-out.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: u64,
    pub record: MessageRecord,
    pub plain: Arc<MessageBody>,
    /// Everyone in the conversation.
    pub participants: Vec<u64>,
    pub origin: Option<u64>,
}

/// Where the writer reports each committed batch's messages, in commit order.
pub type CommitSink = mpsc::UnboundedSender<Vec<StoredMessage>>;

/// How the writer is set up.
#[derive(Debug)]
pub struct WriterOptions {
    /// Most requests folded into one commit.
    pub batch_max: usize,
    /// Entries a user's queue keeps before the oldest lowest-priority one is dead-lettered.
    pub queue_max: u64,
    /// `storage.journal`: batches become durable in the journal; off, every batch is a
    /// durable redb commit.
    pub journal: bool,
    /// `storage.checkpoint_interval`: the longest a batch stays in the journal alone before
    /// a checkpoint commits it durably to the redb file.
    pub checkpoint_interval: Duration,
    /// Where committed messages go for fan-out.
    pub sink: CommitSink,
    pub metrics: Arc<Metrics>,
    /// What opening the store does with a damaged journal (`serve --accept-journal-loss`).
    pub damaged_journal: super::DamagedJournal,
}

impl WriterOptions {
    /// Options for a store nobody listens to (tools, tests, benches), durable the way the
    /// daemon's defaults are.
    pub fn standalone(batch_max: usize) -> Self {
        let (sink, _) = mpsc::unbounded_channel();
        let defaults = crate::config::StorageConfig::default();
        Self {
            batch_max,
            queue_max: u64::MAX,
            journal: defaults.journal,
            checkpoint_interval: defaults.checkpoint_interval,
            sink,
            metrics: Arc::new(Metrics::new()),
            damaged_journal: super::DamagedJournal::Refuse,
        }
    }
}

/// A queue entry: (user, priority rank, message id).
pub type QueueKey = (u64, u8, u64);

/// Result of [`WriterHandle::append_message`].
#[derive(Debug, Clone)]
pub enum MessageAppended {
    /// Stored now, durably.
    Stored { id: u64, record: MessageRecord },
    /// The sender's `client_id` was used before: this is the message it named.
    Duplicate { id: u64 },
}

/// A broadcast: the same message to each recipient.
#[derive(Debug, Serialize, Deserialize)]
pub struct Broadcast {
    pub sender: u64,
    pub message_type: String,
    pub priority: Priority,
    pub recipients: Vec<u64>,
    /// The sealed body, stored once per recipient (the same encryption of the same text).
    pub body: Arc<Vec<u8>>,
    #[serde(skip)]
    pub plain: Arc<MessageBody>,
}

/// A local account to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAccount {
    pub username: String,
    pub display_name: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// `auth.local_id_base`: where local ids start.
    pub id_base: u64,
}

/// Result of [`WriterHandle::mark_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedRead {
    /// The read marker after the request (never moves backwards).
    pub read_marker: u64,
    /// Whether the marker moved.
    pub advanced: bool,
    /// The reader's unread messages left in the conversation.
    pub unread: u64,
}

/// One request to the writer.
#[derive(Debug)]
pub enum Command {
    CreateConversation(NewConversation, Reply<ConversationCreated>),
    AppendMessage(NewMessage, Reply<MessageAppended>),
    /// Record a user seen in a token (and their `username` claim), if new or renamed.
    EnsureUser {
        id: u64,
        username: Option<String>,
        reply: Reply<()>,
    },
    RegisterAccount(NewAccount, Reply<u64>),
    /// Move `user`'s read marker in `conversation` up to `up_to` (the newest message if `None`).
    MarkRead {
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
        reply: Reply<MarkedRead>,
    },
    SetArchived {
        user: u64,
        conversation: u64,
        archived: bool,
        reply: Reply<()>,
    },
    /// Remove delivered entries from users' queues (no answer: a lost removal only means a
    /// redelivery, which clients de-duplicate).
    Dequeue(Vec<QueueKey>),
    /// Remove these entries and say which were still there (the service API's drain).
    Drain(Vec<QueueKey>, Reply<Vec<QueueKey>>),
    /// Dead-letter queue entries enqueued before this time (Unix ms), at most
    /// [`EXPIRE_BATCH`] per command; answers how many.
    Expire(u64, Reply<u64>),
    /// One system message from `sender` to each user, in their one-to-one conversation.
    Broadcast(Broadcast, Reply<u64>),
    /// Commit everything queued before this, then stop. Sent by [`WriterThread::finish`].
    Stop,
}

/// Cloneable sender side of the writer's queue.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    health: Arc<WriterHealth>,
    queued: Arc<QueuedUsers>,
    progress: Progress,
}

/// The users whose queue held entries after the last commit, so a socket with nothing to
/// replay skips the queue read (a blocking-pool hand-off and a read transaction per connect).
///
/// It may name a user whose queue is empty (a removal not yet committed), never the reverse:
/// the writer adds a user before the batch that queued for them reaches fan-out, so a socket
/// that registers in the hub and then finds its user absent receives every later message live.
#[derive(Debug, Default)]
pub(super) struct QueuedUsers(Mutex<HashSet<u64>>);

impl QueuedUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
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
pub(super) struct WriterHealth {
    /// False once the thread has ended (stopped, or panicked).
    running: AtomicBool,
    /// False while the latest commit failed, and all through an outage (see `Writer::outage`):
    /// writes are being refused.
    last_commit_ok: AtomicBool,
    /// Entries in all queues after the last durable batch.
    pub(super) queue_pending: AtomicU64,
    /// The thread ended on an error: it panicked, or it stopped while the data file could not
    /// be written (without its final checkpoint).
    failed: AtomicBool,
    /// Cancelled when the thread ends, however it ends.
    ended: CancellationToken,
}

impl WriterHealth {
    pub(super) fn new(queue_pending: u64) -> Self {
        Self {
            running: AtomicBool::new(true),
            last_commit_ok: AtomicBool::new(true),
            queue_pending: AtomicU64::new(queue_pending),
            failed: AtomicBool::new(false),
            ended: CancellationToken::new(),
        }
    }
}

/// Sets `running` to false however the writer thread ends, and says so.
struct RunningGuard(Arc<WriterHealth>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::SeqCst);
        }
        self.0.running.store(false, Ordering::Relaxed);
        self.0.ended.cancel();
    }
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
        self.queued.lock().contains(&user)
    }

    /// How far commits have got, for readers that must not see what is not durable yet.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<ConversationCreated, WriteError> {
        request(&self.tx, |reply| Command::CreateConversation(new, reply)).await
    }

    pub async fn append_message(&self, new: NewMessage) -> Result<MessageAppended, WriteError> {
        request(&self.tx, |reply| Command::AppendMessage(new, reply)).await
    }

    /// Queues an append now and returns a handle to await its durable result. Appends
    /// submitted one after another by one task are committed in that order, while the
    /// submitter goes on (a WebSocket keeps reading while its sends commit).
    pub async fn submit_append(&self, new: NewMessage) -> Result<PendingAppend, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::AppendMessage(new, reply))
            .await
            .map_err(|_| WriteError::Store(StoreError::Closed))?;
        Ok(PendingAppend { answer })
    }

    /// Removes queue entries; answers with those that were still queued.
    pub async fn drain(&self, entries: Vec<QueueKey>) -> Result<Vec<QueueKey>, WriteError> {
        request(&self.tx, |reply| Command::Drain(entries, reply)).await
    }

    /// Dead-letters queue entries enqueued before `before_ms`.
    pub async fn expire(&self, before_ms: u64) -> Result<u64, WriteError> {
        request(&self.tx, |reply| Command::Expire(before_ms, reply)).await
    }

    /// Stores a broadcast; answers how many recipients got it.
    pub async fn broadcast(&self, broadcast: Broadcast) -> Result<u64, WriteError> {
        request(&self.tx, |reply| Command::Broadcast(broadcast, reply)).await
    }

    /// Entries waiting in all queues, as of the last commit.
    pub fn queue_pending(&self) -> u64 {
        self.health.queue_pending.load(Ordering::Relaxed)
    }

    /// Removes delivered queue entries (batched by the caller).
    pub async fn dequeue(&self, entries: Vec<QueueKey>) -> Result<(), WriteError> {
        self.tx
            .send(Command::Dequeue(entries))
            .await
            .map_err(|_| WriteError::Store(StoreError::Closed))
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
    ) -> Result<oneshot::Receiver<Result<(), WriteError>>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::EnsureUser {
                id,
                username,
                reply,
            })
            .await
            .map_err(|_| WriteError::Store(StoreError::Closed))?;
        Ok(answer)
    }

    pub async fn register_account(&self, new: NewAccount) -> Result<u64, WriteError> {
        request(&self.tx, |reply| Command::RegisterAccount(new, reply)).await
    }

    pub async fn mark_read(
        &self,
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
    ) -> Result<MarkedRead, WriteError> {
        request(&self.tx, |reply| Command::MarkRead {
            user,
            conversation,
            up_to,
            reply,
        })
        .await
    }

    pub async fn set_archived(
        &self,
        user: u64,
        conversation: u64,
        archived: bool,
    ) -> Result<(), WriteError> {
        request(&self.tx, |reply| Command::SetArchived {
            user,
            conversation,
            archived,
            reply,
        })
        .await
    }
}

/// An append in the writer's queue; await [`PendingAppend::done`] for its durable result.
#[derive(Debug)]
pub struct PendingAppend {
    answer: oneshot::Receiver<Result<MessageAppended, WriteError>>,
}

impl PendingAppend {
    pub async fn done(self) -> Result<MessageAppended, WriteError> {
        self.answer
            .await
            .map_err(|_| WriteError::Store(StoreError::Closed))?
    }
}

/// The writer thread; [`WriterThread::finish`] commits what is queued, checkpoints, and
/// waits for it.
#[derive(Debug)]
pub struct WriterThread {
    join: JoinHandle<()>,
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

/// The data file, as the writer opens it again after a failed write (see [`Outage`]).
pub(super) struct DataFile {
    /// Its directory, where the writer checks for room before it tries a checkpoint again.
    pub dir: std::path::PathBuf,
    /// Opens it again.
    pub open: Box<dyn FnMut() -> Result<Database, StoreError> + Send>,
}

/// Starts the writer on `db`, whose batches up to `seq` are durable (replayed and
/// checkpointed at open); `journal` is `None` with `storage.journal = false`. Damaged records
/// it meets go to `damaged`; after a failed write it opens `file` again.
pub(super) fn spawn(
    db: Arc<Database>,
    options: WriterOptions,
    journal: Option<Journal>,
    seq: u64,
    damaged: Arc<DamagedRecords>,
    file: DataFile,
) -> Result<(WriterHandle, WriterThread), StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    // Everything the writer starts from, out of one snapshot.
    let txn = db.begin_read()?;
    let (pending, dead) = {
        let table = txn.open_table(META)?;
        let get = |key| Ok::<_, StoreError>(meta::get(&table, key)?.unwrap_or(0));
        (get(meta::QUEUE_PENDING)?, get(meta::DEAD_LETTERS)?)
    };
    // A user is in the lengths table exactly while their queue holds entries.
    let mut users = HashSet::new();
    for row in txn.open_table(QUEUE_LENGTHS)?.iter()? {
        users.insert(row?.0.value());
    }
    let queued = Arc::new(QueuedUsers(Mutex::new(users)));
    let (progress, committing, publisher) = Progress::new(db.clone(), seq);
    let mut state = WriterState::load_with(&txn, damaged)?;
    state.seq = seq;
    state.committing = committing;
    drop(txn);
    // Counters continue across restarts.
    options.metrics.dead_letters.inc_by(dead);
    let health = Arc::new(WriterHealth::new(pending));
    let writer = Writer {
        db: Some(db),
        file,
        journal: journal.map(JournalCursor::new),
        batch_max: options.batch_max,
        queue_max: options.queue_max,
        checkpoint_interval: options.checkpoint_interval,
        durable: Durable {
            publisher,
            sink: options.sink,
            metrics: options.metrics.clone(),
            health: health.clone(),
            queued: queued.clone(),
        },
        metrics: options.metrics,
        guard: RunningGuard(health.clone()),
        state,
        outage: None,
    };
    let join = std::thread::Builder::new()
        .name("indaba-writer".to_owned())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?;
    Ok((
        WriterHandle {
            tx,
            health,
            queued,
            progress,
        },
        WriterThread { join },
    ))
}

/// Answers one request once the fate of its batch is known.
pub(super) type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

fn complete<T: Send + 'static>(reply: Reply<T>, result: Result<T, WriteError>) -> Completion {
    Box::new(move |commit| {
        let answer = match commit {
            Ok(()) => result,
            Err(e) => Err(WriteError::Store(e.clone())),
        };
        // The requester may have gone away (client disconnected); the write stands regardless.
        let _ = reply.send(answer);
    })
}

/// The journal and where its next record goes.
#[derive(Debug)]
struct JournalCursor {
    journal: Journal,
    /// Offset of the next record in the journal file.
    offset: u64,
    /// When the first batch after the last checkpoint was journaled.
    since: Option<Instant>,
    /// A write or sync failed: every batch is a checkpoint until the journal is emptied again
    /// ([`JournalCursor::mend`]).
    broken: bool,
    /// When a broken journal was last tried again.
    tried: Option<Instant>,
}

/// How long a broken journal stays unused before it is emptied and tried again.
const JOURNAL_RETRY: Duration = Duration::from_secs(5);

impl JournalCursor {
    fn new(journal: Journal) -> Self {
        Self {
            journal,
            offset: journal::RECORDS_START,
            since: None,
            broken: false,
            tried: None,
        }
    }

    /// A write at the end of the journal failed: no more appends until it is emptied again.
    /// The failed record may have reached the file whole (a failed sync): its length is
    /// zeroed, best effort, so that no recovery replays a batch its requests heard fail.
    fn break_off(&mut self) {
        self.broken = true;
        self.tried = Some(Instant::now());
        let _ = self
            .journal
            .write_at(self.offset, &[0; journal::RECORD_HEADER]);
    }

    /// Called right after a checkpoint, which holds every batch journaled so far: a broken
    /// journal is emptied (with a new key) and used again, at most every [`JOURNAL_RETRY`]
    /// (`now`: right after an outage). If that fails, it stays broken.
    fn mend(&mut self, now: bool) {
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
    /// holds batches older than `interval` or more than [`journal::CHECKPOINT_BYTES`] of them.
    fn checkpoint_due(&self, interval: Duration) -> bool {
        self.broken
            || self.since.is_some_and(|since| since.elapsed() >= interval)
            || self.offset - journal::RECORDS_START >= journal::CHECKPOINT_BYTES
    }

    /// Whether a record of `len` bytes fits before the journal's bound.
    fn fits(&self, len: usize) -> bool {
        self.offset + len as u64 <= journal::RECORDS_START + journal::CAPACITY
    }

    /// Seals `record` as batch `seq`'s, appends it and syncs it: the batch is durable once
    /// this returns `Ok`.
    fn append(&mut self, record: &mut [u8], seq: u64, started: Instant) -> std::io::Result<()> {
        self.journal.seal(record, seq);
        self.journal.write_at(self.offset, record)?;
        self.journal.sync()?;
        self.offset += record.len() as u64;
        self.since.get_or_insert(started);
        Ok(())
    }

    /// A checkpoint committed: everything journaled so far is in the data file.
    fn start_over(&mut self) {
        self.offset = journal::RECORDS_START;
        self.since = None;
    }
}

/// How often the writer looks at its queue during an outage (answering each request at once),
/// and tries to reopen a data file it closed.
const OUTAGE_TICK: Duration = Duration::from_millis(20);
/// The first wait before a checkpoint is tried again in an outage, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(500);
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
struct Outage {
    /// What requests hear meanwhile.
    refusal: StoreError,
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

/// The writer thread: everything it owns.
struct Writer {
    /// `None` while it is closed in an outage.
    db: Option<Arc<Database>>,
    file: DataFile,
    /// `None` with `storage.journal = false`: every batch is then a checkpoint.
    journal: Option<JournalCursor>,
    batch_max: usize,
    queue_max: u64,
    checkpoint_interval: Duration,
    /// Where each batch goes once durable.
    durable: Durable,
    metrics: Arc<Metrics>,
    guard: RunningGuard,
    state: WriterState,
    /// While the data file cannot be written: see [`Outage`].
    outage: Option<Outage>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.batch_max.min(4096));
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
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    Command::Stop => {
                        stopping = true;
                        break;
                    }
                    command => batch.push(command),
                }
                next = if batch.len() < self.batch_max {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            // The last batch is a checkpoint: a stopped daemon leaves nothing to replay.
            if !batch.is_empty() || (stopping && self.uncheckpointed()) {
                self.commit(&mut batch, stopping);
            }
        }
        // Every handle is gone without a stop: still leave nothing to replay.
        if self.outage.is_none() && self.uncheckpointed() {
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

    /// In an outage: answers every request waiting with the outage's refusal, for about
    /// [`OUTAGE_TICK`]. True once asked to stop (or every handle is gone).
    fn refuse_queued(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let refusal = match &self.outage {
            Some(outage) => outage.refusal.clone(),
            None => return false,
        };
        let until = Instant::now() + OUTAGE_TICK;
        loop {
            match rx.try_recv() {
                Ok(Command::Stop) => return true,
                Ok(command) => {
                    if matches!(command, Command::AppendMessage(..)) {
                        self.metrics.persistence_failures.inc();
                    }
                    if let Some(done) = command.fail(WriteError::Store(refusal.clone())) {
                        done(Ok(()));
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
    fn start_outage(&mut self, cause: &StoreError) {
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
    fn recover(&mut self, now: bool) {
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
            .map_or(0, |cursor| cursor.offset - journal::RECORDS_START);
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
    fn reopen(&mut self) -> Result<(), StoreError> {
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
                redo::replay_unsynced(&db, &cursor.journal, &scan.records, self.queue_max)?
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

    /// Whether the journal holds batches no checkpoint covers yet.
    fn uncheckpointed(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.since.is_some())
    }

    /// Commits `batch` (emptying it), makes it durable and reports it.
    fn commit(&mut self, batch: &mut Vec<Command>, checkpoint: bool) {
        let started = Instant::now();
        let size = batch.len();
        let appends = batch
            .iter()
            .filter(|c| matches!(c, Command::AppendMessage(..)))
            .count();
        self.state.seq += 1;
        let seq = self.state.seq;
        let now_ms = self.state.now_ms();
        let interval = self.checkpoint_interval;
        let record = match &self.journal {
            Some(cursor) if !checkpoint && !cursor.checkpoint_due(interval) => {
                match encode_record(batch, now_ms, self.queue_max) {
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
        let committed = Committed {
            completions,
            report,
        };
        match (outcome, record) {
            (Ok(()), Some(mut record)) if !committed.report.durable => {
                fill_record(&mut record, &committed.report);
                self.journal_and_report(seq, &mut record, committed, started);
            }
            // A checkpoint as planned, or one its new id reservation made of it.
            (Ok(()), _) => {
                self.checkpointed(&committed.report);
                tracing::trace!(batch = size, seq, "committed, checkpoint");
                self.durable.report(seq, committed);
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
    fn checkpoint(&mut self) -> Result<u64, StoreError> {
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
        batch: &mut Vec<Command>,
        plan: Plan,
    ) -> (Vec<Completion>, BatchReport, Result<(), StoreError>) {
        let Some(db) = &self.db else {
            // Never reached: an outage commits nothing before it reopened the file.
            let closed = StoreError::Unavailable("the data file is closed".to_owned());
            let mut completions = Vec::new();
            for command in batch.drain(..) {
                completions.extend(command.fail(WriteError::Store(closed.clone())));
            }
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

/// How [`commit_batch`] commits one batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// The batch's number: every batch the writer attempts takes the next one.
    pub seq: u64,
    /// A durable redb commit (a checkpoint), rather than one the journal makes durable.
    pub durable: bool,
    /// The batch's time: now, or what the journal recorded, for a replay.
    pub now_ms: u64,
    /// For a replay: the message ids the batch gave the first time (first, and the next after
    /// its last). Any other ids fail the batch before its commit, so nothing renumbered is
    /// kept: redb's close would make even a non-durable commit durable.
    pub expect_ids: Option<(u64, u64)>,
}

/// Applies `batch` in one transaction and commits it as `plan` says. On any storage error
/// nothing of the batch is kept, and every request hears the error.
pub(super) fn commit_batch(
    db: &Database,
    batch: &mut Vec<Command>,
    state: &mut WriterState,
    queue_max: u64,
    plan: Plan,
) -> (Vec<Completion>, BatchReport, Result<(), StoreError>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut report = BatchReport::default();
    let mut pending = batch.drain(..);
    let tail_before = state.tail.len();
    let mut folded = false;
    let mut reserved = false;
    let outcome = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        if !plan.durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        {
            let mut tables = Tables::open(&txn, queue_max, &mut state.tail, &state.damaged)?;
            let first_message_id = tables.next_message_id;
            for command in pending.by_ref() {
                match tables.apply(command, plan.now_ms) {
                    Ok(done) => completions.push(done),
                    Err((e, done)) => {
                        completions.push(done);
                        return Err(e);
                    }
                }
            }
            if tables.tail.len() >= FOLD_AT {
                tables.fold_tail()?;
                folded = true;
            }
            tables.flush()?;
            tables.save_counters()?;
            reserved = ids::reserve(&mut tables.meta)?;
            // Durable or not: see `meta::APPLIED_SEQ`.
            tables.meta.insert(meta::APPLIED_SEQ, plan.seq)?;
            if let Some(recorded) = plan.expect_ids {
                let gave = (first_message_id, tables.next_message_id);
                if gave != recorded {
                    return Err(StoreError::ReplayDiverged { gave, recorded });
                }
            }
            report = BatchReport {
                stored: std::mem::take(&mut tables.stored),
                queue_changes: std::mem::take(&mut tables.queue_changes),
                dead_letters: tables.dead_letters_added,
                queue_pending: tables.queue_pending,
                first_message_id,
                next_message_id: tables.next_message_id,
                durable: plan.durable || reserved,
                sync: Duration::ZERO,
            };
        }
        // Its ids passed the durable reservation: the new one must be durable before any of
        // them is handed out, and with it the batch itself.
        if reserved && !plan.durable {
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        // Before the commit: a reader that sees this batch reads its seq (see `Progress`).
        state.committing.store(plan.seq, Ordering::SeqCst);
        let syncing = Instant::now();
        txn.commit()?;
        report.sync = syncing.elapsed();
        Ok(())
    })();
    // Requests not reached because an earlier one hit a storage error fail with it too.
    let failure = outcome.as_ref().err().cloned();
    for command in pending {
        let err = WriteError::Store(failure.clone().unwrap_or(StoreError::Closed));
        if let Some(done) = command.fail(err) {
            completions.push(done);
        }
    }
    match outcome {
        // Folded and committed: the whole tail is in the index now.
        Ok(()) if folded => state.tail.clear(),
        Ok(()) => {}
        Err(_) => {
            state.tail.truncate(tail_before);
            report = BatchReport::default();
        }
    }
    (completions, report, outcome)
}

/// What a committed batch changed, for fan-out and metrics.
#[derive(Debug, Default)]
pub(super) struct BatchReport {
    pub stored: Vec<StoredMessage>,
    /// (user, queue non-empty) for each queue length the batch wrote, in order.
    pub queue_changes: Vec<(u64, bool)>,
    pub dead_letters: u64,
    pub queue_pending: u64,
    /// The message ids the batch gave: from the first up to (not including) the next.
    pub first_message_id: u64,
    pub next_message_id: u64,
    /// The commit was durable (a checkpoint): planned so, or made so by a new id reservation
    /// ([`ids::reserve`]).
    pub durable: bool,
    /// How long redb's `commit()` took: for a checkpoint, writing its pages and `fdatasync`.
    pub sync: Duration,
}

impl Command {
    /// Answers this command with `err` without applying it.
    fn fail(self, err: WriteError) -> Option<Completion> {
        Some(match self {
            Command::CreateConversation(_, reply) => complete(reply, Err(err)),
            Command::AppendMessage(_, reply) => complete(reply, Err(err)),
            Command::EnsureUser { reply, .. } => complete(reply, Err(err)),
            Command::RegisterAccount(_, reply) => complete(reply, Err(err)),
            Command::MarkRead { reply, .. } => complete(reply, Err(err)),
            Command::SetArchived { reply, .. } => complete(reply, Err(err)),
            Command::Drain(_, reply) => complete(reply, Err(err)),
            Command::Expire(_, reply) => complete(reply, Err(err)),
            Command::Broadcast(_, reply) => complete(reply, Err(err)),
            Command::Dequeue(_) | Command::Stop => return None,
        })
    }
}

/// The tables of one write transaction, plus the id counters it advances.
struct Tables<'txn> {
    /// The unindexed tail, shared with the next batches (appends push, a fold empties it once
    /// committed).
    tail: &'txn mut WriterTail,
    /// Where a message record that cannot be decoded is reported.
    damaged: &'txn DamagedRecords,
    meta: Table<'txn, &'static str, u64>,
    users: Table<'txn, u64, &'static [u8]>,
    usernames: Table<'txn, &'static str, u64>,
    conversations: Table<'txn, u64, &'static [u8]>,
    conversation_keys: Table<'txn, &'static [u8], u64>,
    messages: Table<'txn, u64, &'static [u8]>,
    conversation_messages: Table<'txn, (u64, u64), ()>,
    memberships: Table<'txn, (u64, u64), &'static [u8]>,
    client_ids: Table<'txn, (u64, &'static str), u64>,
    queue: Table<'txn, (u64, u8, u64), u64>,
    queue_lengths: Table<'txn, u64, u64>,
    /// Conversation records, memberships and queue lengths this batch has read, with the
    /// ones it changed written back once when the batch ends ([`Tables::flush`]): a batch of a
    /// thousand messages in one conversation rewrites its record, both memberships and the
    /// recipient's queue length once, not a thousand times. Every read and write of those
    /// three tables inside a batch goes through these, so they never disagree with the tables.
    conversation_cache: WriteBack<u64, ConversationRecord>,
    membership_cache: WriteBack<(u64, u64), MembershipRecord>,
    queue_length_cache: WriteBack<u64, u64>,
    /// Messages appended in this transaction, for fan-out once it commits.
    stored: Vec<StoredMessage>,
    /// Queue lengths written back, as (user, non-empty), for [`QueuedUsers`] once it commits.
    queue_changes: Vec<(u64, bool)>,
    /// `queues.message_queue_max_size`.
    queue_max: u64,
    /// Entries in all queues (saved to `name_value` at the end of the batch).
    queue_pending: u64,
    /// Queue entries ever dead-lettered, and those added by this batch.
    dead_letters: u64,
    dead_letters_added: u64,
    next_message_id: u64,
    next_conversation_id: u64,
    /// `None` until the first local account is registered.
    next_local_user_id: Option<u64>,
}

impl<'txn> Tables<'txn> {
    fn open(
        txn: &'txn WriteTransaction,
        queue_max: u64,
        tail: &'txn mut WriterTail,
        damaged: &'txn DamagedRecords,
    ) -> Result<Self, StoreError> {
        let table = txn.open_table(META)?;
        let next_message_id = meta::get(&table, meta::NEXT_MESSAGE_ID)?.unwrap_or(1);
        let next_conversation_id = meta::get(&table, meta::NEXT_CONVERSATION_ID)?.unwrap_or(1);
        let next_local_user_id = meta::get(&table, meta::NEXT_LOCAL_USER_ID)?;
        let queue_pending = meta::get(&table, meta::QUEUE_PENDING)?.unwrap_or(0);
        let dead_letters = meta::get(&table, meta::DEAD_LETTERS)?.unwrap_or(0);
        Ok(Self {
            tail,
            damaged,
            meta: table,
            users: txn.open_table(USERS)?,
            usernames: txn.open_table(USERNAMES)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            conversation_keys: txn.open_table(CONVERSATION_KEYS)?,
            messages: txn.open_table(MESSAGES)?,
            conversation_messages: txn.open_table(CONVERSATION_MESSAGES)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            queue: txn.open_table(QUEUE)?,
            queue_lengths: txn.open_table(QUEUE_LENGTHS)?,
            conversation_cache: WriteBack::default(),
            membership_cache: WriteBack::default(),
            queue_length_cache: WriteBack::default(),
            stored: Vec::new(),
            queue_changes: Vec::new(),
            queue_max,
            queue_pending,
            dead_letters,
            dead_letters_added: 0,
            next_message_id,
            next_conversation_id,
            next_local_user_id,
        })
    }

    /// Writes back every cached record the batch changed (a failure aborts the batch).
    fn flush(&mut self) -> Result<(), StoreError> {
        for (id, record) in self.conversation_cache.take_dirty() {
            self.conversations.insert(id, encode(record)?.as_slice())?;
        }
        for (key, record) in self.membership_cache.take_dirty() {
            self.memberships.insert(key, encode(record)?.as_slice())?;
        }
        for (user, length) in self.queue_length_cache.take_dirty() {
            self.queue_changes.push((user, *length > 0));
            if *length == 0 {
                self.queue_lengths.remove(user)?;
            } else {
                self.queue_lengths.insert(user, *length)?;
            }
        }
        Ok(())
    }

    /// A conversation record (read through the batch's cache).
    fn conversation(&mut self, id: u64) -> Result<Option<&ConversationRecord>, OpError> {
        let table = &self.conversations;
        self.conversation_cache
            .get(id, || match table.get(id).map_err(rd)? {
                Some(bytes) => Ok(Some(decode(bytes.value())?)),
                None => Ok(None),
            })
    }

    /// A membership record, or `None` if the user is not in the conversation.
    fn membership(
        &mut self,
        user: u64,
        conversation: u64,
    ) -> Result<Option<MembershipRecord>, OpError> {
        let table = &self.memberships;
        let key = (user, conversation);
        let found = self
            .membership_cache
            .get(key, || match table.get(key).map_err(rd)? {
                Some(bytes) => Ok(Some(decode(bytes.value())?)),
                None => Ok(None),
            })?;
        Ok(found.copied())
    }

    /// A membership the caller must be in.
    fn member(&mut self, user: u64, conversation: u64) -> Result<MembershipRecord, OpError> {
        self.membership(user, conversation)?
            .ok_or(WriteError::ConversationNotFound.into())
    }

    /// Entries in `user`'s queue. A failed read aborts the batch (`wr`, not `rd`): dequeue
    /// and expiry ask after they removed rows, so refusing just the one request would commit
    /// those removals with stale lengths.
    fn queue_length(&mut self, user: u64) -> Result<u64, OpError> {
        let table = &self.queue_lengths;
        let found = self
            .queue_length_cache
            .get(user, || Ok(table.get(user).map_err(wr)?.map(|v| v.value())))?;
        Ok(found.copied().unwrap_or(0))
    }

    fn save_counters(&mut self) -> Result<(), StoreError> {
        self.meta
            .insert(meta::NEXT_MESSAGE_ID, self.next_message_id)?;
        self.meta
            .insert(meta::NEXT_CONVERSATION_ID, self.next_conversation_id)?;
        if let Some(next) = self.next_local_user_id {
            self.meta.insert(meta::NEXT_LOCAL_USER_ID, next)?;
        }
        self.meta.insert(meta::QUEUE_PENDING, self.queue_pending)?;
        self.meta.insert(meta::DEAD_LETTERS, self.dead_letters)?;
        Ok(())
    }

    /// Moves the whole tail into the history and client-id indexes, in key order, so each
    /// leaf is written once for all the tail's entries in it.
    fn fold_tail(&mut self) -> Result<(), StoreError> {
        let mut history = self.tail.history.clone();
        history.sort_unstable();
        for key in history {
            self.conversation_messages.insert(key, ())?;
        }
        let mut client_ids: Vec<(u64, &str, u64)> = self
            .tail
            .client_ids
            .iter()
            .flat_map(|(sender, ids)| ids.iter().map(|(c, id)| (*sender, c.as_str(), *id)))
            .collect();
        client_ids.sort_unstable();
        for (sender, client_id, id) in client_ids {
            self.client_ids.insert((sender, client_id), id)?;
        }
        // Called after the batch's last append: every id below the next one is indexed now.
        self.meta
            .insert(meta::INDEXED_TO, self.next_message_id - 1)?;
        Ok(())
    }

    /// Applies one request. Its reply is always in the returned completion; `Err` also says
    /// the batch must be rolled back (a write failed half-way).
    fn apply(
        &mut self,
        command: Command,
        now_ms: u64,
    ) -> Result<Completion, (StoreError, Completion)> {
        match command {
            Command::CreateConversation(new, reply) => {
                finish(reply, self.create_conversation(new, now_ms))
            }
            Command::AppendMessage(new, reply) => finish(reply, self.append_message(new, now_ms)),
            Command::EnsureUser {
                id,
                username,
                reply,
            } => finish(reply, self.ensure_user(id, username, now_ms)),
            Command::RegisterAccount(new, reply) => {
                finish(reply, self.register_account(new, now_ms))
            }
            Command::MarkRead {
                user,
                conversation,
                up_to,
                reply,
            } => finish(reply, self.mark_read(user, conversation, up_to, now_ms)),
            Command::SetArchived {
                user,
                conversation,
                archived,
                reply,
            } => finish(reply, self.set_archived(user, conversation, archived)),
            Command::Dequeue(entries) => match self.dequeue(&entries) {
                Ok(_) => Ok(Box::new(|_| {})),
                Err(OpError::Abort(e) | OpError::Refused(WriteError::Store(e))) => {
                    Err((e, Box::new(|_| {})))
                }
                Err(OpError::Refused(_)) => Ok(Box::new(|_| {})),
            },
            Command::Drain(entries, reply) => finish(reply, self.dequeue(&entries)),
            Command::Expire(before_ms, reply) => finish(reply, self.expire(before_ms)),
            Command::Broadcast(broadcast, reply) => {
                finish(reply, self.broadcast(broadcast, now_ms))
            }
            // Never batched: the collecting loop takes it out.
            Command::Stop => Ok(Box::new(|_| {})),
        }
    }

    // Every operation reads and decodes all it needs before its first write, so that a bad
    // record or a refusal leaves nothing half-written: only a failing write aborts the batch.

    /// Adds a queue entry; past `queue_max` the user's oldest lowest-priority entry is
    /// dead-lettered (the message stays in history).
    fn enqueue(&mut self, user: u64, rank: u8, id: u64, now_ms: u64) -> Result<(), OpError> {
        self.queue.insert((user, rank, id), now_ms).map_err(wr)?;
        let mut length = self.queue_length(user)? + 1;
        self.queue_pending += 1;
        while length > self.queue_max {
            let mut victim = None;
            for lowest in (0..=2u8).rev() {
                let first = self
                    .queue
                    .range((user, lowest, 0)..=(user, lowest, u64::MAX))
                    .map_err(wr)?
                    .next();
                if let Some(entry) = first {
                    victim = Some(entry.map_err(wr)?.0.value());
                    break;
                }
            }
            let Some(key) = victim else { break };
            self.queue.remove(key).map_err(wr)?;
            length -= 1;
            self.queue_pending -= 1;
            self.dead_letter(1);
        }
        self.queue_length_cache.put(user, length);
        Ok(())
    }

    fn dead_letter(&mut self, count: u64) {
        self.dead_letters += count;
        self.dead_letters_added += count;
    }

    /// Removes queue entries; returns those that were there.
    fn dequeue(&mut self, entries: &[QueueKey]) -> Result<Vec<QueueKey>, OpError> {
        let mut removed = Vec::with_capacity(entries.len());
        let mut per_user: HashMap<u64, u64> = HashMap::new();
        for key in entries {
            if self.queue.remove(key).map_err(wr)?.is_some() {
                removed.push(*key);
                *per_user.entry(key.0).or_default() += 1;
            }
        }
        for (user, gone) in per_user {
            self.shorten(user, gone)?;
        }
        Ok(removed)
    }

    fn shorten(&mut self, user: u64, gone: u64) -> Result<(), OpError> {
        let left = self.queue_length(user)?.saturating_sub(gone);
        // Written back at the end of the batch; a length of 0 removes the row.
        self.queue_length_cache.put(user, left);
        self.queue_pending = self.queue_pending.saturating_sub(gone);
        Ok(())
    }

    /// Dead-letters entries enqueued before `before_ms`. Within one user and priority, ids —
    /// and so enqueue times — increase, so the expired entries are a prefix of each range.
    fn expire(&mut self, before_ms: u64) -> Result<u64, OpError> {
        // The scan below reads the lengths table itself: bring it up to date first.
        self.flush().map_err(OpError::Abort)?;
        let mut users = Vec::new();
        for entry in self.queue_lengths.iter().map_err(wr)? {
            users.push(entry.map_err(wr)?.0.value());
        }
        let mut expired = 0;
        for user in users {
            if expired >= EXPIRE_BATCH {
                break;
            }
            let mut stale = Vec::new();
            for rank in 0..=2u8 {
                for entry in self
                    .queue
                    .range((user, rank, 0)..=(user, rank, u64::MAX))
                    .map_err(wr)?
                {
                    let (key, enqueued) = entry.map_err(wr)?;
                    if enqueued.value() >= before_ms || expired + stale.len() as u64 >= EXPIRE_BATCH
                    {
                        break;
                    }
                    stale.push(key.value());
                }
            }
            if stale.is_empty() {
                continue;
            }
            for key in &stale {
                self.queue.remove(key).map_err(wr)?;
            }
            let gone = stale.len() as u64;
            self.shorten(user, gone)?;
            self.dead_letter(gone);
            expired += gone;
        }
        Ok(expired)
    }

    /// One message per recipient in their one-to-one conversation with the sender (created
    /// when missing). All or nothing: a failure part-way rolls the batch back rather than
    /// leave half a broadcast behind an error.
    fn broadcast(&mut self, broadcast: Broadcast, now_ms: u64) -> Result<u64, OpError> {
        self.broadcast_all(broadcast, now_ms).map_err(|e| match e {
            OpError::Refused(WriteError::Store(e)) => OpError::Abort(e),
            other => other,
        })
    }

    fn broadcast_all(&mut self, broadcast: Broadcast, now_ms: u64) -> Result<u64, OpError> {
        let mut delivered = 0;
        for user in broadcast.recipients {
            if user == broadcast.sender {
                continue;
            }
            let conversation = self
                .create_conversation(
                    NewConversation {
                        creator: broadcast.sender,
                        participants: vec![user],
                        property: None,
                        booking: None,
                        subject: None,
                    },
                    now_ms,
                )?
                .id;
            self.append_message(
                NewMessage {
                    conversation,
                    sender: broadcast.sender,
                    receiver: Some(user),
                    message_type: broadcast.message_type.clone(),
                    priority: broadcast.priority,
                    client_id: None,
                    body: broadcast.body.to_vec(),
                    plain: broadcast.plain.clone(),
                    origin: None,
                },
                now_ms,
            )?;
            delivered += 1;
        }
        Ok(delivered)
    }

    fn ensure_user(
        &mut self,
        id: u64,
        username: Option<String>,
        now_ms: u64,
    ) -> Result<(), OpError> {
        let existing: Option<UserRecord> = match self.users.get(id).map_err(rd)? {
            Some(bytes) => Some(decode(bytes.value())?),
            None => None,
        };
        let record = match existing {
            // Local accounts keep their own name; external users follow their token's claim.
            Some(r)
                if r.password_hash.is_some() || username.is_none() || r.username == username =>
            {
                return Ok(());
            }
            Some(r) => UserRecord { username, ..r },
            None => UserRecord {
                username,
                created_at_ms: now_ms,
                ..UserRecord::default()
            },
        };
        let bytes = encode(&record)?;
        self.users.insert(id, bytes.as_slice()).map_err(wr)?;
        Ok(())
    }

    fn register_account(&mut self, new: NewAccount, now_ms: u64) -> Result<u64, OpError> {
        if self
            .usernames
            .get(new.username.as_str())
            .map_err(rd)?
            .is_some()
        {
            return Err(WriteError::UsernameTaken.into());
        }
        let id = self
            .next_local_user_id
            .unwrap_or(new.id_base)
            .max(new.id_base);
        let record = UserRecord {
            username: Some(new.username.clone()),
            display_name: new.display_name,
            password_hash: Some(new.password_hash),
            created_at_ms: now_ms,
        };
        let bytes = encode(&record)?;
        self.next_local_user_id = Some(id + 1);
        self.users.insert(id, bytes.as_slice()).map_err(wr)?;
        self.usernames
            .insert(new.username.as_str(), id)
            .map_err(wr)?;
        Ok(id)
    }

    fn mark_read(
        &mut self,
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
        now_ms: u64,
    ) -> Result<MarkedRead, OpError> {
        let mut membership = self.member(user, conversation)?;
        let target = match up_to {
            Some(id) => id.min(membership.last_message_id),
            None => membership.last_message_id,
        };
        if target <= membership.read_marker {
            return Ok(MarkedRead {
                read_marker: membership.read_marker,
                advanced: false,
                unread: membership.unread,
            });
        }
        membership.read_marker = target;
        membership.read_at_ms = now_ms;
        // Only the unread tail is counted again, never the whole history.
        membership.unread = if target >= membership.last_message_id {
            0
        } else {
            let mut unread = 0;
            let history = History {
                index: &self.conversation_messages,
                tail: &self.tail.history,
            };
            for id in history.ids(conversation, target + 1..=u64::MAX)? {
                let id = id?;
                if let Some(bytes) = self.messages.get(id).map_err(rd)? {
                    // A damaged record has no sender to tell: left out, as every view does.
                    let record: Option<MessageRecord> =
                        self.damaged
                            .skip(MESSAGES.name(), id, decode(bytes.value()))?;
                    unread += u64::from(record.is_some_and(|r| r.sender != user));
                }
            }
            unread
        };
        self.membership_cache.put((user, conversation), membership);
        Ok(MarkedRead {
            read_marker: membership.read_marker,
            advanced: true,
            unread: membership.unread,
        })
    }

    fn set_archived(
        &mut self,
        user: u64,
        conversation: u64,
        archived: bool,
    ) -> Result<(), OpError> {
        let mut membership = self.member(user, conversation)?;
        if membership.archived != archived {
            membership.archived = archived;
            self.membership_cache.put((user, conversation), membership);
        }
        Ok(())
    }

    fn create_conversation(
        &mut self,
        new: NewConversation,
        now_ms: u64,
    ) -> Result<ConversationCreated, OpError> {
        let mut participants = new.participants;
        participants.push(new.creator);
        participants.sort_unstable();
        participants.dedup();
        if participants.len() < 2 {
            return Err(WriteError::TooFewParticipants.into());
        }
        let key = encode(&(&participants, new.property, new.booking))?;
        if let Some(existing) = self.conversation_keys.get(key.as_slice()).map_err(rd)? {
            return Ok(ConversationCreated {
                id: existing.value(),
                created: false,
            });
        }
        let id = self.next_conversation_id;
        let record = ConversationRecord {
            participants,
            property: new.property,
            booking: new.booking,
            subject: new.subject,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            last_message_id: None,
            message_count: 0,
        };
        let membership = MembershipRecord {
            last_activity_ms: now_ms,
            ..MembershipRecord::default()
        };
        self.next_conversation_id += 1;
        self.conversation_keys
            .insert(key.as_slice(), id)
            .map_err(wr)?;
        for user in &record.participants {
            self.membership_cache.put((*user, id), membership);
        }
        self.conversation_cache.put(id, record);
        Ok(ConversationCreated { id, created: true })
    }

    fn append_message(&mut self, new: NewMessage, now_ms: u64) -> Result<MessageAppended, OpError> {
        // Read phase: everything checked and decoded before anything is written.
        let Some(conversation) = self.conversation(new.conversation)? else {
            return Err(WriteError::ConversationNotFound.into());
        };
        let participants = conversation.participants.clone();
        if !participants.contains(&new.sender) {
            return Err(WriteError::ConversationNotFound.into());
        }
        let receiver = match new.receiver {
            Some(r) if r == new.sender => return Err(WriteError::ReceiverIsSender.into()),
            Some(r) if !participants.contains(&r) => {
                return Err(WriteError::ReceiverNotParticipant(r).into());
            }
            Some(r) => Some(r),
            None if participants.len() == 2 => {
                participants.iter().copied().find(|p| *p != new.sender)
            }
            None => None,
        };
        if let Some(client_id) = &new.client_id {
            let earlier = match self.tail.client_id(new.sender, client_id) {
                Some(id) => Some(id),
                None => self
                    .client_ids
                    .get((new.sender, client_id.as_str()))
                    .map_err(rd)?
                    .map(|v| v.value()),
            };
            if let Some(id) = earlier {
                return Ok(MessageAppended::Duplicate { id });
            }
        }
        let mut memberships = Vec::with_capacity(participants.len());
        for user in &participants {
            let membership = self
                .membership(*user, new.conversation)?
                .unwrap_or_default();
            memberships.push((*user, membership));
        }
        // Loaded now so that `enqueue` below reads them from the cache and cannot fail
        // half-way through this request's writes.
        for user in participants.iter().filter(|u| **u != new.sender) {
            self.queue_length(*user)?;
        }

        let id = self.next_message_id;
        let record = MessageRecord {
            conversation: new.conversation,
            sender: new.sender,
            receiver,
            message_type: new.message_type,
            priority: new.priority,
            client_id: new.client_id,
            created_at_ms: now_ms,
            body: new.body,
        };
        let record_bytes = encode(&record)?;

        // Write phase.
        self.next_message_id += 1;
        self.messages
            .insert(id, record_bytes.as_slice())
            .map_err(wr)?;
        // The history and client-id indexes get it at the next fold.
        let client = record.client_id.clone().map(|c| (new.sender, c));
        self.tail.push(new.conversation, id, client);
        if let Some(conversation) = self.conversation_cache.get_mut(new.conversation) {
            conversation.last_message_id = Some(id);
            conversation.updated_at_ms = now_ms;
            conversation.message_count += 1;
        }
        for (user, mut membership) in memberships {
            membership.last_message_id = id;
            membership.last_activity_ms = now_ms;
            if user == new.sender {
                // Your own message is read by you, and everything before it too.
                membership.read_marker = id;
                membership.read_at_ms = now_ms;
                membership.unread = 0;
            } else {
                membership.unread += 1;
                // A new message brings an archived conversation back for its recipients.
                membership.archived = false;
            }
            self.membership_cache
                .put((user, new.conversation), membership);
        }
        // Every recipient gets a queue entry; it leaves once delivered to a live socket.
        let rank = record.priority.rank();
        for user in &participants {
            if *user != new.sender {
                self.enqueue(*user, rank, id, now_ms)?;
            }
        }
        self.stored.push(StoredMessage {
            id,
            record: record.clone(),
            plain: new.plain,
            participants,
            origin: new.origin,
        });
        Ok(MessageAppended::Stored { id, record })
    }
}

/// The records of one table that a batch has read, and which of them it changed: reads after
/// the first come from memory, and changed records are written back once, by
/// [`Tables::flush`], however often the batch changed them.
#[derive(Debug)]
struct WriteBack<K, V> {
    /// `None`: known to be absent from the table.
    entries: BTreeMap<K, Cached<V>>,
}

#[derive(Debug)]
struct Cached<V> {
    value: Option<V>,
    dirty: bool,
}

impl<K, V> Default for WriteBack<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, V> WriteBack<K, V> {
    /// The record under `key`, loaded from the table by `load` on first use.
    fn get(
        &mut self,
        key: K,
        load: impl FnOnce() -> Result<Option<V>, OpError>,
    ) -> Result<Option<&V>, OpError> {
        let cached = match self.entries.entry(key) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Cached {
                value: load()?,
                dirty: false,
            }),
        };
        Ok(cached.value.as_ref())
    }

    /// A record already read by [`WriteBack::get`], to change in place.
    fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let cached = self.entries.get_mut(&key)?;
        cached.dirty = true;
        cached.value.as_mut()
    }

    /// Sets the record under `key`.
    fn put(&mut self, key: K, value: V) {
        self.entries.insert(
            key,
            Cached {
                value: Some(value),
                dirty: true,
            },
        );
    }

    /// The changed records, in key order (sorted inserts are the cheapest for the B-tree);
    /// they count as clean afterwards.
    fn take_dirty(&mut self) -> impl Iterator<Item = (K, &V)> {
        self.entries.iter_mut().filter_map(|(key, cached)| {
            let dirty = std::mem::replace(&mut cached.dirty, false);
            match (&cached.value, dirty) {
                (Some(value), true) => Some((*key, value)),
                _ => None,
            }
        })
    }
}

/// How an operation failed.
#[derive(Debug)]
enum OpError {
    /// This request fails alone; nothing of it was written.
    Refused(WriteError),
    /// A write failed half-way: the whole batch must be rolled back.
    Abort(StoreError),
}

impl From<WriteError> for OpError {
    fn from(e: WriteError) -> Self {
        OpError::Refused(e)
    }
}

/// Decoding happens in the read phase: a bad record refuses only its own request.
impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Refused(WriteError::Store(e))
    }
}

/// A failed read: refuses the request.
fn rd(e: redb::StorageError) -> OpError {
    OpError::Refused(WriteError::Store(e.into()))
}

/// A failed write: aborts the batch.
fn wr(e: redb::StorageError) -> OpError {
    OpError::Abort(e.into())
}

/// Turns an operation's result into its completion, flagging a batch abort.
fn finish<T: Send + 'static>(
    reply: Reply<T>,
    result: Result<T, OpError>,
) -> Result<Completion, (StoreError, Completion)> {
    match result {
        Ok(value) => Ok(complete(reply, Ok(value))),
        Err(OpError::Refused(e)) => Ok(complete(reply, Err(e))),
        Err(OpError::Abort(e)) => Err((e.clone(), complete(reply, Err(WriteError::Store(e))))),
    }
}

/// What the writer carries from one batch to the next.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    clock: Clock,
    tail: WriterTail,
    /// The seq of the last batch attempted.
    seq: u64,
    /// Shared with readers: see [`Progress`].
    committing: Arc<AtomicU64>,
    /// Where a message record the writer cannot decode is reported (the store's, once the
    /// writer runs).
    damaged: Arc<DamagedRecords>,
}

impl WriterState {
    /// Now, as a batch's time (never before the last batch's).
    pub(super) fn now_ms(&mut self) -> u64 {
        self.clock.now_ms()
    }

    /// The tail as of `txn`: every message above `indexed_to`, with its client id.
    pub(super) fn load(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Self::load_with(txn, Arc::default())
    }

    /// [`WriterState::load`], reporting damaged records to `damaged`.
    fn load_with(txn: &ReadTransaction, damaged: Arc<DamagedRecords>) -> Result<Self, StoreError> {
        let indexed_to = meta::get(&txn.open_table(META)?, meta::INDEXED_TO)?.unwrap_or(0);
        let mut tail = WriterTail::default();
        scan_tail(
            &txn.open_table(MESSAGES)?,
            indexed_to,
            &damaged,
            |bytes| decode::<MessageRecord>(bytes),
            |id, record| {
                let client = record.client_id.map(|c| (record.sender, c));
                tail.push(record.conversation, id, client);
            },
        )?;
        Ok(Self {
            tail,
            damaged,
            ..Self::default()
        })
    }
}

/// The messages the history and client-id indexes do not have yet, as committed (see
/// [`crate::store::history`]): their conversations, and the client ids they were sent with.
/// Both indexes are keyed by something other than the message id (conversation, sender), so
/// writing them at every append dirtied a leaf per busy conversation and per sender in every
/// commit; the writer adds them at each fold instead, and answers from here until then.
#[derive(Debug, Default)]
struct WriterTail {
    /// (conversation, message id), in id order.
    history: Tail,
    /// Sender → client id → message id, for the tail's messages sent with a client id.
    client_ids: HashMap<u64, HashMap<String, u64>>,
}

impl WriterTail {
    fn len(&self) -> usize {
        self.history.len()
    }

    fn push(&mut self, conversation: u64, id: u64, client: Option<(u64, String)>) {
        self.history.push((conversation, id));
        if let Some((sender, client_id)) = client {
            self.client_ids
                .entry(sender)
                .or_default()
                .insert(client_id, id);
        }
    }

    /// The message `sender` sent with `client_id`, if it is in the tail.
    fn client_id(&self, sender: u64, client_id: &str) -> Option<u64> {
        self.client_ids.get(&sender)?.get(client_id).copied()
    }

    /// Takes back the messages from position `len` on (a batch that failed).
    fn truncate(&mut self, len: usize) {
        let Some(&(_, first)) = self.history.get(len) else {
            return;
        };
        self.history.truncate(len);
        for ids in self.client_ids.values_mut() {
            ids.retain(|_, id| *id < first);
        }
        self.client_ids.retain(|_, ids| !ids.is_empty());
    }

    fn clear(&mut self) {
        self.history.clear();
        self.client_ids.clear();
    }
}

/// Commit timestamps that never go backwards, even if the wall clock does.
#[derive(Debug, Default)]
struct Clock {
    last_ms: u64,
}

impl Clock {
    fn now_ms(&mut self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_ms = self.last_ms.max(wall);
        self.last_ms
    }
}

#[cfg(test)]
impl Plan {
    /// A durable commit at the current time, as the tests' one-off batches are.
    fn checkpoint_now() -> Plan {
        Plan {
            seq: 0,
            durable: true,
            now_ms: crate::time::now_ms(),
            expect_ids: None,
        }
    }
}

/// The writer's state for a test database (empty while its tables do not exist yet).
#[cfg(test)]
fn test_state(db: &Database) -> WriterState {
    db.begin_read()
        .map_err(StoreError::from)
        .and_then(|txn| WriterState::load(&txn))
        .unwrap_or_default()
}

/// Commits `batch` as one durable batch on a test database and answers its requests.
#[cfg(test)]
fn run_batch(db: &Database, mut batch: Vec<Command>) {
    let (completions, _, outcome) = commit_batch(
        db,
        &mut batch,
        &mut test_state(db),
        u64::MAX,
        Plan::checkpoint_now(),
    );
    for done in completions {
        done(outcome.as_ref().map(|_| ()));
    }
}

/// A one-character text message, for the tests below.
#[cfg(test)]
pub(super) fn test_message(conversation: u64, sender: u64, priority: Priority) -> NewMessage {
    NewMessage {
        conversation,
        sender,
        receiver: None,
        message_type: "text".into(),
        priority,
        client_id: None,
        body: vec![7],
        plain: Arc::new(MessageBody {
            text: "t".into(),
            metadata_json: "{}".into(),
        }),
        origin: None,
    }
}

#[cfg(test)]
mod tests {
    //! Regression: one request whose stored record cannot be decoded used to fail every other
    //! request of its batch (and its own reply was dropped, which read as "shutting down").

    use super::*;
    use redb::ReadableDatabase;

    fn append(
        conversation: u64,
    ) -> (
        Command,
        oneshot::Receiver<Result<MessageAppended, WriteError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let new = test_message(conversation, 1, Priority::Normal);
        (Command::AppendMessage(new, reply), rx)
    }

    #[test]
    fn a_bad_record_fails_only_its_own_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        for other in [2, 3] {
            let (reply, _rx) = oneshot::channel();
            let new = NewConversation {
                creator: 1,
                participants: vec![other],
                property: None,
                booking: None,
                subject: None,
            };
            run_batch(&db, vec![Command::CreateConversation(new, reply)]);
        }
        // Damage conversation 2's record.
        let txn = db.begin_write().expect("txn");
        txn.open_table(CONVERSATIONS)
            .expect("table")
            .insert(2, [0xffu8; 3].as_slice())
            .expect("insert");
        txn.commit().expect("commit");

        let (good, mut good_rx) = append(1);
        let (bad, mut bad_rx) = append(2);
        run_batch(&db, vec![good, bad]);
        let good = good_rx.try_recv().expect("good answered");
        assert!(
            matches!(good, Ok(MessageAppended::Stored { id: 1, .. })),
            "{good:?}"
        );
        let bad = bad_rx.try_recv().expect("bad answered, not dropped");
        assert!(
            matches!(bad, Err(WriteError::Store(StoreError::Encoding(_)))),
            "{bad:?}"
        );
        let read = db.begin_read().expect("read");
        let messages = read.open_table(MESSAGES).expect("table");
        assert!(
            messages.get(1).expect("get").is_some(),
            "good message committed"
        );
        assert!(
            messages.get(2).expect("get").is_none(),
            "nothing of the bad one"
        );
    }
}

#[cfg(test)]
mod queue_tests {
    //! Queue bookkeeping that the HTTP tests cannot reach in reasonable time: expiry by age.

    use super::*;
    use redb::ReadableDatabase;

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
            .await
            .expect("dequeue");
        // Dequeues are not answered; the writer is first-in first-out, so an answered request
        // sent after one commits no earlier.
        writer.expire(0).await.expect("barrier");
        assert!(!writer.may_have_queued(2), "emptied by the dequeue");
        thread.finish(&writer).await;
        let (writer, thread) = open();
        assert!(!writer.may_have_queued(2), "still empty after a restart");
        thread.finish(&writer).await;
    }

    #[test]
    fn entries_past_retention_become_dead_letters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("q.redb")).expect("db");
        let (reply, _rx) = oneshot::channel();
        let new = NewConversation {
            creator: 1,
            participants: vec![2],
            property: None,
            booking: None,
            subject: None,
        };
        run_batch(&db, vec![Command::CreateConversation(new, reply)]);
        // Two messages, then the retention boundary, then one more.
        let mut boundary = 0;
        for priority in [Priority::Low, Priority::High, Priority::Normal] {
            if priority == Priority::Normal {
                std::thread::sleep(std::time::Duration::from_millis(5));
                boundary = crate::time::now_ms();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let (reply, _rx) = oneshot::channel();
            let new = test_message(1, 1, priority);
            run_batch(&db, vec![Command::AppendMessage(new, reply)]);
        }
        let (reply, mut expired) = oneshot::channel();
        run_batch(&db, vec![Command::Expire(boundary, reply)]);
        assert_eq!(expired.try_recv().expect("answered").expect("ok"), 2);

        let read = db.begin_read().expect("read");
        let queue = read.open_table(QUEUE).expect("queue");
        let left: Vec<(u64, u8, u64)> = queue
            .iter()
            .expect("iter")
            .map(|e| e.expect("entry").0.value())
            .collect();
        assert_eq!(left, vec![(2, Priority::Normal.rank(), 3)]);
        let meta = read.open_table(META).expect("meta");
        assert_eq!(
            meta.get(meta::DEAD_LETTERS)
                .expect("get")
                .map(|v| v.value()),
            Some(2)
        );
        assert_eq!(
            meta.get(meta::QUEUE_PENDING)
                .expect("get")
                .map(|v| v.value()),
            Some(1)
        );
        let lengths = read.open_table(QUEUE_LENGTHS).expect("lengths");
        assert_eq!(lengths.get(2).expect("get").map(|v| v.value()), Some(1));
    }
}

#[cfg(test)]
mod write_back_tests {
    //! Conversation records, memberships and queue lengths are cached per batch and written
    //! back at its end: a batch must leave exactly the tables that the same requests leave when
    //! each is committed on its own.

    use super::*;
    use redb::ReadableDatabase;

    fn message(conversation: u64, sender: u64) -> NewMessage {
        test_message(conversation, sender, Priority::Normal)
    }

    /// The requests, in order. Conversation 2 is read (and refused) before it exists, then
    /// created in the same batch: a cache that remembered "absent" would lose its members.
    fn script() -> Vec<Command> {
        let conversation = |creator, other| NewConversation {
            creator,
            participants: vec![other],
            property: None,
            booking: None,
            subject: None,
        };
        fn reply<T>() -> Reply<T> {
            oneshot::channel().0
        }
        let mut commands = Vec::new();
        commands.push(Command::CreateConversation(conversation(1, 2), reply()));
        for sender in [1, 2, 1] {
            commands.push(Command::AppendMessage(message(1, sender), reply()));
        }
        commands.push(Command::MarkRead {
            user: 2,
            conversation: 1,
            up_to: Some(1),
            reply: reply(),
        });
        commands.push(Command::SetArchived {
            user: 1,
            conversation: 1,
            archived: true,
            reply: reply(),
        });
        commands.push(Command::AppendMessage(message(1, 2), reply()));
        commands.push(Command::Dequeue(vec![(2, Priority::Normal.rank(), 1)]));
        commands.push(Command::MarkRead {
            user: 3,
            conversation: 2,
            up_to: None,
            reply: reply(),
        });
        commands.push(Command::AppendMessage(message(2, 3), reply()));
        commands.push(Command::CreateConversation(conversation(3, 1), reply()));
        for sender in [3, 1, 3] {
            commands.push(Command::AppendMessage(message(2, sender), reply()));
        }
        commands.push(Command::MarkRead {
            user: 1,
            conversation: 2,
            up_to: None,
            reply: reply(),
        });
        commands
    }

    /// Every row of the cached tables, timestamps zeroed (the two runs commit at other times).
    fn dump(db: &Database) -> Vec<String> {
        let read = db.begin_read().expect("read");
        let mut rows = Vec::new();
        for entry in read
            .open_table(CONVERSATIONS)
            .expect("t")
            .iter()
            .expect("iter")
        {
            let (id, bytes) = entry.expect("row");
            let mut record: ConversationRecord = decode(bytes.value()).expect("decode");
            (record.created_at_ms, record.updated_at_ms) = (0, 0);
            rows.push(format!("conversation {} {record:?}", id.value()));
        }
        for entry in read
            .open_table(MEMBERSHIPS)
            .expect("t")
            .iter()
            .expect("iter")
        {
            let (key, bytes) = entry.expect("row");
            let mut record: MembershipRecord = decode(bytes.value()).expect("decode");
            (record.read_at_ms, record.last_activity_ms) = (0, 0);
            rows.push(format!("membership {:?} {record:?}", key.value()));
        }
        for entry in read
            .open_table(QUEUE_LENGTHS)
            .expect("t")
            .iter()
            .expect("iter")
        {
            let (user, length) = entry.expect("row");
            rows.push(format!("queue length {} {}", user.value(), length.value()));
        }
        let meta = read.open_table(META).expect("meta");
        let pending = meta
            .get(meta::QUEUE_PENDING)
            .expect("get")
            .map(|v| v.value());
        rows.push(format!("pending {pending:?}"));
        rows
    }

    #[test]
    fn one_batch_leaves_the_same_tables_as_one_commit_per_request() {
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let together = Database::create(dir_a.path().join("a.redb")).expect("db");
        let apart = Database::create(dir_b.path().join("b.redb")).expect("db");
        let mut batch = script();
        let (_, _, outcome) = commit_batch(
            &together,
            &mut batch,
            &mut test_state(&together),
            u64::MAX,
            Plan::checkpoint_now(),
        );
        outcome.expect("batch commits");
        let mut state = test_state(&apart);
        for command in script() {
            let mut batch = vec![command];
            let (_, _, outcome) = commit_batch(
                &apart,
                &mut batch,
                &mut state,
                u64::MAX,
                Plan::checkpoint_now(),
            );
            outcome.expect("commit");
        }
        let rows = dump(&together);
        assert_eq!(rows, dump(&apart));
        // And the script did what it says: conversation 2 exists with its members.
        assert!(
            rows.iter().any(|r| r.starts_with("membership (3, 2)")),
            "{rows:#?}"
        );
        assert!(rows.iter().any(|r| r == "queue length 2 1"), "{rows:#?}");
    }
}

#[cfg(test)]
mod journal_failure_tests {
    //! A journal that cannot be written must not lose an acknowledged write, nor acknowledge
    //! one that is not durable: the writer falls back to checkpoints.

    use super::*;
    use crate::store::testing::{TempStore, one_to_one};

    fn count(metrics: &Metrics, name: &str) -> u64 {
        let text = metrics.encode();
        let line = format!("{name}_count ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_written_falls_back_to_checkpoints() {
        let temp = TempStore::new();
        let (store, thread) = temp.open();
        thread.finish(store.writer()).await;
        drop(store);

        let db =
            Arc::new(Database::open(temp.path().join(crate::store::DATABASE_FILE)).expect("db"));
        let journal = Journal::read_only(temp.path()).expect("journal");
        let options = WriterOptions::standalone(16);
        let metrics = options.metrics.clone();
        let path = temp.path().join(crate::store::DATABASE_FILE);
        let file = DataFile {
            dir: temp.path().to_owned(),
            open: Box::new(move || {
                Database::open(&path).map_err(|e| StoreError::Open {
                    path: path.clone(),
                    message: e.to_string(),
                })
            }),
        };
        let (writer, thread) =
            spawn(db.clone(), options, Some(journal), 0, Arc::default(), file).expect("spawn");
        let conversation = writer
            .create_conversation(one_to_one(1, 2))
            .await
            .expect("answered once a checkpoint made it durable")
            .id;
        // A crash now: what was acknowledged must be in the data file itself.
        let crashed = temp.crash_copy();
        let (copy, copy_thread) = crashed.open();
        let found = copy
            .read(move |r| r.conversation(conversation))
            .await
            .expect("read");
        assert!(found.is_some(), "an acknowledged conversation was lost");
        copy_thread.finish(copy.writer()).await;
        drop(copy);
        let mut ids = Vec::new();
        for _ in 0..3 {
            match writer
                .append_message(test_message(conversation, 1, Priority::Normal))
                .await
            {
                Ok(MessageAppended::Stored { id, .. }) => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
        let crashed_later = temp.crash_copy();
        assert_eq!(count(&metrics, "indaba_journal_sync_seconds"), 0);
        // The checkpoint after the failed write, then one per batch.
        assert!(count(&metrics, "indaba_checkpoint_seconds") >= 4);
        assert!(writer.is_healthy());
        thread.finish(&writer).await;
        drop(writer);
        drop(db);

        let (store, thread) = crashed_later.open();
        let found = store
            .read(move |r| {
                ids.iter()
                    .map(|id| r.message(*id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .expect("read");
        assert!(found.iter().all(Option::is_some), "{found:?}");
        thread.finish(store.writer()).await;
    }

    /// The data file's writes and syncs fail while `fail` is set: a full disk.
    #[derive(Debug)]
    struct FailingDisk {
        inner: redb::backends::FileBackend,
        fail: Arc<AtomicBool>,
    }

    impl FailingDisk {
        /// A database on the data file in `dir`, on a disk that fails while `fail` is set.
        fn open(dir: &std::path::Path, fail: &Arc<AtomicBool>) -> Result<Database, StoreError> {
            let path = dir.join(crate::store::DATABASE_FILE);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("file");
            let disk = FailingDisk {
                inner: redb::backends::FileBackend::new(file).map_err(|e| {
                    StoreError::Unavailable(format!("cannot lock the file yet: {e}"))
                })?,
                fail: fail.clone(),
            };
            Database::builder()
                .create_with_backend(disk)
                .map_err(|e| StoreError::Open {
                    path,
                    message: e.to_string(),
                })
        }

        fn check(&self) -> Result<(), std::io::Error> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FailingDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> Result<(), std::io::Error> {
            self.inner.close()
        }
    }

    /// A writer on `temp`'s data file on a [`FailingDisk`], with a journal that cannot be
    /// written, and a store handle on it.
    async fn on_failing_disk(
        temp: &TempStore,
        fail: &Arc<AtomicBool>,
    ) -> (crate::store::Store, WriterThread) {
        let db = Arc::new(FailingDisk::open(temp.path(), fail).expect("db"));
        // Room in the file for the batches below: growing it syncs, which the failing disk
        // refuses.
        const SCRATCH: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("scratch");
        let txn = db.begin_write().expect("write");
        txn.open_table(SCRATCH)
            .expect("table")
            .insert(0, vec![0u8; 1 << 20].as_slice())
            .expect("insert");
        txn.commit().expect("commit");
        let txn = db.begin_write().expect("write");
        txn.delete_table(SCRATCH).expect("delete");
        txn.commit().expect("commit");
        // redb's first write after an open syncs once more; get it done before the disk fails.
        for durability in [redb::Durability::Immediate, redb::Durability::None] {
            let mut txn = db.begin_write().expect("write");
            txn.set_durability(durability).expect("durability");
            txn.commit().expect("commit");
        }
        let journal = Journal::read_only(temp.path()).expect("journal");
        let file = {
            let (dir, fail) = (temp.path().to_owned(), fail.clone());
            DataFile {
                dir: dir.clone(),
                open: Box::new(move || FailingDisk::open(&dir, &fail)),
            }
        };
        let (writer, thread) = spawn(
            db,
            WriterOptions::standalone(16),
            Some(journal),
            0,
            Arc::default(),
            file,
        )
        .expect("spawn");
        let store = crate::store::Store {
            writer,
            keyring: temp.keyring(),
            damaged: Arc::default(),
        };
        (store, thread)
    }

    fn refused(result: &Result<MessageAppended, WriteError>) -> bool {
        matches!(result, Err(WriteError::Store(StoreError::Unavailable(_))))
    }

    /// A store whose disk fails while `fail` is set, and the send that met it failing (the
    /// journal cannot be written, and the checkpoint meant to cover that fails too).
    struct FailedWrite {
        temp: TempStore,
        fail: Arc<AtomicBool>,
        store: crate::store::Store,
        thread: WriterThread,
        writer: WriterHandle,
        conversation: u64,
    }

    async fn failed_write() -> FailedWrite {
        let temp = TempStore::new();
        let conversation = temp.with_conversation().await;
        let fail = Arc::new(AtomicBool::new(false));
        let (store, thread) = on_failing_disk(&temp, &fail).await;
        let writer = store.writer().clone();
        fail.store(true, Ordering::SeqCst);
        let sent = writer
            .append_message(test_message(conversation, 1, Priority::Normal))
            .await;
        assert!(refused(&sent), "{sent:?}");
        FailedWrite {
            temp,
            fail,
            store,
            thread,
            writer,
            conversation,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_cannot_be_made_durable_is_never_shown_and_the_store_recovers() {
        let failed = failed_write().await;
        let (writer, conversation) = (&failed.writer, failed.conversation);
        // The message was in redb's memory, and a crash loses it: no reader may see it.
        let seen = failed.store.read(|r| r.message(1)).await;
        assert!(
            matches!(seen, Ok(None) | Err(StoreError::Unavailable(_))),
            "a reader was answered: {seen:?}"
        );
        assert!(!writer.is_healthy());
        let later = writer
            .append_message(test_message(conversation, 1, Priority::Normal))
            .await;
        assert!(refused(&later), "{later:?}");

        // Space is back: writes resume by themselves.
        failed.fail.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            let sent = writer
                .append_message(test_message(conversation, 1, Priority::Normal))
                .await;
            match sent {
                Ok(MessageAppended::Stored { id, .. }) => break id,
                other => assert!(refused(&other), "{other:?}"),
            }
            assert!(Instant::now() < deadline, "writes never resumed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(writer.is_healthy());
        let found = failed.store.read(move |r| r.message(id)).await;
        assert!(found.expect("read").is_some());
        failed.thread.finish(writer).await;
        assert!(!writer.failed(), "a clean stop after the recovery");
        drop(failed.store);

        // Durable: there after a restart.
        let (store, thread) = failed.temp.open();
        let found = store.read(move |r| r.message(id)).await.expect("read");
        assert!(found.is_some());
        thread.finish(store.writer()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_while_the_disk_fails_is_not_a_clean_one() {
        let failed = failed_write().await;
        failed.thread.finish(&failed.writer).await;
        assert!(
            failed.writer.failed(),
            "stopped without its final checkpoint"
        );
    }
}

//! The group-commit writer: the only code that writes to the database.
//!
//! One thread owns the write side. It blocks for the first request, takes every other request
//! already waiting (up to `commit_batch_max`), applies them all in one write transaction,
//! commits durably (one fsync for the whole batch), and only then answers each request. A
//! thousand concurrent senders therefore cost one commit, not a thousand, and nobody hears
//! "sent" before their message would survive `kill -9`.
//!
//! Each request is checked before it mutates anything, so a request that is refused (unknown
//! conversation, ...) fails alone; a storage failure fails the whole batch, which is rolled back.
//! Because one thread assigns ids inside the transaction, message ids follow commit order.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::mpsc;

use super::records::{
    ConversationRecord, MembershipRecord, MessageRecord, Priority, decode, encode,
};
use super::tables::{
    CLIENT_IDS, CONVERSATION_KEYS, CONVERSATION_MESSAGES, CONVERSATIONS, MEMBERSHIPS, MESSAGES,
    META, meta,
};
use super::{Reply, StoreError, request};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A conversation to create (the writer de-duplicates it).
#[derive(Debug, Clone)]
pub struct NewConversation {
    pub creator: u64,
    /// Everyone in it; the creator is added if missing.
    pub participants: Vec<u64>,
    pub property: Option<u64>,
    pub booking: Option<u64>,
    /// Sealed subject.
    pub subject: Option<Vec<u8>>,
}

/// Result of [`WriterHandle::create_conversation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCreated {
    pub id: u64,
    /// False when an identical conversation already existed and is returned instead.
    pub created: bool,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation: u64,
    pub sender: u64,
    pub receiver: Option<u64>,
    pub message_type: String,
    pub priority: Priority,
    pub client_id: Option<String>,
    /// Sealed [`super::records::MessageBody`].
    pub body: Vec<u8>,
}

/// Result of [`WriterHandle::append_message`].
#[derive(Debug, Clone)]
pub enum MessageAppended {
    /// Stored now, durably.
    Stored {
        id: u64,
        record: MessageRecord,
        /// Everyone in the conversation, for fan-out.
        participants: Vec<u64>,
    },
    /// The sender's `client_id` was used before: this is the message it named.
    Duplicate { id: u64 },
}

/// One request to the writer.
#[derive(Debug)]
pub enum Command {
    CreateConversation(NewConversation, Reply<ConversationCreated>),
    AppendMessage(NewMessage, Reply<MessageAppended>),
    /// Commit everything queued before this, then stop. Sent by [`WriterThread::finish`].
    Stop,
}

/// Cloneable sender side of the writer's queue.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    pub async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<ConversationCreated, WriteError> {
        request(&self.tx, |reply| Command::CreateConversation(new, reply)).await
    }

    pub async fn append_message(&self, new: NewMessage) -> Result<MessageAppended, WriteError> {
        request(&self.tx, |reply| Command::AppendMessage(new, reply)).await
    }
}

/// The writer thread; [`WriterThread::finish`] commits what is queued and waits for it.
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

pub(super) fn spawn(
    db: Arc<Database>,
    batch_max: usize,
) -> Result<(WriterHandle, WriterThread), StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let join = std::thread::Builder::new()
        .name("indaba-writer".to_owned())
        .spawn(move || run(&db, rx, batch_max))
        .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?;
    Ok((WriterHandle { tx }, WriterThread { join }))
}

/// Answers one request once the fate of its batch is known.
type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

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

fn run(db: &Database, mut rx: mpsc::Receiver<Command>, batch_max: usize) {
    let mut batch = Vec::with_capacity(batch_max.min(4096));
    let mut clock = Clock::default();
    let mut stopping = false;
    while !stopping && let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(command) = next {
            if matches!(command, Command::Stop) {
                stopping = true;
                break;
            }
            batch.push(command);
            next = if batch.len() < batch_max {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        let size = batch.len();
        let started = Instant::now();
        let (completions, outcome) = commit_batch(db, &mut batch, &mut clock);
        match &outcome {
            Ok(()) => tracing::trace!(
                batch = size,
                micros = started.elapsed().as_micros() as u64,
                "committed"
            ),
            Err(e) => tracing::error!(batch = size, error = %e, "commit failed; batch rolled back"),
        }
        for done in completions {
            done(outcome.as_ref().map(|_| ()));
        }
    }
    tracing::debug!("store writer stopped");
}

/// Applies `batch` in one transaction and commits it. On any storage error nothing of the batch
/// is kept, and every request hears the error.
fn commit_batch(
    db: &Database,
    batch: &mut Vec<Command>,
    clock: &mut Clock,
) -> (Vec<Completion>, Result<(), StoreError>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut pending = batch.drain(..);
    let outcome = (|| -> Result<(), StoreError> {
        let txn = db.begin_write()?;
        {
            let mut tables = Tables::open(&txn)?;
            let now = clock.now_ms();
            for command in pending.by_ref() {
                completions.push(tables.apply(command, now)?);
            }
            tables.save_counters()?;
        }
        txn.commit()?;
        Ok(())
    })();
    // Requests not reached because an earlier one hit a storage error fail with it too.
    let failure = outcome.as_ref().err().cloned();
    for command in pending {
        let err = failure.clone().unwrap_or(StoreError::Closed);
        completions.push(match command {
            Command::CreateConversation(_, reply) => complete(reply, Err(err.into())),
            Command::AppendMessage(_, reply) => complete(reply, Err(err.into())),
            Command::Stop => continue,
        });
    }
    (completions, outcome)
}

/// The tables of one write transaction, plus the id counters it advances.
struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    conversations: Table<'txn, u64, &'static [u8]>,
    conversation_keys: Table<'txn, &'static [u8], u64>,
    messages: Table<'txn, u64, &'static [u8]>,
    conversation_messages: Table<'txn, (u64, u64), ()>,
    memberships: Table<'txn, (u64, u64), &'static [u8]>,
    client_ids: Table<'txn, (u64, &'static str), u64>,
    next_message_id: u64,
    next_conversation_id: u64,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let next_message_id = meta
            .get(meta::NEXT_MESSAGE_ID)?
            .map(|v| v.value())
            .unwrap_or(1);
        let next_conversation_id = meta
            .get(meta::NEXT_CONVERSATION_ID)?
            .map(|v| v.value())
            .unwrap_or(1);
        Ok(Self {
            meta,
            conversations: txn.open_table(CONVERSATIONS)?,
            conversation_keys: txn.open_table(CONVERSATION_KEYS)?,
            messages: txn.open_table(MESSAGES)?,
            conversation_messages: txn.open_table(CONVERSATION_MESSAGES)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            next_message_id,
            next_conversation_id,
        })
    }

    fn save_counters(&mut self) -> Result<(), StoreError> {
        self.meta
            .insert(meta::NEXT_MESSAGE_ID, self.next_message_id)?;
        self.meta
            .insert(meta::NEXT_CONVERSATION_ID, self.next_conversation_id)?;
        Ok(())
    }

    /// Applies one request. `Err` is a storage failure that aborts the batch; a refusal is
    /// carried inside the returned completion.
    fn apply(&mut self, command: Command, now_ms: u64) -> Result<Completion, StoreError> {
        Ok(match command {
            Command::CreateConversation(new, reply) => {
                let result = self.create_conversation(new, now_ms);
                complete(reply, lift(result)?)
            }
            Command::AppendMessage(new, reply) => {
                let result = self.append_message(new, now_ms);
                complete(reply, lift(result)?)
            }
            // Never batched: the collecting loop takes it out.
            Command::Stop => Box::new(|_| {}),
        })
    }

    fn create_conversation(
        &mut self,
        new: NewConversation,
        now_ms: u64,
    ) -> Result<ConversationCreated, WriteError> {
        let mut participants = new.participants;
        participants.push(new.creator);
        participants.sort_unstable();
        participants.dedup();
        if participants.len() < 2 {
            return Err(WriteError::TooFewParticipants);
        }
        let key = encode(&(&participants, new.property, new.booking))?;
        if let Some(existing) = self.conversation_keys.get(key.as_slice()).map_err(se)? {
            return Ok(ConversationCreated {
                id: existing.value(),
                created: false,
            });
        }
        let id = self.next_conversation_id;
        self.next_conversation_id += 1;
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
        self.conversations
            .insert(id, encode(&record)?.as_slice())
            .map_err(se)?;
        self.conversation_keys
            .insert(key.as_slice(), id)
            .map_err(se)?;
        let membership = encode(&MembershipRecord {
            joined_at_ms: now_ms,
            ..MembershipRecord::default()
        })?;
        for user in &record.participants {
            self.memberships
                .insert((*user, id), membership.as_slice())
                .map_err(se)?;
        }
        Ok(ConversationCreated { id, created: true })
    }

    fn append_message(
        &mut self,
        new: NewMessage,
        now_ms: u64,
    ) -> Result<MessageAppended, WriteError> {
        let mut conversation: ConversationRecord =
            match self.conversations.get(new.conversation).map_err(se)? {
                Some(bytes) => decode(bytes.value())?,
                None => return Err(WriteError::ConversationNotFound),
            };
        if !conversation.participants.contains(&new.sender) {
            return Err(WriteError::ConversationNotFound);
        }
        let receiver = match new.receiver {
            Some(r) if !conversation.participants.contains(&r) => {
                return Err(WriteError::ReceiverNotParticipant(r));
            }
            Some(r) => Some(r),
            None if conversation.participants.len() == 2 => conversation
                .participants
                .iter()
                .copied()
                .find(|p| *p != new.sender),
            None => None,
        };
        if let Some(client_id) = &new.client_id
            && let Some(existing) = self
                .client_ids
                .get((new.sender, client_id.as_str()))
                .map_err(se)?
        {
            return Ok(MessageAppended::Duplicate {
                id: existing.value(),
            });
        }

        let id = self.next_message_id;
        self.next_message_id += 1;
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
        self.messages
            .insert(id, encode(&record)?.as_slice())
            .map_err(se)?;
        self.conversation_messages
            .insert((new.conversation, id), ())
            .map_err(se)?;
        if let Some(client_id) = &record.client_id {
            self.client_ids
                .insert((new.sender, client_id.as_str()), id)
                .map_err(se)?;
        }

        conversation.last_message_id = Some(id);
        conversation.updated_at_ms = now_ms;
        conversation.message_count += 1;
        self.conversations
            .insert(new.conversation, encode(&conversation)?.as_slice())
            .map_err(se)?;

        for user in &conversation.participants {
            let key = (*user, new.conversation);
            let mut membership: MembershipRecord = match self.memberships.get(key).map_err(se)? {
                Some(bytes) => decode(bytes.value())?,
                None => MembershipRecord::default(),
            };
            membership.last_message_id = id;
            if *user == new.sender {
                // Your own message is read by you, and everything before it too.
                membership.read_marker = id;
                membership.unread = 0;
            } else {
                membership.unread += 1;
                // A new message brings an archived conversation back for its recipients.
                membership.archived = false;
            }
            self.memberships
                .insert(key, encode(&membership)?.as_slice())
                .map_err(se)?;
        }
        Ok(MessageAppended::Stored {
            id,
            record,
            participants: conversation.participants,
        })
    }
}

/// Storage errors inside an operation abort the batch; refusals stay with the request.
fn lift<T>(result: Result<T, WriteError>) -> Result<Result<T, WriteError>, StoreError> {
    match result {
        Err(WriteError::Store(e)) => Err(e),
        other => Ok(other),
    }
}

fn se(e: redb::StorageError) -> WriteError {
    WriteError::Store(e.into())
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

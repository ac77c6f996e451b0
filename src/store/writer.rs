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
    ConversationRecord, MembershipRecord, MessageRecord, Priority, UserRecord, decode, encode,
};
use super::tables::{
    CLIENT_IDS, CONVERSATION_KEYS, CONVERSATION_MESSAGES, CONVERSATIONS, MEMBERSHIPS, MESSAGES,
    META, USERNAMES, USERS, meta,
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
    /// A local account with this name exists.
    #[error("this username is taken")]
    UsernameTaken,
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

/// A local account to create.
#[derive(Debug, Clone)]
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

    pub async fn ensure_user(&self, id: u64, username: Option<String>) -> Result<(), WriteError> {
        request(&self.tx, |reply| Command::EnsureUser {
            id,
            username,
            reply,
        })
        .await
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
        let err = WriteError::Store(failure.clone().unwrap_or(StoreError::Closed));
        if let Some(done) = command.fail(err) {
            completions.push(done);
        }
    }
    (completions, outcome)
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
            Command::Stop => return None,
        })
    }
}

/// The tables of one write transaction, plus the id counters it advances.
struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    users: Table<'txn, u64, &'static [u8]>,
    usernames: Table<'txn, &'static str, u64>,
    conversations: Table<'txn, u64, &'static [u8]>,
    conversation_keys: Table<'txn, &'static [u8], u64>,
    messages: Table<'txn, u64, &'static [u8]>,
    conversation_messages: Table<'txn, (u64, u64), ()>,
    memberships: Table<'txn, (u64, u64), &'static [u8]>,
    client_ids: Table<'txn, (u64, &'static str), u64>,
    next_message_id: u64,
    next_conversation_id: u64,
    /// `None` until the first local account is registered.
    next_local_user_id: Option<u64>,
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
        let next_local_user_id = meta.get(meta::NEXT_LOCAL_USER_ID)?.map(|v| v.value());
        Ok(Self {
            meta,
            users: txn.open_table(USERS)?,
            usernames: txn.open_table(USERNAMES)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            conversation_keys: txn.open_table(CONVERSATION_KEYS)?,
            messages: txn.open_table(MESSAGES)?,
            conversation_messages: txn.open_table(CONVERSATION_MESSAGES)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            next_message_id,
            next_conversation_id,
            next_local_user_id,
        })
    }

    fn save_counters(&mut self) -> Result<(), StoreError> {
        self.meta
            .insert(meta::NEXT_MESSAGE_ID, self.next_message_id)?;
        self.meta
            .insert(meta::NEXT_CONVERSATION_ID, self.next_conversation_id)?;
        if let Some(next) = self.next_local_user_id {
            self.meta.insert(meta::NEXT_LOCAL_USER_ID, next)?;
        }
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
            Command::EnsureUser {
                id,
                username,
                reply,
            } => {
                let result = self.ensure_user(id, username, now_ms);
                complete(reply, lift(result)?)
            }
            Command::RegisterAccount(new, reply) => {
                let result = self.register_account(new, now_ms);
                complete(reply, lift(result)?)
            }
            Command::MarkRead {
                user,
                conversation,
                up_to,
                reply,
            } => {
                let result = self.mark_read(user, conversation, up_to, now_ms);
                complete(reply, lift(result)?)
            }
            Command::SetArchived {
                user,
                conversation,
                archived,
                reply,
            } => {
                let result = self.set_archived(user, conversation, archived);
                complete(reply, lift(result)?)
            }
            // Never batched: the collecting loop takes it out.
            Command::Stop => Box::new(|_| {}),
        })
    }

    fn ensure_user(
        &mut self,
        id: u64,
        username: Option<String>,
        now_ms: u64,
    ) -> Result<(), WriteError> {
        let existing: Option<UserRecord> = match self.users.get(id).map_err(se)? {
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
        self.users
            .insert(id, encode(&record)?.as_slice())
            .map_err(se)?;
        Ok(())
    }

    fn register_account(&mut self, new: NewAccount, now_ms: u64) -> Result<u64, WriteError> {
        if self
            .usernames
            .get(new.username.as_str())
            .map_err(se)?
            .is_some()
        {
            return Err(WriteError::UsernameTaken);
        }
        let id = self
            .next_local_user_id
            .unwrap_or(new.id_base)
            .max(new.id_base);
        self.next_local_user_id = Some(id + 1);
        let record = UserRecord {
            username: Some(new.username.clone()),
            display_name: new.display_name,
            password_hash: Some(new.password_hash),
            created_at_ms: now_ms,
        };
        self.users
            .insert(id, encode(&record)?.as_slice())
            .map_err(se)?;
        self.usernames
            .insert(new.username.as_str(), id)
            .map_err(se)?;
        Ok(id)
    }

    fn membership(&self, user: u64, conversation: u64) -> Result<MembershipRecord, WriteError> {
        match self.memberships.get((user, conversation)).map_err(se)? {
            Some(bytes) => Ok(decode(bytes.value())?),
            None => Err(WriteError::ConversationNotFound),
        }
    }

    fn mark_read(
        &mut self,
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
        now_ms: u64,
    ) -> Result<MarkedRead, WriteError> {
        let mut membership = self.membership(user, conversation)?;
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
            for entry in self
                .conversation_messages
                .range((conversation, target + 1)..=(conversation, u64::MAX))
                .map_err(se)?
            {
                let (key, _) = entry.map_err(se)?;
                let id = key.value().1;
                if let Some(bytes) = self.messages.get(id).map_err(se)? {
                    let record: MessageRecord = decode(bytes.value())?;
                    unread += u64::from(record.sender != user);
                }
            }
            unread
        };
        self.memberships
            .insert((user, conversation), encode(&membership)?.as_slice())
            .map_err(se)?;
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
    ) -> Result<(), WriteError> {
        let mut membership = self.membership(user, conversation)?;
        if membership.archived != archived {
            membership.archived = archived;
            self.memberships
                .insert((user, conversation), encode(&membership)?.as_slice())
                .map_err(se)?;
        }
        Ok(())
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
                membership.read_at_ms = now_ms;
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

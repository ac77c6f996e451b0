//! What a write *means*: every kind of write as one serializable [`Op`], and the rules that
//! apply it to the tables.
//!
//! An [`Op`] is what a caller asks the writer for ([`super::WriterHandle`] builds one per
//! method), what the writer applies ([`Op::apply`], inside one batch's write transaction), what
//! the journal writes down for that batch, and what a replay after a crash applies again
//! ([`super::engine::redo`]): the same value through the same code. So the rules below must be
//! deterministic: they read the clock only through the batch's time (`now_ms`) and order
//! everything they iterate.
//!
//! The rules, by concern, each over the open tables of one transaction ([`Tables`]):
//! [`conversations`], [`messages`] (appends and broadcasts), [`queues`] (per-user delivery
//! queues, dead letters), [`read_state`] (read markers, archive flags), [`accounts`] (users seen
//! in tokens, local accounts).
//!
//! Every op reads, checks and decodes all it needs before its first write, so that a bad
//! record or a refusal leaves nothing half-written and fails only its own request
//! ([`OpError::Refused`]); only a failing write aborts the whole batch ([`OpError::Abort`]).
//!
//! Adding a kind of write: a variant here (at the end: the journal numbers variants, so never
//! reorder them), its rule in the file of its concern, one arm in [`Op::apply`], and a method
//! on [`super::WriterHandle`]; an [`Answer`] variant only if it answers with a type no other
//! op does.

pub mod accounts;
pub mod conversations;
pub mod messages;
pub mod moderation;
pub mod outbox;
pub mod queues;
pub mod read_state;
mod tail;
mod txn;
mod write_back;

use serde::{Deserialize, Serialize};

pub use accounts::{NewAccount, Profile};
pub use conversations::{ConversationCreated, NewConversation};
pub use messages::{
    Broadcast, BroadcastConversation, Broadcasted, MessageAppended, NewMessage, StoredMessage,
};
pub use moderation::{Erased, Tombstoned};
pub use outbox::{DropLog, Emit, EventKinds, PresenceChange};
pub use queues::{EXPIRE_BATCH, QueueKey};
pub use read_state::MarkedRead;
pub(super) use tail::WriterTail;
pub(super) use txn::Tables;

use super::StoreError;

/// One write, as the writer applies it, the journal logs it and a replay applies it again.
///
/// The journal holds ops postcard-encoded, which numbers the variants in order: append new
/// ones at the end, never reorder or remove one, and bump the journal's format when a
/// variant's fields change.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    CreateConversation(NewConversation),
    AppendMessage(NewMessage),
    /// Record a user seen in a token (and their `username` claim), if new or renamed.
    EnsureUser {
        id: u64,
        username: Option<String>,
    },
    RegisterAccount(NewAccount),
    /// Move `user`'s read marker in `conversation` up to `up_to` (the newest message if
    /// `None`).
    MarkRead {
        user: u64,
        conversation: u64,
        up_to: Option<u64>,
    },
    SetArchived {
        user: u64,
        conversation: u64,
        archived: bool,
    },
    /// Remove delivered entries from users' queues (nobody waits for the answer: a lost
    /// removal only means a redelivery, which clients de-duplicate).
    Dequeue(Vec<QueueKey>),
    /// Remove these entries and say which were still there (the service API's drain).
    Drain(Vec<QueueKey>),
    /// Dead-letter queue entries enqueued before this time (Unix ms), at most
    /// [`EXPIRE_BATCH`] per op; answers how many.
    Expire(u64),
    /// One system message from `sender` to each user, in their one-to-one conversation.
    Broadcast(Broadcast),
    /// The conversation the host app's id `key` names (contract 8.3): the one recorded for it,
    /// else `sender`'s and `receiver`'s one-to-one conversation (created if absent), recorded.
    HostConversation {
        key: u64,
        sender: u64,
        receiver: Option<u64>,
    },
    /// Set a user's name (and display name) from the host app (`PUT /api/users/{id}`).
    SetProfile(Profile),
    /// An operator disables (or enables again) a user.
    SetDisabled {
        user: u64,
        disabled: bool,
    },
    /// Store this data key (sealed by the at-rest key) for `user` unless they have one;
    /// answers the one stored.
    EnsureDataKey {
        user: u64,
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
    /// An operator deletes a message: it becomes a tombstone.
    DeleteMessage {
        id: u64,
    },
    /// Erasure on request: the user's account, queue, read state and data key go, every
    /// message they sent becomes a tombstone.
    EraseUser {
        user: u64,
    },
    /// `op`, and the webhook events of what it did, in the same commit ([`outbox`]).
    Emitting(Box<Op>, Emit),
    /// A presence change's webhook event (presence itself is not stored).
    RecordPresence(PresenceChange),
    /// The host acknowledged every webhook event up to this id: remove them; answers how many.
    AckEvents(u64),
}

impl Op {
    /// Applies this op to the batch's tables at the batch's time `now_ms`.
    pub(super) fn apply(self, tables: &mut Tables<'_>, now_ms: u64) -> Result<Answer, OpError> {
        match self {
            Op::CreateConversation(new) => {
                conversations::create(tables, new, now_ms).map(Into::into)
            }
            Op::AppendMessage(new) => messages::append(tables, new, now_ms).map(Into::into),
            Op::EnsureUser { id, username } => {
                accounts::ensure_user(tables, id, username, now_ms).map(Into::into)
            }
            Op::RegisterAccount(new) => accounts::register(tables, new, now_ms).map(Into::into),
            Op::MarkRead {
                user,
                conversation,
                up_to,
            } => read_state::mark_read(tables, user, conversation, up_to, now_ms).map(Into::into),
            Op::SetArchived {
                user,
                conversation,
                archived,
            } => read_state::set_archived(tables, user, conversation, archived).map(Into::into),
            Op::Dequeue(entries) => {
                queues::dequeue_delivered(tables, entries).map(|()| Answer::Done(()))
            }
            Op::Drain(entries) => queues::dequeue(tables, &entries).map(Into::into),
            Op::Expire(before_ms) => queues::expire(tables, before_ms).map(Into::into),
            Op::Broadcast(broadcast) => {
                messages::broadcast(tables, broadcast, now_ms).map(Into::into)
            }
            Op::HostConversation {
                key,
                sender,
                receiver,
            } => conversations::host(tables, key, sender, receiver, now_ms).map(Into::into),
            Op::SetProfile(profile) => {
                accounts::set_profile(tables, profile, now_ms).map(|()| Answer::Done(()))
            }
            Op::SetDisabled { user, disabled } => {
                moderation::set_disabled(tables, user, disabled, now_ms).map(Into::into)
            }
            Op::EnsureDataKey { user, wrapped } => {
                moderation::ensure_data_key(tables, user, wrapped).map(Into::into)
            }
            Op::DeleteMessage { id } => moderation::delete_message(tables, id).map(Into::into),
            Op::EraseUser { user } => moderation::erase_user(tables, user, now_ms).map(Into::into),
            Op::Emitting(op, emit) => outbox::emitting(tables, *op, emit, now_ms),
            Op::RecordPresence(change) => {
                outbox::record_presence(tables, change, now_ms).map(Into::into)
            }
            Op::AckEvents(up_to) => outbox::ack(tables, up_to).map(Into::into),
        }
    }

    /// Whether the batch holding this op must be followed by a scrub of the files: a
    /// checkpoint, then the journal emptied (its records may hold what was removed), and for
    /// an erasure the data file rewritten without its free pages (see docs/STORAGE.md,
    /// "Erasure").
    pub(in crate::store) fn scrubs(&self) -> Option<Scrub> {
        match self {
            Op::DeleteMessage { .. } => Some(Scrub::Journal),
            Op::EraseUser { .. } => Some(Scrub::Compact),
            _ => None,
        }
    }

    /// Whether this op stores a message (counted as lost when its batch fails).
    pub(super) fn is_append(&self) -> bool {
        match self {
            Op::AppendMessage(_) => true,
            Op::Emitting(op, _) => op.is_append(),
            _ => false,
        }
    }

    /// `self` with the webhook events of what it does (`None`: webhooks are off, or want
    /// none of them).
    pub fn emitting(self, emit: Option<Emit>) -> Op {
        match emit {
            Some(emit) => Op::Emitting(Box::new(self), emit),
            None => self,
        }
    }
}

/// How much of the files a batch's ops make the writer scrub after it (the larger wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::store) enum Scrub {
    /// A checkpoint, then the journal emptied.
    Journal,
    /// That, then the data file rewritten into a fresh one.
    Compact,
}

/// Declares [`Answer`], one variant per type an op answers with, and the conversions to and
/// from each type.
macro_rules! answers {
    ($($(#[$doc:meta])* $variant:ident($t:ty),)*) => {
        /// What an applied op answers its requester with (each [`super::WriterHandle`] method
        /// takes back the type its op answers with).
        #[derive(Debug)]
        pub enum Answer {
            $($(#[$doc])* $variant($t),)*
        }

        impl Answer {
            /// Which kind of answer this is (without its contents, which may be a user's).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Answer::$variant(_) => stringify!($variant),)*
                }
            }
        }

        $(
            impl From<$t> for Answer {
                fn from(value: $t) -> Self {
                    Answer::$variant(value)
                }
            }

            impl TryFrom<Answer> for $t {
                type Error = Answer;

                fn try_from(answer: Answer) -> Result<Self, Answer> {
                    match answer {
                        Answer::$variant(value) => Ok(value),
                        other => Err(other),
                    }
                }
            }
        )*
    };
}

answers! {
    /// Done, nothing to say.
    Done(()),
    Conversation(ConversationCreated),
    Message(MessageAppended),
    /// An account's id, or how many entries expired.
    Number(u64),
    MarkedRead(MarkedRead),
    /// The queue entries a drain removed.
    Entries(Vec<QueueKey>),
    /// A data key, as stored.
    Bytes(Vec<u8>),
    /// A message turned into a tombstone.
    Tombstoned(Tombstoned),
    Erased(Erased),
    Broadcasted(Broadcasted),
}

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
    /// A local account's name is its login: the host app cannot rename it.
    #[error("user {0} is a local account: its name is set by its owner, not the host app")]
    LocalAccount(u64),
    /// No user with this id is known.
    #[error("user not found")]
    UserNotFound,
    /// No message with this id.
    #[error("message not found")]
    MessageNotFound,
    /// The sender was disabled (or erased) by an operator.
    #[error("this account is disabled")]
    UserDisabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an op failed.
#[derive(Debug)]
pub(super) enum OpError {
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

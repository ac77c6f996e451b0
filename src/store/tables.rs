//! Every redb table, in one place, with the schema version that describes them.
//!
//! Names read `key_value`. Values are postcard-encoded records of [`crate::model`] (see
//! [`super::records`]); the parts a user wrote are sealed by [`crate::crypto`] before they get
//! here. `docs/STORAGE.md` describes the layout for people.
//!
//! Each table is declared once, in the `tables!` list below, which also makes
//! [`every_table`]: creating them at open, backups, and the tests' dumps go through that,
//! so a new table is created, copied and compared without being listed anywhere else.
//!
//! Bump [`SCHEMA_VERSION`] whenever a table or record changes shape; a daemon refuses a file
//! whose version is newer than its own.

use redb::{Key, TableDefinition, Value};

/// On-disk schema this build reads and writes. 2: `convid_msgid` and
/// `senderid_clientid_msgid` hold the messages up to `indexed_to` only (see
/// [`super::history`]). 3: batches after `applied_seq` are in `indaba.journal`
/// ([`super::engine::journal`]), so an older build must not open the file and miss them. 4:
/// `hostconvid_convid` and `convid_hostconvid` (an older build would not see host ids),
/// `userid_disabledms` and `userid_datakey` (operators disabling users, per-user data keys),
/// `eventid_event` (the webhook outbox), `convid_userid_marker_readms` (when read markers moved;
/// reads before the upgrade have no time: their messages show `read_at: null`); message bodies
/// may be empty (a tombstone). 5: a `userid_convid_membership` row holds only its user's own
/// state (read marker, the message count up to it, archived at which count): what a message
/// changes for every member is derived from the conversation's record
/// ([`crate::model::MembershipRecord::view`]), so a group message writes one row, not one per
/// member. Older files are upgraded at open (a new table is created empty; memberships are
/// rewritten by [`super::upgrade`]).
pub const SCHEMA_VERSION: u64 = 5;

/// Something done to every table in turn ([`every_table`]). The bounds are what every table's
/// key and value types meet: a visitor may read, write and print rows of any of them.
pub trait TableVisitor {
    type Error;

    fn visit<K, V>(&mut self, table: TableDefinition<'static, K, V>) -> Result<(), Self::Error>
    where
        K: Key + 'static,
        V: Value + 'static,
        for<'a> K::SelfType<'a>: std::fmt::Debug,
        for<'a> V::SelfType<'a>: std::fmt::Debug;
}

/// Declares each table as a constant and lists them all in [`every_table`], in this order.
macro_rules! tables {
    ($(
        $(#[$doc:meta])*
        $name:ident: TableDefinition<$k:ty, $v:ty> = TableDefinition::new($key_value:literal);
    )*) => {
        $(
            $(#[$doc])*
            pub const $name: TableDefinition<$k, $v> = TableDefinition::new($key_value);
        )*

        /// Calls `visitor` with every table, in the order they are declared.
        pub fn every_table<T: TableVisitor>(visitor: &mut T) -> Result<(), T::Error> {
            $(visitor.visit($name)?;)*
            Ok(())
        }
    };
}

tables! {
    /// Small named numbers: the schema version and id counters (see [`meta`]).
    META: TableDefinition<&str, u64> = TableDefinition::new("name_value");

    /// One sealed canary per key that has ever sealed data, so a wrong key is caught at open.
    KEY_CHECKS: TableDefinition<u32, &[u8]> = TableDefinition::new("keyid_canary");

    /// Users seen in tokens or registered locally → [`crate::model::UserRecord`].
    USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("userid_user");

    /// Local account names → user id (external users are not in here: their names are claims).
    USERNAMES: TableDefinition<&str, u64> = TableDefinition::new("username_userid");

    /// Conversations → [`crate::model::ConversationRecord`].
    CONVERSATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("convid_conversation");

    /// De-duplication of conversation creation: (sorted participants, property, booking) → id.
    CONVERSATION_KEYS: TableDefinition<&[u8], u64> = TableDefinition::new("convkey_convid");

    /// Every message ever accepted → [`crate::model::MessageRecord`]. Ids strictly increase.
    MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("msgid_message");

    /// Index of a conversation's history, for cursor pagination without scanning other
    /// messages. Holds the messages up to [`meta::INDEXED_TO`]; newer ones are folded in by
    /// the writer in bulk ([`super::history`]).
    CONVERSATION_MESSAGES: TableDefinition<(u64, u64), ()> = TableDefinition::new("convid_msgid");

    /// Per (user, conversation) state that only the user's own actions change: read marker,
    /// messages up to it, archived at which count → [`crate::model::MembershipRecord`]. Ranging
    /// over one user lists their conversations; a message writes only its sender's row.
    MEMBERSHIPS: TableDefinition<(u64, u64), &[u8]> =
        TableDefinition::new("userid_convid_membership");

    /// Idempotent sends: (sender, client_id) → the message first accepted with it. Holds the
    /// messages up to [`meta::INDEXED_TO`]; the writer knows the newer ones
    /// ([`super::history`]).
    CLIENT_IDS: TableDefinition<(u64, &str), u64> =
        TableDefinition::new("senderid_clientid_msgid");

    /// Per-user delivery queues: (user, priority rank, message id) → enqueued at (Unix ms).
    /// Ranging over one user gives high before normal before low, then oldest first. An entry
    /// is an index over `msgid_message`, not a copy: it leaves when the message was written to
    /// one of the user's live `/ws/chat/` sockets (or drained by the service API).
    QUEUE: TableDefinition<(u64, u8, u64), u64> =
        TableDefinition::new("userid_prio_msgid_enqueuedms");

    /// Entries in each user's queue (kept with the queue, so overflow and stats need no scan).
    QUEUE_LENGTHS: TableDefinition<u64, u64> = TableDefinition::new("userid_queuelen");

    /// The host app's own conversation ids, as its backend sends them to the service API
    /// (contract 8.3) → the conversation they were mapped to on first use.
    HOST_CONVERSATIONS: TableDefinition<u64, u64> = TableDefinition::new("hostconvid_convid");

    /// The reverse: a conversation → the first host id mapped to it (`host_id` in its JSON).
    CONVERSATION_HOST_IDS: TableDefinition<u64, u64> = TableDefinition::new("convid_hostconvid");

    /// Users an operator disabled (or erased) → since when (Unix ms): their tokens are
    /// refused and the writer refuses messages from them. An erased user stays here, so the
    /// tokens they still hold keep being refused.
    DISABLED_USERS: TableDefinition<u64, u64> = TableDefinition::new("userid_disabledms");

    /// Each sender's data key, sealed by the at-rest key ([`crate::crypto::Key::wrap`]): it
    /// seals the text and metadata of every message they send. Erasing the user removes the
    /// row, and with it every way to open what the key sealed (crypto-shredding).
    DATA_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("userid_datakey");

    /// The webhook outbox: events not yet acknowledged by the host app →
    /// [`crate::model::EventRecord`]. Written in the commit of the change that causes each
    /// event, removed from the front as batches are acknowledged or dropped
    /// ([`super::ops::outbox`]). Ids strictly increase.
    EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("eventid_event");

    /// When a user's read marker in a conversation moved past messages from others:
    /// (conversation, user, new marker) → Unix ms. The first entry at or above a message's id
    /// is when that user's marker first covered it: the message's `read_at`. One entry per
    /// move, not per message; a move past only the user's own messages needs none.
    READ_STEPS: TableDefinition<(u64, u64, u64), u64> =
        TableDefinition::new("convid_userid_marker_readms");
}

/// Keys of [`META`].
pub mod meta {
    use redb::ReadableTable;

    use crate::store::StoreError;

    /// The number stored under `key`, `None` when absent: the one way every reader and the
    /// writer read [`super::META`].
    pub fn get(
        table: &impl ReadableTable<&'static str, u64>,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(table.get(key)?.map(|v| v.value()))
    }

    /// Schema version of the file.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// The id the next message gets.
    pub const NEXT_MESSAGE_ID: &str = "next_message_id";
    /// The id the next conversation gets.
    pub const NEXT_CONVERSATION_ID: &str = "next_conversation_id";
    /// The id the next local account gets (starts at `auth.local_id_base`).
    pub const NEXT_LOCAL_USER_ID: &str = "next_local_user_id";
    /// No message id at or above this one was ever handed out (see
    /// [`crate::store::engine::ids`]).
    pub const MESSAGE_IDS_RESERVED: &str = "message_ids_reserved";
    /// No conversation id at or above this one was ever handed out.
    pub const CONVERSATION_IDS_RESERVED: &str = "conversation_ids_reserved";
    /// No local account id at or above this one was ever handed out.
    pub const LOCAL_USER_IDS_RESERVED: &str = "local_user_ids_reserved";
    /// Entries in all queues.
    pub const QUEUE_PENDING: &str = "queue_pending";
    /// Queue entries ever dropped by overflow or expiry.
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// Every message id up to this one is in `convid_msgid` and `senderid_clientid_msgid`
    /// (absent: 0).
    pub const INDEXED_TO: &str = "indexed_to";
    /// The seq of the newest batch this file holds: the journal's records after it are not in
    /// it yet (absent: 0). Written by every batch, not only by checkpoints: a crash leaves the
    /// file at its last checkpoint, but closing redb makes the batches committed since then
    /// durable too, and they must not be replayed a second time at the next start.
    pub const APPLIED_SEQ: &str = "applied_seq";
    /// Ties `indaba.journal` to this file: a journal with another id is not replayed here.
    /// A backup leaves it out, so a restored copy starts a journal of its own.
    pub const JOURNAL_ID: &str = "journal_id";
    /// The id the next webhook event gets.
    pub const NEXT_EVENT_ID: &str = "next_event_id";
    /// No webhook event id at or above this one was ever handed out.
    pub const EVENT_IDS_RESERVED: &str = "event_ids_reserved";
    /// Events in `eventid_event` (absent: 0).
    pub const EVENTS_PENDING: &str = "events_pending";
    /// Webhook events ever dropped by `webhooks.max_pending` (absent: 0).
    pub const EVENTS_DROPPED: &str = "events_dropped";
}

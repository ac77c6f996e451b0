//! Creating a conversation, de-duplicated: the same participants, property and booking give
//! the conversation that exists.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{OpError, Tables, WriteError, rd, wr};
use crate::model::{ConversationRecord, MembershipRecord};
use crate::store::records::encode;

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

/// Result of [`crate::store::WriterHandle::create_conversation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCreated {
    pub id: u64,
    /// False when an identical conversation already existed and is returned instead.
    pub created: bool,
    /// This op recorded the conversation's first host key ([`host`]): its `host_id`, null
    /// until now, changed in every participant's view.
    pub host_id_set: bool,
}

/// The conversation the host app's conversation id `key` names: the one recorded for it, else
/// the one-to-one conversation of `sender` and `receiver` (created if absent), recorded for it
/// from now on. The conversation's `host_id` is the first key recorded for it. Without a
/// receiver an unknown key names nothing.
pub(super) fn host(
    t: &mut Tables<'_>,
    key: u64,
    sender: u64,
    receiver: Option<u64>,
    now_ms: u64,
) -> Result<ConversationCreated, OpError> {
    if let Some(id) = t.host_conversations.get(key).map_err(rd)? {
        return Ok(ConversationCreated {
            id: id.value(),
            created: false,
            host_id_set: false,
        });
    }
    let Some(receiver) = receiver else {
        return Err(WriteError::ConversationNotFound.into());
    };
    let found = create(
        t,
        NewConversation {
            creator: sender,
            participants: vec![receiver],
            property: None,
            booking: None,
            subject: None,
        },
        now_ms,
    )?;
    let first_key = t.conversation_host_ids.get(found.id).map_err(rd)?.is_none();
    t.host_conversations.insert(key, found.id).map_err(wr)?;
    if first_key {
        t.conversation_host_ids.insert(found.id, key).map_err(wr)?;
    }
    Ok(ConversationCreated {
        host_id_set: first_key,
        ..found
    })
}

/// Creates the conversation, or finds the one with the same participants, property and
/// booking. Every participant gets a membership.
pub(super) fn create(
    t: &mut Tables<'_>,
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
    if let Some(existing) = t.conversation_keys.get(key.as_slice()).map_err(rd)? {
        return Ok(ConversationCreated {
            id: existing.value(),
            created: false,
            host_id_set: false,
        });
    }
    let id = t.next_conversation_id;
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
    // Nothing read, nothing archived; the activity time is the conversation's.
    let membership = MembershipRecord::default();
    t.next_conversation_id += 1;
    t.conversation_keys.insert(key.as_slice(), id).map_err(wr)?;
    for user in &record.participants {
        t.membership_cache.put((*user, id), membership);
    }
    t.conversation_cache.put(id, record);
    t.conversations_created.push((id, new.creator));
    Ok(ConversationCreated {
        id,
        created: true,
        host_id_set: false,
    })
}

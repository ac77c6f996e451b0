//! Creating and changing conversations, and telling the users' notification sockets
//! (`conversation_updated`).

use super::ChatError;
use super::send::check_id;
use crate::config::WebhookEvent;
use crate::error::Code;
use crate::events::ChatEvent;
use crate::state::AppState;
use crate::store::WriteError;
use crate::store::{ConversationCreated, NewConversation, Op};
use crate::views::ConversationJson;

/// Most participants a conversation may have.
pub const MAX_PARTICIPANTS: usize = 100;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 1024;

/// A conversation as a user asked to create it.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The others in it; the creator is always in it too.
    pub participants: Vec<u64>,
    /// The host app's opaque ids.
    pub property: Option<u64>,
    pub booking: Option<u64>,
    pub subject: Option<String>,
}

/// A conversation created, or the existing one with the same participants, property and
/// booking.
#[derive(Debug)]
pub struct Created {
    /// As the creator sees it.
    pub conversation: ConversationJson,
    /// False when it existed already.
    pub created: bool,
}

/// Creates a conversation of `creator` (de-duplicated by the writer). Everyone in a new one
/// hears of it on their notification sockets ([`make`]).
pub async fn create(
    state: &AppState,
    creator: u64,
    req: CreateRequest,
) -> Result<Created, ChatError> {
    let mut everyone = req.participants.clone();
    everyone.push(creator);
    everyone.sort_unstable();
    everyone.dedup();
    // The list as sent is held to the bound too (the OpenAPI document's `maxItems`), not only
    // the participants it names: 101 copies of one id are refused like 101 ids.
    if req.participants.is_empty()
        || req.participants.len() > MAX_PARTICIPANTS
        || everyone.len() > MAX_PARTICIPANTS
    {
        return Err(ChatError::invalid(
            Code::InvalidParticipants,
            format!("a conversation has 2 to {MAX_PARTICIPANTS} participants, you included"),
        ));
    }
    for id in &req.participants {
        check_id(*id, "participants")?;
    }
    for (id, field) in [(req.property, "property"), (req.booking, "booking")] {
        if let Some(id) = id {
            check_id(id, field)?;
        }
    }
    if let Some(subject) = &req.subject
        && subject.len() > MAX_SUBJECT_BYTES
    {
        return Err(ChatError::invalid(
            Code::SubjectTooLong,
            format!("subject is longer than {MAX_SUBJECT_BYTES} bytes"),
        ));
    }
    let store = &state.store;
    let subject = req
        .subject
        .filter(|s| !s.is_empty())
        .map(|s| store.keyring().seal(s.as_bytes()));
    let new = NewConversation {
        creator,
        participants: req.participants,
        property: req.property,
        booking: req.booking,
        subject,
    };
    let made = make(state, Op::CreateConversation(new)).await?;
    let conversation = view(state, creator, made.id).await?;
    Ok(Created {
        conversation,
        created: made.created,
    })
}

/// The one-to-one conversation of `a` and `b`, created if absent: where a service send
/// without a conversation goes. Called only for a message that passed its checks.
pub(super) async fn one_to_one(state: &AppState, a: u64, b: u64) -> Result<u64, ChatError> {
    let new = NewConversation {
        creator: a,
        participants: vec![b],
        property: None,
        booking: None,
        subject: None,
    };
    Ok(make(state, Op::CreateConversation(new)).await?.id)
}

/// Where a service send's `conversation_id` goes (contract 8.3): conversation `id` itself if
/// `sender` (and `receiver`, if named) are in it; otherwise `id` is the host app's own id for a
/// conversation of the two — the one recorded for it, else their one-to-one conversation,
/// created if absent and recorded for `id` from now on. Answers the conversation and, when
/// `id` was the host's, `id`. Called only for a message that passed its checks.
pub(super) async fn own_or_host(
    state: &AppState,
    sender: u64,
    receiver: Option<u64>,
    id: u64,
) -> Result<(u64, Option<u64>), ChatError> {
    let own = state
        .hub
        .participants(id)
        .await
        .map_err(WriteError::from)?
        .is_some_and(|p| p.contains(&sender) && receiver.is_none_or(|r| p.contains(&r)));
    if own {
        return Ok((id, None));
    }
    let op = Op::HostConversation {
        key: id,
        sender,
        receiver,
    };
    Ok((make(state, op).await?.id, Some(id)))
}

/// Stores `op`, which makes a conversation or finds the one that exists, and announces one it
/// made: to the host app (webhook `conversation.created`) and to everyone in it
/// (`conversation_updated` on their notification sockets). Every way of making a single
/// conversation goes through here, so each is announced the same way, once; a broadcast makes
/// them in bulk and announces them alike from what its op reports (`super::broadcast`).
///
/// A host key recorded for a conversation that existed sets its `host_id`, a field of every
/// participant's view: they are told too (`conversation_updated` only: the contract's webhook
/// events name no change of a conversation, only its creation).
async fn make(state: &AppState, op: Op) -> Result<ConversationCreated, ChatError> {
    let emit = super::webhook::emit(state, &[WebhookEvent::ConversationCreated]);
    let made: ConversationCreated = state.store.writer().request_emitting(op, emit).await?;
    if made.created || made.host_id_set {
        announce(state, made.id).await;
    }
    Ok(made)
}

/// `conversation_updated` to each participant of conversation `id`, with their own view of it.
/// The conversation is stored already: a failure to read it back loses only the event, which
/// is logged, and the caller's request goes on.
async fn announce(state: &AppState, id: u64) {
    let views = state
        .store
        .read(move |r| {
            let Some(record) = r.conversation(id)? else {
                return Ok(Vec::new());
            };
            let mut views = Vec::with_capacity(record.participants.len());
            for user in record.participants {
                if let Some(view) = r.conversation_view(user, id)? {
                    views.push((user, ConversationJson::from(view)));
                }
            }
            Ok(views)
        })
        .await;
    match views {
        Ok(views) => {
            for (user, conversation) in views {
                tell(state, user, &conversation);
            }
        }
        Err(e) => tracing::error!(
            conversation = id,
            error = %e,
            "a new or changed conversation was not announced to its participants' notification sockets"
        ),
    }
}

/// Archives or unarchives conversation `id` in `user`'s own view.
pub async fn set_archived(
    state: &AppState,
    user: u64,
    id: u64,
    archived: bool,
) -> Result<ConversationJson, ChatError> {
    state
        .store
        .writer()
        .set_archived(user, id, archived)
        .await?;
    updated(state, user, id).await
}

/// `user`'s view of conversation `id`; not found unless they are in it.
pub async fn view(state: &AppState, user: u64, id: u64) -> Result<ConversationJson, ChatError> {
    let view = state
        .store
        .read(move |r| r.conversation_view(user, id))
        .await?
        .ok_or(WriteError::ConversationNotFound)?;
    Ok(ConversationJson::from(view))
}

/// `user`'s view of `id` after a change of theirs, also told to their notification sockets.
pub(super) async fn updated(
    state: &AppState,
    user: u64,
    id: u64,
) -> Result<ConversationJson, ChatError> {
    let conversation = view(state, user, id).await?;
    tell(state, user, &conversation);
    Ok(conversation)
}

/// `conversation_updated` with `conversation` (`user`'s own view) to `user`'s notification
/// sockets.
pub(super) fn tell(state: &AppState, user: u64, conversation: &ConversationJson) {
    let event = ChatEvent::ConversationUpdated { conversation };
    state.hub.conversation_updated(user, event.to_bytes());
}

//! Which webhook events a write of the domain asks the store for (none while webhooks are off),
//! and, for a message, which of its recipients were online: the store knows nothing of sockets,
//! so that is read from the hub's presence here and travels with the write.

use super::ChatError;
use crate::config::WebhookEvent;
use crate::state::AppState;
use crate::store::Emit;

/// The [`Emit`] for a write that may cause any of `kinds` and stores no message.
pub(super) fn emit(state: &AppState, kinds: &[WebhookEvent]) -> Option<Emit> {
    state.events.as_ref()?.emit(kinds, Vec::new())
}

/// The [`Emit`] for a write that stores messages to `recipients` (and may create their
/// conversations).
pub(super) fn emit_to(state: &AppState, recipients: &[u64]) -> Option<Emit> {
    let policy = state.events.as_ref()?;
    let kinds = [
        WebhookEvent::MessageCreated,
        WebhookEvent::ConversationCreated,
    ];
    if !kinds.iter().any(|k| policy.wants(*k)) {
        return None;
    }
    let online = if policy.wants(WebhookEvent::MessageCreated) {
        online(state, recipients)
    } else {
        Vec::new()
    };
    policy.emit(&kinds, online)
}

/// The [`Emit`] for a message from `sender` in `conversation`. Its participants come from the
/// hub's cache (a store read the first time only); a conversation that does not exist gets
/// none, and the writer refuses the message anyway.
pub(super) async fn emit_message(
    state: &AppState,
    conversation: u64,
    sender: u64,
) -> Result<Option<Emit>, ChatError> {
    let Some(policy) = &state.events else {
        return Ok(None);
    };
    if !policy.wants(WebhookEvent::MessageCreated) {
        return Ok(None);
    }
    let participants = state.hub.participants(conversation).await?;
    let recipients: Vec<u64> = participants
        .iter()
        .flat_map(|p| p.iter())
        .copied()
        .filter(|u| *u != sender)
        .collect();
    Ok(policy.emit(&[WebhookEvent::MessageCreated], online(state, &recipients)))
}

/// Those of `users` with a socket open.
fn online(state: &AppState, users: &[u64]) -> Vec<u64> {
    users
        .iter()
        .copied()
        .filter(|u| state.hub.presence.status(*u).online)
        .collect()
}

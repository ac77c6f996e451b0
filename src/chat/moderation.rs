//! What operators do to users and messages (contract section 9), whether they came by the
//! admin API or by `indaba admin` over the admin socket: disable and enable a user, delete a
//! message, erase a user. The store makes each durable ([`crate::store::ops::moderation`]);
//! this module makes it take effect at once: the user directory refuses a disabled user's
//! tokens, the hub closes their sockets and tells participants what was deleted.

use crate::state::AppState;
use crate::store::{Erased, Tombstoned};

use super::ChatError;

/// The close code a disabled or erased user's sockets get (the contract's 4403, as
/// `crate::ws::frames::close::FORBIDDEN`, which this layer does not import).
const CLOSE_FORBIDDEN: u16 = 4403;
const CLOSE_REASON: &str = "account disabled";

/// Disables (`true`) or enables `user`, durably. Disabling refuses their tokens from this
/// moment (before the commit: a request that races it is refused rather than served) and
/// closes their open sockets; a failed commit takes that back.
pub async fn set_disabled(state: &AppState, user: u64, disabled: bool) -> Result<(), ChatError> {
    let was = state.users.is_disabled(user);
    if disabled {
        state.users.set_disabled(user, true);
    }
    if let Err(e) = state.store.writer().set_disabled(user, disabled).await {
        state.users.set_disabled(user, was);
        return Err(e.into());
    }
    state.users.set_disabled(user, disabled);
    let sockets = if disabled {
        state.hub.close_user(user, CLOSE_FORBIDDEN, CLOSE_REASON)
    } else {
        // An erased user enabled again sends under a new data key.
        state.store.forget_data_key(user);
        0
    };
    tracing::info!(
        user,
        disabled,
        sockets,
        "user disabled or enabled by an operator"
    );
    Ok(())
}

/// Deletes message `id`: a tombstone, durably (and out of the journal), and the
/// participants' sockets hear `message_deleted`.
pub async fn delete_message(state: &AppState, id: u64) -> Result<Tombstoned, ChatError> {
    let deleted = state.store.writer().delete_message(id).await?;
    state.hub.messages_deleted(
        deleted.conversation,
        &deleted.participants,
        &deleted.message_ids,
    );
    tracing::info!(
        message = id,
        conversation = deleted.conversation,
        "message deleted by an operator"
    );
    Ok(deleted)
}

/// Erases `user` on request (GDPR art. 17): see [`crate::store::ops::moderation`] and
/// docs/STORAGE.md, "Erasure". They are refused and their sockets closed first; once durable,
/// their data key is dropped from memory and the participants' sockets hear which messages
/// became tombstones. Logged at WARN with the user id: after restoring a backup older than the
/// erasure, an operator must erase the same ids again (docs/OPERATIONS.md).
pub async fn erase(state: &AppState, user: u64) -> Result<Erased, ChatError> {
    let was = state.users.is_disabled(user);
    state.users.set_disabled(user, true);
    let sockets = state.hub.close_user(user, CLOSE_FORBIDDEN, CLOSE_REASON);
    let erased = match state.store.writer().erase_user(user).await {
        Ok(erased) => erased,
        Err(e) => {
            state.users.set_disabled(user, was);
            return Err(e.into());
        }
    };
    state.store.forget_data_key(user);
    state.users.erase(user);
    for t in &erased.tombstoned {
        state
            .hub
            .messages_deleted(t.conversation, &t.participants, &t.message_ids);
    }
    let messages: usize = erased.tombstoned.iter().map(|t| t.message_ids.len()).sum();
    tracing::warn!(
        user,
        messages,
        queue_entries = erased.queue_entries,
        conversations = erased.memberships,
        sockets,
        "user erased by an operator: re-run this erasure after restoring any backup older than now"
    );
    Ok(erased)
}

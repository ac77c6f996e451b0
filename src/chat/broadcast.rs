//! One message to many users (the service API's broadcast): each gets it with priority high
//! in their one-to-one conversation with the sender (created when absent, and then announced
//! like any new conversation), checked like any send.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::ChatError;
use super::send::{check_content, check_id};
use crate::error::Code;
use crate::model::{MessageBody, Priority};
use crate::state::AppState;
use crate::store::WriteError;
use crate::store::records::encode;
use crate::store::{Broadcast, BroadcastConversation, Broadcasted, Op};
use crate::views::ConversationJson;

/// Most recipients of one broadcast.
pub const MAX_RECIPIENTS: usize = 100_000;
/// Recipients stored per commit.
const CHUNK: usize = 2_000;

/// A broadcast as the service asked for it.
#[derive(Debug, Clone, Default)]
pub struct BroadcastRequest {
    pub sender: u64,
    /// Duplicates and the sender are left out.
    pub recipients: Vec<u64>,
    pub text: String,
    /// Defaults to `system`.
    pub message_type: Option<String>,
    pub metadata: Option<Value>,
}

/// Stores and delivers a broadcast; answers how many users got it.
pub async fn broadcast(state: &AppState, req: BroadcastRequest) -> Result<u64, ChatError> {
    let sender = check_id(req.sender, "sender")?;
    let content = check_content(
        &state.config.limits,
        req.text,
        req.message_type,
        crate::model::SYSTEM_MESSAGE_TYPE,
        req.metadata,
    )?;
    if req.recipients.is_empty() || req.recipients.len() > MAX_RECIPIENTS {
        return Err(ChatError::invalid_field(
            Code::InvalidRequest,
            "user_ids",
            format!("`user_ids` must list 1 to {MAX_RECIPIENTS} users"),
        ));
    }
    let mut recipients = Vec::with_capacity(req.recipients.len());
    let mut seen = HashSet::with_capacity(req.recipients.len());
    for id in req.recipients {
        check_id(id, "user_ids")?;
        if id != sender && seen.insert(id) {
            recipients.push(id);
        }
    }
    let plain = content.body;
    // One seal serves every copy: the copies are the same encryption of the same text.
    let body = Arc::new(
        state
            .store
            .seal_for(sender, &encode(&plain).map_err(WriteError::from)?)
            .await?,
    );
    let plain = Arc::new(plain);
    // In chunks, so a big broadcast does not hold every other send behind one commit. A
    // failure part-way leaves the chunks before it delivered (and says so).
    let mut delivered = 0;
    for chunk in recipients.chunks(CHUNK) {
        let op = Op::Broadcast(Broadcast {
            sender,
            message_type: content.message_type.clone(),
            priority: Priority::High,
            recipients: chunk.to_vec(),
            body: body.clone(),
            plain: plain.clone(),
        });
        let emit = super::webhook::emit_to(state, chunk);
        let result: Result<Broadcasted, _> = state.store.writer().request_emitting(op, emit).await;
        match result {
            Ok(done) => {
                delivered += done.delivered;
                state.metrics.messages_accepted.inc_by(done.delivered);
                announce(state, &done.created, &body, &plain);
            }
            Err(e) if delivered > 0 => {
                tracing::error!(error = %e, delivered, "broadcast failed part-way");
                return Err(ChatError::BroadcastPartial {
                    delivered,
                    source: e,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(delivered)
}

/// `conversation_updated` to each participant of the conversations one chunk of a broadcast
/// created, with their own view, as [`super::conversations`] announces every other new
/// conversation (the webhook's `conversation.created` is written by the op itself). The views
/// are built from what the op reported, without reading the store back, and only for users
/// with a notification socket open: a first broadcast to 10,000 users builds none for those
/// who are not listening.
fn announce(
    state: &AppState,
    created: &[BroadcastConversation],
    sealed: &[u8],
    plain: &MessageBody,
) {
    if created.is_empty() {
        return;
    }
    let members = created
        .iter()
        .flat_map(|c| c.memberships.iter().map(|(u, _)| *u));
    let listening = state.hub.with_notification_sockets(members);
    for conversation in created {
        for (user, _) in &conversation.memberships {
            if listening.contains(user)
                && let Some(view) = conversation.view(*user, sealed, plain)
            {
                super::conversations::tell(state, *user, &ConversationJson::from(view));
            }
        }
    }
}

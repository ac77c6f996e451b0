//! Read state: a per-(user, conversation) read marker. Reading message N reads everything
//! before it in its conversation.

use std::collections::HashMap;

use super::ChatError;
use crate::config::WebhookEvent;
use crate::error::Code;
use crate::hub::SessionId;
use crate::state::AppState;
use crate::store::{MarkedRead, Op, WriteError};
use crate::views::ConversationJson;

/// Most message ids in one read receipt.
pub const MAX_RECEIPT_IDS: usize = 500;

/// Checks the ids of a receipt (1 to [`MAX_RECEIPT_IDS`]), before [`mark_read`] is called off
/// the caller's path: a socket answers a bad receipt in the order it read it.
pub fn check_receipt(message_ids: &[u64]) -> Result<(), ChatError> {
    if message_ids.is_empty() || message_ids.len() > MAX_RECEIPT_IDS {
        return Err(ChatError::invalid(
            Code::InvalidMessage,
            format!("`message_ids` must list 1 to {MAX_RECEIPT_IDS} ids"),
        ));
    }
    Ok(())
}

/// Marks `message_ids` read by `reader` (only those in conversation `only` when given; ids the
/// reader cannot see are skipped) and relays the receipts: to the senders, to the
/// conversation's sockets, and the reader's new unread count to their sockets other than
/// `from`. Not found when none of the ids is the reader's to read.
pub async fn mark_read(
    state: &AppState,
    reader: u64,
    message_ids: &[u64],
    only: Option<u64>,
    from: Option<SessionId>,
) -> Result<(), ChatError> {
    check_receipt(message_ids)?;
    let ids = message_ids.to_vec();
    // (conversation, message id, sender) of every visible message named.
    let found = state
        .store
        .read(move |r| {
            let mut found = Vec::new();
            for id in ids {
                let Some(record) = r.message(id)? else {
                    continue;
                };
                if r.membership(reader, record.conversation)?.is_some() {
                    found.push((record.conversation, id, record.sender));
                }
            }
            Ok(found)
        })
        .await?;
    let mut by_conversation: HashMap<u64, HashMap<u64, Vec<u64>>> = HashMap::new();
    for (conv, id, sender) in found {
        if only.is_none_or(|c| c == conv) {
            by_conversation
                .entry(conv)
                .or_default()
                .entry(sender)
                .or_default()
                .push(id);
        }
    }
    if by_conversation.is_empty() {
        return Err(WriteError::ConversationNotFound.into());
    }
    for (conv, by_sender) in by_conversation {
        let newest = by_sender.values().flatten().copied().max().unwrap_or(0);
        let _: MarkedRead = state
            .store
            .writer()
            .request_emitting(
                Op::MarkRead {
                    user: reader,
                    conversation: conv,
                    up_to: Some(newest),
                },
                super::webhook::emit(state, &[WebhookEvent::MessageRead]),
            )
            .await?;
        // Relayed even when the marker was already past (a reply reads what came before):
        // the senders still learn these ids were seen. The socket's frame budget and the id
        // cap bound what one client can make others receive.
        state
            .hub
            .read_receipt(reader, conv, &by_sender, crate::time::now_ms(), from);
    }
    Ok(())
}

/// Moves `user`'s read marker in conversation `id` to its newest message; answers with the
/// user's view of it, also told to their notification sockets.
pub async fn mark_all_read(
    state: &AppState,
    user: u64,
    id: u64,
) -> Result<ConversationJson, ChatError> {
    let _: MarkedRead = state
        .store
        .writer()
        .request_emitting(
            Op::MarkRead {
                user,
                conversation: id,
                up_to: None,
            },
            super::webhook::emit(state, &[WebhookEvent::MessageRead]),
        )
        .await?;
    super::conversations::updated(state, user, id).await
}

//! The one path every message takes, whatever it came in by (REST, either WebSocket dialect,
//! the service API): validate → seal → commit (group commit) → fan-out.
//!
//! Fan-out is not done here: the writer reports each committed batch, in commit order, to the
//! [`crate::hub`], so every socket sees messages in id order however many senders race.
//!
//! Sending is split in two so a WebSocket can pipeline: [`submit`] puts the message in the
//! writer's queue (in the order the socket read it), [`Submitted::finish`] waits for it to be
//! durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;
use crate::model::{MessageBody, MessageRecord, Priority};
use crate::store::records::encode;
use crate::store::{MessageAppended, NewMessage, PendingAppend, StoreError, WriteError};

/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Longest `message_type`.
pub const MAX_MESSAGE_TYPE_BYTES: usize = 32;

/// A message as a client asked to send it.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    pub conversation: u64,
    pub receiver: Option<u64>,
    pub text: String,
    pub message_type: Option<String>,
    pub priority: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub client_id: Option<String>,
}

/// Who is sending, and from where.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    pub user: u64,
    /// Subject to `limits.messages_per_second` (the service API is exempt).
    pub rate_limited: bool,
    /// The WebSocket session it came from, if any (it gets `message_sent`, not an echo).
    pub origin: Option<u64>,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{detail}")]
    Invalid { code: &'static str, detail: String },
    #[error("sending too fast; slow down")]
    RateLimited { retry_after: Duration },
    #[error("this client_id was already used for a different message")]
    ClientIdConflict,
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn invalid(code: &'static str, detail: impl Into<String>) -> SendError {
    SendError::Invalid {
        code,
        detail: detail.into(),
    }
}

/// A message that is durable (or was already, for a repeated `client_id`).
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: u64,
    pub record: MessageRecord,
    pub body: Arc<MessageBody>,
    /// True when a repeated `client_id` named this earlier message.
    pub duplicate: bool,
}

/// Validates and seals a request; spends the sender's rate budget only when it is well-formed.
pub fn prepare(
    state: &AppState,
    sender: Sender,
    req: SendRequest,
) -> Result<NewMessage, SendError> {
    validate(state, sender, req).map_err(|e| rejected(state, e))
}

fn validate(state: &AppState, sender: Sender, req: SendRequest) -> Result<NewMessage, SendError> {
    let limits = &state.config.limits;
    for id in std::iter::once(req.conversation).chain(req.receiver) {
        if !(1..crate::MAX_ID).contains(&id) {
            return Err(invalid(
                "invalid_request",
                format!("id {id} is out of range (1 to 2^53-1)"),
            ));
        }
    }
    if req.text.trim().is_empty() {
        return Err(invalid("invalid_request", "field `text` may not be blank"));
    }
    if req.text.len() > limits.max_text_bytes {
        return Err(invalid(
            "text_too_long",
            format!(
                "field `text` is longer than {} bytes",
                limits.max_text_bytes
            ),
        ));
    }
    let message_type = req.message_type.unwrap_or_else(|| "text".to_owned());
    if message_type.is_empty()
        || message_type.len() > MAX_MESSAGE_TYPE_BYTES
        || !message_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(
            "invalid_request",
            format!(
                "field `message_type` must be 1 to {MAX_MESSAGE_TYPE_BYTES} characters of a-z, 0-9 and _"
            ),
        ));
    }
    let priority = match req.priority.as_deref() {
        None => Priority::Normal,
        Some(p) => Priority::parse(p).ok_or_else(|| {
            invalid(
                "invalid_request",
                "field `priority` must be \"high\", \"normal\" or \"low\"",
            )
        })?,
    };
    let metadata_json = match req.metadata {
        None | Some(serde_json::Value::Null) => "{}".to_owned(),
        Some(value @ serde_json::Value::Object(_)) => value.to_string(),
        Some(_) => {
            return Err(invalid(
                "invalid_request",
                "field `metadata` must be a JSON object",
            ));
        }
    };
    if metadata_json.len() > limits.max_text_bytes {
        return Err(invalid(
            "metadata_too_large",
            format!(
                "field `metadata` is larger than {} bytes",
                limits.max_text_bytes
            ),
        ));
    }
    if let Some(cid) = &req.client_id
        && (cid.is_empty() || cid.len() > MAX_CLIENT_ID_BYTES)
    {
        return Err(invalid(
            "invalid_request",
            format!("field `client_id` must be 1 to {MAX_CLIENT_ID_BYTES} bytes"),
        ));
    }
    if sender.rate_limited {
        state
            .send_limiter
            .take(&sender.user)
            .map_err(|retry_after| SendError::RateLimited { retry_after })?;
    }
    let plain = MessageBody {
        text: req.text,
        metadata_json,
    };
    let body = state
        .store
        .keyring()
        .seal(&encode(&plain).map_err(WriteError::from)?);
    Ok(NewMessage {
        conversation: req.conversation,
        sender: sender.user,
        receiver: req.receiver,
        message_type,
        priority,
        client_id: req.client_id,
        body,
        plain: Arc::new(plain),
        origin: sender.origin,
    })
}

/// A message in the writer's queue.
#[derive(Debug)]
pub struct Submitted {
    pending: PendingAppend,
    request: NewMessage,
}

/// Queues a prepared message for the next commit.
pub async fn submit(state: &AppState, new: NewMessage) -> Result<Submitted, SendError> {
    let mut queued = new.clone();
    // The writer needs the sealed body; the copy kept here only compares duplicates.
    queued.body = Vec::new();
    let pending = state.store.writer().submit_append(new).await?;
    Ok(Submitted {
        pending,
        request: queued,
    })
}

impl Submitted {
    /// Waits until the message is durable. A repeated `client_id` answers with the first
    /// message if the content is the same, [`SendError::ClientIdConflict`] if not.
    ///
    /// Counts the outcome once it is known (docs/API.md, "Stats"): a message stored, or one
    /// whose commit failed, is processed (the writer counts the failure as a persistence
    /// failure too, so processed = persisted + failures); a refusal is counted by reason; an
    /// idempotent repeat counts nowhere, as its first send already did.
    pub async fn finish(self, state: &AppState) -> Result<Sent, SendError> {
        let result = self.wait(state).await;
        match &result {
            Ok(sent) if sent.duplicate => {}
            Ok(_) => {
                state.metrics.messages_accepted.inc();
            }
            // The writer stopped before it answered: not taken on, the sender hears 503.
            Err(SendError::Write(WriteError::Store(StoreError::Closed))) => {
                state.metrics.reject("shutting_down")
            }
            Err(SendError::Write(WriteError::Store(_))) => {
                state.metrics.messages_accepted.inc();
            }
            Err(e) => state.metrics.reject(crate::error::event_code(e)),
        }
        result
    }

    async fn wait(self, state: &AppState) -> Result<Sent, SendError> {
        let request = self.request;
        match self.pending.done().await? {
            MessageAppended::Stored { id, record } => Ok(Sent {
                id,
                record,
                body: request.plain,
                duplicate: false,
            }),
            MessageAppended::Duplicate { id } => {
                let user = request.sender;
                let first = state
                    .store
                    .read(move |r| r.visible_message(user, id))
                    .await
                    .map_err(WriteError::from)?
                    .ok_or(WriteError::ConversationNotFound)?;
                let same = first.record.conversation == request.conversation
                    && first.body == *request.plain
                    && first.record.message_type == request.message_type
                    && first.record.priority == request.priority
                    && (request.receiver.is_none() || first.record.receiver == request.receiver);
                if !same {
                    return Err(SendError::ClientIdConflict);
                }
                Ok(Sent {
                    id,
                    record: first.record,
                    body: Arc::new(first.body),
                    duplicate: true,
                })
            }
        }
    }
}

/// Validates, commits and waits: the whole path for callers that need not pipeline.
pub async fn send(state: &AppState, sender: Sender, req: SendRequest) -> Result<Sent, SendError> {
    let new = prepare(state, sender, req)?;
    submit(state, new).await?.finish(state).await
}

/// Counts a refused message by reason.
fn rejected(state: &AppState, e: SendError) -> SendError {
    state.metrics.reject(crate::error::event_code(&e));
    e
}

/// Marks `message_ids` read by `reader` (only those in `only` when given; ids the reader cannot
/// see are skipped) and relays the receipts. Reading message N reads everything before it in
/// its conversation.
pub async fn mark_read(
    state: &AppState,
    reader: u64,
    message_ids: &[u64],
    only: Option<u64>,
    from: Option<crate::hub::SessionId>,
) -> Result<(), SendError> {
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
        .await
        .map_err(WriteError::from)?;
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
        state
            .store
            .writer()
            .mark_read(reader, conv, Some(newest))
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

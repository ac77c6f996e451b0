//! Sending a message, the one path for every way in: REST `POST /messages/`, `chat_message`
//! and the conversation dialect's `message` on a socket, and the service API's send.
//!
//! validate ([`SendRequest`], all of it, before anything is written) → spend the sender's rate
//! budget → find the conversation (the one-to-one conversation of a service send is created
//! here, only once the message is known to be good) → seal → commit.
//!
//! Sending is split in two so a WebSocket can pipeline: [`prepare`] and [`submit`] put the
//! message in the writer's queue (in the order the socket read it), [`Submitted::finish`] waits
//! for it to be durable.

use std::sync::Arc;

use serde_json::Value;

use super::ChatError;
use crate::config::LimitsConfig;
use crate::error::Code;
use crate::model::{MessageBody, MessageRecord, Priority};
use crate::state::AppState;
use crate::store::records::encode;
use crate::store::{MessageAppended, NewMessage, PendingAppend};
use crate::store::{StoreError, WriteError};

/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Longest `message_type`.
pub const MAX_MESSAGE_TYPE_BYTES: usize = 32;

/// A message as a client asked to send it, whatever it came in by.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    /// `None`: the sender's and the receiver's one-to-one conversation, created if absent (a
    /// service send without `conversation_id`).
    pub conversation: Option<u64>,
    /// Defaults to the other participant of a two-person conversation.
    pub receiver: Option<u64>,
    pub text: String,
    /// Defaults to `text`.
    pub message_type: Option<String>,
    /// `high`, `normal` (the default) or `low`.
    pub priority: Option<String>,
    /// A JSON object, or none.
    pub metadata: Option<Value>,
    /// The sender's idempotency key.
    pub client_id: Option<String>,
    /// A `conversation` that is not one of the sender's and the receiver's is the host app's
    /// own id for it (service sends, contract 8.3).
    pub host_keys: bool,
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

/// A message that is durable (or was already, for a repeated `client_id`).
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: u64,
    pub record: MessageRecord,
    pub body: Arc<MessageBody>,
    /// True when a repeated `client_id` named this earlier message.
    pub duplicate: bool,
    /// The host app's id the request named the conversation by, if it did
    /// ([`SendRequest::host_keys`]).
    pub host_key: Option<u64>,
}

/// What every message carries, checked: shared by sends and broadcasts.
#[derive(Debug)]
pub(super) struct Content {
    pub body: MessageBody,
    pub message_type: String,
}

/// `id` of request field `field` if it is a valid id (1 to 2^53-1).
pub(super) fn check_id(id: u64, field: &'static str) -> Result<u64, ChatError> {
    if (1..crate::MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(ChatError::invalid_field(
            Code::InvalidRequest,
            field,
            format!("field `{field}`: id {id} is out of range (1 to 2^53-1)"),
        ))
    }
}

/// Checks a message's text, type (`default_type` if none) and metadata.
pub(super) fn check_content(
    limits: &LimitsConfig,
    text: String,
    message_type: Option<String>,
    default_type: &str,
    metadata: Option<Value>,
) -> Result<Content, ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::invalid_field(
            Code::InvalidRequest,
            "text",
            "field `text` may not be blank",
        ));
    }
    if text.len() > limits.max_text_bytes {
        return Err(ChatError::invalid(
            Code::TextTooLong,
            format!(
                "field `text` is longer than {} bytes",
                limits.max_text_bytes
            ),
        ));
    }
    let message_type = message_type.unwrap_or_else(|| default_type.to_owned());
    if message_type.is_empty()
        || message_type.len() > MAX_MESSAGE_TYPE_BYTES
        || !message_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ChatError::invalid_field(
            Code::InvalidRequest,
            "message_type",
            format!(
                "field `message_type` must be 1 to {MAX_MESSAGE_TYPE_BYTES} characters of a-z, 0-9 and _"
            ),
        ));
    }
    let metadata_json = match metadata {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(value @ Value::Object(_)) => value.to_string(),
        Some(_) => {
            return Err(ChatError::invalid_field(
                Code::InvalidRequest,
                "metadata",
                "field `metadata` must be a JSON object",
            ));
        }
    };
    if metadata_json.len() > limits.max_text_bytes {
        return Err(ChatError::invalid(
            Code::MetadataTooLarge,
            format!(
                "field `metadata` is larger than {} bytes",
                limits.max_text_bytes
            ),
        ));
    }
    Ok(Content {
        body: MessageBody {
            text,
            metadata_json,
        },
        message_type,
    })
}

/// Where a checked message goes.
#[derive(Debug)]
enum Target {
    Conversation(u64),
    /// The sender's and this receiver's one-to-one conversation.
    OneToOne(u64),
}

/// A request that passed every check.
#[derive(Debug)]
struct Checked {
    target: Target,
    host_keys: bool,
    receiver: Option<u64>,
    content: Content,
    priority: Priority,
    client_id: Option<String>,
}

impl SendRequest {
    /// Every check of a send, with no effect: nothing is written before it passes.
    fn check(self, limits: &LimitsConfig, sender: &Sender) -> Result<Checked, ChatError> {
        check_id(sender.user, "sender")?;
        if let Some(id) = self.conversation {
            check_id(id, "conversation")?;
        }
        if let Some(id) = self.receiver {
            check_id(id, "receiver")?;
        }
        let target = match (self.conversation, self.receiver) {
            (Some(id), _) => Target::Conversation(id),
            (None, Some(receiver)) => Target::OneToOne(receiver),
            // Only the service API leaves the conversation out.
            (None, None) => {
                return Err(ChatError::invalid_field(
                    Code::InvalidRequest,
                    "conversation",
                    "give `conversation_id`, or `receiver_id` for the one-to-one conversation",
                ));
            }
        };
        let content = check_content(limits, self.text, self.message_type, "text", self.metadata)?;
        let priority = match self.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => Priority::parse(p).ok_or_else(|| {
                ChatError::invalid_field(
                    Code::InvalidRequest,
                    "priority",
                    "field `priority` must be \"high\", \"normal\" or \"low\"",
                )
            })?,
        };
        if let Some(cid) = &self.client_id
            && (cid.is_empty() || cid.len() > MAX_CLIENT_ID_BYTES)
        {
            return Err(ChatError::invalid_field(
                Code::InvalidRequest,
                "client_id",
                format!("field `client_id` must be 1 to {MAX_CLIENT_ID_BYTES} bytes"),
            ));
        }
        Ok(Checked {
            target,
            host_keys: self.host_keys,
            receiver: self.receiver,
            content,
            priority,
            client_id: self.client_id,
        })
    }
}

/// Validates a request, spends the sender's rate budget (only when it is well-formed), finds
/// its conversation and seals it. A refusal is counted by reason.
pub async fn prepare(
    state: &AppState,
    sender: Sender,
    req: SendRequest,
) -> Result<NewMessage, ChatError> {
    Ok(prepare_keyed(state, sender, req).await?.0)
}

/// [`prepare`], also saying which host app's id named the conversation, if one did.
async fn prepare_keyed(
    state: &AppState,
    sender: Sender,
    req: SendRequest,
) -> Result<(NewMessage, Option<u64>), ChatError> {
    prepare_checked(state, sender, req)
        .await
        .map_err(|e| rejected(state, e))
}

async fn prepare_checked(
    state: &AppState,
    sender: Sender,
    req: SendRequest,
) -> Result<(NewMessage, Option<u64>), ChatError> {
    let checked = req.check(&state.config.limits, &sender)?;
    if sender.rate_limited {
        state
            .send_limiter
            .take(&sender.user)
            .map_err(|retry_after| ChatError::RateLimited { retry_after })?;
    }
    let (conversation, host_key) = match checked.target {
        Target::Conversation(id) if checked.host_keys => {
            super::conversations::own_or_host(state, sender.user, checked.receiver, id).await?
        }
        Target::Conversation(id) => (id, None),
        Target::OneToOne(receiver) => (
            super::conversations::one_to_one(state, sender.user, receiver).await?,
            None,
        ),
    };
    let plain = checked.content.body;
    // Under the sender's data key, which erasing them destroys (docs/STORAGE.md).
    let body = state
        .store
        .seal_for(sender.user, &encode(&plain).map_err(WriteError::from)?)
        .await?;
    let new = NewMessage {
        conversation,
        sender: sender.user,
        receiver: checked.receiver,
        message_type: checked.content.message_type,
        priority: checked.priority,
        client_id: checked.client_id,
        body,
        plain: Arc::new(plain),
        origin: sender.origin,
    };
    Ok((new, host_key))
}

/// A message in the writer's queue.
#[derive(Debug)]
pub struct Submitted {
    pending: PendingAppend,
    request: NewMessage,
}

/// Queues a prepared message for the next commit.
pub async fn submit(state: &AppState, mut new: NewMessage) -> Result<Submitted, ChatError> {
    // The writer needs the sealed body; the copy kept here only compares duplicates, so the
    // body is kept out of the clone rather than copied and dropped.
    let body = std::mem::take(&mut new.body);
    let queued = new.clone();
    new.body = body;
    let emit = super::webhook::emit_message(state, new.conversation, new.sender).await?;
    let pending = state
        .store
        .writer()
        .submit_append_emitting(new, emit)
        .await?;
    Ok(Submitted {
        pending,
        request: queued,
    })
}

impl Submitted {
    /// Whether the writer has answered (so [`Submitted::finish`] needs no wake-up from it).
    pub fn is_answered(&self) -> bool {
        self.pending.is_answered()
    }

    /// Waits until the message is durable. A repeated `client_id` answers with the first
    /// message if the content is the same, [`ChatError::ClientIdConflict`] if not.
    ///
    /// Counts the outcome once it is known (docs/API.md, "Stats"): a message stored, or one
    /// whose commit failed, is processed (the writer counts the failure as a persistence
    /// failure too, so processed = persisted + failures); a refusal is counted by reason; an
    /// idempotent repeat counts nowhere, as its first send already did.
    pub async fn finish(self, state: &AppState) -> Result<Sent, ChatError> {
        let result = self.wait(state).await;
        match &result {
            Ok(sent) if sent.duplicate => {}
            Ok(_) => {
                state.metrics.messages_accepted.inc();
            }
            // The writer took it on and its commit failed. (One that stopped before it
            // answered did not take it on: the sender hears 503, and it is a refusal.)
            Err(ChatError::Write(WriteError::Store(e))) if !matches!(e, StoreError::Closed) => {
                state.metrics.messages_accepted.inc();
            }
            Err(e) => state.metrics.reject(e.code().as_str()),
        }
        result
    }

    async fn wait(self, state: &AppState) -> Result<Sent, ChatError> {
        let request = self.request;
        match self.pending.done().await? {
            MessageAppended::Stored { id, record } => Ok(Sent {
                id,
                record,
                body: request.plain,
                duplicate: false,
                host_key: None,
            }),
            MessageAppended::Duplicate { id } => {
                let user = request.sender;
                let first = state
                    .store
                    .read(move |r| r.visible_message(user, id))
                    .await?
                    .ok_or(WriteError::ConversationNotFound)?;
                let same = first.record.conversation == request.conversation
                    && first.body == *request.plain
                    && first.record.message_type == request.message_type
                    && first.record.priority == request.priority
                    && (request.receiver.is_none() || first.record.receiver == request.receiver);
                if !same {
                    return Err(ChatError::ClientIdConflict);
                }
                Ok(Sent {
                    id,
                    record: first.record,
                    body: Arc::new(first.body),
                    duplicate: true,
                    host_key: None,
                })
            }
        }
    }
}

/// Validates, commits and waits: the whole path for callers that need not pipeline.
pub async fn send(state: &AppState, sender: Sender, req: SendRequest) -> Result<Sent, ChatError> {
    let (new, host_key) = prepare_keyed(state, sender, req).await?;
    let sent = submit(state, new).await?.finish(state).await?;
    Ok(Sent { host_key, ..sent })
}

/// Counts a refused message by reason.
fn rejected(state: &AppState, e: ChatError) -> ChatError {
    state.metrics.reject(e.code().as_str());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> Sender {
        Sender {
            user: 1,
            rate_limited: false,
            origin: None,
        }
    }

    fn code(req: SendRequest) -> Option<&'static str> {
        let limits = LimitsConfig {
            max_text_bytes: 16,
            ..LimitsConfig::default()
        };
        req.check(&limits, &sender())
            .err()
            .map(|e| e.code().as_str())
    }

    #[test]
    fn one_check_for_every_field() {
        let ok = SendRequest {
            conversation: Some(7),
            text: "hi".into(),
            ..SendRequest::default()
        };
        assert_eq!(code(ok.clone()), None);
        let cases = [
            (
                SendRequest {
                    conversation: None,
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    conversation: Some(crate::MAX_ID),
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    receiver: Some(0),
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    text: " \n".into(),
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    text: "x".repeat(17),
                    ..ok.clone()
                },
                "text_too_long",
            ),
            (
                SendRequest {
                    message_type: Some("Text".into()),
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    priority: Some("urgent".into()),
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    metadata: Some(serde_json::json!([1])),
                    ..ok.clone()
                },
                "invalid_request",
            ),
            (
                SendRequest {
                    metadata: Some(serde_json::json!({"k": "0123456789abcdef"})),
                    ..ok.clone()
                },
                "metadata_too_large",
            ),
            (
                SendRequest {
                    client_id: Some(String::new()),
                    ..ok.clone()
                },
                "invalid_request",
            ),
        ];
        for (req, expected) in cases {
            assert_eq!(code(req.clone()), Some(expected), "{req:?}");
        }
        // The one-to-one conversation needs only the receiver.
        assert_eq!(
            code(SendRequest {
                conversation: None,
                receiver: Some(2),
                ..ok
            }),
            None
        );
    }
}

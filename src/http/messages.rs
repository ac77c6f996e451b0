//! `/api/v1/messaging/messages/…`: history pages, sending, detail.
//!
//! Sending goes through [`crate::chat`] and answers 201 only once the message is durable.

use std::sync::Arc;

use axum::extract::State;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Count, Cursor, EmptyBody, Id, Json, Link, Message, Query, QueryId, User};
use crate::chat::{self, SendRequest, Sender};
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::http::openapi::{EmptyBodySchema, Error};
use crate::http::pagination::page_size;
use crate::ids::WireId;
use crate::state::AppState;
use crate::store::reader::{self, MessageView};
use crate::views::{MessageJson, Paginated};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// `POST /messages/` body. Unknown fields are ignored, as Django REST framework does, so
/// existing clients that send extra fields keep working. `null` for an optional field means its
/// default.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = SendMessage,
    example = json!({"conversation": 1, "receiver": 2, "text": "Hello, I am interested in your property", "message_type": "text", "client_id": "web-5f2c"})
)]
pub struct SendBody {
    conversation: WireId,
    /// A participant of the conversation (else 400 `invalid_receiver`); defaults to the other
    /// participant of a two-person conversation.
    #[serde(default)]
    receiver: Option<WireId>,
    /// Not blank; at most `limits.max_text_bytes` bytes (default 16384, else 400
    /// `text_too_long`).
    /// Also accepted as `content` (SmartDalali's REST client), not both.
    #[serde(alias = "content")]
    #[schema(min_length = 1, pattern = r"\S")]
    text: String,
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_]{1,32}$", default = "text")]
    message_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<crate::views::PriorityName>, default = "normal")]
    priority: Option<String>,
    /// A JSON object; serialized at most `limits.max_text_bytes` bytes (else 400
    /// `metadata_too_large`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Idempotency key, 1 to 128 bytes, unique per sender.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    client_id: Option<String>,
}

/// Send a message
///
/// Answers 201 only once the message is durable on disk. A repeated `client_id` from the same
/// sender with the same content (conversation, text, metadata, type, priority, and receiver
/// when given) returns the first message with 200; with different content, 409. Sends are
/// limited per user to `limits.messages_per_second` (default 20) with a burst of
/// `limits.messages_burst` (default 100), REST and WebSocket together; a send is counted once
/// it is found well-formed.
#[utoipa::path(
    post,
    path = "/api/v1/messaging/messages/",
    operation_id = "sendMessage",
    tag = "messages",
    responses(
        (status = 200, description = "A repeat of an earlier send with the same `client_id` and content; the first message is returned.", body = MessageJson),
        (status = 201, description = "Stored and durable.", body = MessageJson),
        (status = 400, description = "Malformed body, a missing or mistyped field, blank text, a bad `message_type`, `priority`, `metadata` or `client_id`, an id out of range, a receiver who is not a participant, or text/metadata over `limits.max_text_bytes`. `error` is one of: `invalid_json`, `invalid_request`, `invalid_body`, `invalid_receiver`, `text_too_long`, `metadata_too_large`.", body = Error),
        (status = 404, description = "No such conversation, or the caller is not a participant (never 403). `error` is `not_found`.", body = Error),
        (status = 409, description = "The `client_id` was already used by this sender for a different message. `error` is `client_id_conflict`.", body = Error),
        (status = 429, description = "The caller is sending faster than the per-user rate. `error` is `rate_limited`.", body = Error,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn send(
    State(state): State<Arc<AppState>>,
    user: User,
    Json(body): Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let sender = Sender {
        user: user.id(),
        rate_limited: true,
        origin: None,
    };
    let request = SendRequest {
        conversation: Some(body.conversation.into()),
        receiver: body.receiver.map(u64::from),
        text: body.text,
        message_type: body.message_type,
        priority: body.priority,
        metadata: body.metadata,
        client_id: body.client_id,
        ..SendRequest::default()
    };
    let sent = chat::send::send(&state, sender, request).await?;
    let view = visible(&state, user.id(), sent.id).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(status, &MessageJson::from(view)))
}

/// `GET /messages/` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The conversation (required; 404 if the caller is not a participant).
    #[param(value_type = crate::views::IdSchema)]
    conversation: QueryId,
    /// Only messages with an id below this one (older). Not with `after`.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    before: Option<Cursor>,
    /// Only messages with an id above this one (newer). Not with `before`.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    after: Option<Cursor>,
    /// Messages per page, 1 to 200. Values above 200 are capped at 200, as Django REST
    /// framework caps page sizes.
    #[param(value_type = Option<u64>, minimum = 1, default = 50)]
    limit: Option<Count>,
}

/// A page of a conversation's history
///
/// Messages oldest→newest within the page; without a cursor, the newest page. `next` links to
/// older messages (`before=`), `previous` to newer ones (`after=`); `count` is the number of
/// messages in the conversation.
#[utoipa::path(
    get,
    path = "/api/v1/messaging/messages/",
    operation_id = "listMessages",
    tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of messages.", body = Paginated<MessageJson>),
        (status = 400, description = "`conversation` is missing, an id or `limit` is malformed or out of range, or both `before` and `after` were given. `error` is `invalid_query`.", body = Error),
        (status = 404, description = "No such conversation, or the caller is not a participant (never 403). `error` is `not_found`.", body = Error),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    user: User,
    Query(query): Query<ListQuery>,
    link: Link,
) -> Result<HttpResponse, ApiError> {
    let conversation = query.conversation.0;
    let cursor = match (query.before, query.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::refused(
                Code::InvalidQuery,
                "use `before` or `after`, not both",
            ));
        }
        (Some(b), None) => reader::Cursor::Before(b.0),
        (None, Some(a)) => reader::Cursor::After(a.0),
        (None, None) => reader::Cursor::Latest,
    };
    let limit = page_size(query.limit, DEFAULT_LIMIT, MAX_LIMIT);
    let user = user.id();
    let page = state
        .store
        .read(move |r| {
            if r.membership(user, conversation)?.is_none() {
                return Ok(None);
            }
            let Some(record) = r.conversation(conversation)? else {
                return Ok(None);
            };
            r.message_page(user, conversation, &record, cursor, limit)
                .map(Some)
        })
        .await?
        .ok_or(ApiError::NotFound("conversation not found"))?;
    let cursor_link = |name: &str, id: u64| {
        link.with(&[
            ("before", (name == "before").then(|| id.to_string())),
            ("after", (name == "after").then(|| id.to_string())),
        ])
    };
    // The ids the page covers, a damaged message left out at either end included.
    let first = page.covers.map(|(first, _)| first);
    let last = page.covers.map(|(_, last)| last);
    // On an empty page the links continue from the cursor itself (cursors accept 0 to 2^53).
    let next = match (page.has_older, first, cursor) {
        (true, Some(first), _) => Some(cursor_link("before", first)),
        (true, None, reader::Cursor::After(a)) => Some(cursor_link("before", a + 1)),
        _ => None,
    };
    let previous = match (page.has_newer, last, cursor) {
        (true, Some(last), _) => Some(cursor_link("after", last)),
        (true, None, reader::Cursor::Before(b)) => Some(cursor_link("after", b.saturating_sub(1))),
        _ => None,
    };
    Ok(json_response(
        StatusCode::OK,
        &Paginated {
            count: page.total,
            next,
            previous,
            results: page.messages.into_iter().map(MessageJson::from).collect(),
        },
    ))
}

/// Message `id` as `user` sees it; 404 unless they are in its conversation.
async fn visible(state: &AppState, user: u64, id: u64) -> Result<MessageView, ApiError> {
    state
        .store
        .read(move |r| r.visible_message(user, id))
        .await?
        .ok_or(ApiError::NotFound("message not found"))
}

/// One message
///
/// One message, if the caller is in its conversation.
#[utoipa::path(
    get,
    path = "/api/v1/messaging/messages/{id}/",
    operation_id = "getMessage",
    tag = "messages",
    params(Id<Message>),
    responses(
        (status = 200, description = "The message.", body = MessageJson),
        (status = 404, description = "No such message, or the caller is not in its conversation, or the stored message is damaged (`detail` says so; see docs/STORAGE.md). `error` is `not_found`.", body = Error),
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Message>,
    user: User,
) -> Result<HttpResponse, ApiError> {
    let view = visible(&state, user.id(), id).await?;
    Ok(json_response(StatusCode::OK, &MessageJson::from(view)))
}

/// Mark a message read
///
/// The caller has read this message and every earlier one in its conversation (the read marker
/// only moves forward). Answers the message as it now stands.
#[utoipa::path(
    post,
    path = "/api/v1/messaging/messages/{id}/mark_as_read/",
    operation_id = "markAsRead",
    tag = "messages",
    params(Id<Message>),
    request_body(content = Option<EmptyBodySchema>, description = "None, or `{}`."),
    responses(
        (status = 200, description = "The message.", body = MessageJson),
        (status = 404, description = "No such message, or the caller is not in its conversation. `error` is `not_found`.", body = Error),
    )
)]
pub async fn mark_as_read(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Message>,
    user: User,
    _: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    // The same path as a socket's read receipt: stored, and relayed live to the senders.
    chat::read::mark_read(&state, user.id(), &[id], None, None).await?;
    let view = visible(&state, user.id(), id).await?;
    Ok(json_response(StatusCode::OK, &MessageJson::from(view)))
}

/// `GET /api/v1/messages/unread/` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnreadQuery {
    /// Most messages returned, 1 to 200. Values above 200 are capped at 200, as Django REST
    /// framework caps page sizes.
    #[param(value_type = Option<u64>, minimum = 1, default = 50)]
    limit: Option<Count>,
}

/// The caller's unread messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnreadMessages {
    /// Every unread message of the caller.
    count: u64,
    /// At most `limit` of them, oldest first.
    results: Vec<MessageJson>,
}

/// The caller's unread messages
///
/// Seed 002's polling fallback: messages from others that the caller has not read yet, over
/// all the caller's conversations (archived ones included), oldest first. `count` is every
/// unread message, `results` at most `limit` of them.
#[utoipa::path(
    get,
    path = "/api/v1/messages/unread/",
    operation_id = "listUnread",
    tag = "messages",
    params(UnreadQuery),
    responses((status = 200, description = "Unread messages.", body = UnreadMessages))
)]
pub async fn unread(
    State(state): State<Arc<AppState>>,
    user: User,
    Query(query): Query<UnreadQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_size(query.limit, DEFAULT_LIMIT, MAX_LIMIT);
    let user = user.id();
    let (count, views) = state
        .store
        .read(move |r| r.unread_messages(user, limit))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &UnreadMessages {
            count,
            results: views.into_iter().map(MessageJson::from).collect(),
        },
    ))
}

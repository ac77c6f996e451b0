//! `/api/v1/messaging/messages/…`: history pages, sending, detail.
//!
//! Sending answers 201 only after the group-commit writer reports the message durable.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::request::{Ctx, Query, read_empty, read_json};
use super::views::{MessageJson, Paginated};
use crate::error::{ApiError, HttpResponse, json_response};
use crate::store::reader::Cursor;
use crate::store::records::{MessageBody, Priority, encode};
use crate::store::writer::{MessageAppended, NewMessage};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Longest `message_type`.
pub const MAX_MESSAGE_TYPE_BYTES: usize = 32;

/// `POST /messages/` body. Unknown fields are ignored, as Django REST framework does, so
/// existing clients that send extra fields keep working.
#[derive(Debug, Deserialize)]
struct SendBody {
    conversation: u64,
    #[serde(default)]
    receiver: Option<u64>,
    text: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    client_id: Option<String>,
}

/// A send request that passed validation.
struct ValidSend {
    new: NewMessage,
    body: MessageBody,
}

fn validate(ctx: &Ctx<'_>, body: SendBody) -> Result<ValidSend, ApiError> {
    let limits = &ctx.state.config.limits;
    for id in std::iter::once(body.conversation).chain(body.receiver) {
        if !(1..crate::MAX_ID).contains(&id) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("id {id} is out of range (1 to 2^53-1)"),
            ));
        }
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "field `text` may not be blank",
        ));
    }
    if body.text.len() > limits.max_text_bytes {
        return Err(ApiError::bad_request(
            "text_too_long",
            format!(
                "field `text` is longer than {} bytes",
                limits.max_text_bytes
            ),
        ));
    }
    let message_type = body.message_type.unwrap_or_else(|| "text".to_owned());
    if message_type.is_empty()
        || message_type.len() > MAX_MESSAGE_TYPE_BYTES
        || !message_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "field `message_type` must be 1 to {MAX_MESSAGE_TYPE_BYTES} characters of a-z, 0-9 and _"
            ),
        ));
    }
    let priority = match body.priority.as_deref() {
        None => Priority::Normal,
        Some(p) => Priority::parse(p).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "field `priority` must be \"high\", \"normal\" or \"low\"",
            )
        })?,
    };
    let metadata_json = match body.metadata {
        None | Some(serde_json::Value::Null) => "{}".to_owned(),
        Some(value @ serde_json::Value::Object(_)) => value.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "field `metadata` must be a JSON object",
            ));
        }
    };
    if metadata_json.len() > limits.max_text_bytes {
        return Err(ApiError::bad_request(
            "metadata_too_large",
            format!(
                "field `metadata` is larger than {} bytes",
                limits.max_text_bytes
            ),
        ));
    }
    if let Some(cid) = &body.client_id
        && (cid.is_empty() || cid.len() > MAX_CLIENT_ID_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("field `client_id` must be 1 to {MAX_CLIENT_ID_BYTES} bytes"),
        ));
    }
    let plain = MessageBody {
        text: body.text,
        metadata_json,
    };
    let sealed = ctx.state.store.keyring().seal(&encode(&plain)?);
    Ok(ValidSend {
        new: NewMessage {
            conversation: body.conversation,
            sender: ctx.user.user_id,
            receiver: body.receiver,
            message_type,
            priority,
            client_id: body.client_id,
            body: sealed,
        },
        body: plain,
    })
}

/// `POST /messages/`: 201 once durable; 200 with the first message for a repeated `client_id`
/// with the same content, 409 for a repeated `client_id` with different content.
pub async fn send(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: SendBody = read_json(req, &ctx.state.config.limits).await?;
    let valid = validate(ctx, body)?;
    // Only well-formed sends spend the budget.
    ctx.state
        .send_limiter
        .take(&ctx.user.user_id)
        .map_err(|wait| ApiError::RateLimited {
            detail: "sending too fast; slow down",
            retry_after_secs: crate::limits::retry_after_secs(wait),
        })?;
    let request = valid.new.clone();
    let store = &ctx.state.store;
    let (id, status) = match store.writer().append_message(valid.new).await? {
        MessageAppended::Stored { id, .. } => (id, StatusCode::CREATED),
        MessageAppended::Duplicate { id } => (id, StatusCode::OK),
    };
    let user = ctx.user.user_id;
    let view = store
        .read(move |r| r.visible_message(user, id))
        .await?
        .ok_or(ApiError::NotFound("message not found"))?;
    if status == StatusCode::OK {
        let same = view.record.conversation == request.conversation
            && view.body == valid.body
            && view.record.message_type == request.message_type
            && view.record.priority == request.priority
            && (request.receiver.is_none() || view.record.receiver == request.receiver);
        if !same {
            return Err(ApiError::Conflict {
                code: "client_id_conflict",
                detail: "this client_id was already used for a different message".to_owned(),
            });
        }
    }
    Ok(json_response(status, &MessageJson::from(view)))
}

/// `GET /messages/?conversation=&before=&after=&limit=`: oldest→newest within the page; `next`
/// pages to older messages, `previous` to newer ones.
pub async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let conversation = query.id("conversation")?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            "query parameter `conversation` is required",
        )
    })?;
    let cursor = match (query.cursor("before")?, query.cursor("after")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "use `before` or `after`, not both",
            ));
        }
        (Some(b), None) => Cursor::Before(b),
        (None, Some(a)) => Cursor::After(a),
        (None, None) => Cursor::Latest,
    };
    let limit = query.capped("limit", MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let user = ctx.user.user_id;
    let page = ctx
        .state
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
    let path = req.uri().path();
    let link = |name: &str, id: u64| {
        format!(
            "{}{}?{}",
            ctx.base_url,
            path,
            query.with(&[
                ("before", (name == "before").then(|| id.to_string())),
                ("after", (name == "after").then(|| id.to_string())),
            ])
        )
    };
    let first = page.messages.first().map(|m| m.id);
    let last = page.messages.last().map(|m| m.id);
    // On an empty page the links continue from the cursor itself (cursors accept 0 to 2^53).
    let next = match (page.has_older, first, cursor) {
        (true, Some(first), _) => Some(link("before", first)),
        (true, None, Cursor::After(a)) => Some(link("before", a + 1)),
        _ => None,
    };
    let previous = match (page.has_newer, last, cursor) {
        (true, Some(last), _) => Some(link("after", last)),
        (true, None, Cursor::Before(b)) => Some(link("after", b.saturating_sub(1))),
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

/// `GET /messages/{id}/`: 404 unless the caller is in the message's conversation.
pub async fn get(ctx: &Ctx<'_>, id: u64) -> Result<HttpResponse, ApiError> {
    let user = ctx.user.user_id;
    let view = ctx
        .state
        .store
        .read(move |r| r.visible_message(user, id))
        .await?
        .ok_or(ApiError::NotFound("message not found"))?;
    Ok(json_response(StatusCode::OK, &MessageJson::from(view)))
}

/// `POST /messages/{id}/mark_as_read/`: the caller has read this message and every earlier one
/// in its conversation.
pub async fn mark_as_read(
    ctx: &Ctx<'_>,
    id: u64,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    read_empty(req, &ctx.state.config.limits).await?;
    let user = ctx.user.user_id;
    let store = &ctx.state.store;
    let message = store
        .read(move |r| r.visible_message(user, id))
        .await?
        .ok_or(ApiError::NotFound("message not found"))?;
    store
        .writer()
        .mark_read(user, message.record.conversation, Some(id))
        .await?;
    get(ctx, id).await
}

/// `GET /api/v1/messages/unread/?limit=`: the caller's unread messages, oldest first
/// (seed 002's polling fallback). `count` is every unread message, `results` at most `limit`.
pub async fn unread(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let limit = query.capped("limit", MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let user = ctx.user.user_id;
    let (count, views) = ctx
        .state
        .store
        .read(move |r| r.unread_messages(user, limit))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "count": count,
            "results": views.into_iter().map(MessageJson::from).collect::<Vec<_>>(),
        }),
    ))
}

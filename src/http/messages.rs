//! `/api/v1/messaging/messages/…`: history pages, sending, detail.
//!
//! Sending goes through [`crate::chat`] and answers 201 only once the message is durable.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::request::{Ctx, Query, read_empty, read_json};
use crate::chat::{self, SendRequest, Sender};
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::store::reader::{Cursor, MessageView};
use crate::views::{MessageJson, Paginated};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

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

/// `POST /messages/`: 201 once durable; 200 with the first message for a repeated `client_id`
/// with the same content, 409 for a repeated `client_id` with different content.
pub async fn send(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: SendBody = read_json(req, &ctx.state.config.limits).await?;
    let sender = Sender {
        user: ctx.user.user_id,
        rate_limited: true,
        origin: None,
    };
    let request = SendRequest {
        conversation: Some(body.conversation),
        receiver: body.receiver,
        text: body.text,
        message_type: body.message_type,
        priority: body.priority,
        metadata: body.metadata,
        client_id: body.client_id,
    };
    let sent = chat::send::send(ctx.state, sender, request).await?;
    let view = visible(ctx, sent.id).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(status, &MessageJson::from(view)))
}

/// `GET /messages/?conversation=&before=&after=&limit=`: oldest→newest within the page; `next`
/// pages to older messages, `previous` to newer ones.
pub async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let conversation = query.id("conversation")?.ok_or_else(|| {
        ApiError::refused(
            Code::InvalidQuery,
            "query parameter `conversation` is required",
        )
    })?;
    let cursor = match (query.cursor("before")?, query.cursor("after")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::refused(
                Code::InvalidQuery,
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
    // The ids the page covers, a damaged message left out at either end included.
    let first = page.covers.map(|(first, _)| first);
    let last = page.covers.map(|(_, last)| last);
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

/// Message `id` as the caller sees it; 404 unless the caller is in its conversation.
async fn visible(ctx: &Ctx<'_>, id: u64) -> Result<MessageView, ApiError> {
    let user = ctx.user.user_id;
    ctx.state
        .store
        .read(move |r| r.visible_message(user, id))
        .await?
        .ok_or(ApiError::NotFound("message not found"))
}

/// `GET /messages/{id}/`: 404 unless the caller is in the message's conversation.
pub async fn get(ctx: &Ctx<'_>, id: u64) -> Result<HttpResponse, ApiError> {
    let view = visible(ctx, id).await?;
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
    // The same path as a socket's read receipt: stored, and relayed live to the senders.
    chat::read::mark_read(ctx.state, ctx.user.user_id, &[id], None, None).await?;
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

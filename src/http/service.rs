//! The backend service API (contract section 4, seed 001): what the Erlang service did, for
//! the host app's backend — prioritised sends, queue drains, broadcasts, stats, metrics.
//!
//! Off unless `service.shared_secret` (or `_file`) is set. Every call presents the secret as
//! `X-Service-Token` or `Authorization: Bearer`; it is compared in constant time, and a missing
//! or wrong one is answered 401 and counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::request::{Query, parse_id, read_json};
use super::views::MessageJson;
use crate::app::AppState;
use crate::error::{ApiError, HttpResponse, json_response};
use crate::messaging::{self, SendRequest, Sender};
use crate::model::{MessageBody, Priority};
use crate::store::records::encode;
use crate::store::{Broadcast, NewConversation};

/// Most recipients of one broadcast.
pub const MAX_BROADCAST_RECIPIENTS: usize = 100_000;
/// Recipients stored per commit.
const BROADCAST_CHUNK: usize = 2_000;
/// Queue entries one drain or peek returns by default, and at most.
const DEFAULT_QUEUE_LIMIT: usize = 100;
const MAX_QUEUE_LIMIT: usize = 1000;

/// `X-Service-Token` (or `Authorization: Bearer`) must match `service.shared_secret` (or the
/// secret in `service.shared_secret_file`).
pub fn authorize(state: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(secret) = &state.service_secret else {
        return Err(ApiError::NotFound(
            "the service API is not enabled on this server",
        ));
    };
    let presented = req
        .headers()
        .get("x-service-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            req.headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
        });
    // Hash both sides so the comparison takes as long whatever the lengths.
    let matches = presented.is_some_and(|p| {
        let a = Sha256::digest(p.trim().as_bytes());
        let b = Sha256::digest(secret.expose().as_bytes());
        bool::from(a.ct_eq(&b))
    });
    if matches {
        Ok(())
    } else {
        state.metrics.service_auth_failures.inc();
        Err(ApiError::ServiceUnauthorized)
    }
}

/// `POST /api/messages/send` body (seed 001's `send_message`).
#[derive(Debug, Deserialize)]
struct SendBody {
    #[serde(default)]
    conversation_id: Option<u64>,
    sender_id: u64,
    #[serde(default)]
    receiver_id: Option<u64>,
    text: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    client_id: Option<String>,
}

fn check_id(id: u64, field: &str) -> Result<u64, ApiError> {
    if (1..crate::MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "invalid_request",
            format!("field `{field}` must be an id from 1 to 2^53-1"),
        ))
    }
}

/// `POST /api/messages/send` → 201 `{"status":"accepted","message_id"}`, once durable. With no
/// `conversation_id`, the sender's and receiver's one-to-one conversation (created if absent).
/// Not subject to the per-user send rate.
pub async fn send(state: &AppState, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: SendBody = read_json(req, &state.config.limits).await?;
    let sender = check_id(body.sender_id, "sender_id")?;
    let conversation = match body.conversation_id {
        Some(id) => check_id(id, "conversation_id")?,
        None => {
            let receiver = body.receiver_id.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    "give `conversation_id`, or `receiver_id` for the one-to-one conversation",
                )
            })?;
            let receiver = check_id(receiver, "receiver_id")?;
            state
                .store
                .writer()
                .create_conversation(NewConversation {
                    creator: sender,
                    participants: vec![receiver],
                    property: None,
                    booking: None,
                    subject: None,
                })
                .await?
                .id
        }
    };
    let request = SendRequest {
        conversation,
        receiver: body.receiver_id,
        text: body.text,
        message_type: body.message_type,
        priority: body.priority,
        metadata: body.metadata,
        client_id: body.client_id,
    };
    let from = Sender {
        user: sender,
        rate_limited: false,
        origin: None,
    };
    let sent = messaging::send(state, from, request).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(
        status,
        &json!({"status": "accepted", "message_id": sent.id, "conversation_id": conversation}),
    ))
}

/// `GET /api/messages/queue/{user_id}?peek=&limit=`: the user's queued messages in delivery
/// order; drained (removed from the queue) unless `peek=true`.
pub async fn queue(
    state: &AppState,
    user: u64,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let peek = query.flag("peek")?.unwrap_or(false);
    let limit = query
        .capped("limit", MAX_QUEUE_LIMIT)?
        .unwrap_or(DEFAULT_QUEUE_LIMIT);
    let entries = state
        .store
        .read(move |r| {
            let mut out = Vec::new();
            for queued in r.queued(user, None, limit)?.0 {
                let Some(conversation) = r.conversation(queued.record.conversation)? else {
                    continue;
                };
                let key = (user, queued.rank, queued.id);
                let view =
                    r.message_view(user, queued.id, queued.record, queued.body, &conversation)?;
                out.push((key, view));
            }
            Ok(out)
        })
        .await?;
    let messages: Vec<MessageJson> = if peek {
        entries
            .into_iter()
            .map(|(_, v)| MessageJson::from(v))
            .collect()
    } else {
        // Only what this call removed is returned: concurrent drains never hand out a message
        // twice.
        let keys = entries.iter().map(|(k, _)| *k).collect();
        let removed: HashSet<_> = state
            .store
            .writer()
            .drain(keys)
            .await?
            .into_iter()
            .collect();
        entries
            .into_iter()
            .filter(|(k, _)| removed.contains(k))
            .map(|(_, v)| MessageJson::from(v))
            .collect()
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"user_id": user, "count": messages.len(), "messages": messages}),
    ))
}

#[derive(Debug, Deserialize)]
struct BroadcastBody {
    message: BroadcastMessage,
    user_ids: Vec<u64>,
}

#[derive(Debug, Deserialize)]
struct BroadcastMessage {
    sender_id: u64,
    text: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// `POST /api/messages/broadcast` → `{"status":"accepted","recipients":N}`: a high-priority
/// message to each listed user in their one-to-one conversation with the sender, all in one
/// commit.
pub async fn broadcast(state: &AppState, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: BroadcastBody = read_json(req, &state.config.limits).await?;
    let sender = check_id(body.message.sender_id, "message.sender_id")?;
    if body.message.text.trim().is_empty()
        || body.message.text.len() > state.config.limits.max_text_bytes
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "field `message.text` must be 1 to {} bytes",
                state.config.limits.max_text_bytes
            ),
        ));
    }
    if body.user_ids.is_empty() || body.user_ids.len() > MAX_BROADCAST_RECIPIENTS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`user_ids` must list 1 to {MAX_BROADCAST_RECIPIENTS} users"),
        ));
    }
    let mut recipients = Vec::with_capacity(body.user_ids.len());
    let mut seen = HashSet::with_capacity(body.user_ids.len());
    for id in body.user_ids {
        check_id(id, "user_ids")?;
        if id != sender && seen.insert(id) {
            recipients.push(id);
        }
    }
    let message_type = body
        .message
        .message_type
        .unwrap_or_else(|| "system".to_owned());
    if message_type.is_empty()
        || message_type.len() > messaging::MAX_MESSAGE_TYPE_BYTES
        || !message_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "field `message.message_type` must be a-z, 0-9 and _",
        ));
    }
    let metadata_json = match body.message.metadata {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "field `message.metadata` must be a JSON object",
            ));
        }
    };
    if metadata_json.len() > state.config.limits.max_text_bytes {
        return Err(ApiError::bad_request(
            "metadata_too_large",
            format!(
                "field `message.metadata` is larger than {} bytes",
                state.config.limits.max_text_bytes
            ),
        ));
    }
    let plain = MessageBody {
        text: body.message.text,
        metadata_json,
    };
    // One seal serves every copy: the copies are the same encryption of the same text.
    let body = Arc::new(state.store.keyring().seal(&encode(&plain)?));
    let plain = Arc::new(plain);
    // In chunks, so a big broadcast does not hold every other send behind one commit. A
    // failure part-way leaves the chunks before it delivered (and says so).
    let mut delivered = 0;
    for chunk in recipients.chunks(BROADCAST_CHUNK) {
        let result = state
            .store
            .writer()
            .broadcast(Broadcast {
                sender,
                message_type: message_type.clone(),
                priority: Priority::High,
                recipients: chunk.to_vec(),
                body: body.clone(),
                plain: plain.clone(),
            })
            .await;
        match result {
            Ok(n) => {
                delivered += n;
                state.metrics.messages_accepted.inc_by(n);
            }
            Err(e) if delivered > 0 => {
                tracing::error!(error = %e, delivered, "broadcast failed part-way");
                return Err(ApiError::Internal(format!(
                    "broadcast failed after {delivered} recipients: {e}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "accepted", "recipients": delivered}),
    ))
}

/// `GET /api/stats`.
pub async fn stats(state: &AppState) -> Result<HttpResponse, ApiError> {
    let max_user_pending = state.store.read(|r| r.max_queue_length()).await?;
    let m = &state.metrics;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "messages_processed": m.messages_accepted.get(),
            "messages_persisted": m.messages_persisted.get(),
            "persistence_failures": m.persistence_failures.get(),
            "messages_delivered": m.messages_delivered.get(),
            "uptime_seconds": state.started.elapsed().as_secs(),
            "memory": {"rss_bytes": crate::metrics::rss_bytes()},
            "connections": state.open_connections.load(Ordering::Relaxed),
            "websockets": state.hub.session_count(),
            "users_online": state.hub.presence.online_count(),
            "queues": {
                "pending_total": state.store.writer().queue_pending(),
                "max_user_pending": max_user_pending,
            },
            "dead_letters": m.dead_letters.get(),
            "damaged_records": m.damaged_records.get(),
            "version": crate::VERSION,
        }),
    ))
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(state: &AppState) -> HttpResponse {
    state.metrics.refresh(
        state.open_connections.load(Ordering::Relaxed) as u64,
        state.hub.session_count() as u64,
        state.hub.presence.online_count() as u64,
        state.store.writer().queue_pending(),
    );
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
        state.metrics.encode(),
    )));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `GET /api/v1/messaging/erlang/health/` (user token): seed 000's check of the queue service.
pub fn engine_health(state: &AppState) -> HttpResponse {
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "engine": "indaba",
            "version": crate::VERSION,
            "uptime_seconds": state.started.elapsed().as_secs(),
            "connected": true,
        }),
    )
}

/// Parses the `{user_id}` of a queue path.
pub fn user_id(text: &str) -> Result<u64, ApiError> {
    parse_id(text).ok_or(ApiError::NotFound("no such user"))
}

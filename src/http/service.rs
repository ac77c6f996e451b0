//! The backend service API (contract section 4, seed 001): what the Erlang service did, for
//! the host app's backend — prioritised sends, queue drains, broadcasts, stats, metrics.
//!
//! Off unless `service.shared_secret` (or `_file`) is set. Every call presents the secret as
//! `X-Service-Token` or `Authorization: Bearer`; it is compared in constant time, and a missing
//! or wrong one is answered 401 and counted.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::request::{Query, parse_id, read_json};
use crate::chat::broadcast::BroadcastRequest;
use crate::chat::{self, SendRequest, Sender};
use crate::error::{ApiError, HttpResponse, json_response};
use crate::state::AppState;
use crate::views::MessageJson;

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

/// `POST /api/messages/send` → 201 `{"status":"accepted","message_id","conversation_id"}`, once
/// durable. With no `conversation_id`, the sender's and receiver's one-to-one conversation
/// (created if absent, once the message passed its checks). Not subject to the per-user send
/// rate.
pub async fn send(state: &AppState, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: SendBody = read_json(req, &state.config.limits).await?;
    let request = SendRequest {
        conversation: body.conversation_id,
        receiver: body.receiver_id,
        text: body.text,
        message_type: body.message_type,
        priority: body.priority,
        metadata: body.metadata,
        client_id: body.client_id,
    };
    let from = Sender {
        user: body.sender_id,
        rate_limited: false,
        origin: None,
    };
    let sent = chat::send::send(state, from, request).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(
        status,
        &json!({"status": "accepted", "message_id": sent.id, "conversation_id": sent.record.conversation}),
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
/// message to each listed user in their one-to-one conversation with the sender.
pub async fn broadcast(state: &AppState, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: BroadcastBody = read_json(req, &state.config.limits).await?;
    let request = BroadcastRequest {
        sender: body.message.sender_id,
        recipients: body.user_ids,
        text: body.message.text,
        message_type: body.message.message_type,
        metadata: body.message.metadata,
    };
    let delivered = chat::broadcast::broadcast(state, request).await?;
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

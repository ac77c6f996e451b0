//! The backend service API (contract section 4, seed 001): what the Erlang service did, for
//! the host app's backend — prioritised sends, queue drains, broadcasts, stats, metrics.
//!
//! Off unless `service.shared_secret` (or `_file`) is set. Every call presents the secret
//! ([`Service`]: `X-Service-Token`, `X-Erlang-Service` or `Authorization: Bearer`, compared in
//! constant time); a
//! missing or wrong one is answered 401 and counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Count, Flag, Id, Json, MetricsReader, Query, QueueUser, Service, User};
use crate::chat::broadcast::BroadcastRequest;
use crate::chat::{self, SendRequest, Sender};
use crate::error::{ApiError, HttpResponse, json_response};
use crate::http::openapi::Error;
use crate::http::pagination::page_size;
use crate::ids::{self, WireId};
use crate::state::AppState;
use crate::views::MessageJson;

/// Queue entries one drain or peek returns by default, and at most.
const DEFAULT_QUEUE_LIMIT: usize = 100;
const MAX_QUEUE_LIMIT: usize = 1000;

/// The fields of a send as the REST API names them (and so the domain's refusals), and as
/// seed 001's send does.
const SEND_FIELDS: &[(&str, &str)] = &[
    ("conversation", "conversation_id"),
    ("receiver", "receiver_id"),
    ("sender", "sender_id"),
];

/// The same for a broadcast, whose message fields are nested.
const BROADCAST_FIELDS: &[(&str, &str)] = &[
    ("sender", "message.sender_id"),
    ("text", "message.text"),
    ("message_type", "message.message_type"),
    ("metadata", "message.metadata"),
];

/// `POST /api/messages/send` body (seed 001's `send_message`). Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ServiceSend)]
pub struct SendBody {
    /// The conversation; without it, the sender's and the receiver's one-to-one conversation
    /// (created if absent). An id that is not a conversation of the sender and the receiver is
    /// the host app's own id for their conversation: the first send by it records it for their
    /// one-to-one conversation (created if absent), later sends by it go there.
    #[serde(default)]
    conversation_id: Option<WireId>,
    sender_id: WireId,
    /// Required without `conversation_id`; otherwise a participant of it.
    #[serde(default)]
    receiver_id: Option<WireId>,
    /// Not blank; at most `limits.max_text_bytes` bytes.
    #[schema(min_length = 1, pattern = r"\S")]
    text: String,
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_]{1,32}$", default = "text")]
    message_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<crate::views::PriorityName>, default = "normal")]
    priority: Option<String>,
    /// A JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Idempotency key, 1 to 128 bytes, unique per sender.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    client_id: Option<String>,
}

/// A send taken on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(value_type = String, pattern = "^accepted$")]
    status: &'static str,
    #[schema(value_type = crate::views::IdSchema)]
    message_id: u64,
    /// The conversation it went to (Indaba's id).
    #[schema(value_type = crate::views::IdSchema)]
    conversation_id: u64,
    /// The host app's id the request named the conversation by, when `conversation_id` in the
    /// request was not a conversation of the sender and the receiver (null otherwise).
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    host_conversation_id: Option<u64>,
}

/// Send a message on behalf of a user (seed 001 send_message)
///
/// Not subject to the per-user send rate. With no `conversation_id`, the sender's and
/// receiver's one-to-one conversation (created if absent, once the message passed its checks).
/// A `conversation_id` that is not a conversation of the sender and the receiver is the host
/// app's own id: the first send by it records it for the two users' one-to-one conversation
/// (created if absent), later sends by it go there, and the answer carries both ids.
/// Answered once durable; delivered like any message.
#[utoipa::path(
    post,
    path = "/api/messages/send",
    operation_id = "serviceSend",
    tag = "service",
    responses(
        (status = 201, description = "Accepted and durable.", body = Accepted),
        (status = 200, description = "A repeated `client_id` with the same content: the first message.", body = Accepted),
        (status = 404, description = "`conversation_id` is neither a conversation of the sender nor a host id recorded before, and no `receiver_id` names the other user (`not_found`).", body = Error),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, bad ids, blank or oversized text. `error` is one of: `invalid_json`, `invalid_request`, `invalid_body`, `invalid_receiver`, `text_too_long`, `metadata_too_large`.", body = Error),
        (status = 409, description = "A repeated `client_id` with different content (`client_id_conflict`).", body = Error),
    )
)]
pub async fn send(
    State(state): State<Arc<AppState>>,
    _: Service,
    Json(body): Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let request = SendRequest {
        conversation: body.conversation_id.map(u64::from),
        receiver: body.receiver_id.map(u64::from),
        text: body.text,
        message_type: body.message_type,
        priority: body.priority,
        metadata: body.metadata,
        client_id: body.client_id,
        host_keys: true,
    };
    let from = Sender {
        user: body.sender_id.into(),
        rate_limited: false,
        origin: None,
    };
    let sent = chat::send::send(&state, from, request)
        .await
        .map_err(|e| ApiError::from(e).renaming_fields(SEND_FIELDS))?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(
        status,
        &Accepted {
            status: "accepted",
            message_id: sent.id,
            conversation_id: sent.record.conversation,
            host_conversation_id: sent.host_key,
        },
    ))
}

/// `GET /api/messages/queue/{user_id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Look without removing.
    #[param(value_type = Option<bool>, default = false)]
    peek: Option<Flag>,
    /// Most messages returned; values above 1000 are capped.
    #[param(value_type = Option<u64>, minimum = 1, default = 100)]
    limit: Option<Count>,
}

/// A user's queued messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    #[schema(value_type = crate::views::IdSchema)]
    user_id: u64,
    count: usize,
    /// In delivery order: high priority first, then oldest.
    messages: Vec<MessageJson>,
}

/// Drain (or peek at) a user's queue (seed 001 get_user_messages)
///
/// The user's queued messages in delivery order; removed from the queue unless `peek=true`.
/// Concurrent drains never hand out a message twice. `GET` only: a `HEAD` would drain without
/// showing what it removed (405).
#[utoipa::path(
    get,
    path = "/api/messages/queue/{user_id}",
    operation_id = "serviceQueue",
    tag = "service",
    params(Id<QueueUser>, QueueQuery),
    responses((status = 200, description = "Messages in queue order (high priority first, then oldest). Without `peek`, exactly these were removed from the queue.", body = Queue))
)]
pub async fn queue(
    State(state): State<Arc<AppState>>,
    Id(user, _): Id<QueueUser>,
    _: Service,
    Query(query): Query<QueueQuery>,
) -> Result<HttpResponse, ApiError> {
    let peek = query.peek.is_some_and(|f| f.0);
    let limit = page_size(query.limit, DEFAULT_QUEUE_LIMIT, MAX_QUEUE_LIMIT);
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
        &Queue {
            user_id: user,
            count: messages.len(),
            messages,
        },
    ))
}

/// `POST /api/messages/broadcast` body (seed 001's `broadcast_message`).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ServiceBroadcast)]
pub struct BroadcastBody {
    message: BroadcastMessage,
    /// 1 to 100,000 users; duplicates and the sender are left out.
    #[schema(min_items = 1, max_items = 100000)]
    user_ids: Vec<WireId>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BroadcastMessage {
    sender_id: WireId,
    /// Not blank; at most `limits.max_text_bytes` bytes.
    #[schema(min_length = 1, pattern = r"\S")]
    text: String,
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_]{1,32}$", default = "system")]
    message_type: Option<String>,
    /// A JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// A broadcast taken on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Broadcasted {
    #[schema(value_type = String, pattern = "^accepted$")]
    status: &'static str,
    /// The users who got it.
    recipients: u64,
}

/// A system message to many users (seed 001 broadcast_message)
///
/// Each listed user gets the message, priority high, in their one-to-one conversation with the
/// sender (created if absent). Stored and queued before the answer.
#[utoipa::path(
    post,
    path = "/api/messages/broadcast",
    operation_id = "serviceBroadcast",
    tag = "service",
    responses(
        (status = 200, description = "Stored and queued.", body = Broadcasted),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, bad ids, no or too many recipients, blank or oversized text. `error` is one of: `invalid_json`, `invalid_request`, `invalid_body`, `text_too_long`, `metadata_too_large`.", body = Error),
    )
)]
pub async fn broadcast(
    State(state): State<Arc<AppState>>,
    _: Service,
    Json(body): Json<BroadcastBody>,
) -> Result<HttpResponse, ApiError> {
    let request = BroadcastRequest {
        sender: body.message.sender_id.into(),
        recipients: ids::plain(body.user_ids),
        text: body.message.text,
        message_type: body.message.message_type,
        metadata: body.message.metadata,
    };
    let delivered = chat::broadcast::broadcast(&state, request)
        .await
        .map_err(|e| ApiError::from(e).renaming_fields(BROADCAST_FIELDS))?;
    Ok(json_response(
        StatusCode::OK,
        &Broadcasted {
            status: "accepted",
            recipients: delivered,
        },
    ))
}

/// `GET /api/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Messages taken on to store: messages_persisted + persistence_failures. Refused sends
    /// and idempotent repeats are not counted.
    messages_processed: u64,
    /// Messages stored durably.
    messages_persisted: u64,
    /// Messages whose commit failed (their senders got an error).
    persistence_failures: u64,
    messages_delivered: u64,
    uptime_seconds: u64,
    memory: Memory,
    connections: usize,
    websockets: usize,
    /// Tasks alive in the daemon's runtime: each WebSocket's reader and writer, each HTTP
    /// connection, and the background work (fan-out, acknowledgements, queue expiry, queue
    /// replays and syncs in flight) — what the Erlang service reported as its process count
    /// (one process per connection and worker).
    process_count: usize,
    users_online: usize,
    queues: Queues,
    /// Since the data file was created.
    dead_letters: u64,
    /// Stored records met since start that can no longer be read back; each is left out of
    /// every view and logged once at ERROR.
    damaged_records: u64,
    /// The webhook outbox and its delivery (PROTOCOL.md section 8.2).
    webhooks: WebhookStats,
    version: &'static str,
}

/// `/api/stats` `webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookStats {
    /// Whether `webhooks.url` is set.
    enabled: bool,
    /// Events waiting in the outbox.
    webhook_pending: u64,
    /// Events the host acknowledged, since start.
    webhook_delivered: u64,
    /// POSTs that failed (not 2xx, timed out, no connection), since start.
    webhook_failures: u64,
    /// Events dropped by `webhooks.max_pending`, since the data file was created.
    webhook_dropped: u64,
    /// Age of the oldest waiting event; 0 when none waits.
    webhook_oldest_pending_seconds: u64,
}

/// Reads the outbox's figures into the webhook gauges, and answers them for `/api/stats`.
async fn webhook_stats(state: &AppState) -> Result<WebhookStats, ApiError> {
    let (pending, oldest_ms) = state.store.read(|r| r.outbox_summary()).await?;
    let oldest_seconds = oldest_ms.map_or(0, |ms| crate::time::now_ms().saturating_sub(ms) / 1000);
    let m = &state.metrics;
    m.webhook_pending.set(pending as i64);
    m.webhook_oldest_pending_seconds.set(oldest_seconds as i64);
    Ok(WebhookStats {
        enabled: state.config.webhooks.enabled(),
        webhook_pending: pending,
        webhook_delivered: m.webhook_delivered.get(),
        webhook_failures: m.webhook_failures.get(),
        webhook_dropped: m.webhook_dropped.get(),
        webhook_oldest_pending_seconds: oldest_seconds,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Memory {
    /// Resident memory (0 where `/proc` cannot tell).
    rss_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queues {
    pending_total: u64,
    max_user_pending: u64,
}

/// Service statistics (seed 001 /api/stats)
///
/// Figures since start; `dead_letters` since the data file was created.
#[utoipa::path(
    get,
    path = "/api/stats",
    operation_id = "stats",
    tag = "service",
    responses((status = 200, description = "The figures.", body = Stats))
)]
pub async fn stats(
    State(state): State<Arc<AppState>>,
    _: Service,
) -> Result<HttpResponse, ApiError> {
    let max_user_pending = state.store.read(|r| r.max_queue_length()).await?;
    let webhooks = webhook_stats(&state).await?;
    let m = &state.metrics;
    Ok(json_response(
        StatusCode::OK,
        &Stats {
            messages_processed: m.messages_accepted.get(),
            messages_persisted: m.messages_persisted.get(),
            persistence_failures: m.persistence_failures.get(),
            messages_delivered: m.messages_delivered.get(),
            uptime_seconds: state.started.elapsed().as_secs(),
            memory: Memory {
                rss_bytes: crate::metrics::rss_bytes(),
            },
            connections: state.open_connections.load(Ordering::Relaxed),
            websockets: state.hub.session_count(),
            process_count: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            users_online: state.hub.presence.online_count(),
            queues: Queues {
                pending_total: state.store.writer().queue_pending(),
                max_user_pending,
            },
            dead_letters: m.dead_letters.get(),
            damaged_records: m.damaged_records.get(),
            webhooks,
            version: crate::VERSION,
        },
    ))
}

/// Prometheus metrics (OpenMetrics text)
///
/// Counters, gauges and histograms. Needs the service secret unless `[metrics] public = true`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    security(("serviceToken" = []), ()),
    responses((status = 200, description = "Counters, gauges and histograms.",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    _: MetricsReader,
) -> Result<HttpResponse, ApiError> {
    webhook_stats(&state).await?;
    state.metrics.refresh(
        state.open_connections.load(Ordering::Relaxed) as u64,
        state.hub.session_count() as u64,
        state.hub.presence.online_count() as u64,
        state.store.writer().queue_pending(),
    );
    let mut response = hyper::Response::new(axum::body::Body::from(state.metrics.encode()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// The queue engine's health, as seed 000 checked it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EngineHealth {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
    #[schema(value_type = String, pattern = "^indaba$")]
    engine: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    connected: bool,
}

/// Seed-compatible health of the queue engine (user token)
///
/// What seed 000 asked of the Erlang service; the engine is this daemon.
#[utoipa::path(
    get,
    path = "/api/v1/messaging/erlang/health/",
    operation_id = "engineHealth",
    tag = "service",
    responses((status = 200, description = "The engine is up.", body = EngineHealth))
)]
pub async fn engine_health(State(state): State<Arc<AppState>>, _: User) -> HttpResponse {
    json_response(
        StatusCode::OK,
        &EngineHealth {
            status: "ok",
            engine: "indaba",
            version: crate::VERSION,
            uptime_seconds: state.started.elapsed().as_secs(),
            connected: true,
        },
    )
}

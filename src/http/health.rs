//! Liveness and readiness, for supervisors and load balancers.
//!
//! * `GET /health` (and `/api/health/`): is the daemon alive and able to work? 503 only while
//!   it stops or when its store cannot write. Answered even over `limits.max_connections`: a
//!   full node is alive, and a liveness check that fails on it would have it restarted, with
//!   every one of its sockets.
//! * `GET /ready`: should it be sent new clients? Also 503 at the connection limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use hyper::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{HttpResponse, json_response};
use crate::state::AppState;

/// A live daemon.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok", "version": "0.1.0", "uptime_seconds": 12}))]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
    /// This build's version.
    #[schema(example = "0.1.0")]
    version: &'static str,
    uptime_seconds: u64,
}

/// Why the daemon should get no work: `shutting_down` while it drains; `unavailable` (with a
/// `detail`) while its store cannot write (a full or failing disk: writes are refused until it
/// can, by itself); for readiness also `at_connection_limit` (with a `detail`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "shutting_down"}))]
pub struct NotWorking {
    status: Trouble,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trouble {
    ShuttingDown,
    Unavailable,
    AtConnectionLimit,
}

/// A daemon ready for new clients.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ready"}))]
pub struct Ready {
    #[schema(value_type = String, pattern = "^ready$")]
    status: &'static str,
}

/// Liveness
///
/// Liveness for supervisors and load balancers. Needs no token; answered even while the daemon
/// drains (then 503) and over `limits.max_connections` (a full node is alive: readiness is
/// `GET /ready`).
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "getHealth",
    tag = "health",
    responses(
        (status = 200, description = "Alive.", body = Health),
        (status = 503, description = "Draining: `{\"status\":\"shutting_down\"}`, or the store cannot write (a full or failing disk; writes resume by themselves once it can): `{\"status\":\"unavailable\",\"detail\"}` (connection closed, `Retry-After: 5`). Not at the connection limit: liveness is answered on a full node too (see `GET /ready`).",
            body = NotWorking, headers(("Retry-After" = u32, description = "Seconds to wait: 5."))),
    )
)]
pub async fn get(State(state): State<Arc<AppState>>) -> HttpResponse {
    alive(&state)
}

/// Liveness (alias)
///
/// Same as `GET /health`.
#[utoipa::path(
    get,
    path = "/api/health/",
    operation_id = "getApiHealth",
    tag = "health",
    responses(
        (status = 200, description = "Alive.", body = Health),
        (status = 503, description = "As for `GET /health`.", body = NotWorking,
            headers(("Retry-After" = u32, description = "Seconds to wait: 5."))),
    )
)]
pub async fn get_alias(State(state): State<Arc<AppState>>) -> HttpResponse {
    alive(&state)
}

/// `{"status":"ok","version","uptime_seconds"}`; 503 `{"status":"shutting_down"}` while the
/// daemon drains, so a balancer stops sending it work; 503 `{"status":"unavailable"}` while the
/// store cannot write (the disk is full or failing: writes are refused and resume by themselves
/// once it can write again; or its writer has stopped), so a supervisor notices.
pub fn alive(state: &AppState) -> HttpResponse {
    if let Some(response) = not_working(state) {
        return response;
    }
    json_response(
        StatusCode::OK,
        &Health {
            status: "ok",
            version: crate::VERSION,
            uptime_seconds: state.started.elapsed().as_secs(),
        },
    )
}

/// Readiness
///
/// Whether to send this daemon new clients. Needs no token. 200 while it serves, has room for a
/// connection and its store can write; 503 while it drains, when its store cannot write, and
/// while the open connections (this one included) reach `limits.max_connections`. Answered over
/// the connection limit too.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "getReady",
    tag = "health",
    responses(
        (status = 200, description = "Ready for new clients.", body = Ready),
        (status = 503, description = "Not ready: `shutting_down`, `unavailable` (the store cannot write) or `at_connection_limit`; the connection is closed.",
            body = NotWorking, headers(("Retry-After" = u32, description = "Seconds to wait: 5."))),
    )
)]
pub async fn ready(State(state): State<Arc<AppState>>) -> HttpResponse {
    if let Some(response) = not_working(&state) {
        return response;
    }
    let open = state.open_connections.load(Ordering::Relaxed);
    let max = state.config.limits.max_connections;
    if open >= max {
        return unavailable(NotWorking {
            status: Trouble::AtConnectionLimit,
            detail: Some(format!(
                "{open} connections open, limits.max_connections is {max}"
            )),
        });
    }
    json_response(StatusCode::OK, &Ready { status: "ready" })
}

/// The 503 of a daemon that stops or cannot write, if it does.
fn not_working(state: &AppState) -> Option<HttpResponse> {
    if state.is_draining() {
        return Some(unavailable(NotWorking {
            status: Trouble::ShuttingDown,
            detail: None,
        }));
    }
    if !state.store.writer().is_healthy() {
        return Some(unavailable(NotWorking {
            status: Trouble::Unavailable,
            detail: Some("the store cannot write (is the disk full?): writes are refused until it can; see the daemon's error log".into()),
        }));
    }
    None
}

fn unavailable(body: NotWorking) -> HttpResponse {
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("5"),
    );
    response
}

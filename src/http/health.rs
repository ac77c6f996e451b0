//! Liveness and readiness, for supervisors and load balancers.
//!
//! * `GET /health` (and `/api/health/`): is the daemon alive and able to work? 503 only while
//!   it stops or when its store cannot write. Answered even over `limits.max_connections`: a
//!   full node is alive, and a liveness check that fails on it would have it restarted, with
//!   every one of its sockets.
//! * `GET /ready`: should it be sent new clients? Also 503 at the connection limit.

use std::sync::atomic::Ordering;

use hyper::StatusCode;
use serde_json::json;

use crate::error::{ApiError, HttpResponse, json_response};
use crate::state::AppState;

/// `{"status":"ok","version","uptime_seconds"}`; 503 `{"status":"shutting_down"}` while the
/// daemon drains, so a balancer stops sending it work; 503 `{"status":"unavailable"}` while the
/// store cannot write (the disk is full or failing: writes are refused and resume by
/// themselves once it can write again; or its writer has stopped), so a supervisor notices.
pub fn get(state: &AppState) -> HttpResponse {
    if let Some(response) = not_working(state) {
        return response;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": crate::VERSION,
            "uptime_seconds": state.started.elapsed().as_secs(),
        }),
    )
}

/// `{"status":"ready"}`; 503 as [`get`] answers, and 503 `{"status":"at_connection_limit"}`
/// while the open connections, the asking one included, reach `limits.max_connections`.
pub fn ready(state: &AppState) -> HttpResponse {
    if let Some(response) = not_working(state) {
        return response;
    }
    let open = state.open_connections.load(Ordering::Relaxed);
    let max = state.config.limits.max_connections;
    if open >= max {
        return unavailable(json!({
            "status": "at_connection_limit",
            "detail": format!("{open} connections open, limits.max_connections is {max}"),
        }));
    }
    json_response(StatusCode::OK, &json!({"status": "ready"}))
}

/// The 503 of a daemon that stops or cannot write, if it does.
fn not_working(state: &AppState) -> Option<HttpResponse> {
    if state.is_draining() {
        return Some(unavailable(json!({"status": "shutting_down"})));
    }
    if !state.store.writer().is_healthy() {
        return Some(unavailable(json!({
            "status": "unavailable",
            "detail": "the store cannot write (is the disk full?): writes are refused until it can; see the daemon's error log",
        })));
    }
    None
}

fn unavailable(body: serde_json::Value) -> HttpResponse {
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

/// The answer on a connection over `limits.max_connections`: the health checks are answered,
/// anything else is 503 `too_many_connections`.
pub fn over_limit(state: &AppState, method: &hyper::Method, path: &str) -> HttpResponse {
    use crate::http::router::Route;
    match Route::parse(method, path) {
        Ok(Route::Health) => get(state),
        Ok(Route::Ready) => ready(state),
        _ => ApiError::TooManyConnections.into_response(),
    }
}

//! `GET /health` and `GET /api/health/`: liveness for load balancers and systemd checks.

use hyper::StatusCode;
use serde_json::json;

use crate::app::AppState;
use crate::error::{HttpResponse, json_response};

/// `{"status":"ok","version","uptime_seconds"}`, or 503 `{"status":"shutting_down"}` while the
/// daemon drains, so a balancer stops sending it work.
pub fn get(state: &AppState) -> HttpResponse {
    if state.is_draining() {
        let mut response = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "shutting_down"}),
        );
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
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

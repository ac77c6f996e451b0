//! `GET /health` and `GET /api/health/`: liveness for load balancers and systemd checks.

use hyper::StatusCode;
use serde_json::json;

use crate::app::AppState;
use crate::error::{HttpResponse, json_response};

/// `{"status":"ok","version","uptime_seconds"}`; 503 `{"status":"shutting_down"}` while the
/// daemon drains, so a balancer stops sending it work; 503 `{"status":"unavailable"}` while the
/// store cannot write (the disk is full or failing: writes are refused and resume by
/// themselves once it can write again; or its writer has stopped), so a supervisor notices.
pub fn get(state: &AppState) -> HttpResponse {
    let unavailable = |body| {
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
    };
    if state.is_draining() {
        return unavailable(json!({"status": "shutting_down"}));
    }
    if !state.store.writer().is_healthy() {
        return unavailable(json!({
            "status": "unavailable",
            "detail": "the store cannot write (is the disk full?): writes are refused until it can; see the daemon's error log",
        }));
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

//! Requests from `indaba admin` (over the admin socket, [`crate::admin`]) served by the same
//! routes as HTTP: the CLI shows exactly what the admin API answers, from one implementation.
//!
//! The admin socket checks who connects (the daemon's user or root) and hands over a method and
//! a path; this builds the request, marks it [`LocalOperator`] (which stands in for the
//! service secret) and runs it through the router. Only the operators' routes and the
//! statistics are reachable this way.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::extract::{Connection, LocalOperator};
use super::router::Api;
use crate::error::ApiError;
use crate::state::AppState;

/// Path prefixes the admin socket may ask for.
const ALLOWED: [&str; 2] = ["/api/admin/", "/api/stats"];

/// Answers `method target` (a path with its query) as the admin API would: status and JSON
/// body.
pub async fn call(state: Arc<AppState>, method: &str, target: &str) -> (u16, Bytes) {
    match request(&state, method, target) {
        Ok(req) => {
            let router = Api::new(&state.config.limits).into_router(state.clone());
            let response = match router.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status().as_u16();
            match response.into_body().collect().await {
                Ok(body) => (status, body.to_bytes()),
                Err(e) => error(ApiError::Internal(format!("admin socket response: {e}"))),
            }
        }
        Err(e) => error(e),
    }
}

fn error(e: ApiError) -> (u16, Bytes) {
    let response = axum::response::IntoResponse::into_response(e);
    let status = response.status().as_u16();
    // An error body is built in memory (`ApiError::into_parts`): it is there at once.
    let body = futures_util::FutureExt::now_or_never(response.into_body().collect())
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

fn request(state: &AppState, method: &str, target: &str) -> Result<Request<Body>, ApiError> {
    let method: Method = method
        .parse()
        .map_err(|_| ApiError::NotFound("no such endpoint"))?;
    let path = target.split('?').next().unwrap_or_default();
    if !ALLOWED
        .iter()
        .any(|p| path.starts_with(p) || path == p.trim_end_matches('/'))
    {
        return Err(ApiError::NotFound(
            "the admin socket serves /api/admin/… and /api/stats only",
        ));
    }
    // Routing sees paths without their trailing `/`, as the HTTP layers trim it.
    let routed = match target.split_once('?') {
        Some((path, query)) => format!("{}?{query}", trim(path)),
        None => trim(target).to_owned(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(routed)
        // Pagination links point at the HTTP listener.
        .header(HOST, state.config.server.listen.to_string())
        .body(Body::empty())
        .map_err(|_| ApiError::NotFound("no such endpoint"))?;
    let extensions = req.extensions_mut();
    extensions.insert(LocalOperator);
    extensions.insert(Connection {
        peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        stop: state.shutdown_token(),
        path: path.into(),
    });
    Ok(req)
}

fn trim(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some("") | None => path,
        Some(rest) => rest,
    }
}

/// The status line's reason, for the CLI's messages.
pub fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

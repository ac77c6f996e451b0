//! Method + path → handler.
//!
//! [`Route::parse`] decides what a request is before anything reads its body, so 404 and 405 are
//! answered the same way everywhere. Paths are matched with and without their trailing slash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::{conversations, health, messages};
use crate::app::AppState;
use crate::error::{ApiError, HttpResponse};
use crate::http::request::{Ctx, parse_id};

/// Every endpoint the daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    ListConversations,
    CreateConversation,
    UnreadCount,
    GetConversation(u64),
    ListMessages,
    SendMessage,
    GetMessage(u64),
}

/// Routing table for documentation and tests: method, path pattern.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/api/health/"),
    ("GET", "/api/v1/messaging/conversations/"),
    ("POST", "/api/v1/messaging/conversations/"),
    ("GET", "/api/v1/messaging/conversations/unread_count/"),
    ("GET", "/api/v1/messaging/conversations/{id}/"),
    ("GET", "/api/v1/messaging/messages/"),
    ("POST", "/api/v1/messaging/messages/"),
    ("GET", "/api/v1/messaging/messages/{id}/"),
];

impl Route {
    /// Finds the endpoint for `method` and `path`.
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let not_allowed = |allow| Err(ApiError::MethodNotAllowed { allow });
        match segments.as_slice() {
            ["health"] | ["api", "health"] => {
                if get {
                    Ok(Route::Health)
                } else {
                    not_allowed("GET, HEAD")
                }
            }
            ["api", "v1", "messaging", rest @ ..] => match rest {
                ["conversations"] if get => Ok(Route::ListConversations),
                ["conversations"] if post => Ok(Route::CreateConversation),
                ["conversations"] => not_allowed("GET, POST"),
                ["conversations", "unread_count"] if get => Ok(Route::UnreadCount),
                ["conversations", "unread_count"] => not_allowed("GET"),
                ["conversations", id] => match parse_id(id) {
                    Some(id) if get => Ok(Route::GetConversation(id)),
                    Some(_) => not_allowed("GET"),
                    None => Err(ApiError::NotFound("conversation not found")),
                },
                ["messages"] if get => Ok(Route::ListMessages),
                ["messages"] if post => Ok(Route::SendMessage),
                ["messages"] => not_allowed("GET, POST"),
                ["messages", id] => match parse_id(id) {
                    Some(id) if get => Ok(Route::GetMessage(id)),
                    Some(_) => not_allowed("GET"),
                    None => Err(ApiError::NotFound("message not found")),
                },
                _ => Err(ApiError::NotFound("no such endpoint")),
            },
            _ => Err(ApiError::NotFound("no such endpoint")),
        }
    }
}

/// Serves one request. Never fails: errors become responses here.
pub async fn dispatch(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> HttpResponse {
    let started = Instant::now();
    let method = req.method().clone();
    // The path only: query strings can carry tokens and are never logged.
    let path = req.uri().path().to_owned();
    let response = match handle(&state, peer, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn handle(
    state: &Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let route = Route::parse(req.method(), req.uri().path())?;
    if route == Route::Health {
        return Ok(health::get(state));
    }
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let ctx = Ctx::new(state, peer, &req)?;
    match route {
        Route::Health => Ok(health::get(state)),
        Route::ListConversations => conversations::list(&ctx, &req).await,
        Route::CreateConversation => conversations::create(&ctx, req).await,
        Route::UnreadCount => conversations::unread_count(&ctx).await,
        Route::GetConversation(id) => conversations::get(&ctx, id).await,
        Route::ListMessages => messages::list(&ctx, &req).await,
        Route::SendMessage => messages::send(&ctx, req).await,
        Route::GetMessage(id) => messages::get(&ctx, id).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slash_optional_and_405s() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        assert_eq!(
            p(Method::GET, "/api/v1/messaging/conversations/").ok(),
            Some(Route::ListConversations)
        );
        assert_eq!(
            p(Method::GET, "/api/v1/messaging/conversations").ok(),
            Some(Route::ListConversations)
        );
        assert_eq!(
            p(Method::GET, "/api/v1/messaging/conversations/12").ok(),
            Some(Route::GetConversation(12))
        );
        assert!(matches!(
            p(Method::DELETE, "/api/v1/messaging/messages/"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            p(Method::GET, "/api/v1/messaging/messages/abc/"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            p(Method::GET, "/nope"),
            Err(ApiError::NotFound(_))
        ));
    }

    #[test]
    fn every_listed_route_parses() {
        for (method, pattern) in ROUTES {
            let path = pattern.replace("{id}", "7");
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert!(Route::parse(&method, &path).is_ok(), "{method} {path}");
        }
    }
}

//! Method + path → handler.
//!
//! [`Route::parse`] decides what a request is before anything reads its body, so 404 and 405 are
//! answered the same way everywhere. Paths are matched with and without their trailing slash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::upgrade::{self, Requested};
use super::{auth, conversations, health, messages, service, web};
use crate::error::{ApiError, HttpResponse};
use crate::http::request::{Ctx, parse_id};
use crate::state::AppState;

/// Every endpoint the daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    Register,
    Token,
    TokenRefresh,
    Me,
    /// `GET /api/v1/auth/users/?username=`: a local account by its exact name.
    FindUser,
    /// `GET /api/v1/auth/users/{id}/`: the caller or someone who shares a conversation.
    GetUser(u64),
    ListConversations,
    CreateConversation,
    UnreadCount,
    GetConversation(u64),
    Archive(u64),
    Unarchive(u64),
    MarkAllRead(u64),
    ListMessages,
    SendMessage,
    GetMessage(u64),
    MarkAsRead(u64),
    Unread,
    Presence,
    OpenApi,
    EngineHealth,
    ServiceSend,
    ServiceQueue(u64),
    ServiceBroadcast,
    Stats,
    Metrics,
    /// The web pages and their assets (`/`, `/assets/…`), served by [`web`].
    Web,
    /// WebSocket endpoints (section 3); listed in [`WS_ROUTES`], not in the OpenAPI document.
    Socket(Requested),
}

/// The WebSocket endpoints.
pub const WS_ROUTES: &[&str] = &[
    "/ws/chat/",
    "/ws/chat/{conversation_id}/",
    "/ws/notifications/",
    "/ws/echo/",
];

/// Routing table for documentation and tests: method, path pattern.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/api/health/"),
    ("GET", "/ready"),
    ("POST", "/api/v1/auth/register/"),
    ("POST", "/api/v1/auth/token/"),
    ("POST", "/api/v1/auth/token/refresh/"),
    ("GET", "/api/v1/auth/me/"),
    ("GET", "/api/v1/auth/users/"),
    ("GET", "/api/v1/auth/users/{id}/"),
    ("GET", "/api/v1/messaging/conversations/"),
    ("POST", "/api/v1/messaging/conversations/"),
    ("GET", "/api/v1/messaging/conversations/unread_count/"),
    ("GET", "/api/v1/messaging/conversations/{id}/"),
    ("POST", "/api/v1/messaging/conversations/{id}/archive/"),
    ("POST", "/api/v1/messaging/conversations/{id}/unarchive/"),
    (
        "POST",
        "/api/v1/messaging/conversations/{id}/mark_all_read/",
    ),
    ("GET", "/api/v1/messaging/messages/"),
    ("POST", "/api/v1/messaging/messages/"),
    ("GET", "/api/v1/messaging/messages/{id}/"),
    ("POST", "/api/v1/messaging/messages/{id}/mark_as_read/"),
    ("GET", "/api/v1/messages/unread/"),
    ("GET", "/api/v1/messaging/presence/"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/v1/messaging/erlang/health/"),
    ("POST", "/api/messages/send"),
    ("GET", "/api/messages/queue/{user_id}"),
    ("POST", "/api/messages/broadcast"),
    ("GET", "/api/stats"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/assets/{file}"),
];

impl Route {
    /// Finds the endpoint for `method` and `path`.
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        // One method per resource: pick it, or answer 405 naming it.
        let only = |ok: bool, route: Route, allow: &'static str| {
            if ok {
                Ok(route)
            } else {
                Err(ApiError::MethodNotAllowed { allow })
            }
        };
        let id_or = |text: &str, what: &'static str| parse_id(text).ok_or(ApiError::NotFound(what));
        match segments.as_slice() {
            // Which file, and whether its page is on, is the handler's business: every path
            // under `/assets/` is this route, and an unknown one a 404 like any other.
            [] | ["assets", ..] => only(get, Route::Web, "GET, HEAD"),
            ["health"] | ["api", "health"] => only(get, Route::Health, "GET, HEAD"),
            ["ready"] => only(get, Route::Ready, "GET, HEAD"),
            ["api", "openapi.json"] => only(get, Route::OpenApi, "GET, HEAD"),
            ["metrics"] => only(get, Route::Metrics, "GET, HEAD"),
            ["api", "stats"] => only(get, Route::Stats, "GET, HEAD"),
            ["api", "messages", "send"] => only(post, Route::ServiceSend, "POST"),
            ["api", "messages", "broadcast"] => only(post, Route::ServiceBroadcast, "POST"),
            ["api", "messages", "queue", user] => {
                let user = crate::http::service::user_id(user)?;
                // Not HEAD: a drain answered without its body would lose what it removed.
                only(*method == Method::GET, Route::ServiceQueue(user), "GET")
            }
            ["ws", rest @ ..] => {
                let requested = match rest {
                    ["chat"] => Requested::Chat,
                    ["chat", id] => Requested::Conversation(id_or(id, "conversation not found")?),
                    ["notifications"] => Requested::Notifications,
                    ["echo"] => Requested::Echo,
                    _ => return Err(ApiError::NotFound("no such endpoint")),
                };
                only(*method == Method::GET, Route::Socket(requested), "GET")
            }
            ["api", "v1", "auth", rest @ ..] => match rest {
                ["register"] => only(post, Route::Register, "POST"),
                ["token"] => only(post, Route::Token, "POST"),
                ["token", "refresh"] => only(post, Route::TokenRefresh, "POST"),
                ["me"] => only(get, Route::Me, "GET, HEAD"),
                ["users"] => only(get, Route::FindUser, "GET, HEAD"),
                ["users", id] => {
                    let id = id_or(id, "user not found")?;
                    only(get, Route::GetUser(id), "GET, HEAD")
                }
                _ => Err(ApiError::NotFound("no such endpoint")),
            },
            ["api", "v1", "messages", "unread"] => only(get, Route::Unread, "GET, HEAD"),
            ["api", "v1", "messaging", rest @ ..] => match rest {
                ["conversations"] if post => Ok(Route::CreateConversation),
                ["conversations"] => only(get, Route::ListConversations, "GET, HEAD, POST"),
                ["conversations", "unread_count"] => only(get, Route::UnreadCount, "GET, HEAD"),
                ["conversations", id] => {
                    let id = id_or(id, "conversation not found")?;
                    only(get, Route::GetConversation(id), "GET, HEAD")
                }
                ["conversations", id, action] => {
                    let id = id_or(id, "conversation not found")?;
                    let route = match *action {
                        "archive" => Route::Archive(id),
                        "unarchive" => Route::Unarchive(id),
                        "mark_all_read" => Route::MarkAllRead(id),
                        _ => return Err(ApiError::NotFound("no such endpoint")),
                    };
                    only(post, route, "POST")
                }
                ["messages"] if post => Ok(Route::SendMessage),
                ["messages"] => only(get, Route::ListMessages, "GET, HEAD, POST"),
                ["messages", id] => {
                    let id = id_or(id, "message not found")?;
                    only(get, Route::GetMessage(id), "GET, HEAD")
                }
                ["messages", id, "mark_as_read"] => {
                    let id = id_or(id, "message not found")?;
                    only(post, Route::MarkAsRead(id), "POST")
                }
                ["presence"] => only(get, Route::Presence, "GET, HEAD"),
                ["erlang", "health"] => only(get, Route::EngineHealth, "GET, HEAD"),
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
    match route {
        Route::Health => return Ok(health::get(state)),
        Route::Ready => return Ok(health::ready(state)),
        Route::OpenApi => return Ok(openapi()),
        Route::Web => return web_page(state, peer, &req),
        _ => {}
    }
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    // The service API: the shared secret instead of a user token.
    match route {
        Route::Metrics => {
            if !state.config.metrics.public {
                service::authorize(state, &req)?;
            }
            return Ok(service::metrics(state));
        }
        Route::Stats => {
            service::authorize(state, &req)?;
            return service::stats(state).await;
        }
        Route::ServiceSend => {
            service::authorize(state, &req)?;
            return service::send(state, req).await;
        }
        Route::ServiceQueue(user) => {
            service::authorize(state, &req)?;
            return service::queue(state, user, &req).await;
        }
        Route::ServiceBroadcast => {
            service::authorize(state, &req)?;
            return service::broadcast(state, req).await;
        }
        _ => {}
    }
    // Endpoints that need no token.
    match route {
        Route::Register => return auth::register(state, peer, req).await,
        Route::Token => return auth::token(state, peer, req).await,
        Route::TokenRefresh => return auth::refresh(state, req).await,
        _ => {}
    }
    if let Route::Socket(requested) = route {
        if requested == Requested::Echo && !state.config.server.websocket_echo {
            return Err(ApiError::NotFound("no such endpoint"));
        }
        return upgrade::upgrade(state, req, requested).await;
    }
    let ctx = Ctx::new(state, peer, &req)?;
    state.users.ensure(&state.store, &ctx.user).await?;
    match route {
        Route::Health
        | Route::Ready
        | Route::OpenApi
        | Route::Web
        | Route::Register
        | Route::Token
        | Route::TokenRefresh
        | Route::Socket(_)
        | Route::Metrics
        | Route::Stats
        | Route::ServiceSend
        | Route::ServiceQueue(_)
        | Route::ServiceBroadcast => Err(ApiError::NotFound("no such endpoint")),
        Route::Me => auth::me(&ctx).await,
        Route::FindUser => auth::find_user(&ctx, &req).await,
        Route::GetUser(id) => auth::get_user(&ctx, id).await,
        Route::ListConversations => conversations::list(&ctx, &req).await,
        Route::CreateConversation => conversations::create(&ctx, req).await,
        Route::UnreadCount => conversations::unread_count(&ctx).await,
        Route::GetConversation(id) => conversations::get(&ctx, id).await,
        Route::Archive(id) => conversations::set_archived(&ctx, id, true, req).await,
        Route::Unarchive(id) => conversations::set_archived(&ctx, id, false, req).await,
        Route::MarkAllRead(id) => conversations::mark_all_read(&ctx, id, req).await,
        Route::ListMessages => messages::list(&ctx, &req).await,
        Route::SendMessage => messages::send(&ctx, req).await,
        Route::GetMessage(id) => messages::get(&ctx, id).await,
        Route::MarkAsRead(id) => messages::mark_as_read(&ctx, id, req).await,
        Route::Unread => messages::unread(&ctx, &req).await,
        Route::Presence => conversations::presence(&ctx, &req).await,
        Route::EngineHealth => Ok(service::engine_health(state)),
    }
}

/// A web page or asset, if its `[web]` switch is on (else 404).
fn web_page(
    state: &AppState,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let trusted = state.config.server.trusted_proxies.contains(&peer.ip());
    let origin = crate::http::request::base_url(req.headers(), trusted);
    let if_none_match = req
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    web::respond(&state.config.web, req.uri().path(), if_none_match, &origin)
}

/// The OpenAPI 3 document of this API, kept beside the router (`openapi.json`).
const OPENAPI: &str = include_str!("openapi.json");

fn openapi() -> HttpResponse {
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
        OPENAPI.as_bytes(),
    )));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for (method, path) in ROUTES {
            let op = &doc["paths"][path][method.to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path} missing from openapi.json");
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
        }
        // And nothing documented that the router does not serve.
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["parameters", "summary", "description"].contains(&method.as_str()) {
                    continue;
                }
                let concrete = path
                    .replace("{id}", "7")
                    .replace("{user_id}", "7")
                    .replace("{file}", "app.js");
                let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
                assert!(
                    Route::parse(&m, &concrete).is_ok(),
                    "documented {method} {path} is not served"
                );
            }
        }
    }

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
            let path = pattern
                .replace("{id}", "7")
                .replace("{user_id}", "7")
                .replace("{file}", "app.js");
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert!(Route::parse(&method, &path).is_ok(), "{method} {path}");
        }
    }
}

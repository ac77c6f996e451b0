//! The WebSocket endpoints' HTTP side (contract section 3): check the upgrade request,
//! authenticate (`?token=` or `Authorization`), decide what the socket may be, and hand the
//! upgraded TCP stream to a [`crate::ws::session`].
//!
//! A bad token or a non-participant is *accepted and then closed* (4401, 4403), as the
//! existing clients expect.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};

use super::extract::{Conversation, Id, Params};
use crate::auth::{AuthError, Identity};
use crate::error::{ApiError, Code, HttpResponse};
use crate::state::AppState;
use crate::ws::frames::close;
use crate::ws::session::{self, Kind};

/// Which socket the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Chat,
    Conversation(u64),
    Notifications,
    Echo,
}

/// `GET /ws/chat/`: every conversation of the user.
pub async fn chat(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<HttpResponse, ApiError> {
    upgrade(&state, req, Requested::Chat).await
}

/// `GET /ws/chat/{id}/`: one conversation, for its participants.
pub async fn conversation(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Conversation>,
    req: Request,
) -> Result<HttpResponse, ApiError> {
    upgrade(&state, req, Requested::Conversation(id)).await
}

/// `GET /ws/notifications/`: the user's notifications.
pub async fn notifications(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<HttpResponse, ApiError> {
    upgrade(&state, req, Requested::Notifications).await
}

/// `GET /ws/echo/`: echoes frames, for conformance suites, while `server.websocket_echo` is on.
pub async fn echo(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<HttpResponse, ApiError> {
    if !state.config.server.websocket_echo {
        return Err(ApiError::NotFound("no such endpoint"));
    }
    upgrade(&state, req, Requested::Echo).await
}

/// Answers a WebSocket upgrade and starts the session.
async fn upgrade(
    state: &Arc<AppState>,
    mut req: Request,
    requested: Requested,
) -> Result<HttpResponse, ApiError> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::refused(
            Code::WebsocketRequired,
            "this endpoint speaks WebSocket: send an Upgrade request",
        ));
    }
    let who = match authenticate(state, &req) {
        // The echo socket exists only for conformance suites (`server.websocket_echo`), which
        // cannot send tokens; it touches no user data.
        _ if requested == Requested::Echo => Ok((
            Identity {
                user_id: 0,
                username: None,
            },
            Kind::Echo,
        )),
        Ok(identity) if state.users.is_disabled(identity.user_id) => {
            tracing::debug!(user = identity.user_id, "websocket refused: user disabled");
            Err((close::FORBIDDEN, "this account has been disabled"))
        }
        Ok(identity) => authorize(state, identity, requested).await,
        Err(e) => {
            tracing::debug!(error = %e, "websocket refused: bad token");
            Err((close::UNAUTHORIZED, "authentication failed"))
        }
    };
    if let Ok((identity, kind)) = &who
        && !matches!(kind, Kind::Echo)
    {
        state.users.ensure(&state.store, identity).await?;
    }
    // Keeps the connection counted against `limits.max_connections` while the socket lives.
    let connection = req
        .extensions_mut()
        .remove::<Arc<dyn std::any::Any + Send + Sync>>();
    let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req).map_err(|e| {
        ApiError::refused(
            Code::WebsocketHandshake,
            format!("bad WebSocket handshake: {e}"),
        )
    })?;
    // The TCP stream under the socket once the handshake is done (the server serves nothing
    // else), so the session's reader can wait for readiness without a buffer; fastwebsockets'
    // own reader and its 8 KiB go with `ws`.
    let socket = async move {
        let ws = upgrade
            .await
            .map_err(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
            .ok()?;
        let stream = super::server::upgraded_stream(ws.into_inner().into_inner());
        if stream.is_none() {
            tracing::error!("websocket upgraded from a transport other than TCP: dropped");
        }
        stream
    };
    state
        .tasks
        .spawn(session::run(state.clone(), socket, who, connection));
    let (parts, _) = response.into_parts();
    Ok(hyper::Response::from_parts(parts, Body::empty()))
}

/// The token from `?token=` (browsers cannot set headers on a WebSocket) or `Authorization`.
fn authenticate(state: &AppState, req: &Request) -> Result<Identity, AuthError> {
    let query = Params::parse(req.uri().query());
    if let Some(token) = query.get("token") {
        return state.verifier.verify(token);
    }
    super::extract::authenticate(state, req.headers()).map_err(|e| match e {
        ApiError::Unauthorized(auth) => auth,
        _ => AuthError::Missing,
    })
}

/// Decides what the socket may be: a conversation socket only for its participants.
async fn authorize(
    state: &AppState,
    identity: Identity,
    requested: Requested,
) -> Result<(Identity, Kind), (u16, &'static str)> {
    let kind = match requested {
        Requested::Chat => Kind::Chat,
        Requested::Notifications => Kind::Notifications,
        Requested::Echo => Kind::Echo,
        Requested::Conversation(id) => match state.hub.participants(id).await {
            Ok(Some(participants)) if participants.contains(&identity.user_id) => {
                Kind::Conversation { id, participants }
            }
            Ok(_) => return Err((close::FORBIDDEN, "not a participant of this conversation")),
            Err(_) => return Err((close::GOING_AWAY, "try again later")),
        },
    };
    Ok((identity, kind))
}

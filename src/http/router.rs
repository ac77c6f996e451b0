//! Every route, grouped by who calls it, and the one way to add one: [`Group::routes`] takes
//! what utoipa-axum's `routes!` makes of a handler — its method router *and* its OpenAPI
//! operation — so a route cannot be served without being documented, nor documented without
//! being served. The WebSocket endpoints are served apart ([`Api::socket`]) and listed in
//! [`Api::sockets`], not in the OpenAPI document (it has no words for them; docs/WEBSOCKET.md
//! does).
//!
//! Paths are documented in their canonical form, most with a trailing `/` as Django writes
//! them. Routing sees them without it: the trailing `/` of a request is trimmed before the
//! router ([`super::layers`]), so every path works with and without one.
//!
//! Order of checks, the same on every route: the route (404 "no such endpoint", or 405 with
//! `Allow`, the path's id first: a malformed id is the resource's 404) → shutting down (503,
//! except for the public group) → the body's size (413) → the handler's extractors in their
//! order: path id (404), caller (401), query (400), body (400/408/415).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures_util::future::Either;
use tower::{Layer, Service};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{HttpMethod, OpenApi};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use super::extract::{Connection, Conversation, Id, Message, QueueUser, UserPath};
use super::layers::HttpService;
use super::profiles::ProfileUser;
use super::{
    admin, auth, conversations, docs, health, messages, openapi, profiles, service, upgrade, web,
};
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// What `routes!` makes of one or more handlers: method router, operations, schemas.
pub type Routes = UtoipaMethodRouter<Arc<AppState>>;

/// Who calls a group of routes, which decides the checks before its handlers and what the
/// document says about its authentication and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Anyone, even while the daemon stops: health, readiness, this document, the web pages.
    Public,
    /// Someone on their way to a token: register, log in, refresh.
    Guest,
    /// Users, with an access token (the [`super::extract::User`] extractor).
    User,
    /// The host app's backend, with the service secret ([`super::extract::Service`]).
    Service,
    /// Operators, with the service secret (or over the admin socket: [`super::local`]).
    Admin,
}

/// Whether `HEAD` is answered like `GET` (hyper sends the headers without the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    AsGet,
    /// 405: a `GET` with an effect (a queue drain) must not run for an answer without a body.
    Refused,
}

/// The routes of one kind of caller.
pub struct Group {
    caller: Caller,
    limits: LimitsConfig,
    router: Router<Arc<AppState>>,
    /// Documented path → its operations, in the order added.
    paths: Vec<(String, PathItem)>,
    schemas: Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
}

impl Group {
    fn new(caller: Caller, limits: &LimitsConfig) -> Self {
        Self {
            caller,
            limits: limits.clone(),
            router: Router::new(),
            paths: Vec::new(),
            schemas: Vec::new(),
        }
    }

    /// Serves `routes` (no id in their path).
    pub fn routes(self, routes: Routes) -> Self {
        self.add::<()>(routes, Head::AsGet)
    }

    /// Serves `routes`, whose path holds `P` (an [`Id`]): a malformed id is its 404, whatever
    /// the method.
    pub fn routes_with<P>(self, routes: Routes, head: Head) -> Self
    where
        P: FromRequestParts<Arc<AppState>> + Send + 'static,
    {
        self.add::<P>(routes, head)
    }

    fn add<P>(mut self, (schemas, paths, method_router): Routes, head: Head) -> Self
    where
        P: FromRequestParts<Arc<AppState>> + Send + 'static,
    {
        for (path, item) in paths.paths {
            let allow = allow(&item, head);
            let mut endpoint = method_router.clone();
            if head == Head::Refused {
                let allow = allow.clone();
                endpoint = endpoint.head(move || async move {
                    ApiError::MethodNotAllowed { allow }.into_response()
                });
            }
            let endpoint = self
                .guard(endpoint)
                .fallback(method_not_allowed::<P>(allow));
            self.router = self.router.route(&routing_path(&path), endpoint);
            self.paths.push((path, item));
        }
        self.schemas.extend(schemas);
        self
    }

    /// The checks every route of this group makes before its handler (not before a 405: a
    /// method router's fallback is not layered).
    fn guard(&self, endpoint: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
        match self.caller {
            Caller::Public => endpoint,
            Caller::Guest | Caller::User | Caller::Service | Caller::Admin => endpoint
                .route_layer(super::layers::body_limit(&self.limits))
                .route_layer(OpenLayer),
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("caller", &self.caller)
            .field(
                "paths",
                &self.paths.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The `Allow` header of a path: its documented methods, with `HEAD` beside `GET`.
fn allow(item: &PathItem, head: Head) -> String {
    methods(item)
        .flat_map(|(method, _)| match method {
            HttpMethod::Get if head == Head::AsGet => vec!["GET", "HEAD"],
            HttpMethod::Get => vec!["GET"],
            HttpMethod::Post => vec!["POST"],
            HttpMethod::Put => vec!["PUT"],
            HttpMethod::Delete => vec!["DELETE"],
            HttpMethod::Patch => vec!["PATCH"],
            HttpMethod::Options => vec!["OPTIONS"],
            HttpMethod::Head => vec!["HEAD"],
            HttpMethod::Trace => vec!["TRACE"],
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A path item's operations with their methods.
pub fn methods(item: &PathItem) -> impl Iterator<Item = (HttpMethod, &Operation)> {
    [
        (HttpMethod::Get, &item.get),
        (HttpMethod::Head, &item.head),
        (HttpMethod::Post, &item.post),
        (HttpMethod::Put, &item.put),
        (HttpMethod::Patch, &item.patch),
        (HttpMethod::Delete, &item.delete),
        (HttpMethod::Options, &item.options),
        (HttpMethod::Trace, &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
}

/// The 405 of a path, after its id is checked (`P`: a malformed id is its 404 whatever the
/// method, as an unknown one is).
fn method_not_allowed<P>(
    allow: String,
) -> impl FnOnce(P) -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static
where
    P: FromRequestParts<Arc<AppState>> + Send + 'static,
{
    move |_: P| ready(ApiError::MethodNotAllowed { allow })
}

/// The path the router matches for a documented one: without its trailing `/` (requests are
/// trimmed alike), and a last `{name}` under `/assets/` standing for the rest of the path.
fn routing_path(documented: &str) -> String {
    let trimmed = match documented.strip_suffix('/') {
        Some("") | None => documented,
        Some(rest) => rest,
    };
    match trimmed.strip_prefix("/assets/{") {
        Some(rest) => format!("/assets/{{*{rest}"),
        None => trimmed.to_owned(),
    }
}

/// Refuses requests once the daemon stops (503 `shutting_down`); the public routes do without
/// it, so that health checks see the stop.
#[derive(Debug, Clone, Copy)]
struct OpenLayer;

impl<S> Layer<S> for OpenLayer {
    type Service = Open<S>;

    fn layer(&self, inner: S) -> Open<S> {
        Open(inner)
    }
}

#[derive(Debug, Clone)]
struct Open<S>(S);

impl<S> Service<Request> for Open<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The connection's stop signal is the daemon's (`AppState::is_draining`).
        let stopping = req
            .extensions()
            .get::<Connection>()
            .is_some_and(|c| c.stop.is_cancelled());
        if stopping {
            Either::Left(ready(Ok(ApiError::ShuttingDown.into_response())))
        } else {
            Either::Right(self.0.call(req))
        }
    }
}

/// All the routes: the groups, the WebSocket endpoints, and the document.
#[derive(Debug)]
pub struct Api {
    groups: Vec<Group>,
    sockets: Router<Arc<AppState>>,
    socket_paths: Vec<&'static str>,
}

impl Api {
    /// The route table. `limits` sizes the body limit; the document does not depend on it.
    pub fn new(limits: &LimitsConfig) -> Self {
        let public = Group::new(Caller::Public, limits)
            .routes(routes!(health::get))
            .routes(routes!(health::get_alias))
            .routes(routes!(health::ready))
            .routes(routes!(openapi::get))
            .routes(routes!(docs::page))
            .routes(routes!(docs::file))
            .routes(routes!(web::page))
            .routes(routes!(web::admin_page))
            .routes(routes!(web::asset_file));
        let guest = Group::new(Caller::Guest, limits)
            .routes(routes!(auth::register))
            .routes(routes!(auth::token))
            .routes(routes!(auth::refresh));
        let user = Group::new(Caller::User, limits)
            .routes(routes!(auth::me))
            .routes(routes!(auth::find_user))
            .routes_with::<Id<UserPath>>(routes!(auth::get_user), Head::AsGet)
            .routes(routes!(conversations::list, conversations::create))
            .routes(routes!(conversations::unread_count))
            .routes_with::<Id<Conversation>>(routes!(conversations::get), Head::AsGet)
            .routes_with::<Id<Conversation>>(routes!(conversations::archive), Head::AsGet)
            .routes_with::<Id<Conversation>>(routes!(conversations::unarchive), Head::AsGet)
            .routes_with::<Id<Conversation>>(routes!(conversations::mark_all_read), Head::AsGet)
            .routes(routes!(messages::list, messages::send))
            .routes_with::<Id<Message>>(routes!(messages::get), Head::AsGet)
            .routes_with::<Id<Message>>(routes!(messages::mark_as_read), Head::AsGet)
            .routes(routes!(messages::unread))
            .routes(routes!(conversations::presence))
            .routes(routes!(service::engine_health));
        let service = Group::new(Caller::Service, limits)
            .routes(routes!(service::send))
            .routes_with::<Id<QueueUser>>(routes!(service::queue), Head::Refused)
            .routes(routes!(service::broadcast))
            .routes(routes!(service::stats))
            .routes(routes!(service::metrics))
            .routes_with::<Id<ProfileUser>>(routes!(profiles::put), Head::AsGet);
        let admin = Group::new(Caller::Admin, limits)
            .routes(routes!(admin::list_users))
            .routes_with::<Id<UserPath>>(routes!(admin::get_user, admin::erase), Head::AsGet)
            .routes_with::<Id<UserPath>>(routes!(admin::disable), Head::AsGet)
            .routes_with::<Id<UserPath>>(routes!(admin::enable), Head::AsGet)
            .routes_with::<Id<Message>>(routes!(admin::delete_message), Head::AsGet)
            .routes_with::<Id<Conversation>>(routes!(admin::get_conversation), Head::AsGet);
        Api {
            groups: vec![public, guest, user, service, admin],
            sockets: Router::new(),
            socket_paths: Vec::new(),
        }
        .socket("/ws/chat/", upgrade::chat)
        .socket_with::<Id<Conversation>, _, _>("/ws/chat/{id}/", upgrade::conversation)
        .socket("/ws/notifications/", upgrade::notifications)
        .socket("/ws/echo/", upgrade::echo)
    }

    /// Serves a WebSocket endpoint: `GET` only (an upgrade), refused like the other routes
    /// while the daemon stops.
    fn socket<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.socket_with::<(), H, T>(path, handler)
    }

    fn socket_with<P, H, T>(mut self, path: &'static str, handler: H) -> Self
    where
        P: FromRequestParts<Arc<AppState>> + Send + 'static,
        H: axum::handler::Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let refuse_head = || async {
            ApiError::MethodNotAllowed {
                allow: "GET".into(),
            }
        };
        let endpoint = axum::routing::get(handler)
            .head(refuse_head)
            .route_layer(OpenLayer)
            .fallback(method_not_allowed::<P>("GET".into()));
        self.sockets = self.sockets.route(&routing_path(path), endpoint);
        self.socket_paths.push(path);
        self
    }

    /// The WebSocket endpoints (contract section 3), which the OpenAPI document leaves out.
    pub fn sockets(&self) -> &[&'static str] {
        &self.socket_paths
    }

    /// Every documented route: method and path, as the document lists them.
    pub fn served(&self) -> Vec<(HttpMethod, String)> {
        self.groups
            .iter()
            .flat_map(|g| {
                g.paths.iter().flat_map(|(path, item)| {
                    methods(item).map(move |(method, _)| (method, path.clone()))
                })
            })
            .collect()
    }

    /// The OpenAPI document of every route but the sockets.
    pub fn document(&self) -> serde_json::Value {
        let mut doc = OpenApi::default();
        for group in &self.groups {
            for (path, item) in &group.paths {
                let mut item = item.clone();
                openapi::complete(&mut item, group.caller);
                doc.paths.paths.insert(path.clone(), item);
            }
            doc.components
                .get_or_insert_with(Default::default)
                .schemas
                .extend(group.schemas.iter().cloned());
        }
        openapi::assemble(doc)
    }

    /// The router, without the layers around it ([`super::layers::around`]).
    pub fn into_router(self, state: Arc<AppState>) -> Router {
        let mut router = Router::new();
        for group in self.groups {
            if !group.paths.is_empty() {
                router = router.merge(group.router);
            }
        }
        router
            .merge(self.sockets)
            .fallback(|| async { ApiError::NotFound("no such endpoint") })
            .with_state(state)
    }
}

/// The router of the daemon: every route, in its layers.
pub fn app(state: Arc<AppState>) -> impl HttpService + use<> {
    let limits = state.config.limits.clone();
    let http = state.config.http.clone();
    super::layers::around(Api::new(&limits).into_router(state), &limits, &http)
}

/// What a connection over `limits.max_connections` is answered: the health checks (from the
/// same handlers and paths as the public routes), else 503 `too_many_connections`.
pub fn over_limit(state: Arc<AppState>) -> impl HttpService + use<> {
    let limits = state.config.limits.clone();
    let mut router = Router::new();
    for (_, paths, endpoint) in [
        routes!(health::get),
        routes!(health::get_alias),
        routes!(health::ready),
    ] {
        for path in paths.paths.keys() {
            router = router.route(&routing_path(path), endpoint.clone());
        }
    }
    let busy = || async { ApiError::TooManyConnections };
    let http = state.config.http.clone();
    let router = router
        .fallback(busy)
        .method_not_allowed_fallback(busy)
        .with_state(state);
    super::layers::around(router, &limits, &http)
}

#[cfg(test)]
mod tests;

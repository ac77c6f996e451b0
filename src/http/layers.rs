//! The tower layers around the router, and the one inside each route that reads a body.
//!
//! From the outside in ([`around`]):
//!
//! 1. **Tracing** (tower-http `TraceLayer`): one `debug` event per request, in a span with the
//!    method and the *path only* — query strings can carry tokens (`?token=` on sockets) and are
//!    never logged (src/logging.rs).
//! 2. **CORS** (tower-http `CorsLayer`, [`cors`]) for `http.cors_allowed_origins`, outside the
//!    routes so that it answers preflights for them and adds its headers to every answer,
//!    errors included (a page must be able to read a 401). Absent while the list is empty.
//! 3. **Errors are JSON**: a layer's own refusal (tower-http's 413 for a declared body over the
//!    limit, in plain text) becomes the contract's JSON error.
//! 4. **Trailing `/`** (tower-http `NormalizePath`): trimmed before routing, so every path
//!    works with and without it and the router lists each once. The path as the client sent
//!    it stays in the request's [`super::extract::Connection`], for links.
//!
//! Inside each route of the user, service and admin groups ([`body_limit`], applied by
//! [`super::router`]): tower-http's `RequestBodyLimit` at `limits.max_body_bytes` (413 for a
//! declared `Content-Length` over it, before anything is read; a body that grows past it is
//! cut off where it crosses it, also 413).
//!
//! **Timeouts** are not tower-http's: a request head has `limits.body_timeout` at the edge
//! (`server::edge`, 408), and a body the same for the whole of it, in the extractor that reads it
//! (`extract::Json`, 408, and 503 once a stop begins). tower-http's `RequestBodyTimeout` times
//! each chunk, so a body trickling in a byte at a time would never end; its `TimeoutLayer`
//! would cut a handler short — a send whose commit is already queued — and call our slowness
//! the client's (408).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode};
use std::sync::Arc;
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowCredentials, AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

use crate::config::{HttpConfig, LimitsConfig};
use crate::error::ApiError;

/// What serves a connection's requests: the router in its layers.
pub trait HttpService:
    Service<
        hyper::Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> HttpService for T where
    T: Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// `router` in the layers every request goes through.
pub fn around(
    router: Router,
    limits: &LimitsConfig,
    http: &HttpConfig,
) -> impl HttpService + use<> {
    let limit = limits.max_body_bytes;
    ServiceBuilder::new()
        .map_response(|response: hyper::Response<_>| response.map(Body::new))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(())
                .on_response(Logged)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .map_response(|response: hyper::Response<_>| response.map(Body::new))
        .option_layer(cors(&http.cors_allowed_origins))
        .map_response(move |response: Response| json_errors(response, limit))
        .layer(NormalizePathLayer::trim_trailing_slash())
        .service(router)
}

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// CORS for `origins` (contract section 8.1), `None` for an empty list. Pages on a listed
/// origin may send credentials (cookies, `Authorization`); with `"*"` in the list any other
/// origin may call too, without credentials (`Access-Control-Allow-Credentials` is sent for
/// listed origins only, so browsers withhold the answer from a credentialed call elsewhere).
/// Preflights are answered 200 by the layer itself, before routing.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let listed: Arc<Vec<HeaderValue>> = Arc::new(
        origins
            .iter()
            .filter(|o| *o != "*")
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect(),
    );
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let layer = CorsLayer::new()
        .allow_methods(methods)
        // Whatever the page asks to send (Authorization, Content-Type, X-CSRFToken, …): what a
        // page may do is decided by its origin, not by its headers.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE);
    if listed.is_empty() {
        // `"*"` alone: `Access-Control-Allow-Origin: *`, which browsers never pair with
        // credentials.
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let is_listed = {
        let listed = listed.clone();
        move |origin: &HeaderValue| {
            listed
                .iter()
                .any(|l| l.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        }
    };
    let credentials = {
        let is_listed = is_listed.clone();
        AllowCredentials::predicate(move |origin, _| is_listed(origin))
    };
    Some(
        layer
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                any || is_listed(origin)
            }))
            .allow_credentials(credentials),
    )
}

/// The body limit of a route that may read one.
pub fn body_limit(limits: &LimitsConfig) -> RequestBodyLimitLayer {
    RequestBodyLimitLayer::new(limits.max_body_bytes)
}

/// A layer's refusal in plain text, as the contract's JSON error. Everything our handlers and
/// extractors answer is JSON already and passes untouched. `Allow` stays on 405s only: axum
/// adds the path's methods to every answer of a method router's fallback, which also answers
/// the 404 of a malformed id.
fn json_errors(mut response: Response, limit: usize) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().remove(ALLOW);
    }
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    response
}

/// The span of a request: method and path, never the query.
#[derive(Debug, Clone, Copy)]
struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &hyper::Request<B>) -> Span {
        tracing::debug_span!(
            "request",
            method = %request.method(),
            path = request.uri().path(),
        )
    }
}

/// The one line a request logs (at `debug`): its status and how long the answer took.
#[derive(Debug, Clone, Copy)]
struct Logged;

impl<B> OnResponse<B> for Logged {
    fn on_response(self, response: &hyper::Response<B>, latency: Duration, _: &Span) {
        tracing::debug!(
            status = response.status().as_u16(),
            micros = latency.as_micros() as u64,
            "answered"
        );
    }
}

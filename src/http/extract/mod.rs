//! Reading requests, as axum extractors: who is calling ([`User`], [`Service`]), the path id
//! ([`Id`]), the query ([`Query`]) and the JSON body ([`Json`], [`EmptyBody`]), each failing
//! with the contract's precise 4xx ([`ApiError`]) rather than axum's plain-text rejections.
//!
//! A handler lists them in the order the checks are made: the path id first (a malformed id is
//! 404 like an unknown one), then the caller (401), then the query and the body. Whatever the
//! extractors take is also what the OpenAPI document says the operation takes: the `Json` body
//! and the `Query` parameters are read from the handler's arguments by utoipa.
//!
//! The callers and the connection are read here; path ids in `path`, query strings in `query`,
//! bodies in `body` (all re-exported, so a handler names `extract::X` whichever it is).

mod body;
mod path;
mod query;

pub use body::{EmptyBody, Json};
pub use path::{Conversation, Id, Message, QueueUser, Resource, UserPath};
pub use query::{Count, Cursor, Flag, Params, Query, QueryId};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The connection a request came in on, put in its extensions by [`super::server`].
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's address (or its proxy's).
    pub peer: SocketAddr,
    /// The daemon's stop signal, so that reading a body gives up when a stop begins.
    pub stop: CancellationToken,
    /// The path as the client sent it, before the trailing `/` was trimmed for routing
    /// ([`super::layers`]): pagination links repeat it.
    pub path: Arc<str>,
}

fn connection(parts: &Parts) -> Result<&Connection, ApiError> {
    parts
        .extensions
        .get::<Connection>()
        .ok_or_else(|| ApiError::Internal("request without its connection".into()))
}

/// The user calling, from their access token, token cookie or session cookie
/// ([`super::caller`]; 401 without a valid one, 403 for a cookie-authenticated write from a
/// page on an origin not allowed); recorded in the user directory on first sight.
#[derive(Debug)]
pub struct User(pub Identity);

impl User {
    pub fn id(&self) -> u64 {
        self.0.user_id
    }
}

impl FromRequestParts<Arc<AppState>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = connection(parts)?.peer;
        // A cross-site page can make a browser send cookies with a write, not read the answer.
        let write = !parts.method.is_safe();
        let user = super::caller::identify(state, &parts.headers, None, peer, write).await?;
        if state.users.is_disabled(user.user_id) {
            return Err(ApiError::refused(Code::UserDisabled, DISABLED));
        }
        state.users.ensure(&state.store, &user).await?;
        Ok(User(user))
    }
}

/// What a disabled user's requests hear.
pub const DISABLED: &str = "this account has been disabled by an operator";

/// A request that came in over the admin socket (`indaba admin ...`, [`crate::admin`]): the
/// caller is on the host as the daemon's user or root, checked by the socket, and needs no
/// secret. Only the daemon puts it in a request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct LocalOperator;

/// The host app's backend, presenting `service.shared_secret` (or the secret in
/// `service.shared_secret_file`) as `X-Service-Token`, `X-Erlang-Service` or
/// `Authorization: Bearer`: compared in
/// constant time; 404 while the service API is off, 401 (counted) for a missing or wrong one.
#[derive(Debug)]
pub struct Service;

impl Service {
    fn check(state: &AppState, headers: &HeaderMap) -> Result<Service, ApiError> {
        let Some(secret) = &state.service_secret else {
            return Err(ApiError::NotFound(
                "the service API is not enabled on this server",
            ));
        };
        // `X-Erlang-Service` is the header the seed's Django stack sends its
        // `ERLANG_SHARED_SECRET` in (contract section 7).
        let presented = ["x-service-token", "x-erlang-service"]
            .iter()
            .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
            .or_else(|| {
                headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token)
            });
        // Hash both sides so the comparison takes as long whatever the lengths.
        let matches = presented.is_some_and(|p| {
            let a = Sha256::digest(p.trim().as_bytes());
            let b = Sha256::digest(secret.expose().as_bytes());
            bool::from(a.ct_eq(&b))
        });
        if matches {
            Ok(Service)
        } else {
            state.metrics.service_auth_failures.inc();
            Err(ApiError::ServiceUnauthorized)
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if parts.extensions.get::<LocalOperator>().is_some() {
            return Ok(Service);
        }
        Service::check(state, &parts.headers)
    }
}

/// A reader of `/metrics`: anyone with `metrics.public`, else the service API's caller.
#[derive(Debug)]
pub struct MetricsReader;

impl FromRequestParts<Arc<AppState>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if !state.config.metrics.public {
            Service::check(state, &parts.headers)?;
        }
        Ok(MetricsReader)
    }
}

/// The client's address: the peer, or the first untrusted address of `X-Forwarded-For` when
/// the peer is a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = connection(parts)?.peer;
        Ok(ClientIp(ClientIp::of(state, peer, &parts.headers)))
    }
}

impl ClientIp {
    /// The client's address, from the peer's and the request's `X-Forwarded-For`.
    pub fn of(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        crate::limits::client_ip(peer, xff, &state.config.server.trusted_proxies)
    }
}

/// `scheme://host` of this request and the path as requested, for absolute links (pagination).
#[derive(Debug)]
pub struct Link {
    pub base_url: String,
    pub path: Arc<str>,
    /// The query as sent, to keep its other parameters in the links.
    pub query: Params,
}

impl Link {
    /// This request's URL with `updates` applied to its query (`None` removes a parameter).
    pub fn with(&self, updates: &[(&str, Option<String>)]) -> String {
        format!(
            "{}{}?{}",
            self.base_url,
            self.path,
            self.query.with(updates)
        )
    }
}

impl FromRequestParts<Arc<AppState>> for Link {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let connection = connection(parts)?;
        let trusted = state
            .config
            .server
            .trusted_proxies
            .contains(&connection.peer.ip());
        Ok(Link {
            base_url: base_url(&parts.headers, trusted),
            path: connection.path.clone(),
            query: Params::parse(parts.uri.query()),
        })
    }
}

/// `scheme://host` of this request, for absolute links: `X-Forwarded-Host`/`-Proto` only from
/// a trusted proxy, and only a host made of host characters.
pub fn base_url(req_headers: &HeaderMap, via_trusted_proxy: bool) -> String {
    // Proxies may append to these headers: the first element is the client-facing value.
    let first = |name: &str| {
        req_headers
            .get(name)
            .filter(|_| via_trusted_proxy)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let valid_host = |h: &&str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let host = first("x-forwarded-host")
        .filter(valid_host)
        .or_else(|| {
            req_headers
                .get(hyper::header::HOST)
                .and_then(|v| v.to_str().ok())
                .filter(valid_host)
        })
        .unwrap_or("localhost");
    let scheme = first("x-forwarded-proto")
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::body::{form_fields, parse_fields};
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        conversation: QueryId,
        before: Option<Cursor>,
        archived: Option<Flag>,
        limit: Option<Count>,
    }

    async fn query(q: &str) -> Result<Sample, String> {
        let (mut parts, ()) = hyper::Request::builder()
            .uri(format!("/x?{q}"))
            .body(())
            .expect("request")
            .into_parts();
        Query::<Sample>::from_request_parts(&mut parts, &())
            .await
            .map(|q| q.0)
            .map_err(|e| {
                assert_eq!(e.code(), Code::InvalidQuery);
                e.to_string()
            })
    }

    #[derive(Debug, serde::Deserialize)]
    struct Form {
        participants: Vec<crate::ids::WireId>,
        #[serde(default)]
        receiver: Option<crate::ids::WireId>,
        text: String,
    }

    #[test]
    fn form_fields_read_as_drf_reads_them() {
        let form = |body: &str| parse_fields::<Form>(form_fields(body.as_bytes()));
        let ok = form("participants=2&text=a&participants=3&receiver=&text=b+c").expect("form");
        assert_eq!(
            crate::ids::plain(ok.participants),
            [2, 3],
            "a repeated key is a list"
        );
        assert_eq!(ok.receiver, None, "an empty field is left out");
        assert_eq!(ok.text, "b c", "a single field takes the last value");
        let one = form("participants=7&text=x").expect("form");
        assert_eq!(
            crate::ids::plain(one.participants),
            [7],
            "one value is a list of one"
        );
        let missing = form("participants=7").expect_err("no text");
        assert_eq!(missing.code(), Code::InvalidRequest);
        let bad = form("participants=x&text=y").expect_err("bad id");
        assert!(
            matches!(&bad, ApiError::Refused { fields, .. } if fields[0].name == "participants"),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn query_values_are_refused_by_name() {
        let ok = query("conversation=7&before=0&archived=YES&limit=3&conversation=x&other=1")
            .await
            .expect("valid");
        assert_eq!(ok.conversation.0, 7);
        assert_eq!(ok.before.map(|c| c.0), Some(0));
        assert_eq!(ok.archived.map(|f| f.0), Some(true));
        assert_eq!(ok.limit.map(|c| c.0), Some(3));
        assert_eq!(
            query("limit=3").await.expect_err("missing"),
            "query parameter `conversation` is required"
        );
        assert_eq!(
            query("conversation=9007199254740992")
                .await
                .expect_err("big"),
            "query parameter `conversation` must be a positive integer id"
        );
        assert_eq!(
            query("conversation=1&archived=maybe")
                .await
                .expect_err("flag"),
            "query parameter `archived` must be true or false"
        );
        assert_eq!(
            query("conversation=1&limit=0").await.expect_err("count"),
            "query parameter `limit` must be an integer from 1 to 9223372036854775807"
        );
        assert_eq!(
            query("conversation=1&before=-1").await.expect_err("cursor"),
            "query parameter `before` must be a message id"
        );
    }

    #[tokio::test]
    async fn counts_are_what_the_document_says_int64() {
        // The OpenAPI document gives counts as int64 from 1 (schemathesis sent 2^63 and it was
        // accepted): the range is 1 to 2^63 - 1, written in digits only.
        let ok = query("conversation=1&limit=9223372036854775807")
            .await
            .expect("valid");
        assert_eq!(ok.limit.map(|c| c.0), Some(9_223_372_036_854_775_807));
        for over in [
            "9223372036854775808",
            "18446744073709551615",
            "%2B5",
            "%205",
        ] {
            assert_eq!(
                query(&format!("conversation=1&limit={over}"))
                    .await
                    .expect_err(over),
                "query parameter `limit` must be an integer from 1 to 9223372036854775807",
                "{over}"
            );
        }
    }
}

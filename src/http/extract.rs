//! Reading requests, as axum extractors: who is calling ([`User`], [`Service`]), the path id
//! ([`Id`]), the query ([`Query`]) and the JSON body ([`Json`], [`EmptyBody`]), each failing
//! with the contract's precise 4xx ([`ApiError`]) rather than axum's plain-text rejections.
//!
//! A handler lists them in the order the checks are made: the path id first (a malformed id is
//! 404 like an unknown one), then the caller (401), then the query and the body. Whatever the
//! extractors take is also what the OpenAPI document says the operation takes: the `Json` body
//! and the `Query` parameters are read from the handler's arguments by utoipa.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::de::{self, DeserializeOwned};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};

use crate::auth::{AuthError, Identity};
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

/// The caller named by `Authorization: Bearer <jwt>`.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Invalid("Authorization header is not text".into()))?;
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or_else(|| AuthError::Invalid("expected `Authorization: Bearer <token>`".into()))?;
    Ok(state.verifier.verify(token.trim())?)
}

/// The user calling, from their access token (401 without a valid one); recorded in the user
/// directory on first sight.
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
        let user = authenticate(state, &parts.headers)?;
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
/// `service.shared_secret_file`) as `X-Service-Token` or `Authorization: Bearer`: compared in
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
        let presented = headers
            .get("x-service-token")
            .and_then(|v| v.to_str().ok())
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
        let xff = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientIp(crate::limits::client_ip(
            peer,
            xff,
            &state.config.server.trusted_proxies,
        )))
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

// ---------------------------------------------------------------------------------------------
// Path ids

/// What a path id names, for its 404 and its line in the OpenAPI document.
pub trait Resource: Send + Sync + 'static {
    /// The path parameter's name.
    const PARAM: &'static str;
    /// The 404's detail for an id that is malformed, out of range or unknown.
    const NOT_FOUND: &'static str;
    /// The parameter's description in the OpenAPI document.
    const DESCRIPTION: &'static str;
}

/// A conversation's id in the path.
#[derive(Debug)]
pub struct Conversation;
/// A message's id in the path.
#[derive(Debug)]
pub struct Message;
/// A user's id in the path.
#[derive(Debug)]
pub struct UserPath;
/// The user whose queue the service API drains.
#[derive(Debug)]
pub struct QueueUser;

impl Resource for Conversation {
    const PARAM: &'static str = "id";
    const NOT_FOUND: &'static str = "conversation not found";
    const DESCRIPTION: &'static str =
        "Conversation id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}
impl Resource for Message {
    const PARAM: &'static str = "id";
    const NOT_FOUND: &'static str = "message not found";
    const DESCRIPTION: &'static str = "Message id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}
impl Resource for UserPath {
    const PARAM: &'static str = "id";
    const NOT_FOUND: &'static str = "user not found";
    const DESCRIPTION: &'static str = "User id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}
impl Resource for QueueUser {
    const PARAM: &'static str = "user_id";
    const NOT_FOUND: &'static str = "no such user";
    const DESCRIPTION: &'static str =
        "The user whose queue to read (decimal, 1 ≤ id < 2^53; anything else is 404).";
}

/// The id of an `R` in the path: decimal, 1 ≤ id < 2^53; anything else is 404, as an id that
/// does not exist (and before the caller is checked, so the answer does not depend on it).
#[derive(Debug)]
pub struct Id<R>(pub u64, pub PhantomData<R>);

impl<R: Resource, S: Send + Sync> FromRequestParts<S> for Id<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound(R::NOT_FOUND))?;
        params
            .iter()
            .find(|(name, _)| *name == R::PARAM)
            .and_then(|(_, value)| parse_id(value))
            .map(|id| Id(id, PhantomData))
            .ok_or(ApiError::NotFound(R::NOT_FOUND))
    }
}

impl<R: Resource> utoipa::IntoParams for Id<R> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name(R::PARAM)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(R::DESCRIPTION))
                .schema(Some(crate::views::id_schema()))
                .build(),
        ]
    }
}

/// Parses a path or query id: decimal, 1 ≤ id < 2^53.
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..crate::MAX_ID).contains(id))
}

// ---------------------------------------------------------------------------------------------
// Query strings

/// Decoded query parameters, in order, as sent.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// This query with `updates` applied (`None` removes), encoded.
    pub fn with(&self, updates: &[(&str, Option<String>)]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            if !updates.iter().any(|(name, _)| name == k) {
                out.append_pair(k, v);
            }
        }
        for (name, value) in updates {
            if let Some(value) = value {
                out.append_pair(name, value);
            }
        }
        out.finish()
    }
}

/// The query string read into `T` (its fields: the parameters; unknown ones are ignored, a
/// repeated one counts once, by its first value). A missing required parameter or a value of
/// the wrong form is 400 `invalid_query`, naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut seen = HashSet::new();
        let pairs: Vec<(String, Text)> = Params::parse(parts.uri.query())
            .0
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, v)| (k, Text(v)))
            .collect();
        let de = de::value::MapDeserializer::<_, QueryError>::new(pairs.into_iter());
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let name = e.path().to_string();
                let detail = match e.into_inner() {
                    QueryError::Missing(name) => format!("query parameter `{name}` is required"),
                    QueryError::Expected(what) => {
                        format!("query parameter `{name}` must be {what}")
                    }
                    QueryError::Other(what) => format!("query parameter `{name}`: {what}"),
                };
                ApiError::refused(Code::InvalidQuery, detail)
            })
    }
}

/// A query value: text, which an `Option` field takes as present.
struct Text(String);

impl<'de> de::IntoDeserializer<'de, QueryError> for Text {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Text {
    type Error = QueryError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// Why a query parameter was refused.
#[derive(Debug)]
enum QueryError {
    Missing(&'static str),
    /// The form the value must have ("true or false").
    Expected(String),
    Other(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Missing(name) => write!(f, "missing `{name}`"),
            QueryError::Expected(what) => write!(f, "must be {what}"),
            QueryError::Other(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for QueryError {}

impl de::Error for QueryError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        let msg = msg.to_string();
        match msg.strip_prefix(EXPECTED) {
            Some(what) => QueryError::Expected(what.to_owned()),
            None => QueryError::Other(msg),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        QueryError::Missing(field)
    }
}

/// Marks a query value's refusal as "must be …" (through serde's `custom` errors).
const EXPECTED: &str = "\u{0}expected ";

/// Deserializes a query value from its text with `parse`, or refuses it as not `expected`.
fn from_text<'de, D, T>(
    deserializer: D,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
{
    let text = <std::borrow::Cow<'de, str> as de::Deserialize>::deserialize(deserializer)?;
    parse(&text).ok_or_else(|| de::Error::custom(format!("{EXPECTED}{expected}")))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, any case).
#[derive(Debug, Clone, Copy)]
pub struct Flag(pub bool);

impl<'de> de::Deserialize<'de> for Flag {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(Flag(true)),
                "false" | "0" | "no" => Some(Flag(false)),
                _ => None,
            }
        })
    }
}

/// A count from 1 up (a page, a page size, a limit); handlers cap it where a cap applies, as
/// Django REST framework caps page sizes.
#[derive(Debug, Clone, Copy)]
pub struct Count(pub usize);

impl<'de> de::Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = format!("an integer from 1 to {}", usize::MAX);
        from_text(d, &expected, |v| {
            v.parse::<usize>().ok().filter(|n| *n >= 1).map(Count)
        })
    }
}

/// An id in the query: 1 ≤ id < 2^53.
#[derive(Debug, Clone, Copy)]
pub struct QueryId(pub u64);

impl<'de> de::Deserialize<'de> for QueryId {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a positive integer id", |v| parse_id(v).map(QueryId))
    }
}

/// A message id as a page cursor: `0` to `2^53`, so that links built from the ends of the
/// range stay valid.
#[derive(Debug, Clone, Copy)]
pub struct Cursor(pub u64);

impl<'de> de::Deserialize<'de> for Cursor {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a message id", |v| {
            v.parse::<u64>()
                .ok()
                .filter(|id| *id <= crate::MAX_ID && v.bytes().all(|b| b.is_ascii_digit()))
                .map(Cursor)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// Reads the whole body. Its size is capped by the body limit layer ([`super::layers`]: 413
/// for more than `limits.max_body_bytes`); a body slower than `limits.body_timeout` as a whole
/// gets 408, and once a stop begins a body still arriving gets 503 (a stalled upload must not
/// hold a connection, or a graceful stop, for long). Says whether it was declared JSON.
async fn read_body(req: Request, state: &AppState) -> Result<(bool, bytes::Bytes), ApiError> {
    let limits = &state.config.limits;
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    let stop = req.extensions().get::<Connection>().map(|c| c.stop.clone());
    let stopping = async {
        match stop {
            Some(token) => token.cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    let collected = tokio::select! {
        // A body already here is read, stop or not.
        biased;
        read = tokio::time::timeout(limits.body_timeout, req.into_body().collect()) => {
            read.map_err(|_| ApiError::RequestTimeout { part: "body" })?
        }
        () = stopping => return Err(ApiError::ShuttingDown),
    };
    let body = collected
        .map_err(|e| {
            if caused_by::<http_body_util::LengthLimitError>(&e) {
                ApiError::PayloadTooLarge {
                    limit: limits.max_body_bytes,
                }
            } else {
                ApiError::refused(Code::InvalidBody, "the request body could not be read")
            }
        })?
        .to_bytes();
    Ok((is_json.unwrap_or(false), body))
}

/// Whether `error` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A JSON body read into `T`: 400 `invalid_json` for an empty or malformed body (or anything
/// but whitespace after its value), 415 for a body not declared JSON, 400 `invalid_request`
/// naming the field at fault. Unknown fields are ignored, as Django REST framework does.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (is_json, body) = read_body(req, state).await?;
        if body.is_empty() {
            return Err(ApiError::refused(
                Code::InvalidJson,
                "a JSON object body is required",
            ));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&body).map(Json)
    }
}

/// The body of an action endpoint: none, or `{}` (whatever its content type: `curl -d '{}'`
/// says form-encoded); a non-empty object is 400 `invalid_request`.
#[derive(Debug)]
pub struct EmptyBody;

impl FromRequest<Arc<AppState>> for EmptyBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (is_json, body) = read_body(req, state).await?;
        let trimmed = body.trim_ascii();
        if trimmed.is_empty() || trimmed == b"{}" {
            return Ok(EmptyBody);
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let value: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
        if value.is_empty() {
            Ok(EmptyBody)
        } else {
            Err(ApiError::refused(
                Code::InvalidRequest,
                "this action takes no parameters; send no body or {}",
            ))
        }
    }
}

/// Parses `body` as exactly one JSON value: `Deserializer::end` refuses anything but
/// whitespace after it (without it, `{"participants":[2]}}}garbage` was read as its first
/// value and served).
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let code = if inner.is_syntax() || inner.is_eof() {
            Code::InvalidJson
        } else {
            Code::InvalidRequest
        };
        let detail = if inner.is_syntax() || inner.is_eof() {
            format!("invalid JSON: {inner}")
        } else if path == "." {
            format!("request body: {inner}")
        } else {
            format!("field `{path}`: {inner}")
        };
        ApiError::refused(code, detail)
    })?;
    de.end()
        .map_err(|e| ApiError::refused(Code::InvalidJson, format!("invalid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
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
            format!(
                "query parameter `limit` must be an integer from 1 to {}",
                usize::MAX
            )
        );
        assert_eq!(
            query("conversation=1&before=-1").await.expect_err("cursor"),
            "query parameter `before` must be a message id"
        );
    }
}

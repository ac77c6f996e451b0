//! Reading requests: the caller's token, JSON bodies and query strings, each failing with a
//! precise 4xx.

use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Identity};
use crate::config::LimitsConfig;
use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The caller named by `Authorization: Bearer <jwt>`.
pub fn authenticate(state: &AppState, req: &Request<Incoming>) -> Result<Identity, ApiError> {
    let header = req
        .headers()
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

/// The daemon's stop signal, put in each request's extensions by the connection that serves it
/// (`http::server`), so that reading a body gives up when a stop begins.
#[derive(Debug, Clone)]
pub struct StopSignal(pub CancellationToken);

/// Reads the whole body, refusing more than `limits.max_body_bytes` with 413 and a body slower
/// than `limits.body_timeout` with 408; once a stop begins, a body still arriving gets 503
/// (a stalled upload must not hold a connection, or a graceful stop, for long).
async fn read_body(
    req: Request<Incoming>,
    limits: &LimitsConfig,
) -> Result<(bool, bytes::Bytes), ApiError> {
    let limit = limits.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    let stop = req.extensions().get::<StopSignal>().map(|s| s.0.clone());
    let stopping = async {
        match stop {
            Some(token) => token.cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    let collected = tokio::select! {
        // A body already here is read, stop or not.
        biased;
        read = tokio::time::timeout(
            limits.body_timeout,
            Limited::new(req.into_body(), limit).collect(),
        ) => read.map_err(|_| ApiError::RequestTimeout { part: "body" })?,
        () = stopping => return Err(ApiError::ShuttingDown),
    };
    let body = collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::refused(Code::InvalidBody, "the request body could not be read")
            }
        })?
        .to_bytes();
    Ok((is_json.unwrap_or(false), body))
}

/// Parses a JSON body into `T`; errors name the field at fault.
pub async fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
    limits: &LimitsConfig,
) -> Result<T, ApiError> {
    let (is_json, body) = read_body(req, limits).await?;
    if body.is_empty() {
        return Err(ApiError::refused(
            Code::InvalidJson,
            "a JSON object body is required",
        ));
    }
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    parse_json(&body)
}

/// Reads a body that may be absent or `{}` (action endpoints); anything else is refused.
pub async fn read_empty(req: Request<Incoming>, limits: &LimitsConfig) -> Result<(), ApiError> {
    let (is_json, body) = read_body(req, limits).await?;
    // No body, or `{}` whatever its content type (`curl -d '{}'` says form-encoded).
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"{}" {
        return Ok(());
    }
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
    if value.is_empty() {
        Ok(())
    } else {
        Err(ApiError::refused(
            Code::InvalidRequest,
            "this action takes no parameters; send no body or {}",
        ))
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

/// Decoded query parameters, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An id-like parameter: a positive integer below 2^53.
    pub fn id(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| parse_id(v).ok_or_else(|| bad_param(name, "a positive integer id")))
            .transpose()
    }

    /// A cursor id: `0` to `2^53`, so that links built from the ends of the range stay valid.
    pub fn cursor(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|id| *id <= crate::MAX_ID && v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad_param(name, "a message id"))
            })
            .transpose()
    }

    /// A count parameter in `1..`, capped at `max` (as Django REST framework caps page sizes).
    pub fn capped(&self, name: &'static str, max: usize) -> Result<Option<usize>, ApiError> {
        self.count(name, usize::MAX).map(|n| n.map(|n| n.min(max)))
    }

    /// A count parameter in `1..=max`.
    pub fn count(&self, name: &'static str, max: usize) -> Result<Option<usize>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| bad_param(name, &format!("an integer from 1 to {max}")))
            })
            .transpose()
    }

    /// `true`/`false` (also `1`/`0`, any case).
    pub fn flag(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(bad_param(name, "true or false")),
            })
            .transpose()
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

/// Parses a path or query id: decimal, 1 ≤ id < 2^53.
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..crate::MAX_ID).contains(id))
}

fn bad_param(name: &str, expected: &str) -> ApiError {
    ApiError::refused(
        Code::InvalidQuery,
        format!("query parameter `{name}` must be {expected}"),
    )
}

/// `scheme://host` of this request, for absolute pagination links.
pub fn base_url(req_headers: &hyper::HeaderMap, via_trusted_proxy: bool) -> String {
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

/// What every authenticated handler needs: the daemon's state, the caller, and this
/// request's base URL for absolute links.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub user: Identity,
    pub base_url: String,
}

impl<'a> Ctx<'a> {
    /// Authenticates the request; 401 if its token is missing or bad.
    pub fn new(
        state: &'a AppState,
        peer: std::net::SocketAddr,
        req: &Request<Incoming>,
    ) -> Result<Self, ApiError> {
        let user = authenticate(state, req)?;
        let trusted = state.config.server.trusted_proxies.contains(&peer.ip());
        Ok(Self {
            state,
            user,
            base_url: base_url(req.headers(), trusted),
        })
    }
}

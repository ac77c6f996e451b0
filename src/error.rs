//! The one place errors become wire responses.
//!
//! Lower layers have their own enums ([`crate::store::StoreError`], [`crate::store::WriteError`],
//! [`crate::auth::AuthError`]); [`ApiError`] is what a handler returns, and
//! [`ApiError::into_response`] turns it into the contract's `{"error", "detail"}` body with the
//! right status. Our own faults are logged here at `error` and shown to clients without detail;
//! client mistakes are logged at `debug`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::HeaderMap;
use hyper::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::auth::{AuthError, password};
use crate::messaging::SendError;
use crate::store::{StoreError, WriteError};

/// Every response the HTTP layer sends.
pub type HttpResponse = Response<Full<Bytes>>;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("a valid X-Service-Token is required")]
    ServiceUnauthorized,
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    #[error("{detail}")]
    RateLimited {
        detail: &'static str,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("storage is unavailable (the disk is full or failing); try again later")]
    StorageUnavailable,
    #[error("the server is at its connection limit")]
    TooManyConnections,
    /// A bounded resource (password hashing) is at capacity: retry shortly.
    #[error("{0}")]
    Busy(&'static str),
    #[error("the request {part} was not received in time")]
    RequestTimeout { part: &'static str },
    #[error("the request line is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error(
        "the request head is larger than {limit} bytes or has more than {fields} header fields"
    )]
    HeadTooLarge { limit: usize, fields: usize },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(AuthError::Missing) => {
                (StatusCode::UNAUTHORIZED, "not_authenticated")
            }
            ApiError::Unauthorized(AuthError::Expired) => {
                (StatusCode::UNAUTHORIZED, "token_expired")
            }
            ApiError::Unauthorized(AuthError::BadCredentials) => {
                (StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "token_invalid"),
            ApiError::ServiceUnauthorized => (StatusCode::UNAUTHORIZED, "invalid_service_token"),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::StorageUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            ApiError::TooManyConnections => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections")
            }
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_busy"),
            ApiError::RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::HeadTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// The contract's error response for this error.
    pub fn into_response(self) -> HttpResponse {
        let (status, headers, body) = self.into_parts();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// The same response as HTTP/1.1 bytes, with `Connection: close`: for answers written
    /// straight to a socket, not through hyper (at the connection limit, or to a request head
    /// cut short by a stop).
    pub fn into_http1_bytes(self) -> Bytes {
        let (status, mut headers, body) = self.into_parts();
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in &headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out.into()
    }

    /// Status, headers and JSON body; logs our own faults.
    fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            // The code only: a detail can quote what the client sent (message text included).
            _ => {
                tracing::debug!(status = status.as_u16(), code, "request refused")
            }
        }
        let body = serde_json::json!({"error": code, "detail": self.to_string()});
        let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::Busy(_) | ApiError::TooManyConnections => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::ShuttingDown | ApiError::RequestTimeout { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // The connection cannot be read past a head like these.
            ApiError::UriTooLong { .. } | ApiError::HeadTooLarge { .. } => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::StorageUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        (status, headers, Bytes::from(body))
    }
}

impl From<password::Busy> for ApiError {
    fn from(_: password::Busy) -> Self {
        ApiError::Busy("too many password checks at once; try again in a second")
    }
}

impl From<password::HashError> for ApiError {
    fn from(e: password::HashError) -> Self {
        match e {
            password::HashError::Busy(busy) => busy.into(),
            password::HashError::Failed(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => ApiError::ShuttingDown,
            // The writer logged the cause at ERROR when the outage began; each request refused
            // meanwhile is logged at debug only.
            StoreError::Unavailable(_) => ApiError::StorageUnavailable,
            // Already logged at ERROR where it was found (`store::damage`); for the client it
            // is a record that cannot be shown, and asking again will not change that.
            StoreError::Damaged { .. } => {
                ApiError::NotFound("damaged in the data file; it cannot be shown")
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::ConversationNotFound => ApiError::NotFound("conversation not found"),
            WriteError::ReceiverNotParticipant(_) | WriteError::ReceiverIsSender => {
                ApiError::bad_request("invalid_receiver", e.to_string())
            }
            WriteError::TooFewParticipants => {
                ApiError::bad_request("invalid_participants", e.to_string())
            }
            WriteError::UsernameTaken => ApiError::Conflict {
                code: "username_taken",
                detail: e.to_string(),
            },
            WriteError::Store(store) => store.into(),
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Invalid { code, detail } => ApiError::BadRequest { code, detail },
            SendError::RateLimited { retry_after } => ApiError::RateLimited {
                detail: "sending too fast; slow down",
                retry_after_secs: crate::limits::retry_after_secs(retry_after),
            },
            SendError::ClientIdConflict => ApiError::Conflict {
                code: "client_id_conflict",
                detail: e.to_string(),
            },
            SendError::Write(w) => w.into(),
        }
    }
}

/// The machine code of an error event on a WebSocket (`{"type":"error","code",...}`), the
/// same codes the REST API uses.
pub fn event_code(e: &SendError) -> &'static str {
    match e {
        SendError::Invalid { code, .. } => code,
        SendError::RateLimited { .. } => "rate_limited",
        SendError::ClientIdConflict => "client_id_conflict",
        SendError::Write(WriteError::ConversationNotFound) => "not_found",
        SendError::Write(WriteError::ReceiverNotParticipant(_) | WriteError::ReceiverIsSender) => {
            "invalid_receiver"
        }
        SendError::Write(WriteError::TooFewParticipants) => "invalid_participants",
        SendError::Write(WriteError::UsernameTaken) => "username_taken",
        SendError::Write(WriteError::Store(StoreError::Closed)) => "shutting_down",
        SendError::Write(WriteError::Store(StoreError::Unavailable(_))) => "storage_unavailable",
        SendError::Write(WriteError::Store(_)) => "internal_error",
    }
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

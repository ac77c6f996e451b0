//! The one place errors become wire responses, and the one list of the codes they carry.
//!
//! * [`Code`] is every machine code the daemon sends (`{"error": code}` in a REST response,
//!   `{"type":"error","code"}` on a socket), each with its HTTP status and the headers that go
//!   with it. Nothing else spells a code.
//! * Each lower layer's error maps to a code once, here: [`AuthError`], [`StoreError`] and
//!   [`WriteError`] (`Code::from`). The domain's own error ([`crate::chat::ChatError`]) maps
//!   itself, in its module, through these.
//! * [`ApiError`] is what an HTTP handler or extractor returns; its `IntoResponse` turns it
//!   into the contract's `{"error", "detail"}` body with the status of its code. Our own faults are
//!   logged here at `error` and shown to clients without detail; client mistakes are logged at
//!   `debug`.

use axum::body::Body;
use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::auth::{AuthError, password};
use crate::store::{StoreError, WriteError};

/// Every response the HTTP layer sends.
pub type HttpResponse = axum::response::Response;

/// Declares [`Code`]: each code once, with its status and its string.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $status:ident, $text:literal;)*) => {
        /// A machine code of the wire contract, with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            /// Every code, for documentation checks.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as the wire spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }

            /// The HTTP status of a response carrying this code.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Code::$name => StatusCode::$status,)*
                }
            }
        }
    };
}

codes! {
    /// Not valid HTTP/1.1 (request line, a header, framing); the connection is closed.
    MalformedRequest = BAD_REQUEST, "malformed_request";
    /// Malformed JSON, or anything but whitespace after the value.
    InvalidJson = BAD_REQUEST, "invalid_json";
    /// A field missing, of the wrong type, or out of range.
    InvalidRequest = BAD_REQUEST, "invalid_request";
    InvalidQuery = BAD_REQUEST, "invalid_query";
    /// A body that could not be read.
    InvalidBody = BAD_REQUEST, "invalid_body";
    InvalidParticipants = BAD_REQUEST, "invalid_participants";
    InvalidReceiver = BAD_REQUEST, "invalid_receiver";
    TextTooLong = BAD_REQUEST, "text_too_long";
    MetadataTooLarge = BAD_REQUEST, "metadata_too_large";
    SubjectTooLong = BAD_REQUEST, "subject_too_long";
    InvalidUsername = BAD_REQUEST, "invalid_username";
    InvalidPassword = BAD_REQUEST, "invalid_password";
    /// A plain request to a WebSocket endpoint.
    WebsocketRequired = BAD_REQUEST, "websocket_required";
    WebsocketHandshake = BAD_REQUEST, "websocket_handshake";
    /// A socket frame whose fields cannot be read (socket only).
    InvalidMessage = BAD_REQUEST, "invalid_message";
    /// A socket frame of a `type` its dialect does not have (socket only).
    UnknownType = BAD_REQUEST, "unknown_type";
    /// A binary frame (socket only).
    UnsupportedData = BAD_REQUEST, "unsupported_data";
    NotAuthenticated = UNAUTHORIZED, "not_authenticated";
    TokenInvalid = UNAUTHORIZED, "token_invalid";
    TokenExpired = UNAUTHORIZED, "token_expired";
    InvalidCredentials = UNAUTHORIZED, "invalid_credentials";
    InvalidServiceToken = UNAUTHORIZED, "invalid_service_token";
    RegistrationDisabled = FORBIDDEN, "registration_disabled";
    LocalAccountsUnavailable = FORBIDDEN, "local_accounts_unavailable";
    /// An operator disabled (or erased) this user: their tokens and logins are refused.
    UserDisabled = FORBIDDEN, "user_disabled";
    /// No such resource, or one the caller may not see.
    NotFound = NOT_FOUND, "not_found";
    MethodNotAllowed = METHOD_NOT_ALLOWED, "method_not_allowed";
    RequestTimeout = REQUEST_TIMEOUT, "request_timeout";
    ClientIdConflict = CONFLICT, "client_id_conflict";
    UsernameTaken = CONFLICT, "username_taken";
    PayloadTooLarge = PAYLOAD_TOO_LARGE, "payload_too_large";
    UriTooLong = URI_TOO_LONG, "uri_too_long";
    UnsupportedMediaType = UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type";
    RateLimited = TOO_MANY_REQUESTS, "rate_limited";
    HeadersTooLarge = REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large";
    /// A fault of the daemon itself; never caused by what a client sends.
    InternalError = INTERNAL_SERVER_ERROR, "internal_error";
    ShuttingDown = SERVICE_UNAVAILABLE, "shutting_down";
    /// The disk is full or failing: writes are refused until it can write again.
    StorageUnavailable = SERVICE_UNAVAILABLE, "storage_unavailable";
    TooManyConnections = SERVICE_UNAVAILABLE, "too_many_connections";
    /// A bounded resource (password hashing) is at capacity.
    ServerBusy = SERVICE_UNAVAILABLE, "server_busy";
}

impl Code {
    /// The headers every response with this code carries (those that depend only on the code;
    /// `Allow` and a computed `Retry-After` come from [`ApiError`]).
    fn headers(self, headers: &mut HeaderMap) {
        match self {
            Code::ShuttingDown | Code::RequestTimeout => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Code::StorageUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Code::ServerBusy | Code::TooManyConnections => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The connection cannot be read past a head like these.
            Code::UriTooLong | Code::HeadersTooLarge => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // A user's credentials were refused (the service secret is not a bearer scheme
            // a client can renew).
            Code::NotAuthenticated
            | Code::TokenInvalid
            | Code::TokenExpired
            | Code::InvalidCredentials => {
                headers.insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl From<&AuthError> for Code {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::Missing => Code::NotAuthenticated,
            AuthError::Expired => Code::TokenExpired,
            AuthError::BadCredentials => Code::InvalidCredentials,
            AuthError::Invalid(_)
            | AuthError::RefreshToken
            | AuthError::BadUserId(_)
            | AuthError::NotRefreshToken => Code::TokenInvalid,
        }
    }
}

impl From<&StoreError> for Code {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Closed => Code::ShuttingDown,
            // The writer logged the cause at ERROR when the outage began.
            StoreError::Unavailable(_) => Code::StorageUnavailable,
            // Already logged at ERROR where it was found (`store::damage`); for the client it
            // is a record that cannot be shown, and asking again will not change that.
            StoreError::Damaged { .. } => Code::NotFound,
            _ => Code::InternalError,
        }
    }
}

impl From<&WriteError> for Code {
    fn from(e: &WriteError) -> Self {
        match e {
            WriteError::ConversationNotFound => Code::NotFound,
            WriteError::ReceiverNotParticipant(_) | WriteError::ReceiverIsSender => {
                Code::InvalidReceiver
            }
            WriteError::TooFewParticipants => Code::InvalidParticipants,
            WriteError::UsernameTaken => Code::UsernameTaken,
            WriteError::UserNotFound | WriteError::MessageNotFound => Code::NotFound,
            WriteError::UserDisabled => Code::UserDisabled,
            WriteError::Store(store) => store.into(),
        }
    }
}

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal with its code (which gives the status) and a sentence for the client.
    #[error("{detail}")]
    Refused { code: Code, detail: String },
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("a valid X-Service-Token is required")]
    ServiceUnauthorized,
    #[error("{detail}")]
    RateLimited {
        detail: &'static str,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    NotFound(&'static str),
    /// `allow`: the methods the path serves, as the `Allow` header lists them.
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
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
    /// A refusal with `code` (its status) and `detail`.
    pub fn refused(code: Code, detail: impl Into<String>) -> Self {
        ApiError::Refused {
            code,
            detail: detail.into(),
        }
    }

    /// The wire code of this error, which also gives its status.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Refused { code, .. } => *code,
            ApiError::Unauthorized(auth) => auth.into(),
            ApiError::ServiceUnauthorized => Code::InvalidServiceToken,
            ApiError::RateLimited { .. } => Code::RateLimited,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            ApiError::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            ApiError::UnsupportedMediaType => Code::UnsupportedMediaType,
            ApiError::ShuttingDown => Code::ShuttingDown,
            ApiError::StorageUnavailable => Code::StorageUnavailable,
            ApiError::TooManyConnections => Code::TooManyConnections,
            ApiError::Busy(_) => Code::ServerBusy,
            ApiError::RequestTimeout { .. } => Code::RequestTimeout,
            ApiError::UriTooLong { .. } => Code::UriTooLong,
            ApiError::HeadTooLarge { .. } => Code::HeadersTooLarge,
            ApiError::Internal(_) => Code::InternalError,
        }
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
        let code = self.code();
        let status = code.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            // The code only: a detail can quote what the client sent (message text included).
            _ => {
                tracing::debug!(
                    status = status.as_u16(),
                    code = code.as_str(),
                    "request refused"
                )
            }
        }
        let body = serde_json::json!({"error": code, "detail": self.to_string()});
        let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        code.headers(&mut headers);
        match self {
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(allow) = HeaderValue::try_from(allow) {
                    headers.insert(ALLOW, allow);
                }
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        (status, headers, Bytes::from(body))
    }
}

/// The contract's error response for this error.
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        let (status, headers, body) = self.into_parts();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
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
    /// By the store error's [`Code`]; only our own faults keep their cause (for the log).
    fn from(e: StoreError) -> Self {
        match Code::from(&e) {
            Code::ShuttingDown => ApiError::ShuttingDown,
            // Each request refused during an outage is logged at debug only.
            Code::StorageUnavailable => ApiError::StorageUnavailable,
            Code::NotFound => ApiError::NotFound("damaged in the data file; it cannot be shown"),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    /// By the write error's [`Code`], with its sentence.
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(store) => store.into(),
            refused => ApiError::refused(Code::from(&refused), refused.to_string()),
        }
    }
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs: String = ["docs/API.md", "docs/WEBSOCKET.md"]
            .iter()
            .map(|p| std::fs::read_to_string(root.join(p)).expect("docs"))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} listed twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text} is not snake_case"
            );
            assert!(
                docs.contains(&format!("`{text}`")),
                "error code `{text}` is not documented in docs/API.md or docs/WEBSOCKET.md"
            );
        }
    }

    #[test]
    fn every_error_body_carries_its_code_and_status() {
        let cases = [
            (ApiError::refused(Code::TextTooLong, "too long"), 400),
            (ApiError::Unauthorized(AuthError::Expired), 401),
            (ApiError::ServiceUnauthorized, 401),
            (ApiError::refused(Code::RegistrationDisabled, "off"), 403),
            (ApiError::from(WriteError::ConversationNotFound), 404),
            (ApiError::from(WriteError::UsernameTaken), 409),
            (ApiError::from(StoreError::Closed), 503),
            (ApiError::from(StoreError::Unavailable("full".into())), 503),
        ];
        for (error, status) in cases {
            let code = error.code();
            let (got, headers, body) = error.into_parts();
            assert_eq!(got.as_u16(), status, "{code}");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["error"], code.as_str());
            assert_eq!(headers[CONTENT_TYPE], "application/json");
        }
    }
}

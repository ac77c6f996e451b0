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

use crate::auth::{AuthError, SessionError, password};
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
    /// A cookie-authenticated request from a page on an origin not allowed
    /// (`http.cors_allowed_origins`): cross-site WebSocket hijacking, or a cross-site write.
    OriginNotAllowed = FORBIDDEN, "origin_not_allowed";
    /// An operator disabled (or erased) this user: their tokens and logins are refused.
    UserDisabled = FORBIDDEN, "user_disabled";
    /// No such resource, or one the caller may not see.
    NotFound = NOT_FOUND, "not_found";
    MethodNotAllowed = METHOD_NOT_ALLOWED, "method_not_allowed";
    RequestTimeout = REQUEST_TIMEOUT, "request_timeout";
    ClientIdConflict = CONFLICT, "client_id_conflict";
    UsernameTaken = CONFLICT, "username_taken";
    /// The host app tried to rename a local account (`PUT /api/users/{id}`).
    LocalAccount = CONFLICT, "local_account";
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
    /// The host app did not confirm a session cookie in time (`auth.session_check_url`).
    SessionCheckUnavailable = SERVICE_UNAVAILABLE, "session_check_unavailable";
}

impl Code {
    /// The request field a refusal with this code is always about (the other codes name
    /// theirs where they are raised, or are not about one field).
    pub const fn field(self) -> Option<&'static str> {
        match self {
            Code::TextTooLong => Some("text"),
            Code::MetadataTooLarge => Some("metadata"),
            Code::SubjectTooLong => Some("subject"),
            Code::InvalidParticipants => Some("participants"),
            Code::InvalidReceiver => Some("receiver"),
            _ => None,
        }
    }

    /// The headers every response with this code carries (those that depend only on the code;
    /// `Allow` and a computed `Retry-After` come from [`ApiError`]).
    fn headers(self, headers: &mut HeaderMap) {
        match self {
            Code::ShuttingDown | Code::RequestTimeout => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Code::StorageUnavailable | Code::SessionCheckUnavailable => {
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
            AuthError::Missing | AuthError::NoSession => Code::NotAuthenticated,
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
            WriteError::LocalAccount(_) => Code::LocalAccount,
            WriteError::UserNotFound | WriteError::MessageNotFound => Code::NotFound,
            WriteError::UserDisabled => Code::UserDisabled,
            WriteError::Store(store) => store.into(),
        }
    }
}

/// A request field at fault, as Django REST framework reports it (contract section 7): the
/// response adds `"<name>": ["<sentence>", ...]` beside `error` and `detail`, so that a DRF
/// client shows the sentence next to its form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field as the request named it; a nested one as `message.sender_id`.
    pub name: String,
    /// One sentence, capitalized and ending with a full stop (`This field is required.`).
    pub sentence: String,
}

impl FieldError {
    /// The field a deserializer's `message` at `path` is about, with DRF's sentence for it;
    /// `None` when it is about the body as a whole. `path` is serde_path_to_error's (`.` for
    /// the body itself, `participants[0]`, `message.sender_id`), `message` serde's, without
    /// a position (`missing field `text``, `invalid type: string "x", expected an id`).
    pub fn from_serde(path: &str, message: &str) -> Option<FieldError> {
        // The field a path names: list indexes dropped (DRF reports a list field as one).
        let mut name: String = path
            .split('.')
            .map(|part| part.split('[').next().unwrap_or(part))
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        let mut join = |inner: &str| {
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(inner);
        };
        // serde reports a missing or repeated field on the struct that lacks it, naming it
        // only in its message: the one place its wording is read.
        let named = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix('`'))
                .map(str::to_owned)
        };
        let sentence = if let Some(field) = named("missing field `") {
            join(&field);
            "This field is required.".to_owned()
        } else if let Some(field) = named("duplicate field `") {
            join(&field);
            "This field was given more than once (`content` is another name for `text`).".to_owned()
        } else {
            sentence(message)
        };
        (!name.is_empty()).then_some(FieldError { name, sentence })
    }

    /// A check of field `name` that refused it with `detail` (`field `text` may not be
    /// blank` → `This field may not be blank.`).
    pub fn from_detail(name: &str, detail: &str) -> FieldError {
        let sentence = match detail.strip_prefix(&format!("field `{name}` ")) {
            Some(rest) if !rest.starts_with(':') => sentence(&format!("This field {rest}")),
            _ => sentence(
                detail
                    .strip_prefix(&format!("field `{name}`: "))
                    .unwrap_or(detail),
            ),
        };
        FieldError {
            name: name.to_owned(),
            sentence,
        }
    }
}

/// `text` as a sentence: capitalized, ending with a full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal with its code (which gives the status), a sentence for the client, and the
    /// request fields at fault, if it is about some.
    #[error("{detail}")]
    Refused {
        code: Code,
        detail: String,
        fields: Vec<FieldError>,
    },
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
    #[error(
        "request body must be JSON or a form (Content-Type: application/json, \
         application/x-www-form-urlencoded or multipart/form-data)"
    )]
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
    /// A refusal with `code` (its status) and `detail`; about the field the code is always
    /// about ([`Code::field`]), if any.
    pub fn refused(code: Code, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let fields = code
            .field()
            .map(|name| FieldError::from_detail(name, &detail))
            .into_iter()
            .collect();
        ApiError::Refused {
            code,
            detail,
            fields,
        }
    }

    /// A refusal with `code` and `detail` about request field `name`.
    pub fn refused_field(code: Code, name: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let fields = vec![FieldError::from_detail(name, &detail)];
        ApiError::Refused {
            code,
            detail,
            fields,
        }
    }

    /// This refusal with its field names as another way in spells them (`from` → `to`): the
    /// domain names fields as the REST API does, the service API as seed 001 did
    /// (`receiver` → `receiver_id`).
    pub fn renaming_fields(mut self, names: &[(&str, &str)]) -> Self {
        if let ApiError::Refused { fields, .. } = &mut self {
            for field in fields {
                if let Some((_, to)) = names.iter().find(|(from, _)| *from == field.name) {
                    field.name = (*to).to_owned();
                }
            }
        }
        self
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
        let mut body = serde_json::Map::new();
        body.insert("error".into(), code.as_str().into());
        body.insert("detail".into(), self.to_string().into());
        if let ApiError::Refused { fields, .. } = &self {
            for field in fields {
                // `error` and `detail` are the contract's; no request field is named so.
                if field.name == "error" || field.name == "detail" {
                    continue;
                }
                let sentences = body
                    .entry(field.name.clone())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(list) = sentences {
                    list.push(field.sentence.clone().into());
                }
            }
        }
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

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotLoggedIn => ApiError::Unauthorized(AuthError::NoSession),
            SessionError::Unavailable => {
                ApiError::refused(Code::SessionCheckUnavailable, e.to_string())
            }
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
    fn field_errors_read_as_drf_writes_them() {
        let field =
            |path, message| FieldError::from_serde(path, message).map(|f| (f.name, f.sentence));
        assert_eq!(
            field(".", "missing field `participants`"),
            Some(("participants".into(), "This field is required.".into()))
        );
        assert_eq!(
            field("message", "missing field `sender_id`"),
            Some(("message.sender_id".into(), "This field is required.".into()))
        );
        assert_eq!(
            field(
                "participants[1]",
                "invalid value: string \"x\", expected an id"
            ),
            Some((
                "participants".into(),
                "Invalid value: string \"x\", expected an id.".into()
            ))
        );
        assert_eq!(field(".", "invalid type: sequence, expected a map"), None);
        let blank = FieldError::from_detail("text", "field `text` may not be blank");
        assert_eq!(blank.sentence, "This field may not be blank.");
        let range = FieldError::from_detail("receiver", "field `receiver`: id 0 is out of range");
        assert_eq!(range.sentence, "Id 0 is out of range.");
        let other = FieldError::from_detail("subject", "subject is longer than 1024 bytes");
        assert_eq!(other.sentence, "Subject is longer than 1024 bytes.");
    }

    #[test]
    fn a_field_refusal_has_drf_keys_beside_error_and_detail() {
        let (status, _, body) =
            ApiError::refused(Code::TextTooLong, "field `text` is longer than 9 bytes")
                .renaming_fields(&[("text", "message.text")])
                .into_parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"error": "text_too_long", "detail": "field `text` is longer than 9 bytes",
                               "message.text": ["This field is longer than 9 bytes."]})
        );
        let (_, _, body) = ApiError::refused(Code::InvalidJson, "invalid JSON").into_parts();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json.as_object().map(|o| o.len()), Some(2), "{json}");
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

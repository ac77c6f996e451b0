//! Bodies: [`Json`] reads JSON, a form or multipart fields alike (as Django REST framework's
//! default parsers do), [`EmptyBody`] a body that must carry nothing.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::header::CONTENT_TYPE;
use serde::de::{self, DeserializeOwned};

use crate::error::{ApiError, Code};
use crate::state::AppState;

use super::Connection;
use super::query::{TextError, Values};

/// How a body is encoded, from its `Content-Type`: the three of Django REST framework's
/// default parsers, or another (415).
#[derive(Debug, PartialEq, Eq)]
enum Encoding {
    /// `application/json` or `…+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data` with its boundary (`None`: the header has none).
    Multipart(Option<String>),
    /// Anything else, or no `Content-Type`.
    Other,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return Encoding::Other;
        };
        let mime = value.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json") {
            Encoding::Json
        } else if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Encoding::Form
        } else if mime.eq_ignore_ascii_case("multipart/form-data") {
            Encoding::Multipart(multer::parse_boundary(value).ok())
        } else {
            Encoding::Other
        }
    }
}

/// Reads the whole body. Its size is capped by the body limit layer ([`super::layers`]: 413
/// for more than `limits.max_body_bytes`); a body slower than `limits.body_timeout` as a whole
/// gets 408, and once a stop begins a body still arriving gets 503 (a stalled upload must not
/// hold a connection, or a graceful stop, for long). Says how it is encoded.
async fn read_body(req: Request, state: &AppState) -> Result<(Encoding, bytes::Bytes), ApiError> {
    let limits = &state.config.limits;
    let encoding = Encoding::of(req.headers());
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
    Ok((encoding, body))
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

/// A request body read into `T`, the one body extractor of every operation that takes one.
/// Read as Django REST framework's default parsers read it (contract section 7): JSON, or a
/// form (`application/x-www-form-urlencoded`, or `multipart/form-data` without files), where
/// a repeated key is a list and an empty field an absent optional one; any id is a number or
/// its decimal string ([`crate::ids::WireId`]). Unknown fields are ignored, as DRF does.
///
/// Refusals: 400 `invalid_json` for an empty or malformed JSON body (or anything but
/// whitespace after its value), 400 `invalid_body` for a malformed multipart body or one
/// with a file, 415 for another content type, and 400 `invalid_request` naming the field at
/// fault, in DRF's shape ([`crate::error::FieldError`]).
///
/// Named `Json` because utoipa recognises a body extractor by that name: the operation's
/// request body in the document comes from it (with the form types added by
/// [`super::openapi::complete`]).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (encoding, body) = read_body(req, state).await?;
        match encoding {
            Encoding::Json | Encoding::Other if body.is_empty() => Err(ApiError::refused(
                Code::InvalidJson,
                "a JSON object body is required",
            )),
            Encoding::Json => parse_json(&body).map(Json),
            Encoding::Form => parse_fields(form_fields(&body)).map(Json),
            Encoding::Multipart(boundary) => {
                parse_fields(multipart_fields(body, boundary).await?).map(Json)
            }
            Encoding::Other => Err(ApiError::UnsupportedMediaType),
        }
    }
}

/// The body of an action endpoint: none, or `{}` (whatever its content type: `curl -d '{}'`
/// says form-encoded), or an empty form; a parameter is 400 `invalid_request`.
#[derive(Debug)]
pub struct EmptyBody;

impl FromRequest<Arc<AppState>> for EmptyBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (encoding, body) = read_body(req, state).await?;
        let trimmed = body.trim_ascii();
        if trimmed.is_empty() || trimmed == b"{}" {
            return Ok(EmptyBody);
        }
        let empty = match encoding {
            Encoding::Json => {
                parse_json::<serde_json::Map<String, serde_json::Value>>(&body)?.is_empty()
            }
            Encoding::Form => form_fields(&body).is_empty(),
            Encoding::Multipart(boundary) => multipart_fields(body, boundary).await?.is_empty(),
            Encoding::Other => return Err(ApiError::UnsupportedMediaType),
        };
        if empty {
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
/// value and served). The whole body must be UTF-8 first, as JSON is (RFC 8259): serde_json
/// checks the strings it reads, but skips an ignored one (an unknown field's) unchecked, so
/// a body with bad bytes there was served.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = std::str::from_utf8(body).map_err(|e| {
        ApiError::refused(
            Code::InvalidJson,
            format!("invalid JSON: the body is not UTF-8 ({e})"),
        )
    })?;
    let de = &mut serde_json::Deserializer::from_str(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::refused(Code::InvalidJson, format!("invalid JSON: {inner}"));
        }
        // serde's message without serde_json's "at line 1 column 30": a field's sentence
        // does not need it, and `detail` names the field instead.
        let message = inner.to_string();
        let message = match (inner.line(), message.rfind(" at line ")) {
            (line, Some(at)) if line > 0 => message[..at].to_owned(),
            _ => message,
        };
        field_refusal(&path, &message)
    })?;
    de.end()
        .map_err(|e| ApiError::refused(Code::InvalidJson, format!("invalid JSON: {e}")))?;
    Ok(value)
}

/// The 400 `invalid_request` of a body field that could not be read: `message` at `path`.
fn field_refusal(path: &str, message: &str) -> ApiError {
    let detail = if path == "." {
        format!("request body: {message}")
    } else {
        format!("field `{path}`: {message}")
    };
    let fields = crate::error::FieldError::from_serde(path, message)
        .into_iter()
        .collect();
    ApiError::Refused {
        code: Code::InvalidRequest,
        detail,
        fields,
    }
}

/// A form's fields in the order first seen, each with all its values.
#[derive(Debug, Default)]
pub(super) struct Fields(Vec<(String, Vec<String>)>);

impl Fields {
    fn push(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, values)) => values.push(value),
            None => self.0.push((name, vec![value])),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An `application/x-www-form-urlencoded` body's fields (`+` and `%XX` decoded; bytes that
/// are not UTF-8 are replaced, as a form field is text).
pub(super) fn form_fields(body: &[u8]) -> Fields {
    let mut fields = Fields::default();
    for (name, value) in form_urlencoded::parse(body) {
        fields.push(name.into_owned(), value.into_owned());
    }
    fields
}

/// A `multipart/form-data` body's fields. A part with a file name is refused (no upload is
/// stored anywhere), as is a body that is not well-formed multipart: 400 `invalid_body`.
async fn multipart_fields(
    body: bytes::Bytes,
    boundary: Option<String>,
) -> Result<Fields, ApiError> {
    let bad = |detail: String| ApiError::refused(Code::InvalidBody, detail);
    let boundary =
        boundary.ok_or_else(|| bad("multipart/form-data needs a `boundary` parameter".into()))?;
    let whole = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(whole, boundary);
    let mut fields = Fields::default();
    loop {
        let part = match parts.next_field().await {
            Ok(Some(part)) => part,
            Ok(None) => return Ok(fields),
            Err(e) => return Err(bad(format!("malformed multipart body: {e}"))),
        };
        let Some(name) = part.name().map(str::to_owned) else {
            return Err(bad("a multipart part without a field name".into()));
        };
        if part.file_name().is_some() {
            return Err(bad(format!(
                "field `{name}`: file uploads are not accepted; send text fields"
            )));
        }
        let value = part
            .text()
            .await
            .map_err(|e| bad(format!("malformed multipart body: {e}")))?;
        fields.push(name, value);
    }
}

/// Reads form `fields` into `T` ([`Values`]: last value for a single field, all for a list).
pub(super) fn parse_fields<T: DeserializeOwned>(fields: Fields) -> Result<T, ApiError> {
    let pairs = fields.0.into_iter().map(|(k, v)| (k, Values::form(v)));
    let de = de::value::MapDeserializer::<_, TextError>::new(pairs);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        field_refusal(&path, &e.into_inner().to_string())
    })
}

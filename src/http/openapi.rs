//! The OpenAPI document (`GET /api/openapi.json`), generated from the routes: each handler's
//! `#[utoipa::path]` gives its operation (parameters and body read from its extractors,
//! responses from the attribute), [`super::router::Api::document`] collects them, and
//! [`complete`] adds what follows from the route's group and inputs — its security, the 401 of a
//! token or secret, the 400/408/413/415 of a body, the 400 of a query, the 404 of a path id,
//! and the 405, 500 and 503 every route can answer — so that no operation forgets one.
//!
//! Served as generated once, on first request, from the same route table the daemon serves.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Components, OpenApi, Ref, RefOr};

use super::router::{Api, Caller};
use crate::config::LimitsConfig;
use crate::error::{Code, HttpResponse};

/// The error body every refusal has: `{"error": code, "detail": sentence}`.
#[derive(Debug)]
pub struct Error;

impl utoipa::PartialSchema for Error {
    fn schema() -> RefOr<Schema> {
        let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        ObjectBuilder::new()
            .description(Some(
                "Every error response. `error` is a stable machine code (each operation's \
                 responses say which it may carry), `detail` a human sentence (it names the \
                 field or query parameter at fault).",
            ))
            .property(
                "error",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes))
                    .description(Some("Machine code.")),
            )
            .property(
                "detail",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("Human-readable explanation.")),
            )
            .required("error")
            .required("detail")
            // DRF's field errors: each request field at fault, with its sentences.
            .additional_properties(Some(utoipa::openapi::schema::ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("A sentence about this request field.")),
            )))
            .examples([
                json!({"error": "not_found", "detail": "conversation not found"}),
                json!({"error": "invalid_request", "detail": "request body: missing field `participants`",
                       "participants": ["This field is required."]}),
            ])
            .into()
    }
}

impl utoipa::ToSchema for Error {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Error")
    }
}

/// The body of an action endpoint: none, or `{}`.
#[derive(Debug)]
pub struct EmptyBodySchema;

impl utoipa::PartialSchema for EmptyBodySchema {
    fn schema() -> RefOr<Schema> {
        let object: Object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .max_properties(Some(0))
            .description(Some(
                "Action endpoints take no parameters: send no body, or `{}`. A non-empty \
                 object is 400 `invalid_request`.",
            ))
            .build();
        object.into()
    }
}

impl utoipa::ToSchema for EmptyBodySchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EmptyBody")
    }
}

/// The document as served: built once.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    let doc = Api::new(&LimitsConfig::default()).document();
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
});

/// This document
///
/// The OpenAPI 3.1 description of the HTTP API (this document), generated from the routes the
/// daemon serves. Needs no token.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document.", body = Object))
)]
pub async fn get() -> HttpResponse {
    let mut response = HttpResponse::new(axum::body::Body::from(DOCUMENT.clone()));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What the document says of the API as a whole, and the parts its operations share (by
/// reference): everything but the paths and the schemas of their types.
fn fixed() -> serde_json::Value {
    let limits = LimitsConfig::default();
    let description = format!(
        "What the Indaba messaging daemon serves over HTTP. The wire contract is \
`shared/spec/PROTOCOL.md`; `docs/API.md` has a curl example for each endpoint; the WebSocket \
endpoints (`/ws/chat/`, `/ws/chat/{{id}}/`, `/ws/notifications/`, `/ws/echo/`) are in \
`docs/WEBSOCKET.md`, not here.\n\n\
- Every path is also accepted without its trailing slash (`/api/v1/messaging/conversations` = \
`/api/v1/messaging/conversations/`); each is listed once here, in its canonical form.\n\
- `HEAD` is accepted wherever `GET` is, except on `/api/messages/queue/{{user_id}}` (a drain). \
Another method gets 405 with an `Allow` header.\n\
- Request bodies are JSON (`Content-Type: application/json` or `…+json`), as this document \
describes them. A flat body is also read from a form (`application/x-www-form-urlencoded`, or \
`multipart/form-data` without files) as Django REST framework's default parsers read it: a \
repeated key is a list (`participants=1&participants=2`), an empty field is left out; forms are \
not listed per operation, as they cannot carry nested objects. At most `limits.max_body_bytes` (default {max_body}). Unknown \
fields are ignored.\n\
- Ids are integers, 1 ≤ id < 2^53; in a request (body, form, query) an id may also be its \
decimal digits as a string (`\"12\"`), as DRF's `PrimaryKeyRelatedField` takes it. Timestamps are RFC 3339 UTC with milliseconds, \
`2026-11-22T10:30:00.123Z`.\n\
- Every error is `{{\"error\": \"<machine_code>\", \"detail\": \"<human sentence>\"}}` (schema \
`Error`); a 400 about request fields also has each of them as a key holding a list of \
sentences, in DRF's shape: `{{\"participants\": [\"This field is required.\"], ...}}`.\n\
- Only participants see a conversation or its messages; to anyone else it does not exist (404, \
never 403).\n\
- Order of checks: route (404/405; a malformed id in the path is 404) → shutting down (503) → \
body size (413) → token or service secret (401) → the operation's own checks.\n\
- Authentication (`bearerAuth`): `Authorization: Bearer <jwt>`: HS256 with `auth.jwt_secret` \
(SimpleJWT's `SIGNING_KEY`) or RS256/ES256/EdDSA with `auth.jwt_public_key_file`; `exp` \
required (30 s leeway); the user id in `auth.user_id_claim` (default `user_id`, integer or \
decimal string); refresh tokens are refused. Unknown user ids are provisioned on first sight. \
When configured, browsers may instead send the token in the `auth.token_cookie` cookie, or \
only the host app's session cookie (`auth.session_check_url`: 503 \
`session_check_unavailable` when the host app does not confirm it in time); a \
cookie-authenticated write from a page on an origin not allowed (`http.cors_allowed_origins`) \
is 403 `origin_not_allowed`. \
The service API (`serviceToken`) takes `service.shared_secret` instead, and is 404 while none \
is configured.",
        max_body = limits.max_body_bytes,
    );
    let error = || json!({"$ref": "#/components/schemas/Error"});
    let error_response = |description: &str, example: serde_json::Value| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": error(), "example": example}},
        })
    };
    let mut unauthorized = error_response(
        "No token (`not_authenticated`), a bad one — bad signature, malformed, wrong \
         algorithm/issuer/audience, a refresh token, no usable user-id claim — \
         (`token_invalid`), or an expired one (`token_expired`, after 30 s leeway).",
        json!({"error": "not_authenticated", "detail": "authentication credentials were not provided"}),
    );
    unauthorized["headers"] =
        json!({"WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}});
    let mut method_not_allowed = error_response(
        "Another method was used on this path (`method_not_allowed`); `Allow` lists the ones \
         it serves.",
        json!({"error": "method_not_allowed", "detail": "method not allowed"}),
    );
    method_not_allowed["headers"] = json!({"Allow": {"$ref": "#/components/headers/Allow"}});
    let mut unavailable = error_response(
        "The daemon is shutting down (`shutting_down`, `Retry-After: 5`, connection closed), \
         is at `limits.max_connections` (`too_many_connections`, `Retry-After: 1`), cannot \
         write to its disk (`storage_unavailable`, `Retry-After: 5`: full or failing; writes \
         resume by themselves once it can), or (registration and login) has more password \
         checks running and waiting than its cores allow (`server_busy`, `Retry-After: 1`), \
         or the host app did not confirm a session cookie in time \
         (`session_check_unavailable`, `Retry-After: 5`).",
        json!({"error": "shutting_down", "detail": "the server is shutting down"}),
    );
    unavailable["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/RetryAfter"}});
    let mut timeout = error_response(
        "The request body was not received within `limits.body_timeout` (`request_timeout`); \
         the connection is closed.",
        json!({"error": "request_timeout", "detail": "the request body was not received in time"}),
    );
    timeout["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/RetryAfter"}});
    let components = json!({
        "securitySchemes": {
            "bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from `POST /api/v1/auth/token/`, from `indaba token --user-id N`, or from the host app (SimpleJWT) signed with the shared secret."
            },
            "serviceToken": {
                "type": "apiKey", "in": "header", "name": "X-Service-Token",
                "description": "`service.shared_secret` (also accepted as `X-Erlang-Service: <secret>`, the header of the seed's Django stack, or `Authorization: Bearer <secret>`). The service API answers 404 while no secret is configured."
            }
        },
        "headers": {
            "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}},
            "Allow": {"description": "The methods this path serves, e.g. `GET, HEAD` or `POST`.", "schema": {"type": "string"}},
            "WWWAuthenticate": {"description": "Always `Bearer`.", "schema": {"type": "string", "enum": ["Bearer"]}}
        },
        "responses": {
            "Unauthorized": unauthorized,
            "UserDisabled": error_response(
                "An operator disabled (or erased) this user (`user_disabled`): every token of theirs is refused until they are enabled again.",
                json!({"error": "user_disabled", "detail": "this account has been disabled by an operator"})),
            "ServiceUnauthorized": error_response(
                "A missing or wrong service secret (`invalid_service_token`); counted in `indaba_service_auth_failures_total`.",
                json!({"error": "invalid_service_token", "detail": "a valid X-Service-Token is required"})),
            "ServiceOff": error_response(
                "The service API is not enabled (no `service.shared_secret`), or (`not_found`) what the path names does not exist.",
                json!({"error": "not_found", "detail": "the service API is not enabled on this server"})),
            "MethodNotAllowed": method_not_allowed,
            "BadBody": error_response(
                "A malformed body (`invalid_json`: also anything but whitespace after the JSON value), a missing or mistyped field (`invalid_request`, naming it, and the field as a key with its sentences, as DRF does), or a body that could not be read (`invalid_body`: also a malformed multipart body, or one with a file).",
                json!({"error": "invalid_request", "detail": "request body: missing field `text`", "text": ["This field is required."]})),
            "BadQuery": error_response(
                "A query parameter is missing, malformed or out of range (`invalid_query`, naming it).",
                json!({"error": "invalid_query", "detail": "query parameter `limit` must be an integer from 1 to 18446744073709551615"})),
            "NotFound": error_response(
                "No such resource, or one the caller may not see (`not_found`); a malformed or out-of-range id too.",
                json!({"error": "not_found", "detail": "conversation not found"})),
            "RequestTimeout": timeout,
            "PayloadTooLarge": error_response(
                &format!("The body is larger than `limits.max_body_bytes` (default {}) (`payload_too_large`).", limits.max_body_bytes),
                json!({"error": "payload_too_large", "detail": format!("request body is larger than {} bytes", limits.max_body_bytes)})),
            "UnsupportedMediaType": error_response(
                "A non-empty body of another type than JSON (`application/json`, `…+json`), `application/x-www-form-urlencoded` or `multipart/form-data` (`unsupported_media_type`).",
                json!({"error": "unsupported_media_type", "detail": "request body must be JSON or a form (Content-Type: application/json, application/x-www-form-urlencoded or multipart/form-data)"})),
            "InternalError": error_response(
                "A fault of the daemon itself (storage failure); never caused by client input (`internal_error`).",
                json!({"error": "internal_error", "detail": "internal error"})),
            "Unavailable": unavailable
        }
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Indaba HTTP API",
            "version": crate::VERSION,
            "description": description,
            "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"}
        },
        "servers": [{"url": "http://127.0.0.1:8765", "description": "Default `server.listen`."}],
        "tags": [
            {"name": "health", "description": "Liveness (`/health`) and readiness (`/ready`)."},
            {"name": "auth", "description": "Local accounts and SimpleJWT-compatible tokens."},
            {"name": "conversations", "description": "`/api/v1/messaging/conversations/`"},
            {"name": "messages", "description": "`/api/v1/messaging/messages/` and `/api/v1/messages/unread/`"},
            {"name": "presence", "description": "`/api/v1/messaging/presence/`"},
            {"name": "service", "description": "The host app's backend (service secret): sends, queues, broadcasts, statistics, metrics."},
            {"name": "admin", "description": "Operators (service secret, or `indaba admin` over the admin socket): users, disabling, erasure, moderation."},
            {"name": "web", "description": "The web pages served from the binary (the demo chat at `/`), switched by `[web]`."},
            {"name": "meta", "description": "This document."}
        ],
        "components": components,
    })
}

/// The whole document: `generated` (the paths and the schemas of their types, from the
/// handlers) in the [`fixed`] frame.
pub fn assemble(mut generated: OpenApi) -> serde_json::Value {
    let components = generated.components.get_or_insert_with(Components::new);
    components
        .schemas
        .insert("Error".into(), <Error as utoipa::PartialSchema>::schema());
    components.schemas.insert(
        "EmptyBody".into(),
        <EmptyBodySchema as utoipa::PartialSchema>::schema(),
    );
    let mut doc = fixed();
    let generated = match serde_json::to_value(&generated) {
        Ok(value) => value,
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document could not be serialized");
            return doc;
        }
    };
    doc["paths"] = generated["paths"].clone();
    doc["components"]["schemas"] = generated["components"]["schemas"].clone();
    doc
}

/// A body documented as `Option<T>` is one that may be left out (an action endpoint's), not a
/// JSON `null`, which is refused: `T`, not required.
fn optional_body(body: &mut utoipa::openapi::request_body::RequestBody) {
    use utoipa::openapi::schema::OneOf;
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(OneOf { items, .. }))) = &content.schema else {
            continue;
        };
        let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into());
        if let [a, b] = items.as_slice()
            && (is_null(a) || is_null(b))
        {
            let inner = if is_null(a) { b.clone() } else { a.clone() };
            content.schema = Some(inner);
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// Adds to every operation of `item` what follows from its group and its inputs.
pub fn complete(item: &mut PathItem, caller: Caller) {
    for op in [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
    {
        complete_operation(op, caller);
    }
}

fn complete_operation(op: &mut Operation, caller: Caller) {
    let (scheme, unauthorized) = match caller {
        Caller::Public | Caller::Guest => (None, None),
        Caller::User => (Some("bearerAuth"), Some("Unauthorized")),
        Caller::Service | Caller::Admin => (Some("serviceToken"), Some("ServiceUnauthorized")),
    };
    if op.security.is_none() {
        op.security = Some(match scheme {
            Some(scheme) => vec![SecurityRequirement::new(scheme, Vec::<String>::new())],
            // Explicitly none.
            None => vec![],
        });
    }
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let has_path_id = params
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Path && p.name != "file");
    let has_body = op.request_body.is_some();
    if let Some(body) = &mut op.request_body {
        // Only the JSON type is listed: a form carries no nested objects (a broadcast's
        // `message`) and leaves empty fields out, so the JSON schema would not describe it
        // precisely; the description says which forms are read (docs/API.md too).
        optional_body(body);
    }

    let mut add = |status: &str, response: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(response)));
    };
    if let Some(unauthorized) = unauthorized {
        add("401", unauthorized);
    }
    // A disabled user's tokens (user routes), logins and refreshes (guest routes), and sends
    // in their name (service routes with a body) are refused.
    if caller == Caller::User || caller == Caller::Guest || (caller == Caller::Service && has_body)
    {
        add("403", "UserDisabled");
    }
    if matches!(caller, Caller::Service | Caller::Admin) {
        add("404", "ServiceOff");
    }
    if has_body {
        add("400", "BadBody");
        add("408", "RequestTimeout");
        add("413", "PayloadTooLarge");
        add("415", "UnsupportedMediaType");
    }
    if has_query {
        add("400", "BadQuery");
    }
    if has_path_id {
        add("404", "NotFound");
    }
    add("405", "MethodNotAllowed");
    if caller != Caller::Public {
        add("500", "InternalError");
        add("503", "Unavailable");
    }
    // In status order, as a reader looks them up.
    let mut responses: Vec<_> = std::mem::take(&mut op.responses.responses)
        .into_iter()
        .collect();
    responses.sort_by(|a, b| a.0.cmp(&b.0));
    op.responses.responses = responses.into_iter().collect();
}

#[cfg(test)]
mod tests;

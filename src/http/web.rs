//! The web pages served from the binary: the demo chat at `/` and the operator console at
//! `/admin/` (contract section 9).
//!
//! The files live in `web/` (`web/demo/` for the chat, `web/admin/` for the console,
//! `web/common/` for the CSS and JS both share, `web/vendor/` for third-party code kept
//! unmodified beside its licence) and are compiled in with `include_bytes!`: no CDN, no build
//! step, nothing to install beside the binary. [`asset`] is the whole lookup (path → bytes,
//! content type, ETag) and [`respond`] adds the headers; neither knows about hyper's request
//! type, so a move to another HTTP framework reuses both as they are.
//!
//! **Caching**: `Cache-Control: no-cache` with a strong `ETag` (a hash of the bytes), answered
//! with 304 when `If-None-Match` matches. Content-hashed file names with a year's `max-age`
//! would save the revalidation round trip, but need a build step to rewrite the names inside
//! the HTML, which the no-build-step rule excludes; and with stable names an upgraded binary's
//! pages are used on the next load, never a stale script against a newer API. A revalidation is
//! one small request answered from memory.
//!
//! **Security headers**: a strict Content-Security-Policy (scripts, styles and images from this
//! origin only, no inline code, no `eval`, Trusted Types required so no string can become
//! markup, sockets only to this daemon), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` (tokens never travel in URLs the page opens, but nothing
//! else needs the referrer either) and framing refused (clickjacking).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Required, ResponseBuilder, ResponsesBuilder};
use utoipa::{IntoParams, IntoResponses};

use super::extract::{Connection, base_url};
use crate::config::WebConfig;
use crate::error::{ApiError, HttpResponse};
use crate::state::AppState;

/// Which page a file belongs to, and so which `[web]` switch serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The demo chat at `/` (`web.demo`).
    Demo,
    /// The operator console at `/admin/` and its vendored charts (`web.admin`).
    Admin,
    /// Shared by every page (`web.demo` or `web.admin`).
    Common,
}

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Strong validator: the first 128 bits of the SHA-256 of `body`, quoted.
    pub etag: String,
    pub page: Page,
}

/// Every file: URL path, bytes, page. The content type follows from the extension.
const FILES: &[(&str, &[u8], Page)] = &[
    ("/", include_bytes!("../../web/demo/index.html"), Page::Demo),
    (
        "/assets/demo/app.js",
        include_bytes!("../../web/demo/app.js"),
        Page::Demo,
    ),
    (
        "/assets/demo/demo.css",
        include_bytes!("../../web/demo/demo.css"),
        Page::Demo,
    ),
    (
        "/admin",
        include_bytes!("../../web/admin/index.html"),
        Page::Admin,
    ),
    (
        "/assets/admin/console.js",
        include_bytes!("../../web/admin/console.js"),
        Page::Admin,
    ),
    (
        "/assets/admin/charts.js",
        include_bytes!("../../web/admin/charts.js"),
        Page::Admin,
    ),
    (
        "/assets/admin/console.css",
        include_bytes!("../../web/admin/console.css"),
        Page::Admin,
    ),
    (
        "/assets/vendor/uplot/uPlot.iife.min.js",
        include_bytes!("../../web/vendor/uplot/uPlot.iife.min.js"),
        Page::Admin,
    ),
    (
        "/assets/vendor/uplot/uPlot.min.css",
        include_bytes!("../../web/vendor/uplot/uPlot.min.css"),
        Page::Admin,
    ),
    (
        // Served with the code it covers: the MIT licence asks that it travel with copies.
        "/assets/vendor/uplot/LICENSE",
        include_bytes!("../../web/vendor/uplot/LICENSE"),
        Page::Admin,
    ),
    (
        "/assets/common/base.css",
        include_bytes!("../../web/common/base.css"),
        Page::Common,
    ),
    (
        "/assets/common/api.js",
        include_bytes!("../../web/common/api.js"),
        Page::Common,
    ),
    (
        "/assets/common/icon.svg",
        include_bytes!("../../web/common/icon.svg"),
        Page::Common,
    ),
];

/// The files with their ETags, hashed once on first use.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(path, body, page)| Asset {
            path,
            body,
            content_type: content_type(path),
            etag: etag_of(body),
            page,
        })
        .collect()
});

/// The embedded file served at `path` (with or without a trailing `/`), if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    let trimmed = match path.strip_suffix('/') {
        Some("") | None => path,
        Some(rest) => rest,
    };
    ASSETS.iter().find(|a| a.path == trimmed)
}

/// Whether `page` is switched on.
pub fn enabled(web: &WebConfig, page: Page) -> bool {
    match page {
        Page::Demo => web.demo,
        Page::Admin => web.admin,
        Page::Common => web.demo || web.admin,
    }
}

/// The response for `path`: the file (200), a 304 when `if_none_match` names its ETag, or
/// the JSON 404 every unknown path gets — also for a page that is switched off, so a
/// disabled page is indistinguishable from none. `self_origin` is this request's
/// `scheme://host[:port]` (the socket the page may open is on the same host).
pub fn respond(
    web: &WebConfig,
    path: &str,
    if_none_match: Option<&str>,
    self_origin: &str,
) -> Result<HttpResponse, ApiError> {
    let asset = asset(path)
        .filter(|a| enabled(web, a.page))
        .ok_or(ApiError::NotFound("no such endpoint"))?;
    let mut response = file_response(asset.body, asset.content_type, &asset.etag, if_none_match);
    security_headers(response.headers_mut(), self_origin);
    Ok(response)
}

/// An embedded file's strong validator: the first 128 bits of the SHA-256 of `body`, quoted.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]))
}

/// `If-None-Match`, which every route answered by [`file_response`] reads, for the OpenAPI
/// document.
#[derive(Debug)]
pub struct IfNoneMatch;

impl IntoParams for IfNoneMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .description(Some(
                    "An `ETag` from an earlier answer: 304 while the file is unchanged.",
                ))
                .required(Required::False)
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::String, Type::Null])),
                ))
                .build(),
        ]
    }
}

/// What [`file_response`] answers, for the OpenAPI document: 200 with the file (`description`),
/// of the type of one of the files at `paths`, with its `ETag`; or 304. Every route serving
/// embedded files lists these (through [`PageResponses`], [`AssetResponses`] or the API
/// reference's files), each with its own 404.
pub fn file_responses<'a>(
    description: &str,
    paths: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let mut file = ResponseBuilder::new().description(description).header(
        "ETag",
        HeaderBuilder::new()
            .schema(text())
            .description(Some("The file's strong validator."))
            .build(),
    );
    let types: BTreeSet<&str> = paths.into_iter().map(content_type).collect();
    for content_type in types {
        file = file.content(
            content_type,
            ContentBuilder::new().schema(Some(text())).build(),
        );
    }
    ResponsesBuilder::new()
        .response("200", file)
        .response(
            "304",
            ResponseBuilder::new()
                .description("Unchanged since the `ETag` in `If-None-Match`; no body."),
        )
        .build()
        .into()
}

/// What a page answers (`/`, `/admin/`, `/api/docs/`), as [`file_responses`].
#[derive(Debug)]
pub struct PageResponses;

impl IntoResponses for PageResponses {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        file_responses("The page.", ["/"])
    }
}

/// What `/assets/{file}` answers, as [`file_responses`] of the files there.
#[derive(Debug)]
pub struct AssetResponses;

impl IntoResponses for AssetResponses {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let assets = FILES.iter().map(|f| f.0);
        file_responses("The file.", assets.filter(|p| p.starts_with("/assets/")))
    }
}

/// An embedded file (200 with its type), or 304 when `if_none_match` names its `etag`; with
/// its `ETag` and `Cache-Control: no-cache` either way (see the module's **Caching**). The
/// security headers are the page's to add.
pub fn file_response(
    body: &'static [u8],
    content_type: &'static str,
    etag: &str,
    if_none_match: Option<&str>,
) -> HttpResponse {
    let not_modified = if_none_match.is_some_and(|v| etag_matches(v, etag));
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The demo chat (HTML)
///
/// The demo chat page: sign up or in with a local account, the conversation list with unread
/// counts and presence, one conversation with typing and read receipts, over `/ws/chat/`.
/// Served from the binary while `[web] demo` is on: on by default in dev mode (no config file),
/// off by default with one. Needs no token.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "getDemoChat",
    tag = "web",
    params(IfNoneMatch),
    responses(
        PageResponses,
        (status = 404, description = "The page is switched off (`[web] demo = false`, the default with a config file). `error` is `not_found`.", body = super::openapi::Error),
    )
)]
pub async fn page(State(state): State<Arc<AppState>>, req: Request) -> HttpResponse {
    serve(&state, &req.into_parts().0)
}

/// The operator console (HTML)
///
/// The operator console: sign in with the service secret (kept in the tab's memory only), then
/// live charts of `/api/stats` and `/metrics` and the users table of the admin API with
/// disable, enable and erase. Reads only those public APIs. Served while `[web] admin` is on
/// (off by default everywhere). The page itself needs no token.
#[utoipa::path(
    get,
    path = "/admin/",
    operation_id = "getOperatorConsole",
    tag = "web",
    params(IfNoneMatch),
    responses(
        PageResponses,
        (status = 404, description = "The console is switched off (`[web] admin = false`, the default). `error` is `not_found`.", body = super::openapi::Error),
    )
)]
pub async fn admin_page(State(state): State<Arc<AppState>>, req: Request) -> HttpResponse {
    serve(&state, &req.into_parts().0)
}

/// A file of the web pages
///
/// The scripts, style sheets and icon the pages load (`/assets/demo/…` for the demo chat,
/// `/assets/admin/…` and `/assets/vendor/…` for the operator console, `/assets/common/…`
/// shared by the pages), embedded in the binary. Served while the page they belong to is
/// switched on.
#[utoipa::path(
    get,
    path = "/assets/{file}",
    operation_id = "getWebAsset",
    tag = "web",
    params(
        ("file" = String, Path, description = "The file's path under `/assets/`, e.g. `demo/app.js`."),
        IfNoneMatch,
    ),
    responses(
        AssetResponses,
        (status = 404, description = "The page is switched off (`[web] demo = false`, the default with a config file; `[web] admin = false`, the default), or there is no such file. `error` is `not_found`.", body = super::openapi::Error),
    )
)]
pub async fn asset_file(State(state): State<Arc<AppState>>, req: Request) -> HttpResponse {
    serve(&state, &req.into_parts().0)
}

/// The answer for the request's path, as [`respond`] makes it.
fn serve(state: &AppState, parts: &Parts) -> HttpResponse {
    let trusted = parts
        .extensions
        .get::<Connection>()
        .is_some_and(|c| state.config.server.trusted_proxies.contains(&c.peer.ip()));
    let origin = base_url(&parts.headers, trusted);
    let if_none_match = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    match respond(&state.config.web, parts.uri.path(), if_none_match, &origin) {
        Ok(response) => response,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// The security headers of every page and asset.
pub fn security_headers(headers: &mut HeaderMap, self_origin: &str) {
    // `'self'` covers ws:/wss: to the same host in CSP Level 3 browsers; the explicit origin
    // is for those that predate it.
    let socket_origin = self_origin
        .strip_prefix("https://")
        .map(|host| format!("wss://{host}"))
        .or_else(|| {
            self_origin
                .strip_prefix("http://")
                .map(|host| format!("ws://{host}"))
        })
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' {socket_origin}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
    );
    // `self_origin` is built from a validated Host header (`request::base_url`); should it
    // still not be a header value, the policy without the explicit origin is as strict.
    let csp = HeaderValue::from_str(&csp).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
             require-trusted-types-for 'script'; trusted-types 'none'",
        )
    });
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// `If-None-Match` semantics (RFC 9110 13.1.2): `*`, or any listed tag equal to `etag` by
/// weak comparison (a `W/` prefix is ignored).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("txt") => "text/plain; charset=utf-8",
        _ if path.ends_with("/LICENSE") => "text/plain; charset=utf-8",
        // `/` and `/admin`, the pages.
        _ => "text/html; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> WebConfig {
        WebConfig {
            demo: true,
            admin: false,
        }
    }

    #[test]
    fn every_file_has_a_type_and_its_own_etag() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len(), "ETags differ per file");
        assert_eq!(
            asset("/").map(|a| a.content_type),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            asset("/assets/demo/app.js/").map(|a| a.content_type),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            asset("/assets/common/base.css").map(|a| a.content_type),
            Some("text/css; charset=utf-8")
        );
        assert!(asset("/assets/demo/nope.js").is_none());
        assert!(asset("/assets/../Cargo.toml").is_none());
    }

    #[test]
    fn the_console_follows_its_own_switch() {
        let admin_only = WebConfig {
            demo: false,
            admin: true,
        };
        let origin = "http://127.0.0.1:8765";
        for path in [
            "/admin",
            "/admin/",
            "/assets/vendor/uplot/uPlot.iife.min.js",
        ] {
            assert!(respond(&admin_only, path, None, origin).is_ok(), "{path}");
            assert!(respond(&on(), path, None, origin).is_err(), "{path}");
        }
        // The shared files serve either page; the demo's own stay with the demo.
        assert!(respond(&admin_only, "/assets/common/api.js", None, origin).is_ok());
        assert!(respond(&admin_only, "/", None, origin).is_err());
        assert_eq!(
            asset("/assets/vendor/uplot/LICENSE").map(|a| a.content_type),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            asset("/admin/").map(|a| a.content_type),
            Some("text/html; charset=utf-8")
        );
    }

    #[test]
    fn if_none_match_follows_the_rfc() {
        let etag = "\"abc\"";
        assert!(etag_matches("\"abc\"", etag));
        assert!(etag_matches("W/\"abc\"", etag));
        assert!(etag_matches("\"x\", \"abc\"", etag));
        assert!(etag_matches("*", etag));
        assert!(!etag_matches("\"abcd\"", etag));
        assert!(!etag_matches("abc", etag));
    }

    #[test]
    fn a_switched_off_page_is_a_404_and_a_match_a_304() {
        let off = WebConfig::default();
        assert!(matches!(
            respond(&off, "/", None, "http://127.0.0.1:8765"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            respond(&off, "/assets/common/api.js", None, "http://h"),
            Err(ApiError::NotFound(_))
        ));
        let page = respond(&on(), "/", None, "http://127.0.0.1:8765").expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("text");
        assert!(
            csp.contains("connect-src 'self' ws://127.0.0.1:8765;"),
            "{csp}"
        );
        let etag = page.headers()[header::ETAG].to_str().expect("text");
        let again = respond(&on(), "/", Some(etag), "https://chat.example.com").expect("304");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(
            again.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("text")
                .contains("wss://chat.example.com;")
        );
    }
}

//! `/api/docs/`: a readable HTML reference of the HTTP API, rendered in the browser from
//! `/api/openapi.json` by [Redoc](https://github.com/Redocly/redoc), vendored and pinned in
//! `web/docs/` (version, source, hashes and the one change made to it in its README: its
//! footer logo no longer comes from Redocly's CDN) and compiled in with `include_bytes!`: no
//! CDN at run time, nothing to install. Public, like the document itself.
//!
//! Files are answered as [`super::web`] answers its own (ETag, `no-cache`, 304), with the same
//! security headers but a Content-Security-Policy of the viewer's: Redoc injects its styles
//! (styled-components: `style-src 'unsafe-inline'`), runs its search index in a worker it
//! builds from a `blob:` URL, and draws some icons and fonts from `data:` URLs. Nothing else is
//! allowed:
//! no other origin, no inline script, no `eval` (the bundle uses none).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::Request;
use hyper::header::{self, HeaderValue};
use utoipa::openapi::RefOr;

use super::openapi::Error;
use super::web::{self, IfNoneMatch, PageResponses};
use crate::error::{ApiError, HttpResponse};

/// The viewer's Content-Security-Policy (see the module's documentation for each source).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the page is; its files are under it.
const PAGE: &str = "/api/docs";

/// Every file: the name under [`PAGE`] (empty for the page) and its bytes.
const FILES: &[(&str, &[u8])] = &[
    ("", include_bytes!("../../web/docs/index.html")),
    (
        "redoc.standalone.js",
        include_bytes!("../../web/docs/redoc.standalone.js"),
    ),
    ("LICENSE.txt", include_bytes!("../../web/docs/LICENSE.txt")),
    (
        "THIRD-PARTY-NOTICES.txt",
        include_bytes!("../../web/docs/THIRD-PARTY-NOTICES.txt"),
    ),
];

/// A file with its type and ETag.
#[derive(Debug)]
struct File {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

/// The files with their ETags, hashed once on first use.
static DOCS: LazyLock<Vec<File>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, body)| File {
            name,
            body,
            // The page has no extension, so it is HTML.
            content_type: web::content_type(name),
            etag: web::etag_of(body),
        })
        .collect()
});

/// The response for `path` (`/api/docs`, or a file under it): 404 for another.
fn respond(path: &str, if_none_match: Option<&str>) -> Result<HttpResponse, ApiError> {
    let name = path
        .strip_prefix(PAGE)
        .map(|rest| rest.trim_matches('/'))
        .ok_or(ApiError::NotFound("no such endpoint"))?;
    let file = DOCS
        .iter()
        .find(|f| f.name == name)
        .ok_or(ApiError::NotFound("no such file in the API reference"))?;
    let mut response = web::file_response(file.body, file.content_type, &file.etag, if_none_match);
    let headers = response.headers_mut();
    // The same frame as the other pages (nosniff, no referrer, no framing), with the viewer's
    // policy in place of theirs.
    web::security_headers(headers, "");
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    Ok(response)
}

/// What `/api/docs/{file}` answers, as [`web::file_responses`] of the files there.
#[derive(Debug)]
pub struct FileResponses;

impl utoipa::IntoResponses for FileResponses {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let files = FILES.iter().map(|f| f.0).filter(|name| !name.is_empty());
        web::file_responses("The file.", files)
    }
}

fn serve(req: &Request) -> HttpResponse {
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    match respond(req.uri().path(), if_none_match) {
        Ok(response) => response,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// The API reference (HTML)
///
/// This document, rendered for people by Redoc, served from the binary. Needs no token.
#[utoipa::path(
    get,
    path = "/api/docs/",
    operation_id = "getApiDocs",
    tag = "meta",
    params(IfNoneMatch),
    responses(PageResponses)
)]
pub async fn page(req: Request) -> HttpResponse {
    serve(&req)
}

/// A file of the API reference
///
/// The viewer's script (`redoc.standalone.js`, Redoc 2.5.4), its license (`LICENSE.txt`) and
/// the licenses of the libraries bundled in it (`THIRD-PARTY-NOTICES.txt`).
#[utoipa::path(
    get,
    path = "/api/docs/{file}",
    operation_id = "getApiDocsFile",
    tag = "meta",
    params(
        ("file" = String, Path, description = "`redoc.standalone.js`, `LICENSE.txt` or `THIRD-PARTY-NOTICES.txt`."),
        IfNoneMatch,
    ),
    responses(
        FileResponses,
        (status = 404, description = "No such file. `error` is `not_found`.", body = Error),
    )
)]
pub async fn file(req: Request) -> HttpResponse {
    serve(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_files_and_nothing_else() {
        for (path, content_type) in [
            ("/api/docs", "text/html; charset=utf-8"),
            ("/api/docs/", "text/html; charset=utf-8"),
            (
                "/api/docs/redoc.standalone.js",
                "text/javascript; charset=utf-8",
            ),
            ("/api/docs/LICENSE.txt", "text/plain; charset=utf-8"),
        ] {
            let response = respond(path, None).expect(path);
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        }
        for path in ["/api/docs/nope.js", "/api/docs/../Cargo.toml", "/api/docsx"] {
            assert!(respond(path, None).is_err(), "{path}");
        }
    }

    /// The viewer loads nothing from another origin: the one image Redoc draws from its CDN
    /// was replaced (web/docs/README.md), and an upgrade that brings one back fails here.
    #[test]
    fn the_viewer_names_no_other_origins_image() {
        let script = DOCS
            .iter()
            .find(|f| f.name == "redoc.standalone.js")
            .expect("script");
        let text = String::from_utf8_lossy(script.body);
        for cdn in [
            "cdn.redoc.ly",
            "fonts.googleapis.com",
            "cdn.jsdelivr.net",
            "unpkg.com",
        ] {
            assert!(!text.contains(cdn), "the bundle loads from {cdn}");
        }
    }
}

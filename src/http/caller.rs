//! Who a request is from, whatever credential it carries (contract sections 1 and 8.1), and
//! whether a browser page may use the cookies it came with.
//!
//! Looked for in this order, the first one found deciding (a bad token is 401 even if cookies
//! follow): `Authorization: Bearer`, then (WebSocket upgrades) `?token=`, then the
//! `auth.token_cookie` cookie, then any cookies at all, which the host app is asked about
//! (`auth.session_check_url`, [`crate::auth::session`]).
//!
//! Cookies are sent by browsers on their own, to requests that other sites' pages start too;
//! so a cookie-authenticated WebSocket upgrade, and a cookie-authenticated write, from a page
//! on an origin not in `http.cors_allowed_origins` (nor the daemon's own) is refused with 403
//! (cross-site WebSocket hijacking, cross-site request forgery). Browsers always send `Origin`
//! on these; native clients send none and are let through. A token in a header or the query
//! is no ambient credential and is not origin-checked.

use std::net::SocketAddr;

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, COOKIE, HOST, HeaderValue, ORIGIN};

use super::extract::ClientIp;
use crate::auth::{AuthError, Identity};
use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The credential a request carries, borrowed from it.
enum Credential<'a> {
    /// A token the client put in the request itself (header or query).
    Token(&'a str),
    /// A token in the `auth.token_cookie` cookie.
    TokenCookie(&'a str),
    /// The whole `Cookie` header, for the host app.
    Session(HeaderValue),
}

impl Credential<'_> {
    /// A cookie the browser attached by itself, which a page of another site can make it send.
    fn is_ambient(&self) -> bool {
        !matches!(self, Credential::Token(_))
    }
}

/// Who the request in `headers` is from. `query_token` is a WebSocket upgrade's `?token=`;
/// `origin_checked`: a cookie-authenticated request from a page whose origin is not allowed is
/// refused (403 `origin_not_allowed`), before the host app is asked anything.
pub async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    peer: SocketAddr,
    origin_checked: bool,
) -> Result<Identity, ApiError> {
    let credential = credential(state, headers, query_token)?;
    if credential.is_ambient() && origin_checked && !origin_allowed(state, headers, peer) {
        return Err(ApiError::refused(
            Code::OriginNotAllowed,
            "cookies are accepted from this server's own pages and the origins in \
             http.cors_allowed_origins only",
        ));
    }
    Ok(match credential {
        Credential::Token(token) | Credential::TokenCookie(token) => {
            state.verifier.verify(token.trim())?
        }
        Credential::Session(cookie) => {
            let Some(sessions) = &state.sessions else {
                return Err(AuthError::Missing.into());
            };
            let client = ClientIp::of(state, peer, headers);
            sessions.check(&cookie, client).await?
        }
    })
}

/// The credential the request carries, if any.
fn credential<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<Credential<'a>, AuthError> {
    if let Some(header) = headers.get(AUTHORIZATION) {
        let header = header
            .to_str()
            .map_err(|_| AuthError::Invalid("Authorization header is not text".into()))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| AuthError::Invalid("expected `Authorization: Bearer <token>`".into()))?;
        return Ok(Credential::Token(token));
    }
    if let Some(token) = query_token {
        return Ok(Credential::Token(token));
    }
    if let Some(name) = &state.config.auth.token_cookie
        && let Some(token) = cookie(headers, name)
    {
        return Ok(Credential::TokenCookie(token));
    }
    if state.sessions.is_some()
        && let Some(all) = cookie_header(headers)
    {
        return Ok(Credential::Session(all));
    }
    Err(AuthError::Missing)
}

/// The `Cookie` header (several lines joined as one, as HTTP/2 clients may split it), if any.
fn cookie_header(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut lines = headers.get_all(COOKIE).iter().filter(|v| !v.is_empty());
    let first = lines.next()?;
    let mut joined = first.as_bytes().to_vec();
    for line in lines {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// The value of cookie `name` (RFC 6265: `name=value` pairs split by `;`, a value possibly in
/// double quotes).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
        .filter(|value| !value.is_empty())
}

/// Whether a page on the request's `Origin` may use the cookies it sent: no `Origin` (not a
/// browser page), an origin listed in `http.cors_allowed_origins` (`"*"` does not count: it
/// allows no credentials), or the daemon's own — an origin whose `host[:port]` is the one the
/// request was sent to (`Host`, or a trusted proxy's `X-Forwarded-Host`). Only the authority is
/// compared, so a proxy that terminates TLS without saying so does not break it.
pub fn origin_allowed(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let listed = &state.config.http.cors_allowed_origins;
    if listed
        .iter()
        .any(|allowed| allowed != "*" && allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let trusted = state.config.server.trusted_proxies.contains(&peer.ip());
    let own = headers
        .get("x-forwarded-host")
        .filter(|_| trusted)
        .or_else(|| headers.get(HOST))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    own.is_some_and(|own| !own.is_empty() && own.eq_ignore_ascii_case(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn cookies_are_read_as_browsers_send_them() {
        let h = headers(&[
            ("cookie", "csrftoken=abc; access_token=\"x.y.z\""),
            ("cookie", "sessionid=s1"),
        ]);
        assert_eq!(cookie(&h, "access_token"), Some("x.y.z"));
        assert_eq!(cookie(&h, "sessionid"), Some("s1"));
        assert_eq!(cookie(&h, "access"), None);
        assert_eq!(
            cookie_header(&h).as_ref().map(HeaderValue::as_bytes),
            Some(&b"csrftoken=abc; access_token=\"x.y.z\"; sessionid=s1"[..])
        );
        assert_eq!(cookie_header(&headers(&[])), None);
    }
}

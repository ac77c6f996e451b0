//! Browser sessions of the host app (contract section 8.1, `auth.session_check_url`): a request
//! with cookies but no token is asked about at the host app's "who am I" URL (Django's
//! `/api/v1/auth/me/`), with the client's `Cookie` header.
//!
//! The answers are cached for `auth.session_cache_ttl`, keyed by a salted hash of the `Cookie`
//! header (the value itself is never kept, nor logged), and concurrent checks of the same
//! cookies share one call: a page that opens three sockets and fires five requests at once
//! costs the host app one request, not eight. A failed check (the host app down, slow or
//! answering something else) is not cached: the next request asks again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, COOKIE, HeaderValue};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::Identity;
use crate::config::AuthConfig;

/// Largest answer read from the host app: a user object is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Cached answers kept before the expired ones are swept (and, if all are fresh, dropped): a
/// client sending random cookies must not grow memory without bound. The cache only saves
/// calls; losing it costs one call per cookie.
const MAX_CACHED: usize = 100_000;

/// Failed checks are logged at WARN at most this often (with how many were not): a host app
/// that is down fails every cookie request, and the log must stay readable.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a session did not authenticate a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The host app says these cookies are not logged in (401 or 403): 401, close 4401.
    #[error("the session is not logged in")]
    NotLoggedIn,
    /// The host app did not answer in time, or answered something else: 503, close 1011.
    #[error("the host app could not confirm the session; try again shortly")]
    Unavailable,
}

/// Checks session cookies at `auth.session_check_url`.
pub struct SessionChecker {
    url: Uri,
    timeout: Duration,
    ttl: Duration,
    /// Random per process: the cache's keys cannot be matched against cookies from outside.
    salt: [u8; 32],
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Hash of the `Cookie` header → its check, done or under way.
    slots: Mutex<HashMap<[u8; 32], Arc<Slot>>>,
    /// When a failure was last logged, and the failures since then not logged.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl std::fmt::Debug for SessionChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionChecker")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// One cookie header's check: empty while the first caller asks, then the answer until it
/// expires. Every caller that finds it empty waits on the same call (`OnceCell`: if the caller
/// making it goes away, one of the waiters makes it instead).
#[derive(Debug, Default)]
struct Slot {
    answer: OnceCell<(Result<Identity, SessionError>, Instant)>,
}

impl Slot {
    /// Whether a caller arriving `now` should use this slot (join its call, or take its answer).
    fn usable(&self, now: Instant) -> bool {
        match self.answer.get() {
            None => true,
            Some((Err(SessionError::Unavailable), _)) => false,
            Some((_, expires)) => *expires > now,
        }
    }
}

impl SessionChecker {
    /// The checker `auth` asks for, or `None` when `session_check_url` is unset. The URL was
    /// checked by `Config::validate`.
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Self>, String> {
        let Some(url) = &auth.session_check_url else {
            return Ok(None);
        };
        let url: Uri = url
            .parse()
            .map_err(|e| format!("`auth.session_check_url`: {e}"))?;
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt)
            .map_err(|e| format!("no randomness for the session cache: {e}"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(auth.session_check_timeout));
        connector.set_nodelay(true);
        Ok(Some(Self {
            url,
            timeout: auth.session_check_timeout,
            ttl: auth.session_cache_ttl,
            salt,
            client: Client::builder(TokioExecutor::new()).build(connector),
            slots: Mutex::default(),
            warned: Mutex::default(),
        }))
    }

    /// Who the host app says the session in `cookie` (the request's `Cookie` header) belongs
    /// to; `client` is sent on as `X-Forwarded-For`.
    pub async fn check(
        &self,
        cookie: &HeaderValue,
        client: IpAddr,
    ) -> Result<Identity, SessionError> {
        let slot = self.slot(cookie);
        let (answer, _) = slot
            .answer
            .get_or_init(|| async {
                let answer = self.ask(cookie, client).await;
                (answer, Instant::now() + self.ttl)
            })
            .await;
        answer.clone()
    }

    /// The slot for these cookies: a usable one, or a fresh one in its place.
    fn slot(&self, cookie: &HeaderValue) -> Arc<Slot> {
        let key: [u8; 32] = Sha256::new()
            .chain_update(self.salt)
            .chain_update(cookie.as_bytes())
            .finalize()
            .into();
        let now = Instant::now();
        let mut slots = self.lock();
        if let Some(slot) = slots.get(&key).filter(|s| s.usable(now)) {
            return slot.clone();
        }
        if slots.len() >= MAX_CACHED {
            slots.retain(|_, slot| slot.usable(now));
            if slots.len() >= MAX_CACHED {
                slots.clear();
            }
        }
        let slot = Arc::new(Slot::default());
        slots.insert(key, slot.clone());
        slot
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One call to the host app, within `session_check_timeout` (connecting, the answer's head
    /// and its body together).
    async fn ask(&self, cookie: &HeaderValue, client: IpAddr) -> Result<Identity, SessionError> {
        let request = hyper::Request::get(self.url.clone())
            .header(COOKIE, cookie)
            .header("x-forwarded-for", client.to_string())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Empty::new())
            .map_err(|e| self.unavailable(&format!("cannot build the request: {e}")))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Ok(Err(SessionError::NotLoggedIn));
            }
            if status != StatusCode::OK {
                return Err(format!("it answered {}", status.as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("its answer could not be read: {e}"))?
                .to_bytes();
            read_user(&body).map(Ok)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(why)) => Err(self.unavailable(&why)),
            Err(_) => Err(self.unavailable(&format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    /// Logs why a check failed (never the cookies; at most every [`WARN_EVERY`]) and says so.
    fn unavailable(&self, why: &str) -> SessionError {
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let (last, quiet) = &mut *warned;
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            tracing::warn!(
                url = %self.url,
                why,
                not_logged_since = *quiet,
                "session check failed: cookie-authenticated requests get 503 (sockets close 1011)"
            );
            *last = Some(now);
            *quiet = 0;
        } else {
            *quiet += 1;
        }
        SessionError::Unavailable
    }
}

/// The user in a 200 answer: `{"id" or "user_id": N, "username"?}`, the id an integer or a
/// decimal string, as DRF serializers write it.
fn read_user(body: &[u8]) -> Result<Identity, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("its 200 answer is not JSON: {e}"))?;
    let user_id = value
        .get("id")
        .or_else(|| value.get("user_id"))
        .and_then(super::jwt::parse_user_id)
        .ok_or("its 200 answer has no usable `id` or `user_id` (an integer from 1 to 2^53)")?;
    let username = value
        .get("username")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Ok(Identity { user_id, username })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_read_as_django_writes_it() {
        let read = |body: &str| read_user(body.as_bytes());
        assert_eq!(
            read(r#"{"id": 42, "username": "amara", "email": "a@example.com"}"#),
            Ok(Identity {
                user_id: 42,
                username: Some("amara".into())
            })
        );
        assert_eq!(
            read(r#"{"user_id": "7"}"#),
            Ok(Identity {
                user_id: 7,
                username: None
            })
        );
        for bad in [
            r#"{"username": "x"}"#,
            r#"{"id": 0}"#,
            r#"{"id": -1}"#,
            "[]",
            "<html>",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}

//! Browser sessions, token cookies and CORS (contract section 8.1), against the real daemon and
//! a stand-in for the host app's `/api/v1/auth/me/` ([`common::django`]) on a real port:
//!
//! * a page with only its Django session cookie is authenticated over REST and WebSocket; a
//!   session the host app refuses is 401 / close 4401; a host app that is slow, failing or down
//!   is 503 / close 1011 with a WARN, never a hang and never a wrong user;
//! * answers are cached per cookie and concurrent checks of one cookie make one call;
//! * `auth.token_cookie` carries a JWT;
//! * CORS preflights and headers for listed origins only, credentials only for those;
//! * cookie-authenticated WebSocket upgrades (and writes) from other origins are refused 403,
//!   while native clients (no `Origin`) and token users are let through.

mod common;

use std::time::{Duration, Instant};

use common::django::{self, Django};
use common::ws::{WAIT, next_event, runtime};
use common::{Daemon, Options, WsStream as Ws};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
const ME: &str = "/api/v1/auth/me/";
const APP: &str = "https://app.example.com";

/// A dev-mode daemon checking sessions at `check_url` (timeout 1 s), with more overrides.
fn daemon(check_url: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = vec![
        ("INDABA_AUTH__SESSION_CHECK_URL", check_url),
        ("INDABA_AUTH__SESSION_CHECK_TIMEOUT", "1s"),
    ];
    all.extend_from_slice(env);
    let d = Daemon::start_with(dir.path(), Options::env(&all));
    (dir, d)
}

/// A GET of `path` with these headers and no token.
fn get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut req = d.http.get(d.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().expect("request")
}

fn json_of(resp: reqwest::blocking::Response) -> (u16, Value) {
    common::split(resp)
}

fn session(id: &str) -> String {
    format!("csrftoken=abc123; sessionid={id}")
}

/// What a WebSocket upgrade to `path` with these headers got: the socket, or the HTTP answer.
async fn upgrade(
    d: &Daemon,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<Ws, (u16, String)> {
    let mut request = format!("ws://{}{path}", d.addr)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("header"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake within WAIT")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[test]
fn a_django_session_cookie_authenticates_rest_and_sockets() {
    let django = Django::start();
    let (_dir, d) = daemon(&django.url(), &[]);

    let (status, me) = json_of(get(&d, ME, &[("Cookie", &session("user-42"))]));
    assert_eq!((status, me["id"].as_u64()), (200, Some(42)), "{me}");
    assert_eq!(me["username"], "user-42", "the name Django gave: {me}");
    // The host app got the client's cookies and address, as a proxied request would carry.
    let call = django.calls().pop().expect("a call");
    assert_eq!(call.cookie.as_deref(), Some(session("user-42").as_str()));
    assert_eq!(call.forwarded_for.as_deref(), Some("127.0.0.1"));

    // An id as a string and no name, as some serializers write it.
    let (status, me) = json_of(get(&d, ME, &[("Cookie", &session("strid-43"))]));
    assert_eq!((status, me["id"].as_u64()), (200, Some(43)), "{me}");

    // Refused sessions are 401, like no credentials at all.
    for refused in ["expired", "forbidden"] {
        let (status, body) = json_of(get(&d, ME, &[("Cookie", &session(refused))]));
        assert_eq!(status, 401, "{refused}: {body}");
        assert_eq!(body["error"], "not_authenticated", "{body}");
    }
    let (status, _) = json_of(get(&d, ME, &[]));
    assert_eq!(status, 401);
    // A token wins over cookies: the host app is not asked.
    let before = django.calls().len();
    let (status, me) = json_of(
        d.http
            .get(d.url(ME))
            .bearer_auth(d.token(7))
            .header("Cookie", session("user-42"))
            .send()
            .expect("request"),
    );
    assert_eq!((status, me["id"].as_u64()), (200, Some(7)));
    assert_eq!(django.calls().len(), before);

    runtime().block_on(async {
        // Seed 002's user socket, a native client (no Origin) with the session cookie.
        let mut ws = upgrade(&d, "/ws/chat/", &[("Cookie", session("user-42"))])
            .await
            .expect("upgraded");
        let hello = next_event(&mut ws).await.expect("connection_established");
        assert_eq!(hello["type"], "connection_established", "{hello}");
        assert_eq!(hello["user_id"], 42);

        // A refused session: accepted, then closed 4401, as a bad token is.
        let mut ws = upgrade(&d, "/ws/chat/", &[("Cookie", session("expired"))])
            .await
            .expect("accepted");
        assert_eq!(next_event(&mut ws).await.err(), Some(Some(4401)));
        let mut ws = upgrade(&d, "/ws/notifications/", &[])
            .await
            .expect("accepted");
        assert_eq!(next_event(&mut ws).await.err(), Some(Some(4401)));
    });
}

#[test]
fn a_slow_failing_or_absent_host_app_is_503_and_close_1011_never_a_wrong_answer() {
    let django = Django::start();
    // One daemon per case: failures are logged at most every 10 s, each one's reason once.
    let (_dir, d) = daemon(&django.url(), &[]);
    let (_dir1, slow) = daemon(&django.url(), &[]);
    for (d, cookie, why) in [
        (&slow, "slow", "no answer within 1s"),
        (&d, "broken", "it answered 500"),
    ] {
        let started = Instant::now();
        let resp = get(d, ME, &[("Cookie", &session(cookie))]);
        assert_eq!(
            resp.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let (status, body) = json_of(resp);
        assert_eq!(status, 503, "{cookie}: {body}");
        assert_eq!(body["error"], "session_check_unavailable", "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{cookie}: bounded by the timeout"
        );
        assert!(d.wait_for_log(why, WAIT), "a WARN says why: {why}");
    }
    // A failure is not cached: the next request asks again (and is not logged again yet).
    let before = django.calls_for("broken");
    let (status, _) = json_of(get(&d, ME, &[("Cookie", &session("broken"))]));
    assert_eq!(status, 503);
    assert_eq!(django.calls_for("broken"), before + 1);
    let warnings = d.log_text().matches("session check failed").count();
    assert_eq!(warnings, 1, "{}", d.log_text());
    // The cookie's value is never logged.
    assert!(
        !d.log_text().contains("csrftoken=abc123"),
        "{}",
        d.log_text()
    );

    runtime().block_on(async {
        let mut ws = upgrade(&d, "/ws/chat/", &[("Cookie", session("slow"))])
            .await
            .expect("accepted");
        assert_eq!(next_event(&mut ws).await.err(), Some(Some(1011)));
    });

    // The host app down altogether.
    let (_dir2, down) = daemon(&django::down_url(), &[]);
    let (status, body) = json_of(get(&down, ME, &[("Cookie", &session("user-42"))]));
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("session_check_unavailable"))
    );
    assert!(down.wait_for_log("session check failed", WAIT));
}

#[test]
fn answers_are_cached_per_cookie_and_concurrent_checks_share_one_call() {
    let django = Django::start();
    let (_dir, d) = daemon(&django.url(), &[("INDABA_AUTH__SESSION_CACHE_TTL", "2s")]);
    let url = d.url(ME);
    // Ten requests with one cookie at once (the stand-in takes 400 ms): one call.
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::new()
                    .get(url)
                    .header("Cookie", session("wait-44"))
                    .send()
                    .expect("request");
                common::split(resp)
            })
        })
        .collect();
    for t in threads {
        let (status, me) = t.join().expect("thread");
        assert_eq!((status, me["id"].as_u64()), (200, Some(44)), "{me}");
    }
    assert_eq!(
        django.calls_for("wait-44"),
        1,
        "concurrent checks share one call"
    );
    // Sockets use the same cache.
    runtime().block_on(async {
        let mut ws = upgrade(&d, "/ws/chat/", &[("Cookie", session("wait-44"))])
            .await
            .expect("upgraded");
        assert_eq!(next_event(&mut ws).await.expect("hello")["user_id"], 44);
        let _ = ws.send(Message::Close(None)).await;
    });
    assert_eq!(
        django.calls_for("wait-44"),
        1,
        "the socket used the cached answer"
    );
    // Another cookie is another call; a refusal is cached too.
    for _ in 0..3 {
        assert_eq!(
            get(&d, ME, &[("Cookie", &session("user-45"))]).status(),
            200
        );
        assert_eq!(
            get(&d, ME, &[("Cookie", &session("expired"))]).status(),
            401
        );
    }
    assert_eq!(django.calls_for("user-45"), 1);
    assert_eq!(django.calls_for("expired"), 1);
    // Past `session_cache_ttl`, the host app is asked again (a logout shows within it).
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        get(&d, ME, &[("Cookie", &session("user-45"))]).status(),
        200
    );
    assert_eq!(django.calls_for("user-45"), 2);
}

#[test]
fn a_token_cookie_carries_a_jwt_for_rest_and_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_AUTH__TOKEN_COOKIE", "access_token")]),
    );
    let cookie = format!("theme=dark; access_token={}", d.token(31));
    let (status, me) = json_of(get(&d, ME, &[("Cookie", &cookie)]));
    assert_eq!((status, me["id"].as_u64()), (200, Some(31)), "{me}");
    let (status, body) = json_of(get(&d, ME, &[("Cookie", "access_token=not.a.jwt")]));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_invalid"))
    );
    // Without a session check, other cookies authenticate nobody.
    let (status, _) = json_of(get(&d, ME, &[("Cookie", "sessionid=user-42")]));
    assert_eq!(status, 401);
    runtime().block_on(async {
        let mut ws = upgrade(&d, "/ws/chat/", &[("Cookie", cookie.clone())])
            .await
            .expect("upgraded");
        assert_eq!(next_event(&mut ws).await.expect("hello")["user_id"], 31);
        // A cookie is ambient: a page on another origin may not use it.
        let refused = upgrade(
            &d,
            "/ws/chat/",
            &[("Cookie", cookie.clone()), ("Origin", APP.to_owned())],
        )
        .await
        .expect_err("refused");
        assert_eq!(refused.0, 403, "{}", refused.1);
    });
}

#[test]
fn cors_answers_listed_origins_only_and_credentials_only_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origins = format!(r#"["{APP}"]"#);
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_HTTP__CORS_ALLOWED_ORIGINS", &origins)]),
    );
    let preflight = |origin: &str| {
        d.http
            .request(
                reqwest::Method::OPTIONS,
                d.url("/api/v1/messaging/messages/"),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
            .expect("preflight")
    };
    let header = |resp: &reqwest::blocking::Response, name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("text").to_owned())
    };
    let ok = preflight(APP);
    assert!(matches!(ok.status().as_u16(), 200 | 204), "{}", ok.status());
    assert_eq!(
        header(&ok, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&ok, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = header(&ok, "access-control-allow-methods").expect("methods");
    assert!(methods.contains("POST"), "{methods}");
    let headers = header(&ok, "access-control-allow-headers").expect("headers");
    assert!(headers.contains("authorization"), "{headers}");

    let unlisted = preflight("https://evil.example");
    assert_eq!(header(&unlisted, "access-control-allow-origin"), None);
    assert_eq!(header(&unlisted, "access-control-allow-credentials"), None);

    // A real request: the listed origin may read the answer, errors included.
    let resp = get(&d, ME, &[("Origin", APP)]);
    assert_eq!(resp.status(), 401);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(header(&resp, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));
    let resp = get(&d, ME, &[("Origin", "https://evil.example")]);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    // No Origin (not a browser): no CORS headers.
    let resp = get(&d, "/health", &[]);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);

    // `"*"`: every origin, never with credentials.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let star = Daemon::start_with(
        dir2.path(),
        Options::env(&[("INDABA_HTTP__CORS_ALLOWED_ORIGINS", r#"["*"]"#)]),
    );
    let resp = get(&star, "/health", &[("Origin", "https://any.example")]);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(header(&resp, "access-control-allow-credentials"), None);

    // No list: no CORS at all; a preflight is the route's 405.
    let dir3 = tempfile::tempdir().expect("tempdir");
    let plain = Daemon::start(dir3.path());
    let resp = plain
        .http
        .request(reqwest::Method::OPTIONS, plain.url(ME))
        .header("Origin", APP)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .expect("preflight");
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
}

#[test]
fn cookie_upgrades_and_writes_from_other_origins_are_refused() {
    let django = Django::start();
    let origins = format!(r#"["{APP}"]"#);
    let (_dir, d) = daemon(
        &django.url(),
        &[("INDABA_HTTP__CORS_ALLOWED_ORIGINS", &origins)],
    );
    let cookie = session("user-42");
    let own = format!("http://{}", d.addr);
    runtime().block_on(async {
        for (origin, allowed) in [
            (Some(APP.to_owned()), true),
            (Some(own.clone()), true),
            (None, true),
            (Some("https://evil.example".to_owned()), false),
            (Some("null".to_owned()), false),
        ] {
            let mut headers = vec![("Cookie", cookie.clone())];
            headers.extend(origin.clone().map(|o| ("Origin", o)));
            let before = django.calls_for("user-42");
            match upgrade(&d, "/ws/chat/", &headers).await {
                Ok(mut ws) => {
                    assert!(allowed, "{origin:?} must be refused");
                    let hello = next_event(&mut ws).await.expect("hello");
                    assert_eq!(hello["user_id"], 42, "{origin:?}");
                }
                Err((status, body)) => {
                    assert!(!allowed, "{origin:?} must be let through: {status} {body}");
                    assert_eq!(status, 403);
                    assert!(body.contains("origin_not_allowed"), "{body}");
                    // Refused before the host app is asked.
                    assert_eq!(django.calls_for("user-42"), before);
                }
            }
        }
        // A token in the query is no ambient credential: any origin.
        let path = format!("/ws/chat/?token={}", d.token(9));
        let mut ws = upgrade(&d, &path, &[("Origin", "https://evil.example".to_owned())])
            .await
            .expect("token upgrade from any origin");
        assert_eq!(next_event(&mut ws).await.expect("hello")["user_id"], 9);
    });

    // A cookie-authenticated write from another origin is refused; from the own page it works.
    let conv = d.conversation(42, 43);
    let post = |origin: Option<&str>| {
        let mut req = d
            .http
            .post(d.url("/api/v1/messaging/messages/"))
            .header("Cookie", &cookie)
            .json(&json!({"conversation": conv, "text": "hi"}));
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        json_of(req.send().expect("post"))
    };
    let (status, body) = post(Some("https://evil.example"));
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    assert_eq!(post(Some(&own)).0, 201);
    assert_eq!(post(Some(APP)).0, 201);
    assert_eq!(post(None).0, 201);
    // Reads are not refused (CORS keeps the answer from the page).
    let resp = get(
        &d,
        ME,
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    );
    assert_eq!(resp.status(), 200);

    // With no list, only the daemon's own origin.
    let (_dir2, strict) = daemon(&django.url(), &[]);
    runtime().block_on(async {
        let listed = upgrade(
            &strict,
            "/ws/chat/",
            &[("Cookie", cookie.clone()), ("Origin", APP.to_owned())],
        )
        .await;
        assert_eq!(listed.err().map(|(s, _)| s), Some(403));
        let own = format!("http://{}", strict.addr);
        let mut ws = upgrade(
            &strict,
            "/ws/chat/",
            &[("Cookie", cookie.clone()), ("Origin", own)],
        )
        .await
        .expect("own origin");
        assert_eq!(next_event(&mut ws).await.expect("hello")["user_id"], 42);
    });
}

//! The route table against the document it generates, and both against what the accept loop
//! really serves: every request here goes over TCP through `server::accept_loop`, the layers
//! and the router, as a client's would.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::auth::jwt::VerifyKey;
use crate::config::{Config, Secret};
use crate::crypto::{Key, Keyring};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::WriterOptions;
use crate::users::Directory;

/// A daemon's accept loop on a loopback port, over a fresh store: the web pages and the echo
/// socket on, the service API with secret `s3cret`.
struct Served {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = Arc::new(Keyring::new(&Key::generate().expect("key"), &[]).expect("ring"));
    let (store, _writer) =
        Store::open(dir.path(), keyring, WriterOptions::standalone(16)).expect("open");
    let shutdown = CancellationToken::new();
    let hub = Arc::new(Hub::new(store.clone(), Duration::from_secs(5)));
    let mut config = Config::default();
    config.web.demo = true;
    config.web.admin = true;
    config.server.websocket_echo = true;
    let state = AppState::new(
        config,
        store,
        Directory::default(),
        hub,
        Arc::new(Metrics::new()),
        &VerifyKey::Secret(b"0123456789abcdef".to_vec()),
        None,
        Some(Secret::new("s3cret")),
        shutdown.clone(),
    )
    .expect("state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let tasks = state.tasks.clone();
    tokio::spawn(crate::http::server::accept_loop(
        listener,
        Arc::new(state),
        tasks,
        shutdown.clone(),
    ));
    Served {
        base,
        client: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl Served {
    async fn send(&self, method: &str, path: &str) -> (u16, Option<String>, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().expect("text").to_owned());
        let body = response.bytes().await.expect("body");
        (
            status,
            allow,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A documented path with its parameters filled in.
fn concrete(path: &str) -> String {
    // A file of the path's own: the API reference's files are one segment.
    let file = match path.strip_prefix("/api/docs/") {
        Some(_) => "LICENSE.txt",
        None => "demo/app.js",
    };
    path.replace("{id}", "7")
        .replace("{user_id}", "7")
        .replace("{file}", file)
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Head => "HEAD",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Trace => "TRACE",
    }
}

/// What the router answers when nothing is routed at a path or for a method.
fn unrouted(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["detail"] == "no such endpoint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_documented_and_every_documented_one_served() {
    let server = serve().await;
    let (status, _, doc) = server.send("GET", "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );

    let api = Api::new(&LimitsConfig::default());
    let served: BTreeSet<(String, String)> = api
        .served()
        .iter()
        .map(|(m, p)| (method_name(m).to_owned(), p.clone()))
        .collect();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    assert_eq!(
        served, documented,
        "the route table and the served document"
    );
    assert!(served.len() >= 30, "{served:?}");

    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(op["responses"]["200"].is_object() || op["responses"]["201"].is_object());
        assert!(op["operationId"].is_string(), "{method} {path}");
        // Served, with and without the trailing slash: whatever the answer, it is the route's.
        let url = concrete(path);
        let other = match url.strip_suffix('/') {
            Some(trimmed) => trimmed.to_owned(),
            None => format!("{url}/"),
        };
        for url in [&url, &other] {
            let (status, _, body) = server.send(method, url).await;
            assert!(!unrouted(status, &body), "{method} {url}: {status} {body}");
        }
        if method == "GET" && !path.starts_with("/api/messages/queue/") {
            let (status, _, _) = server.send("HEAD", &url).await;
            assert_ne!(status, 405, "HEAD {url}");
        }
    }
    // The sockets are served, and not in the document.
    assert_eq!(
        api.sockets(),
        [
            "/ws/chat/",
            "/ws/chat/{id}/",
            "/ws/notifications/",
            "/ws/echo/"
        ]
    );
    for path in api.sockets() {
        assert!(doc["paths"].get(*path).is_none(), "{path} documented");
        let (status, _, body) = server.send("GET", &concrete(path)).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json_str("websocket_required"))
        );
    }
    // And nothing else is.
    for path in [
        "/nope",
        "/api/v1/messaging/nothing-here/",
        "/ws/other/",
        "/assets",
    ] {
        let (status, _, body) = server.send("GET", path).await;
        assert!(unrouted(status, &body), "{path}: {status} {body}");
    }
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// Method, path, then the status, `Allow` and `detail` expected.
type Case = (
    &'static str,
    &'static str,
    u16,
    Option<&'static str>,
    Option<&'static str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_ids_and_trailing_slashes_answer_as_before() {
    let server = serve().await;
    let cases: &[Case] = &[
        (
            "DELETE",
            "/api/v1/messaging/messages/",
            405,
            Some("GET, HEAD, POST"),
            None,
        ),
        (
            "PUT",
            "/api/v1/messaging/conversations/12",
            405,
            Some("GET, HEAD"),
            None,
        ),
        ("POST", "/health", 405, Some("GET, HEAD"), None),
        ("POST", "/", 405, Some("GET, HEAD"), None),
        ("GET", "/api/v1/auth/token/", 405, Some("POST"), None),
        // A drain has no HEAD; a socket is GET only.
        ("HEAD", "/api/messages/queue/7", 405, Some("GET"), None),
        ("HEAD", "/ws/chat/", 405, Some("GET"), None),
        ("POST", "/ws/notifications", 405, Some("GET"), None),
        // A malformed or out-of-range id is the resource's 404, whatever the method.
        (
            "GET",
            "/api/v1/messaging/messages/abc/",
            404,
            None,
            Some("message not found"),
        ),
        (
            "PUT",
            "/api/v1/messaging/conversations/abc/",
            404,
            None,
            Some("conversation not found"),
        ),
        (
            "GET",
            "/api/v1/messaging/conversations/9007199254740992",
            404,
            None,
            Some("conversation not found"),
        ),
        (
            "GET",
            "/api/v1/auth/users/0/",
            404,
            None,
            Some("user not found"),
        ),
        (
            "POST",
            "/api/messages/queue/x",
            404,
            None,
            Some("no such user"),
        ),
        (
            "GET",
            "/ws/chat/abc/",
            404,
            None,
            Some("conversation not found"),
        ),
        ("GET", "/nope", 404, None, Some("no such endpoint")),
        // Served either way.
        ("GET", "/api/v1/messaging/conversations", 401, None, None),
        ("GET", "/api/v1/messaging/conversations/", 401, None, None),
        ("GET", "/api/messages/queue/7", 401, None, None),
        ("GET", "/assets/demo/app.js/", 200, None, None),
        ("GET", "/admin", 200, None, None),
        ("GET", "/assets/admin/console.js", 200, None, None),
        ("GET", "/", 200, None, None),
        (
            "GET",
            "/assets/demo/nope.js",
            404,
            None,
            Some("no such endpoint"),
        ),
    ];
    for &(method, path, status, allow, detail) in cases {
        let (got, got_allow, body) = server.send(method, path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(got_allow.as_deref(), allow, "{method} {path}");
        if let Some(detail) = detail {
            assert_eq!(body["detail"], detail, "{method} {path}");
        }
        if status >= 400 && method != "HEAD" {
            assert!(body["error"].is_string(), "{method} {path}: {body}");
        }
    }
}

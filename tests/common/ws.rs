//! WebSocket clients for the integration tests: a runtime to hold sockets in, the upgrade, and
//! JSON events in and out, every wait bounded by [`WAIT`] so a missing event fails the test
//! instead of hanging it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Daemon, WsStream};

const MESSAGES: &str = "/api/v1/messaging/messages/";

/// How long any single event may take to arrive.
pub const WAIT: Duration = Duration::from_secs(5);

/// A runtime for a test's sockets (the blocking HTTP client must not run inside it).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The URL of the socket at `path` with `token` in the query.
pub fn ws_url(d: &Daemon, path: &str, token: &str) -> String {
    format!("ws://{}{path}?token={token}", d.addr)
}

/// Opens the socket at `url`; the upgrade must succeed (101).
pub async fn connect(url: &str) -> WsStream {
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake within WAIT")
        .expect("WebSocket handshake");
    assert_eq!(response.status(), 101, "switching protocols");
    ws
}

/// Opens the socket at `path` as `user` (a token in the query); the upgrade must succeed.
pub async fn connect_as(d: &Daemon, path: &str, user: u64) -> WsStream {
    connect(&ws_url(d, path, &d.token(user))).await
}

/// Opens a conversation or notification socket (they send nothing first) and waits until the
/// daemon answers a ping on it, so it is registered for events.
pub async fn quiet_socket(url: &str) -> WsStream {
    let mut ws = connect(url).await;
    ping_pong(&mut ws).await;
    ws
}

pub async fn send_json(ws: &mut WsStream, v: Value) {
    send_text(ws, v.to_string()).await;
}

pub async fn send_text(ws: &mut WsStream, text: String) {
    tokio::time::timeout(WAIT, ws.send(Message::text(text)))
        .await
        .expect("send within WAIT")
        .expect("send frame");
}

/// Sends `{"type":"ping"}` and asserts that the very next event is the pong: the socket is
/// open, and nothing else was waiting ahead of it.
pub async fn ping_pong(ws: &mut WsStream) {
    send_json(ws, json!({"type": "ping"})).await;
    let next = recv_json(ws).await;
    assert_eq!(next, json!({"type": "pong"}), "expected only the pong");
}

/// The next JSON event, skipping WebSocket-level pings and pongs.
pub async fn recv_json(ws: &mut WsStream) -> Value {
    recv_json_within(ws, WAIT)
        .await
        .unwrap_or_else(|| panic!("no event within {WAIT:?}"))
}

/// The next JSON event, or `None` if none arrives `within`.
pub async fn recv_json_within(ws: &mut WsStream, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match next {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).expect("events are JSON"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                panic!("socket closed while expecting an event: {frame:?}")
            }
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(e)) => panic!("socket failed while expecting an event: {e}"),
            None => panic!("socket ended while expecting an event"),
        }
    }
}

/// The next JSON event, or the close code (`None`: the socket ended without a close frame) if
/// the server closes first.
pub async fn next_event(ws: &mut WsStream) -> Result<Value, Option<u16>> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within WAIT");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(&text).expect("events are JSON"));
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Reads events until one of type `kind` (returned); fails if the socket closes first.
pub async fn event_of(ws: &mut WsStream, kind: &str) -> Value {
    loop {
        match next_event(ws).await {
            Ok(event) if event["type"] == kind => return event,
            Ok(_) => {}
            Err(code) => panic!("closed ({code:?}) while waiting for {kind}"),
        }
    }
}

/// Async REST, for calls made while sockets are open (the blocking client must not run inside
/// the runtime).
pub struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    pub fn new(d: &Daemon) -> Self {
        Rest {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            base: format!("http://{}", d.addr),
        }
    }

    /// `method` on `path` with `Authorization: Bearer <token>` (a user's token, or the service
    /// secret) and a JSON body, if given.
    pub async fn call(
        &self,
        method: &str,
        token: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }
    /// REST send; returns the message JSON.
    pub async fn send(&self, token: &str, body: Value) -> Value {
        let (status, msg) = self.call("POST", token, MESSAGES, Some(&body)).await;
        assert_eq!(status, 201, "{msg}");
        msg
    }

    /// Service API send (`POST /api/messages/send`) with `secret`; returns its 201 answer.
    pub async fn service_send(&self, secret: &str, body: Value) -> Value {
        let path = "/api/messages/send";
        let (status, reply) = self.call("POST", secret, path, Some(&body)).await;
        assert_eq!(status, 201, "{reply}");
        reply
    }

    /// Every message of `conversation` as `token` sees them (oldest first, at most 200).
    pub async fn messages(&self, token: &str, conversation: u64) -> Vec<Value> {
        let path = format!("{MESSAGES}?conversation={conversation}&limit=200");
        let (status, page) = self.call("GET", token, &path, None).await;
        assert_eq!(status, 200, "{page}");
        page["results"].as_array().expect("results").clone()
    }
}

//! Interop: seed 002's own Python client (the `websockets` library) against the daemon, and
//! the Python clients of seeds 002 and 003 authenticated by a Django session cookie only
//! (contract 8.1), against a stand-in for the host app's `/api/v1/auth/me/`.
//!
//! `bash .ci/run` installs `websockets` and sets `INDABA_REQUIRE_INTEROP=1`, so there a missing
//! library fails the test; a plain `cargo test` on a machine without it says so and skips.

mod common;

use std::process::Command;

use common::Daemon;
use common::django::Django;

fn python_websockets_available() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the Python interop tests can run; if not, fails under `INDABA_REQUIRE_INTEROP`,
/// else says it skips.
fn python_interop() -> bool {
    if python_websockets_available() {
        return true;
    }
    assert!(
        std::env::var_os("INDABA_REQUIRE_INTEROP").is_none(),
        "python3 with the `websockets` package is required (pip install websockets)"
    );
    eprintln!("SKIPPED: python3 `websockets` is not installed (bash .ci/run installs it)");
    false
}

/// Runs `tests/interop/{script}` with `args`, its sockets carrying `cookie` as a browser page's
/// would; its stdout.
fn run_with_cookie(script: &str, args: &[&str], cookie: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/");
    let out = Command::new("python3")
        .arg(format!("{dir}with_cookie.py"))
        .arg(format!("{dir}{script}"))
        .args(args)
        .env("INDABA_TEST_COOKIE", cookie)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The stand-in Django, and a daemon asking it about session cookies in which users 42 and 43
/// have a conversation (its id last).
fn session_daemon() -> (Django, tempfile::TempDir, Daemon, u64) {
    let django = Django::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        common::Options::env(&[("INDABA_AUTH__SESSION_CHECK_URL", &django.url())]),
    );
    let conv = d.conversation(42, 43);
    (django, dir, d, conv)
}

#[test]
fn seed_002_python_client_chats_with_only_a_django_session_cookie() {
    if !python_interop() {
        return;
    }
    let (django, _dir, d, conv) = session_daemon();
    let uri = format!("ws://{}/ws/chat/", d.addr);
    let stdout = run_with_cookie(
        "seed002_client.py",
        &[&uri, &conv.to_string(), "43"],
        "csrftoken=t0k3n; sessionid=user-42",
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("< "))
        .map(|l| serde_json::from_str(l).expect("server sent JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["type"], "connection_established");
    assert_eq!(lines[0]["user_id"], 42, "the session's user");
    assert_eq!(lines[1]["type"], "message_sent", "{stdout}");
    let id = lines[1]["message_id"].as_u64().expect("message_id");
    let (status, msg) = d.get(43, &format!("/api/v1/messaging/messages/{id}/"));
    assert_eq!((status, &msg["sender"]), (200, &serde_json::json!(42)));
    assert_eq!(msg["text"], "Hello from Python!");
    assert_eq!(django.calls_for("user-42"), 1);
}

#[test]
fn seed_003_python_client_chats_with_only_a_django_session_cookie() {
    if !python_interop() {
        return;
    }
    let (django, _dir, d, conv) = session_daemon();
    let uri = format!("ws://{}/ws/chat/{conv}/", d.addr);
    let stdout = run_with_cookie("seed003_client.py", &[&uri], "sessionid=user-42");
    // Python prints the dict: the room's `message` event, the sender's own included.
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Received: "))
        .unwrap_or_else(|| panic!("no message received: {stdout}"));
    assert!(line.contains("'type': 'message'"), "{line}");
    assert!(line.contains("'sender_id': 42"), "{line}");
    assert!(line.contains("'content': 'Test message'"), "{line}");
    let (_, page) = d.get(
        43,
        &format!("/api/v1/messaging/messages/?conversation={conv}"),
    );
    assert_eq!(page["results"][0]["text"], "Test message");
    assert_eq!(page["results"][0]["sender"], 42);
    assert_eq!(django.calls_for("user-42"), 1, "Django was asked once");
    // A session Django refuses gets the socket closed (4401): the client sees it fail.
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/with_cookie.py"
        ))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/seed003_client.py"
        ))
        .arg(&uri)
        .env("INDABA_TEST_COOKIE", "sessionid=expired")
        .output()
        .expect("run python");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("4401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn seed_002_python_client_connects_sends_and_is_acknowledged() {
    if !python_interop() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let uri = format!("ws://{}/ws/chat/?token={}", d.addr, d.token(1));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/seed002_client.py"
    );
    let out = Command::new("python3")
        .args([script, &uri, &conv.to_string(), "2"])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("< "))
        .map(|l| serde_json::from_str(l).expect("server sent JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["type"], "connection_established");
    assert_eq!(lines[0]["user_id"], 1);
    assert_eq!(lines[1]["type"], "message_sent");
    let id = lines[1]["message_id"].as_u64().expect("message_id");
    // Durable and visible to the receiver over REST.
    let (status, msg) = d.get(2, &format!("/api/v1/messaging/messages/{id}/"));
    assert_eq!(status, 200);
    assert_eq!(msg["text"], "Hello from Python!");
    assert_eq!(msg["receiver"], 2);
}

/// Seed 002's JavaScript `ChatWebSocket` class in Node (whose WebSocket is the browser API):
/// connect, send, be told it was delivered, see the other side type and read it.
#[test]
fn seed_002_javascript_client_chats_and_sees_the_read_receipt() {
    let node_ws = Command::new("node")
        .args([
            "--experimental-websocket",
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !node_ws {
        assert!(
            std::env::var_os("INDABA_REQUIRE_INTEROP").is_none(),
            "Node.js 20+ is required for the JavaScript interop test"
        );
        eprintln!("SKIPPED: no Node.js with a WebSocket client");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/seed002_client.mjs"
    );
    // User 2 on another socket: reads whatever arrives, and types back.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("ws://{}/ws/chat/?token={}", d.addr, d.token(2));
    let reader = rt.spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut seen = Vec::new();
        while let Some(Ok(frame)) = ws.next().await {
            let Ok(text) = frame.into_text() else {
                continue;
            };
            let event: serde_json::Value = serde_json::from_str(&text).expect("json");
            seen.push(event["type"].as_str().unwrap_or("").to_owned());
            if event["type"] == "new_message" {
                let id = event["message_id"].clone();
                let receipt = serde_json::json!({"type": "read_receipt", "message_ids": [id]});
                ws.send(receipt.to_string().into()).await.expect("send");
                break;
            }
        }
        seen
    });
    let out = Command::new("node")
        .args([
            "--experimental-websocket",
            script,
            &d.addr.to_string(),
            &d.token(1),
            &conv.to_string(),
            "2",
        ])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["connection_established", "delivered", "read"],
        "{stdout}"
    );
    let seen = rt.block_on(reader).expect("reader");
    assert!(seen.contains(&"typing_indicator".to_owned()), "{seen:?}");
    assert!(seen.contains(&"new_message".to_owned()), "{seen:?}");
    // The message the JavaScript client sent is stored.
    let (_, page) = d.get(
        2,
        &format!("/api/v1/messaging/messages/?conversation={conv}"),
    );
    assert_eq!(page["results"][0]["text"], "Hello!");
}

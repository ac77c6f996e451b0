//! Interop: seed 002's own Python client (the `websockets` library) against the daemon.
//!
//! `bash .ci/run` installs `websockets` and sets `INDABA_REQUIRE_INTEROP=1`, so there a missing
//! library fails the test; a plain `cargo test` on a machine without it says so and skips.

mod common;

use std::process::Command;

use common::Daemon;

fn python_websockets_available() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn seed_002_python_client_connects_sends_and_is_acknowledged() {
    if !python_websockets_available() {
        assert!(
            std::env::var_os("INDABA_REQUIRE_INTEROP").is_none(),
            "python3 with the `websockets` package is required (pip install websockets)"
        );
        eprintln!("SKIPPED: python3 `websockets` is not installed (bash .ci/run installs it)");
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

//! The host app's own ids and names in the service API (contract section 8.3), against the
//! real daemon: the Django backend sends with *its* conversation ids, and names users whose
//! tokens carry no `username` claim.
//!
//! Before this, a service send naming a conversation by the host's id was 404 (that id was no
//! conversation of Indaba's, or someone else's), and a user known only from claim-less tokens
//! typed as `"username": null` forever.

mod common;

use std::path::Path;

use common::ws::{event_of, quiet_socket, runtime, send_json, ws_url};
use common::{Daemon, Options, WsStream};
use serde_json::{Value, json};

const SECRET: &str = "host-ids-tests-service-secret";

fn start(dir: &Path) -> Daemon {
    Daemon::start_with(
        dir,
        Options::env(&[("INDABA_SERVICE__SHARED_SECRET", SECRET)]),
    )
}

fn service(d: &Daemon, method: &str, path: &str, body: &Value) -> (u16, Value) {
    d.service(SECRET, method, path, Some(body))
}

/// Seed 001's `send_message` with the host's `conversation_id`.
fn send(d: &Daemon, conversation: u64, sender: u64, receiver: Option<u64>) -> (u16, Value) {
    let mut body = json!({"conversation_id": conversation, "sender_id": sender, "text": "hi"});
    if let Some(receiver) = receiver {
        body["receiver_id"] = json!(receiver);
    }
    service(d, "POST", "/api/messages/send", &body)
}

#[test]
fn the_hosts_conversation_ids_map_to_one_conversation_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    // The host's conversation 9001 between its users 1 and 2: Indaba has no such conversation.
    let (status, first) = send(&d, 9001, 1, Some(2));
    assert_eq!(status, 201, "{first}");
    let conv = first["conversation_id"].as_u64().expect("conversation_id");
    assert_ne!(conv, 9001);
    assert_eq!(first["host_conversation_id"], 9001, "{first}");
    // Later sends by the same key, either way round, without a receiver too: the same one.
    for (sender, receiver) in [(2, Some(1)), (1, None)] {
        let (status, again) = send(&d, 9001, sender, receiver);
        assert_eq!(status, 201, "{again}");
        assert_eq!(again["conversation_id"], conv, "{again}");
        assert_eq!(again["host_conversation_id"], 9001);
    }
    // Both users see it, with the host's id.
    let path = format!("/api/v1/messaging/conversations/{conv}/");
    for user in [1, 2] {
        let (status, seen) = d.get(user, &path);
        assert_eq!((status, &seen["host_id"]), (200, &json!(9001)), "{seen}");
        assert_eq!(seen["participants"], json!([1, 2]));
    }
    let (_, page) = d.get(1, "/api/v1/messaging/conversations/");
    assert_eq!(page["results"][0]["host_id"], 9001, "{page}");
    // Indaba's own id of a conversation of both is Indaba's: no host id in the answer.
    let (status, own) = send(&d, conv, 1, Some(2));
    assert_eq!(
        (status, &own["conversation_id"]),
        (201, &json!(conv)),
        "{own}"
    );
    assert_eq!(own["host_conversation_id"], Value::Null);
    // Another host conversation of the same two users reuses their conversation; its host_id
    // stays the first key.
    let (_, other) = send(&d, 9002, 2, Some(1));
    assert_eq!(other["conversation_id"], conv, "{other}");
    assert_eq!(other["host_conversation_id"], 9002);
    // An unknown key without a receiver names nothing.
    let (status, body) = send(&d, 9003, 1, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    // A conversation made over REST has no host id.
    let plain = d.conversation(5, 6);
    let (_, seen) = d.get(5, &format!("/api/v1/messaging/conversations/{plain}/"));
    assert_eq!(seen["host_id"], Value::Null, "{seen}");

    // Graceful restart, then kill -9: the mapping is durable.
    d.stop();
    let d = start(dir.path());
    let (_, after) = send(&d, 9001, 1, Some(2));
    assert_eq!(after["conversation_id"], conv, "{after}");
    let (_, fresh) = send(&d, 9100, 3, Some(4));
    let fresh_conv = fresh["conversation_id"].clone();
    d.crash();
    let d = start(dir.path());
    let (_, after) = send(&d, 9100, 3, Some(4));
    assert_eq!(after["conversation_id"], fresh_conv, "{after}");
    let (_, seen) = d.get(3, &format!("/api/v1/messaging/conversations/{fresh_conv}/"));
    assert_eq!(seen["host_id"], 9100, "{seen}");
    let (_, seen) = d.get(1, &path);
    assert_eq!(seen["host_id"], 9001, "{seen}");
}

/// `typist` stops typing (always relayed, unlike a start): the event `watcher` gets.
async fn stops_typing(typist: &mut WsStream, watcher: &mut WsStream) -> Value {
    send_json(typist, json!({"type": "typing", "is_typing": false})).await;
    event_of(watcher, "typing").await
}

#[test]
fn profiles_name_users_whose_tokens_claim_none_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    let conv = d.conversation(77, 78);
    let rt = runtime();
    // Each answers a ping before the test goes on: registered for the conversation's events.
    let open = |d: &Daemon, user: u64| {
        let url = ws_url(d, &format!("/ws/chat/{conv}/"), &d.token(user));
        rt.block_on(quiet_socket(&url))
    };
    let (mut typist, mut watcher) = (open(&d, 77), open(&d, 78));
    let event = rt.block_on(stops_typing(&mut typist, &mut watcher));
    assert_eq!(event["username"], Value::Null, "no name yet: {event}");

    let (status, body) = service(
        &d,
        "PUT",
        "/api/users/77",
        &json!({"username": "tendai", "display_name": "Tendai M."}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": 77, "username": "tendai", "display_name": "Tendai M."})
    );
    // The open socket uses it at once.
    let event = rt.block_on(stops_typing(&mut typist, &mut watcher));
    assert_eq!(event["username"], "tendai", "{event}");
    assert_eq!(event["user_id"], 77);
    drop((typist, watcher));

    // Durable: after kill -9 the name is still there.
    d.crash();
    let d = start(dir.path());
    let (mut typist, mut watcher) = (open(&d, 77), open(&d, 78));
    let event = rt.block_on(stops_typing(&mut typist, &mut watcher));
    assert_eq!(event["username"], "tendai", "{event}");
    drop((typist, watcher));

    // Bad input, a local account, a missing secret.
    for bad in [json!({}), json!({"username": "  "}), json!({"username": 5})] {
        let (status, body) = service(&d, "PUT", "/api/users/77", &bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = service(&d, "PUT", "/api/users/0", &json!({"username": "x"}));
    assert_eq!(status, 404);
    let (status, account) = common::split(
        d.http
            .post(d.url("/api/v1/auth/register/"))
            .json(&json!({"username": "amara", "password": "a-long-password"}))
            .send()
            .expect("register"),
    );
    assert_eq!(status, 201, "{account}");
    let id = account["id"].as_u64().expect("id");
    let (status, body) = service(
        &d,
        "PUT",
        &format!("/api/users/{id}"),
        &json!({"username": "x"}),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("local_account")),
        "{body}"
    );
    let status = d
        .http
        .put(d.url("/api/users/77"))
        .json(&json!({"username": "y"}))
        .send()
        .expect("put")
        .status();
    assert_eq!(status, 401);
}

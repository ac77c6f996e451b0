//! The drop-in details of contract section 7: what Django REST framework and Channels clients
//! of the seed apps send without thinking about it, against the real daemon over real HTTP and
//! WebSocket.
//!
//! Each test is one detail a DRF or Channels client would have tripped over: ids sent as
//! decimal strings (`"12"`, what `PrimaryKeyRelatedField` and SimpleJWT-era clients send), form
//! and multipart bodies (DRF's default parsers), DRF's per-field error shape, the `content`
//! alias of SmartDalali's REST client, `read_at` in message JSON, seed 003's `notification`
//! event, the seed backend's `X-Erlang-Service` header, `process_count` in `/api/stats`, and
//! the HTML reference at `/api/docs/`.

mod common;

use std::time::Duration;

use common::ws::{Rest, WAIT, connect_as, ping_pong, recv_json, runtime, send_json};
use common::{Daemon, Options, split};
use futures_util::StreamExt;
use serde_json::{Value, json};

const SECRET: &str = "dropin-tests-service-secret-0123456789";
const CONVS: &str = "/api/v1/messaging/conversations/";
const MSGS: &str = "/api/v1/messaging/messages/";

/// A daemon in dev mode with the service API on.
fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_SERVICE__SHARED_SECRET", SECRET)]),
    );
    (dir, d)
}

/// A request as `user` with this body and content type.
fn post_raw(d: &Daemon, user: u64, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(path))
        .bearer_auth(d.token(user))
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .send()
        .expect("POST");
    split(resp)
}

/// A service call with the secret in `header`.
fn service(
    d: &Daemon,
    header: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    d.service_via(header, SECRET, method, path, body)
}

/// [`service`] from inside a socket test's runtime (the blocking client must not run there).
async fn service_async(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    Rest::new(d).call(method, SECRET, path, body).await
}

/// A `multipart/form-data` body of these text fields (and one file part, if given).
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str)>) -> (String, String) {
    let boundary = "----indabaBoundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    if let Some((name, content)) = file {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn assert_refused(status: u16, body: &Value, code: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Ids as strings

/// DRF's `PrimaryKeyRelatedField` takes `"12"` like `12`, and clients built on it send ids as
/// strings (form fields always are). Every id a request takes accepts a decimal string; any
/// other string is still refused.
#[test]
fn ids_as_decimal_strings_are_accepted_everywhere() {
    let (_dir, d) = daemon();

    // REST bodies: a list of ids, optional ids, the conversation of a send.
    let (status, conv) = d.post(1, CONVS, &json!({"participants": ["2"], "property": "7"}));
    assert_eq!(status, 201, "{conv}");
    assert_eq!(conv["participants"], json!([1, 2]));
    assert_eq!(conv["property"], 7);
    let id = conv["id"].as_u64().expect("id");
    let (status, m) = d.post(
        1,
        MSGS,
        &json!({"conversation": id.to_string(), "receiver": "2", "text": "as strings"}),
    );
    assert_eq!(status, 201, "{m}");
    assert_eq!(
        (m["conversation"].as_u64(), m["receiver"].as_u64()),
        (Some(id), Some(2))
    );
    let message = m["id"].as_u64().expect("id");

    // Query strings.
    let (status, page) = d.get(1, &format!("{MSGS}?conversation={id}"));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 1);

    // Service API bodies.
    let (status, sent) = service(
        &d,
        "X-Service-Token",
        "POST",
        "/api/messages/send",
        Some(
            &json!({"conversation_id": id.to_string(), "sender_id": "2", "receiver_id": "1",
                     "text": "from the backend"}),
        ),
    );
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["conversation_id"], id);
    let from_backend = sent["message_id"].as_u64().expect("message_id");
    let (status, cast) = service(
        &d,
        "X-Service-Token",
        "POST",
        "/api/messages/broadcast",
        Some(
            &json!({"message": {"sender_id": "9", "text": "maintenance tonight"},
                     "user_ids": ["1", "2", 3]}),
        ),
    );
    assert_eq!(status, 200, "{cast}");
    assert_eq!(cast["recipients"], 3);

    // Anything else that is not a number is still refused, naming the field.
    for bad in [
        json!("12a"),
        json!("-1"),
        json!("1.5"),
        json!(" 2"),
        json!(""),
        json!("0x1f"),
    ] {
        let (status, body) = d.post(1, CONVS, &json!({"participants": [bad.clone()]}));
        assert_refused(status, &body, "invalid_request");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|s| s.contains("participants")),
            "{bad}: {body}"
        );
        let (status, body) = d.post(1, MSGS, &json!({"conversation": bad, "text": "x"}));
        assert_refused(status, &body, "invalid_request");
    }

    // Both socket dialects.
    runtime().block_on(async {
        let mut chat = connect_as(&d, "/ws/chat/", 2).await;
        assert_eq!(recv_json(&mut chat).await["type"], "connection_established");
        // The queue replay of what user 2 missed: the REST message and the broadcast.
        let mut replayed = 0;
        while replayed < 2 {
            let event = recv_json(&mut chat).await;
            assert_eq!(event["type"], "new_message", "{event}");
            replayed += 1;
        }
        send_json(
            &mut chat,
            json!({"type": "join_conversation", "conversation_id": id.to_string()}),
        )
        .await;
        assert_eq!(recv_json(&mut chat).await, json!({"type": "joined", "conversation_id": id}));
        // The presence of the other participant follows the join.
        assert_eq!(recv_json(&mut chat).await["type"], "presence");
        send_json(
            &mut chat,
            json!({"type": "chat_message", "conversation_id": id.to_string(),
                   "receiver_id": "1", "text": "over the socket", "client_id": "c-1"}),
        )
        .await;
        let sent = recv_json(&mut chat).await;
        assert_eq!(sent["type"], "message_sent", "{sent}");
        assert_eq!(sent["conversation_id"], id);
        send_json(
            &mut chat,
            json!({"type": "read_receipt", "message_ids": [message.to_string()]}),
        )
        .await;
        send_json(&mut chat, json!({"type": "sync", "since_message_id": "0"})).await;
        let mut synced = 0;
        loop {
            let event = recv_json(&mut chat).await;
            match event["type"].as_str() {
                Some("new_message") => synced += 1,
                Some("sync_complete") => break,
                // The read receipt's own answer to the reader's sockets.
                Some("unread_count") => {}
                _ => panic!("unexpected {event}"),
            }
        }
        assert!(synced >= 3, "sync returned {synced} messages");
        send_json(
            &mut chat,
            json!({"type": "chat_message", "conversation_id": "12a", "text": "x", "client_id": "c-2"}),
        )
        .await;
        let error = recv_json(&mut chat).await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], "invalid_message", "{error}");
        assert_eq!(error["ref"], "c-2", "{error}");

        let mut room = connect_as(&d, &format!("/ws/chat/{id}/"), 1).await;
        ping_pong(&mut room).await;
        send_json(&mut room, json!({"type": "read", "message_ids": [from_backend.to_string()]})).await;
        let receipt = recv_json(&mut room).await;
        assert_eq!(receipt["type"], "read_receipt", "{receipt}");
        send_json(&mut room, json!({"type": "read", "message_ids": ["x"]})).await;
        assert_eq!(recv_json(&mut room).await["type"], "error");
    });
}

// ---------------------------------------------------------------------------------------------
// Body formats

/// DRF parses JSON, form-encoded and multipart bodies alike; a repeated key is a list. The
/// seed apps' HTML forms and `requests.post(url, data=...)` send the latter two.
#[test]
fn form_and_multipart_bodies_are_read_like_json() {
    let (_dir, d) = daemon();
    let form = "application/x-www-form-urlencoded";

    let (status, conv) = post_raw(
        &d,
        1,
        CONVS,
        form,
        "participants=2&participants=3&subject=Viewing+on+Friday",
    );
    assert_eq!(status, 201, "{conv}");
    assert_eq!(conv["participants"], json!([1, 2, 3]));
    assert_eq!(conv["subject"], "Viewing on Friday");
    // One value of a list field is a list of one.
    let (status, pair) = post_raw(&d, 1, CONVS, form, "participants=2");
    assert_eq!(status, 201, "{pair}");
    assert_eq!(pair["participants"], json!([1, 2]));
    let pair = pair["id"].as_u64().expect("id");
    // An empty optional field is left out, as an HTML form sends it.
    let (status, m) = post_raw(
        &d,
        1,
        MSGS,
        &format!("{form}; charset=UTF-8"),
        &format!("conversation={pair}&receiver=&text=Hello+%26+welcome&priority=high"),
    );
    assert_eq!(status, 201, "{m}");
    assert_eq!(
        (m["text"].as_str(), m["priority"].as_str()),
        (Some("Hello & welcome"), Some("high"))
    );
    assert_eq!(m["receiver"], 2);

    let (content_type, body) = multipart(
        &[
            ("conversation", &pair.to_string()),
            ("text", "from a multipart form"),
        ],
        None,
    );
    let (status, m) = post_raw(&d, 1, MSGS, &content_type, &body);
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["text"], "from a multipart form");
    let (content_type, body) = multipart(&[("participants", "2"), ("participants", "4")], None);
    let (status, c) = post_raw(&d, 1, CONVS, &content_type, &body);
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["participants"], json!([1, 2, 4]));

    // Files are not taken; a broken multipart body is refused, not half-read.
    let (content_type, body) =
        multipart(&[("conversation", &pair.to_string())], Some(("text", "hi")));
    let (status, refused) = post_raw(&d, 1, MSGS, &content_type, &body);
    assert_refused(status, &refused, "invalid_body");
    let (status, refused) = post_raw(
        &d,
        1,
        MSGS,
        "multipart/form-data; boundary=xyz",
        "--xyz\r\nnonsense",
    );
    assert_refused(status, &refused, "invalid_body");
    let (status, refused) = post_raw(&d, 1, MSGS, "multipart/form-data", "no boundary");
    assert_refused(status, &refused, "invalid_body");

    // JSON with anything but whitespace after its value stays 400; other types stay 415.
    let (status, refused) = post_raw(
        &d,
        1,
        MSGS,
        "application/json",
        &format!("{{\"conversation\": {pair}, \"text\": \"x\"}} {{}}"),
    );
    assert_refused(status, &refused, "invalid_json");
    let (status, ok) = post_raw(
        &d,
        1,
        MSGS,
        "application/json",
        &format!("{{\"conversation\": {pair}, \"text\": \"x\"}} \r\n\t"),
    );
    assert_eq!(status, 201, "{ok}");
    let (status, refused) = post_raw(&d, 1, MSGS, "text/plain", "conversation=1&text=x");
    assert_eq!(status, 415, "{refused}");

    // The service API reads forms too (seed 001's backend posts them with `requests`).
    let resp = d
        .http
        .post(d.url("/api/messages/send"))
        .header("X-Service-Token", SECRET)
        .header("Content-Type", form)
        .body("sender_id=2&receiver_id=1&text=from+the+backend&priority=low")
        .send()
        .expect("service send");
    let (status, sent) = split(resp);
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["conversation_id"], pair);

    // The document says so once, in its description; operations list the JSON type, whose
    // schema describes the body exactly (a form carries no nested objects).
    let (status, doc) = split(d.http.get(d.url("/api/openapi.json")).send().expect("doc"));
    assert_eq!(status, 200);
    let description = doc["info"]["description"].as_str().expect("description");
    for kind in ["application/x-www-form-urlencoded", "multipart/form-data"] {
        assert!(description.contains(kind), "{kind} not in: {description}");
    }
    for (path, method) in [
        (MSGS, "post"),
        (CONVS, "post"),
        ("/api/messages/send", "post"),
    ] {
        let content = &doc["paths"][path][method]["requestBody"]["content"];
        assert!(
            content.get("application/json").is_some(),
            "{method} {path} does not list JSON: {content}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Field errors, `content`

/// DRF answers a bad field as `{"<field>": ["<sentence>"]}`; clients show the sentence beside
/// the field. The contract keeps `error` and `detail` beside it.
#[test]
fn field_errors_have_drf_shape() {
    let (_dir, d) = daemon();
    let conv = d.conversation(1, 2);
    let fields = |body: &Value| {
        let mut keys: Vec<String> = body
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| *k != "error" && *k != "detail")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    };

    let (status, body) = d.post(1, CONVS, &json!({}));
    assert_refused(status, &body, "invalid_request");
    assert_eq!(
        body["participants"],
        json!(["This field is required."]),
        "{body}"
    );
    assert_eq!(fields(&body), ["participants"]);

    let (status, body) = d.post(1, MSGS, &json!({"conversation": "abc", "text": "x"}));
    assert_refused(status, &body, "invalid_request");
    assert_eq!(fields(&body), ["conversation"], "{body}");
    assert!(
        body["conversation"][0]
            .as_str()
            .is_some_and(|s| s.ends_with('.')),
        "{body}"
    );

    // Checks made after parsing name their field too.
    let (status, body) = d.post(1, MSGS, &json!({"conversation": conv, "text": "   "}));
    assert_refused(status, &body, "invalid_request");
    assert_eq!(
        body["text"],
        json!(["This field may not be blank."]),
        "{body}"
    );
    let (status, body) = d.post(
        1,
        MSGS,
        &json!({"conversation": conv, "text": "x", "priority": "urgent"}),
    );
    assert_refused(status, &body, "invalid_request");
    assert_eq!(fields(&body), ["priority"], "{body}");
    let long = "x".repeat(20_000);
    let (status, body) = d.post(1, MSGS, &json!({"conversation": conv, "text": long}));
    assert_refused(status, &body, "text_too_long");
    assert_eq!(fields(&body), ["text"], "{body}");
    let (status, body) = d.post(
        1,
        MSGS,
        &json!({"conversation": conv, "receiver": 77, "text": "x"}),
    );
    assert_refused(status, &body, "invalid_receiver");
    assert_eq!(fields(&body), ["receiver"], "{body}");
    let (status, body) = d.post(1, CONVS, &json!({"participants": [1]}));
    assert_refused(status, &body, "invalid_participants");
    assert_eq!(fields(&body), ["participants"], "{body}");

    // Not about a field: no field keys.
    let (status, body) = post_raw(&d, 1, MSGS, "application/json", "{nope");
    assert_refused(status, &body, "invalid_json");
    assert!(fields(&body).is_empty(), "{body}");
}

/// SmartDalali's REST client sends `{"content": ...}`, the name its socket dialect uses.
#[test]
fn content_is_an_alias_of_text() {
    let (_dir, d) = daemon();
    let conv = d.conversation(1, 2);
    let (status, m) = d.post(
        1,
        MSGS,
        &json!({"conversation": conv, "content": "Is it still available?"}),
    );
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["text"], "Is it still available?");
    let (status, body) = d.post(1, MSGS, &json!({"conversation": conv}));
    assert_refused(status, &body, "invalid_request");
    assert_eq!(body["text"], json!(["This field is required."]), "{body}");
}

// ---------------------------------------------------------------------------------------------
// read_at

/// `read_at` is when the receiver's read marker first covered the message: null while unread,
/// the same in the sender's and the receiver's view, unchanged by later reads, and kept across
/// a restart (kill -9).
#[test]
fn read_at_is_when_the_receiver_first_read_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let first = d.send(1, conv, "first")["id"].as_u64().expect("id");
    let second = d.send(1, conv, "second")["id"].as_u64().expect("id");
    let read_at = |d: &Daemon, viewer: u64, id: u64| {
        let (status, m) = d.get(viewer, &format!("{MSGS}{id}/"));
        assert_eq!(status, 200, "{m}");
        m["read_at"].clone()
    };
    for viewer in [1, 2] {
        assert_eq!(read_at(&d, viewer, first), Value::Null);
    }

    let (status, m) = d.post(2, &format!("{MSGS}{first}/mark_as_read/"), &json!({}));
    assert_eq!(status, 200, "{m}");
    let first_read = m["read_at"].clone();
    assert!(first_read.as_str().is_some_and(|s| s.ends_with('Z')), "{m}");
    assert_eq!(read_at(&d, 1, first), first_read);
    assert_eq!(read_at(&d, 2, second), Value::Null);

    std::thread::sleep(Duration::from_millis(30));
    let (status, _) = d.post(2, &format!("{CONVS}{conv}/mark_all_read/"), &json!({}));
    assert_eq!(status, 200);
    let second_read = read_at(&d, 1, second);
    assert!(
        second_read.as_str() > first_read.as_str(),
        "{second_read} after {first_read}"
    );
    assert_eq!(read_at(&d, 2, second), second_read);
    assert_eq!(
        read_at(&d, 2, first),
        first_read,
        "a later read does not move it"
    );

    // A reply covers what it answers: the replier's marker moves past it when they send.
    let third = d.send(1, conv, "third")["id"].as_u64().expect("id");
    let reply = d.send(2, conv, "reply");
    assert_eq!(read_at(&d, 1, third), reply["created_at"]);
    assert_eq!(
        read_at(&d, 2, reply["id"].as_u64().expect("id")),
        Value::Null
    );

    // History pages and the conversation's last message say the same.
    let (_, page) = d.get(1, &format!("{MSGS}?conversation={conv}"));
    let by_id = |id: u64| {
        page["results"]
            .as_array()
            .and_then(|r| r.iter().find(|m| m["id"] == id))
            .map(|m| m["read_at"].clone())
    };
    assert_eq!(by_id(first), Some(first_read.clone()));
    assert_eq!(by_id(second), Some(second_read.clone()));

    d.crash();
    let d = Daemon::start(dir.path());
    assert_eq!(read_at(&d, 1, first), first_read);
    assert_eq!(read_at(&d, 2, second), second_read);
    assert_eq!(read_at(&d, 2, third), reply["created_at"]);
}

// ---------------------------------------------------------------------------------------------
// Seed 003's notification event

/// On a conversation socket, a system message (a service broadcast) arrives as seed 003's
/// `notification` event, not as `message`; ordinary messages stay `message`.
#[test]
fn system_messages_are_notifications_on_the_conversation_socket() {
    let (_dir, d) = daemon();
    // The one-to-one conversation a broadcast from 9 to 2 lands in.
    let (status, sent) = service(
        &d,
        "X-Service-Token",
        "POST",
        "/api/messages/send",
        Some(&json!({"sender_id": 9, "receiver_id": 2, "text": "welcome"})),
    );
    assert_eq!(status, 201, "{sent}");
    let conv = sent["conversation_id"].as_u64().expect("conversation");
    runtime().block_on(async {
        let mut room = connect_as(&d, &format!("/ws/chat/{conv}/"), 2).await;
        ping_pong(&mut room).await;
        let (status, cast) = service_async(
            &d,
            "POST",
            "/api/messages/broadcast",
            Some(
                &json!({"message": {"sender_id": 9, "text": "Maintenance at 22:00"},
                         "user_ids": [2]}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{cast}");
        let event = recv_json(&mut room).await;
        assert_eq!(event["type"], "notification", "{event}");
        let n = &event["notification"];
        let mut keys: Vec<&str> = n
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["content", "created_at", "id", "is_read", "sender_id"],
            "{event}"
        );
        assert_eq!(
            (n["sender_id"].as_u64(), n["content"].as_str()),
            (Some(9), Some("Maintenance at 22:00"))
        );

        let (status, _) = service_async(
            &d,
            "POST",
            "/api/messages/send",
            Some(&json!({"conversation_id": conv, "sender_id": 9, "text": "an ordinary one"})),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(recv_json(&mut room).await["type"], "message");
    });
}

// ---------------------------------------------------------------------------------------------
// Service API: X-Erlang-Service, process_count

/// The seed's Django stack sends its `ERLANG_SHARED_SECRET` as `X-Erlang-Service`.
#[test]
fn the_service_secret_is_taken_from_x_erlang_service() {
    let (_dir, d) = daemon();
    let (status, stats) = service(&d, "X-Erlang-Service", "GET", "/api/stats", None);
    assert_eq!(status, 200, "{stats}");
    let resp = d
        .http
        .get(d.url("/api/stats"))
        .header("X-Erlang-Service", "wrong")
        .send()
        .expect("stats");
    let (status, body) = split(resp);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_service_token"))
    );
}

/// `process_count` counts live sockets and background tasks: it follows sockets opening and
/// closing.
#[test]
fn stats_process_count_follows_live_sockets() {
    let (_dir, d) = daemon();
    let conv = d.conversation(1, 2);
    runtime().block_on(async {
        let count = || async {
            let (status, stats) = service_async(&d, "GET", "/api/stats", None).await;
            assert_eq!(status, 200, "{stats}");
            stats["process_count"]
                .as_u64()
                .unwrap_or_else(|| panic!("no process_count in {stats}"))
        };
        let idle = count().await;
        assert!(idle >= 1, "the daemon's own background tasks count: {idle}");
        let mut sockets = Vec::new();
        for path in [
            "/ws/chat/".to_owned(),
            "/ws/notifications/".to_owned(),
            format!("/ws/chat/{conv}/"),
        ] {
            let mut ws = connect_as(&d, &path, 1).await;
            if path == "/ws/chat/" {
                recv_json(&mut ws).await;
            }
            ping_pong(&mut ws).await;
            sockets.push(ws);
        }
        let open = count().await;
        assert!(open >= idle + 3, "three sockets open: {open}, idle {idle}");
        for mut ws in sockets {
            ws.close(None).await.expect("close");
            while let Ok(Some(_)) = tokio::time::timeout(WAIT, ws.next()).await {}
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = count().await;
            if now <= open - 3 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sockets closed, still {now} (open {open})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// /api/docs/

/// The HTML reference is served from the binary, with its viewer script, for anyone, under a
/// CSP that keeps it to this origin.
#[test]
fn api_docs_are_served_from_the_binary() {
    let (_dir, d) = daemon();
    for path in ["/api/docs/", "/api/docs"] {
        let resp = d.http.get(d.url(path)).send().expect("docs");
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("http"), "no other origin in {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let html = resp.text().expect("html");
        assert!(html.contains("/api/openapi.json"), "{html}");
        assert!(!html.contains("https://"), "no CDN: {html}");
    }
    let script_path = "/api/docs/redoc.standalone.js";
    let resp = d.http.get(d.url(script_path)).send().expect("script");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .expect("cc")
            .contains("no-cache")
    );
    assert!(
        resp.bytes().expect("script").len() > 100_000,
        "the whole viewer"
    );
    let resp = d
        .http
        .get(d.url(script_path))
        .header("If-None-Match", &etag)
        .send()
        .expect("revalidate");
    assert_eq!(resp.status(), 304);
    let resp = d
        .http
        .get(d.url("/api/docs/LICENSE.txt"))
        .send()
        .expect("license");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().expect("license").contains("MIT"));

    let (_, doc) = split(d.http.get(d.url("/api/openapi.json")).send().expect("doc"));
    assert!(doc["paths"]["/api/docs/"]["get"].is_object(), "documented");
}

//! Administration (contract section 9) against the real daemon: the admin API behind the
//! service secret, `indaba admin ...` over the admin socket, disabling (sockets closed with
//! 4403, tokens refused with 403 `user_disabled`, durably), moderation tombstones with their
//! `message_deleted` events, and erasure that leaves nothing readable in any file of the data
//! dir.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ws::{WAIT, connect_as, event_of, next_event, runtime};
use common::{Daemon, Options, WsStream as Ws, run_cli, split};
use futures_util::SinkExt;
use redb::ReadableDatabase;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "admin-tests-service-secret-0123456789";

fn options() -> Options {
    Options::env(&[("INDABA_SERVICE__SHARED_SECRET", SECRET)])
}

fn start(dir: &Path) -> Daemon {
    Daemon::start_with(dir, options())
}

/// An admin API call with the service secret.
fn admin(d: &Daemon, method: &str, path: &str) -> (u16, Value) {
    d.service(SECRET, method, path, None)
}

/// Records `user` with `name` (their first request, with a `username` claim).
fn seen(d: &Daemon, user: u64, name: &str) {
    let resp = d
        .http
        .get(d.url("/api/v1/auth/me/"))
        .bearer_auth(d.named_token(user, name))
        .send()
        .expect("me");
    assert_eq!(resp.status(), 200);
}

/// Reads until the server closes; answers the close code (`None`: it ended without a close
/// frame).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        if let Err(code) = next_event(ws).await {
            return code;
        }
    }
}

fn cli(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let dir = d.data_dir.to_str().expect("utf-8 path");
    let mut all = vec!["--data-dir", dir, "admin"];
    all.extend_from_slice(args);
    run_cli(&all, &[])
}

#[test]
fn admin_routes_need_the_service_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    seen(&d, 7, "seven");
    let conversation = d.conversation(7, 8);
    let message = d.send(7, conversation, "hello")["id"].as_u64().expect("id");
    let routes = [
        ("GET", "/api/admin/users/".to_owned()),
        ("GET", "/api/admin/users/7".to_owned()),
        ("POST", "/api/admin/users/7/disable".to_owned()),
        ("POST", "/api/admin/users/7/enable".to_owned()),
        ("DELETE", "/api/admin/users/7".to_owned()),
        ("DELETE", format!("/api/admin/messages/{message}")),
        ("GET", format!("/api/admin/conversations/{conversation}")),
    ];
    for (method, path) in &routes {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        // No secret, a wrong one, and a user's token: 401 each.
        let none = split(d.http.request(m.clone(), d.url(path)).send().expect("call"));
        assert_eq!(none.0, 401, "{method} {path}: {}", none.1);
        assert_eq!(none.1["error"], "invalid_service_token");
        let wrong = split(
            d.http
                .request(m.clone(), d.url(path))
                .header("X-Service-Token", "not-the-secret")
                .send()
                .expect("call"),
        );
        assert_eq!(wrong.0, 401, "{method} {path}");
        let user = split(d.request(method, 7, path).send().expect("call"));
        assert_eq!(
            user.0, 401,
            "{method} {path}: a user token is not the secret"
        );
    }
    // Nothing was done by those calls.
    let (status, user) = admin(&d, "GET", "/api/admin/users/7");
    assert_eq!((status, &user["disabled"]), (200, &json!(false)), "{user}");

    // Every admin route is in the OpenAPI document.
    let (_, doc) = split(d.http.get(d.url("/api/openapi.json")).send().expect("doc"));
    for path in [
        "/api/admin/users/",
        "/api/admin/users/{id}",
        "/api/admin/users/{id}/disable",
        "/api/admin/users/{id}/enable",
        "/api/admin/messages/{id}",
        "/api/admin/conversations/{id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    assert!(doc["paths"]["/api/admin/users/{id}"]["delete"].is_object());
}

#[test]
fn the_admin_api_is_off_without_a_service_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let (status, body) = split(
        d.http
            .get(d.url("/api/admin/users/"))
            .header("X-Service-Token", SECRET)
            .send()
            .expect("call"),
    );
    assert_eq!(status, 404, "{body}");
    // The admin socket still serves the operator on the host.
    seen(&d, 5, "five");
    let (code, out, err) = cli(&d, &["users", "show", "5"]);
    assert_eq!(code, 0, "{err}");
    let user: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(user["username"], "five");
}

#[test]
fn users_are_listed_by_page_and_found_by_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    let names = ["amara", "bongani", "chipo", "dumisani", "amahle"];
    for (i, name) in names.iter().enumerate() {
        seen(&d, 10 + i as u64, name);
    }
    let conversation = d.conversation(10, 11);
    d.send(11, conversation, "for amara's queue");

    let (status, page1) = admin(&d, "GET", "/api/admin/users/?page_size=2");
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["count"], 5);
    assert_eq!(page1["previous"], Value::Null);
    let ids: Vec<u64> = page1["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|u| u["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [10, 11]);
    let amara = &page1["results"][0];
    let keys: Vec<&str> = amara
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "id",
        "username",
        "display_name",
        "online",
        "last_seen",
        "disabled",
        "queue_length",
        "conversations",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected, "{amara}");
    assert_eq!(amara["username"], "amara");
    assert_eq!(amara["queue_length"], 1, "{amara}");
    assert_eq!(amara["conversations"], 1);
    assert_eq!(amara["online"], false);
    assert_eq!(amara["disabled"], false);

    // `next` is absolute and keeps the other parameters; following it pages on.
    let next = page1["next"].as_str().expect("next");
    assert!(next.starts_with("http://"), "{next}");
    assert!(
        next.contains("page_size=2") && next.contains("page=2"),
        "{next}"
    );
    let (_, page2) = split(
        d.http
            .get(next)
            .header("X-Service-Token", SECRET)
            .send()
            .expect("next"),
    );
    assert_eq!(page2["results"][0]["id"], 12);
    assert!(
        page2["previous"]
            .as_str()
            .expect("previous")
            .contains("page=1")
    );
    let (_, page3) = admin(&d, "GET", "/api/admin/users/?page_size=2&page=3");
    assert_eq!(page3["next"], Value::Null);
    assert_eq!(page3["results"].as_array().expect("results").len(), 1);
    let (status, past) = admin(&d, "GET", "/api/admin/users/?page_size=2&page=4");
    assert_eq!(status, 404, "{past}");

    // Search: a name part in any case, or an id.
    let (_, found) = admin(&d, "GET", "/api/admin/users/?q=AMA&page_size=1");
    assert_eq!(found["count"], 2, "{found}");
    assert_eq!(found["results"][0]["username"], "amara");
    let next = found["next"].as_str().expect("next");
    assert!(
        next.contains("q=AMA"),
        "the search stays in the link: {next}"
    );
    let (_, by_id) = admin(&d, "GET", "/api/admin/users/?q=13");
    assert_eq!(by_id["count"], 1);
    assert_eq!(by_id["results"][0]["username"], "dumisani");
    let (_, none) = admin(&d, "GET", "/api/admin/users/?q=zzz");
    assert_eq!(
        (none["count"].clone(), none["results"].clone()),
        (json!(0), json!([]))
    );

    // The CLI prints the same listing.
    let (code, out, err) = cli(&d, &["users", "list", "--q", "ama"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["count"], 2);
}

#[test]
fn unknown_ids_are_404_over_http_and_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    for (method, path) in [
        ("GET", "/api/admin/users/999"),
        ("POST", "/api/admin/users/999/disable"),
        ("POST", "/api/admin/users/999/enable"),
        ("DELETE", "/api/admin/users/999"),
        ("DELETE", "/api/admin/messages/999"),
        ("GET", "/api/admin/conversations/999"),
        ("GET", "/api/admin/users/not-a-number"),
    ] {
        let (status, body) = admin(&d, method, path);
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"], "not_found", "{body}");
    }
    for args in [
        &["users", "show", "999"][..],
        &["users", "disable", "999"],
        &["users", "enable", "999"],
        &["users", "erase", "999", "--yes"],
        &["messages", "delete", "999"],
    ] {
        let (code, out, err) = cli(&d, args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            err.contains("not_found") && err.contains("404"),
            "{args:?}: {err}"
        );
    }
    // Erasure asks for a confirmation.
    let (code, _, err) = cli(&d, &["users", "erase", "999"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
}

#[test]
fn the_cli_says_when_no_daemon_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8");
    for args in [
        &["users", "list"][..],
        &["stats"],
        &["messages", "delete", "1"],
    ] {
        let mut all = vec!["--data-dir", path, "admin"];
        all.extend_from_slice(args);
        let (code, _, err) = run_cli(&all, &[]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("no daemon answers on the admin socket"),
            "{err}"
        );
        assert!(err.contains("admin.sock"), "{err}");
    }
}

#[test]
fn stats_over_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    let conversation = d.conversation(1, 2);
    d.send(1, conversation, "one");
    let (code, out, err) = cli(&d, &["stats"]);
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(stats["messages_persisted"], 1, "{stats}");
    assert!(stats["version"].is_string());
}

#[test]
fn disabling_closes_sockets_and_refuses_tokens_until_enabled_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    seen(&d, 21, "zodwa");
    let conversation = d.conversation(21, 22);
    let rt = runtime();
    let mut chat = rt.block_on(connect_as(&d, "/ws/chat/", 21));
    let mut room = rt.block_on(connect_as(&d, &format!("/ws/chat/{conversation}/"), 21));
    rt.block_on(async {
        assert_eq!(
            next_event(&mut chat).await.expect("an event")["type"],
            "connection_established"
        );
        room.send(Message::text(r#"{"type":"ping"}"#))
            .await
            .expect("ping");
        assert_eq!(
            next_event(&mut room).await.expect("an event")["type"],
            "pong"
        );
    });

    let (status, user) = admin(&d, "POST", "/api/admin/users/21/disable");
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["disabled"], true);
    // Both open sockets close at once with 4403.
    assert_eq!(rt.block_on(close_code(&mut chat)), Some(4403));
    assert_eq!(rt.block_on(close_code(&mut room)), Some(4403));

    let refused = |d: &Daemon| {
        let (status, body) = d.get(21, "/api/v1/messaging/conversations/");
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "user_disabled");
        // A new upgrade is accepted and closed with 4403 too.
        let mut again = rt.block_on(connect_as(d, "/ws/chat/", 21));
        assert_eq!(rt.block_on(close_code(&mut again)), Some(4403));
    };
    refused(&d);
    // The other participant is not affected.
    assert_eq!(d.get(22, "/api/v1/messaging/conversations/").0, 200);

    // Durable: still refused after a restart (and after kill -9).
    d.crash();
    let d = start(dir.path());
    refused(&d);
    let (_, user) = admin(&d, "GET", "/api/admin/users/21");
    assert_eq!(user["disabled"], true);

    // Enabled over the CLI: access is back, and stays back across a restart.
    let (code, out, err) = cli(&d, &["users", "enable", "21"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["disabled"],
        false
    );
    assert_eq!(d.get(21, "/api/v1/messaging/conversations/").0, 200);
    d.stop();
    let d = start(dir.path());
    assert_eq!(d.get(21, "/api/v1/messaging/conversations/").0, 200);
    let mut chat = rt.block_on(connect_as(&d, "/ws/chat/", 21));
    assert_eq!(
        rt.block_on(next_event(&mut chat)).expect("an event")["type"],
        "connection_established"
    );

    // Disabled over the CLI as well.
    let (code, _, err) = cli(&d, &["users", "disable", "21"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rt.block_on(close_code(&mut chat)), Some(4403));
    assert_eq!(d.get(21, "/api/v1/auth/me/").0, 403);
}

/// Regression: a broadcast from a disabled sender was refused only by its first recipient's
/// message, after that recipient's one-to-one conversation with the sender had been created,
/// and the refusal kept that conversation.
#[test]
fn a_broadcast_from_a_disabled_sender_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    seen(&d, 31, "announcer");
    let (status, user) = admin(&d, "POST", "/api/admin/users/31/disable");
    assert_eq!(status, 200, "{user}");
    let (status, body) = split(
        d.http
            .post(d.url("/api/messages/broadcast"))
            .header("X-Service-Token", SECRET)
            .json(&json!({
                "message": {"sender_id": 31, "text": "Maintenance tonight"},
                "user_ids": [32, 33],
            }))
            .send()
            .expect("broadcast"),
    );
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("user_disabled")),
        "{body}"
    );
    for recipient in [32, 33] {
        let (status, convs) = d.get(recipient, "/api/v1/messaging/conversations/");
        assert_eq!(status, 200, "{convs}");
        assert_eq!(convs["count"], 0, "user {recipient}: {convs}");
    }
}

#[test]
fn a_disabled_local_account_cannot_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    let (status, body) = split(
        d.http
            .post(d.url("/api/v1/auth/register/"))
            .json(&json!({"username": "thandi", "password": "correct horse battery"}))
            .send()
            .expect("register"),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().expect("id");
    let login = |d: &Daemon| {
        split(
            d.http
                .post(d.url("/api/v1/auth/token/"))
                .json(&json!({"username": "thandi", "password": "correct horse battery"}))
                .send()
                .expect("login"),
        )
    };
    let (status, tokens) = login(&d);
    assert_eq!(status, 200);
    assert_eq!(
        admin(&d, "POST", &format!("/api/admin/users/{id}/disable")).0,
        200
    );
    let (status, body) = login(&d);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("user_disabled")),
        "{body}"
    );
    let (status, body) = split(
        d.http
            .post(d.url("/api/v1/auth/token/refresh/"))
            .json(&json!({"refresh": tokens["refresh"]}))
            .send()
            .expect("refresh"),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("user_disabled")),
        "{body}"
    );
    assert_eq!(
        admin(&d, "POST", &format!("/api/admin/users/{id}/enable")).0,
        200
    );
    assert_eq!(login(&d).0, 200);
}

#[test]
fn a_deleted_message_is_a_tombstone_everywhere_and_participants_hear_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path());
    let conversation = d.conversation(31, 32);
    let rt = runtime();
    let mut chat = rt.block_on(connect_as(&d, "/ws/chat/", 32));
    let mut room = rt.block_on(connect_as(&d, &format!("/ws/chat/{conversation}/"), 31));
    rt.block_on(async {
        event_of(&mut chat, "connection_established").await;
        room.send(Message::text(r#"{"type":"ping"}"#))
            .await
            .expect("ping");
        event_of(&mut room, "pong").await;
    });
    let kept = d.send(31, conversation, "this one stays")["id"]
        .as_u64()
        .expect("id");
    let (status, sent) = d.post(
        31,
        "/api/v1/messaging/messages/",
        &json!({"conversation": conversation, "text": "offensive words", "metadata": {"k": "v"}}),
    );
    assert_eq!(status, 201);
    let id = sent["id"].as_u64().expect("id");
    rt.block_on(async {
        assert_eq!(event_of(&mut chat, "new_message").await["message_id"], kept);
        assert_eq!(event_of(&mut chat, "new_message").await["message_id"], id);
    });

    let (status, deleted) = admin(&d, "DELETE", &format!("/api/admin/messages/{id}"));
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": id, "conversation": conversation, "deleted": true, "text": ""})
    );
    rt.block_on(async {
        let event = event_of(&mut chat, "message_deleted").await;
        assert_eq!(
            event,
            json!({"type": "message_deleted", "conversation_id": conversation, "message_ids": [id]})
        );
        let event = event_of(&mut room, "message_deleted").await;
        assert_eq!(event["message_ids"], json!([id]), "{event}");
    });
    let check = |d: &Daemon| {
        for user in [31, 32] {
            let (status, message) = d.get(user, &format!("/api/v1/messaging/messages/{id}/"));
            assert_eq!(status, 200);
            assert_eq!(message["deleted"], true, "{message}");
            assert_eq!(message["text"], "");
            assert_eq!(message["metadata"], json!({}));
            let (_, other) = d.get(user, &format!("/api/v1/messaging/messages/{kept}/"));
            assert_eq!(
                (other["deleted"].clone(), other["text"].clone()),
                (json!(false), json!("this one stays"))
            );
        }
    };
    check(&d);
    // Again: the same answer.
    assert_eq!(
        admin(&d, "DELETE", &format!("/api/admin/messages/{id}")).0,
        200
    );
    // Durable across kill -9.
    d.crash();
    let d = start(dir.path());
    check(&d);

    // The conversation's metadata for operators: no text.
    let (status, meta) = admin(
        &d,
        "GET",
        &format!("/api/admin/conversations/{conversation}"),
    );
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["participants"], json!([31, 32]));
    assert_eq!(meta["message_count"], 2);
    assert_eq!(meta["last_message_id"], id);
    assert!(meta["last_activity"].is_string() && meta["created_at"].is_string());
    assert!(!meta.to_string().contains("stays"), "{meta}");

    // The CLI deletes too.
    let (code, out, err) = cli(&d, &["messages", "delete", &kept.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["deleted"],
        true
    );
}

/// Every file under `dir`, recursively, with its bytes.
fn raw_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                out.push((path.clone(), std::fs::read(&path).expect("read")));
            }
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `user`'s data key as stored (sealed by the at-rest key), read from a backup the running
/// daemon makes (`indaba backup`, into `scratch`, outside the data dir).
fn wrapped_data_key(d: &Daemon, scratch: &Path, user: u64) -> Option<Vec<u8>> {
    let copy = scratch.join(format!("backup-{user}.redb"));
    let data_dir = d.data_dir.to_str().expect("utf-8");
    let (code, _, err) = run_cli(
        &[
            "--data-dir",
            data_dir,
            "backup",
            copy.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let db = redb::Database::builder()
        .open_read_only(&copy)
        .expect("open the backup");
    let txn = db.begin_read().expect("read");
    let table = txn
        .open_table(indaba::store::tables::DATA_KEYS)
        .expect("data keys table");
    let key = table.get(user).expect("get").map(|v| v.value().to_vec());
    drop(table);
    drop(txn);
    drop(db);
    std::fs::remove_file(&copy).expect("remove the backup");
    key
}

/// Which files of the data dir hold any of `needles`.
fn files_holding(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    raw_files(dir)
        .into_iter()
        .filter(|(_, bytes)| needles.iter().any(|n| holds(bytes, n)))
        .map(|(path, _)| path.display().to_string())
        .collect()
}

/// Erasure must hold for the raw files, not only for the API: right after it (even killed
/// with -9, so no clean stop rewrites anything) and after restarts, no file of the data dir
/// holds the erased users' text, nor their data keys (sealed by the at-rest key: with one, what
/// it sealed could be opened). Two users: one whose key a checkpoint put in the data file
/// (without the rewrite, an old copy of it stayed in redb's free pages), one whose key only
/// the journal holds yet (without the scrub, it stayed in the journal's old records).
#[test]
fn erasure_leaves_nothing_readable_in_any_file_of_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let marker = "PLAINTEXT-MARKER-zqxj-4471";
    let meta_marker = "META-MARKER-vwkp-9902";
    // Checkpoints rarely: the journal keeps what it logged until the scrub.
    let mut options = options();
    options
        .env
        .push(("INDABA_STORAGE__CHECKPOINT_INTERVAL".into(), "1h".into()));
    let d = Daemon::start_with(dir.path(), options.clone());
    seen(&d, 41, "erasable");
    let conversation = d.conversation(41, 42);
    let other = d.conversation(41, 43);
    let mut erased_ids = Vec::new();
    let mut send_marked = |d: &Daemon, from: u64, conversation: u64, i: usize| {
        let (status, sent) = d.post(
            from,
            "/api/v1/messaging/messages/",
            &json!({"conversation": conversation, "text": format!("{marker} number {i}"),
                    "metadata": {"note": meta_marker}}),
        );
        assert_eq!(status, 201, "{sent}");
        erased_ids.push(sent["id"].as_u64().expect("id"));
    };
    for i in 0..20 {
        send_marked(&d, 41, if i % 2 == 0 { conversation } else { other }, i);
    }
    let reply = d.send(42, conversation, "a reply that stays")["id"]
        .as_u64()
        .expect("id");
    // Other users' keys are written after 41's, so the keys table's pages holding 41's key
    // are rewritten (and the old copies freed) before the erasure.
    for user in 50..60 {
        let c = d.conversation(user, 42);
        d.send(user, c, "someone else");
    }
    // A clean stop checkpoints: 41's key is in the data file.
    d.stop();
    let d = Daemon::start_with(dir.path(), options.clone());
    // 44's key and messages are only in the journal (and redb's memory) yet.
    let late = d.conversation(44, 42);
    for i in 0..5 {
        send_marked(&d, 44, late, i);
    }
    let wrapped_41 = wrapped_data_key(&d, scratch.path(), 41).expect("41 has a data key");
    let wrapped_44 = wrapped_data_key(&d, scratch.path(), 44).expect("44 has a data key");
    let needles: [&[u8]; 4] = [
        marker.as_bytes(),
        meta_marker.as_bytes(),
        &wrapped_41,
        &wrapped_44,
    ];
    // What the check below looks for is there before the erasure.
    let data_file = dir.path().join("indaba.redb").display().to_string();
    let journal = dir.path().join("indaba.journal").display().to_string();
    assert!(files_holding(dir.path(), &[&wrapped_41]).contains(&data_file));
    assert!(files_holding(dir.path(), &[&wrapped_44]).contains(&journal));

    let rt = runtime();
    let mut watcher = rt.block_on(connect_as(&d, "/ws/chat/", 42));
    rt.block_on(event_of(&mut watcher, "connection_established"));
    let (code, out, err) = cli(&d, &["users", "erase", "41", "--yes"]);
    assert_eq!(code, 0, "{err}");
    let erasure: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(erasure["erased"], true);
    assert_eq!(erasure["messages_deleted"], 20, "{erasure}");
    // The participant's socket hears which of its conversation's messages went.
    let event = rt.block_on(event_of(&mut watcher, "message_deleted"));
    assert_eq!(event["conversation_id"], conversation);
    assert_eq!(
        event["message_ids"].as_array().expect("ids").len(),
        10,
        "{event}"
    );
    let (status, erasure) = admin(&d, "DELETE", "/api/admin/users/44");
    assert_eq!(status, 200, "{erasure}");
    assert_eq!(erasure["messages_deleted"], 5, "{erasure}");
    // The rewrite follows the answer: wait for both, then pull the plug.
    let rewrites = || {
        d.log_text()
            .matches("data file rewritten after an erasure")
            .count()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while rewrites() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.crash();
    let left = files_holding(dir.path(), &needles);
    assert!(left.is_empty(), "after the erasures and kill -9: {left:?}");

    let check = |d: &Daemon| {
        for id in &erased_ids {
            let (status, message) = d.get(42, &format!("/api/v1/messaging/messages/{id}/"));
            if status == 404 {
                // In the conversation 42 is not part of.
                continue;
            }
            assert_eq!(message["deleted"], true, "{message}");
            assert_eq!(message["text"], "");
            assert_eq!(message["metadata"], json!({}));
            assert!(
                message["sender"] == 41 || message["sender"] == 44,
                "the tombstone keeps its place"
            );
        }
        let (_, kept) = d.get(42, &format!("/api/v1/messaging/messages/{reply}/"));
        assert_eq!(kept["text"], "a reply that stays");
        for user in [41, 44] {
            let (status, body) = admin(d, "GET", &format!("/api/admin/users/{user}"));
            assert_eq!(status, 404, "{body}");
            let (status, body) = d.get(user, "/api/v1/messaging/conversations/");
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("user_disabled"))
            );
        }
    };
    let d = Daemon::start_with(dir.path(), options.clone());
    check(&d);
    assert_eq!(
        wrapped_data_key(&d, scratch.path(), 41),
        None,
        "the data key is destroyed"
    );
    // Others still send, under their own keys.
    d.send(42, conversation, "after the erasure");
    d.stop();
    let d = Daemon::start_with(dir.path(), options);
    check(&d);
    d.stop();
    let files = raw_files(dir.path());
    assert!(
        files.len() >= 2,
        "the data file and the journal at least: {files:?}"
    );
    let left = files_holding(dir.path(), &needles);
    assert!(left.is_empty(), "after restarts: {left:?}");
}

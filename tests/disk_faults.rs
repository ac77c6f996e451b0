//! Faults of the disk under the real daemon: a damaged record in `indaba.redb`, and a full disk.
//!
//! Damaged record (issue 16, defect 5): one message record whose bytes changed on the disk
//! (a sealed body that no longer opens, or a record that no longer decodes) made every view
//! that met it fail: history pages and the unread list answered 500, `sync` failed, and the
//! queue replay on connect delivered nothing at all, with no error to the client. Each view
//! must leave the damaged record out, log it at ERROR naming the table and key, and count it
//! in `/api/stats` and `/metrics`.
//!
//! Full disk (issue 16, defect 3): after the first ENOSPC every write failed with "Previous
//! I/O error occurred" until a manual restart, even once space was freed, `/health` stayed 503,
//! and a SIGTERM then logged "stopped cleanly" and exited 0. Writes must be refused with 503
//! `storage_unavailable` while reads go on, the store must recover by itself once space is
//! back, and a stop while it cannot write must say so and exit 1. These tests mount a small
//! tmpfs (root only: they print why and pass without running otherwise).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Options};
use futures_util::{SinkExt, StreamExt};
use redb::ReadableDatabase;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const MSGS: &str = "/api/v1/messaging/messages/";
const SECRET: &str = "disk-faults-service-secret";

/// Dev mode, sends unthrottled, the service API on (for `/api/stats` and the queue).
fn options(extra: &[(&str, &str)]) -> Options {
    let mut env = vec![
        ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
        ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
        ("INDABA_SERVICE__SHARED_SECRET", SECRET),
    ];
    env.extend_from_slice(extra);
    Options::env(&env)
}

fn service_get(d: &Daemon, path: &str) -> (u16, Value) {
    let resp = d
        .http
        .get(d.url(path))
        .header("X-Service-Token", SECRET)
        .send()
        .expect("service GET");
    common::split(resp)
}

fn metrics_text(d: &Daemon) -> String {
    d.http
        .get(d.url("/metrics"))
        .header("X-Service-Token", SECRET)
        .send()
        .expect("GET /metrics")
        .text()
        .expect("metrics text")
}

// ---------------------------------------------------------------------------------------------
// A damaged record

/// The stored value of message `id` in the data file of a stopped daemon.
fn stored_message(data_dir: &Path, id: u64) -> Vec<u8> {
    let db = redb::Database::open(data_dir.join("indaba.redb")).expect("open the data file");
    let txn = db.begin_read().expect("read");
    let table = txn
        .open_table(indaba::store::tables::MESSAGES)
        .expect("messages table");
    let value = table.get(id).expect("get").expect("the message is stored");
    value.value().to_vec()
}

/// Changes, in the data file of a stopped daemon, every copy of `original` (a stored value:
/// redb may still hold an older copy of its page) as `damage` says, and checks the value redb
/// reads back is the damaged one.
fn damage_message(data_dir: &Path, id: u64, damage: impl Fn(&mut [u8])) {
    let original = stored_message(data_dir, id);
    let mut damaged = original.clone();
    damage(&mut damaged);
    assert_ne!(damaged, original);
    let path = data_dir.join("indaba.redb");
    let mut file = std::fs::read(&path).expect("read the data file");
    let mut copies = 0;
    let mut at = 0;
    while let Some(offset) = file[at..]
        .windows(original.len())
        .position(|w| w == original)
    {
        let start = at + offset;
        file[start..start + original.len()].copy_from_slice(&damaged);
        copies += 1;
        at = start + original.len();
    }
    assert!(copies > 0, "message {id}'s value is not in the file");
    std::fs::write(&path, &file).expect("write the data file");
    assert_eq!(
        stored_message(data_dir, id),
        damaged,
        "the damage did not reach the value redb reads"
    );
}

/// A sealed body that no longer opens: one byte of its ciphertext flipped.
fn flip_ciphertext(value: &mut [u8]) {
    let record: indaba::store::records::MessageRecord =
        indaba::store::records::decode(value).expect("a message record");
    // The body comes last; flip a byte in its middle, past the nonce and before the tag.
    let at = value.len() - record.body.len() / 2;
    value[at] ^= 0x5a;
}

/// A record that no longer decodes: its `message_type` ("text") made invalid UTF-8.
fn break_encoding(value: &mut [u8]) {
    let at = value
        .windows(5)
        .position(|w| w == b"\x04text")
        .expect("the message type in the record");
    value[at + 1] = 0xff;
}

/// A `/ws/chat/` socket of `user`, past `connection_established`.
async fn chat(d: &Daemon, user: u64) -> Ws {
    let url = format!("ws://{}/ws/chat/?token={}", d.addr, d.token(user));
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let hello = next_event(&mut ws).await;
    assert_eq!(hello["type"], "connection_established", "{hello}");
    ws
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON event");
        }
    }
}

/// Ids of the next `count` `new_message` events, then of any more up to the answer to a
/// `ping` sent after them (which must be none).
async fn next_messages(ws: &mut Ws, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut pinged = false;
    loop {
        if ids.len() >= count && !pinged {
            ws.send(Message::text(json!({"type": "ping"}).to_string()))
                .await
                .expect("ping");
            pinged = true;
        }
        let event = next_event(ws).await;
        match event["type"].as_str() {
            Some("new_message") => ids.push(event["message_id"].as_u64().expect("id")),
            Some("pong") if pinged => return ids,
            _ => panic!("unexpected event {event}"),
        }
    }
}

/// Every id of the conversation's history, walking the pages from the newest back.
fn history_ids(d: &Daemon, user: u64, conversation: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut path = format!("{MSGS}?conversation={conversation}&limit=40");
    loop {
        let (status, page) = d.get(user, &path);
        assert_eq!(status, 200, "history page {path}: {page}");
        let mut found: Vec<u64> = page["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|m| m["id"].as_u64().expect("id"))
            .collect();
        found.reverse();
        ids.extend(found);
        match page["next"].as_str() {
            Some(next) => {
                let at = next.find(MSGS).expect("a messages link");
                path = next[at..].to_owned();
            }
            None => break,
        }
    }
    ids.reverse();
    ids
}

#[test]
fn a_damaged_message_record_is_left_out_of_every_view() {
    const SENT: u64 = 301;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir.path(), options(&[]));
    let conversation = d.conversation(1, 2);
    let mut ids = Vec::new();
    for i in 0..SENT {
        ids.push(
            d.send(1, conversation, &format!("message {i}"))["id"]
                .as_u64()
                .expect("id"),
        );
    }
    assert!(d.stop().success(), "clean stop");
    // One record that no longer decodes, in the middle; the newest no longer opens.
    let (broken, sealed) = (ids[149], ids[300]);
    damage_message(dir.path(), broken, break_encoding);
    damage_message(dir.path(), sealed, flip_ciphertext);
    let readable: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| *id != broken && *id != sealed)
        .collect();

    let d = Daemon::start_with(dir.path(), options(&[]));
    // History: every page answers, without the damaged records.
    assert_eq!(history_ids(&d, 2, conversation), readable);
    // A page holding only the damaged record still leads on past it.
    let path = format!(
        "{MSGS}?conversation={conversation}&limit=1&before={}",
        broken + 1
    );
    let (status, page) = d.get(2, &path);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["results"], json!([]), "{page}");
    let next = page["next"].as_str().unwrap_or_default();
    assert!(next.contains(&format!("before={broken}")), "{page}");
    // The message itself: a clear 404, not a 500.
    for id in [broken, sealed] {
        let (status, body) = d.get(2, &format!("{MSGS}{id}/"));
        assert_eq!(status, 404, "message {id}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("damaged"),
            "message {id}: {body}"
        );
    }
    // The unread list: the oldest readable messages, up to its limit; no 500.
    let (status, unread) = d.get(2, "/api/v1/messages/unread/?limit=200");
    assert_eq!(status, 200, "{unread}");
    let unread_ids: Vec<u64> = unread["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(unread_ids, readable[..200], "{unread}");
    // The conversation list: the newest message is damaged, so there is no preview of it.
    let (status, list) = d.get(2, "/api/v1/messaging/conversations/");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["results"][0]["id"], conversation, "{list}");
    let (status, one) = d.get(
        2,
        &format!("/api/v1/messaging/conversations/{conversation}/"),
    );
    assert_eq!(status, 200, "{one}");
    // The service API's view of the queue.
    let (status, queue) = service_get(&d, "/api/messages/queue/2?peek=true&limit=1000");
    assert_eq!(status, 200, "{queue}");
    let queued: Vec<u64> = queue["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages in {queue}"))
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(queued, readable);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The queue replay on connect: everything readable, in order.
        let mut ws = chat(&d, 2).await;
        assert_eq!(next_messages(&mut ws, readable.len()).await, readable);
        // `sync` from the start, page by page.
        let mut synced = Vec::new();
        let mut since = 0;
        loop {
            ws.send(Message::text(
                json!({"type": "sync", "since_message_id": since}).to_string(),
            ))
            .await
            .expect("sync");
            loop {
                let event = next_event(&mut ws).await;
                match event["type"].as_str() {
                    Some("new_message") => {
                        synced.push(event["message_id"].as_u64().expect("id"));
                    }
                    Some("sync_complete") => {
                        since = event["last_message_id"].as_u64().expect("last id");
                        if event["has_more"] == true {
                            break;
                        }
                        assert_eq!(since, sealed, "sync covered every id: {event}");
                        assert_eq!(synced, readable);
                        return;
                    }
                    _ => panic!("unexpected event {event}"),
                }
            }
        }
    });

    // Counted once each, and named in the log.
    let (status, stats) = service_get(&d, "/api/stats");
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["damaged_records"], 2, "{stats}");
    assert!(
        metrics_text(&d).contains("indaba_damaged_records_total 2"),
        "{}",
        metrics_text(&d)
    );
    let log = d.log_text();
    for id in [broken, sealed] {
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("msgid_message")
                && l.contains(&format!("key={id}"))),
            "no ERROR naming message {id}:\n{log}"
        );
    }
    // What is readable is still all there after a restart.
    assert!(d.stop().success(), "clean stop");
    let d = Daemon::start_with(dir.path(), options(&[]));
    assert_eq!(history_ids(&d, 2, conversation), readable);
}

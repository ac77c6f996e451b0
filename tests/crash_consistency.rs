//! Every acknowledged write survives `kill -9`.
//!
//! Several threads send messages as fast as they are acknowledged; the daemon is killed with
//! SIGKILL mid-stream; after a restart every message that got a 201 must be there with its
//! text, and ids must still be strictly increasing. Repeated over several rounds on the same
//! data file, so recovery from a crash is itself crashed into; every other round runs with
//! `storage.journal = false` (every batch a durable redb commit), so both ways of making a
//! batch durable are killed, and switching between them after a crash is too.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, Options};
use serde_json::json;

const ROUNDS: usize = 5;
const SENDERS: u64 = 6;

#[test]
fn acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    // id → text of every message ever acknowledged.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let mut conversations = Vec::new();
    for round in 0..ROUNDS {
        // Senders go as fast as they are acknowledged: lift the per-user send rate limit.
        let journal = if round % 2 == 0 { "true" } else { "false" };
        let daemon = Arc::new(Daemon::start_with(
            dir.path(),
            Options::env(&[
                ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
                ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
                ("INDABA_STORAGE__JOURNAL", journal),
            ]),
        ));
        // Everything acknowledged in earlier rounds is still there.
        verify(&daemon, &acknowledged);
        if conversations.is_empty() {
            conversations = (0..SENDERS)
                .map(|s| daemon.conversation(s + 1, 100))
                .collect();
        }
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (d, acked, conv) = (daemon.clone(), acked.clone(), conversations[s as usize]);
                std::thread::spawn(move || {
                    let token = d.token(s + 1);
                    for i in 0.. {
                        let text = format!("round {round} sender {s} message {i}");
                        let resp = d
                            .http
                            .post(d.url("/api/v1/messaging/messages/"))
                            .bearer_auth(&token)
                            .timeout(Duration::from_secs(5))
                            .json(&json!({"conversation": conv, "text": text}))
                            .send();
                        match resp.map(common::split) {
                            Ok((201, body)) => {
                                let id = body["id"].as_u64().expect("id");
                                acked.lock().expect("lock").push((id, text));
                            }
                            Ok((status, body)) => panic!("unexpected {status}: {body}"),
                            Err(_) => break, // the daemon is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 150 * round as u64));
        // SIGKILL by pid: the sender threads still hold the handle.
        daemon.signal("KILL");
        for t in threads {
            t.join().expect("sender thread");
        }
        let mut daemon = Arc::into_inner(daemon).expect("sole owner");
        assert!(!daemon.wait_exit(Duration::from_secs(10)).success());
        let acked = acked.lock().expect("lock").clone();
        assert!(!acked.is_empty(), "round {round}: nothing acknowledged");
        for (id, text) in acked {
            assert!(
                acknowledged.insert(id, text).is_none(),
                "id {id} acknowledged twice"
            );
        }
    }
    let daemon = Daemon::start(dir.path());
    verify(&daemon, &acknowledged);
    eprintln!(
        "{} acknowledged messages survived {ROUNDS} kill -9 rounds",
        acknowledged.len()
    );
}

/// Every acknowledged message is readable with its text; history stays in id order.
fn verify(daemon: &Daemon, acknowledged: &BTreeMap<u64, String>) {
    for (id, text) in acknowledged {
        let (status, body) = daemon.get(100, &format!("/api/v1/messaging/messages/{id}/"));
        assert_eq!(status, 200, "acknowledged message {id} lost: {body}");
        assert_eq!(body["text"], text.as_str());
    }
}

const SECRET: &str = "service-secret-for-tests-0123456789";

/// With no checkpoint during the run, everything the daemon did after it started lives only in
/// its journal when it is killed. After the restart every user must read what they read
/// before: conversations with their unread counts and archive flags, history pages, queues.
#[test]
fn the_journal_alone_brings_back_every_kind_of_write_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[
            ("INDABA_STORAGE__CHECKPOINT_INTERVAL", "1h"),
            ("INDABA_SERVICE__SHARED_SECRET", SECRET),
            ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
            ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
        ]),
    );
    let one = daemon.conversation(1, 2);
    let (status, group) = daemon.post(
        3,
        "/api/v1/messaging/conversations/",
        &json!({"participants": [1, 2], "subject": "Viewing on Saturday", "property": 7}),
    );
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_u64().expect("id");
    let mut sent = Vec::new();
    for i in 0..30u64 {
        let (from, conversation) = [(1, one), (2, one), (3, group)][(i % 3) as usize];
        sent.push(daemon.send(from, conversation, &format!("message {i}"))["id"].clone());
    }
    let read = |user, id: &serde_json::Value| {
        let (status, body) = daemon.post(
            user,
            &format!("/api/v1/messaging/messages/{id}/mark_as_read/"),
            &json!({}),
        );
        assert_eq!(status, 200, "{body}");
    };
    read(2, &sent[12]);
    read(1, &sent[29]);
    let (status, body) = daemon.post(
        1,
        &format!("/api/v1/messaging/conversations/{group}/archive/"),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = service(
        &daemon,
        "POST",
        "/api/messages/broadcast",
        Some(
            json!({"message": {"sender_id": 1, "text": "maintenance tonight", "message_type": "system"}, "user_ids": [4, 5]}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    // The service API drains user 5's queue.
    let (status, body) = service(&daemon, "GET", "/api/messages/queue/5", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);

    let before = everything_users_read(&daemon, one, group);
    daemon.crash();

    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_SERVICE__SHARED_SECRET", SECRET)]),
    );
    assert!(
        daemon.log_text().contains("journal replayed"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(everything_users_read(&daemon, one, group), before);
}

/// What users 1–5 see of their conversations, the two conversations' history and their
/// queues (peeked, not drained).
fn everything_users_read(daemon: &Daemon, one: u64, group: u64) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    for user in 1..=5u64 {
        for path in [
            "/api/v1/messaging/conversations/".to_owned(),
            "/api/v1/messaging/conversations/?archived=true".to_owned(),
            "/api/v1/messaging/conversations/unread_count/".to_owned(),
            format!("/api/v1/messaging/messages/?conversation={one}"),
            format!("/api/v1/messaging/messages/?conversation={group}"),
        ] {
            let (status, body) = daemon.get(user, &path);
            seen.push(json!({"user": user, "path": path, "status": status, "body": body}));
        }
        let (status, body) = service(
            daemon,
            "GET",
            &format!("/api/messages/queue/{user}?peek=true"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        seen.push(json!({"user": user, "queue": body}));
    }
    seen
}

fn service(
    daemon: &Daemon,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let request = match method {
        "POST" => daemon.http.post(daemon.url(path)),
        _ => daemon.http.get(daemon.url(path)),
    }
    .header("X-Service-Token", SECRET);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    common::split(request.send().expect("service call"))
}

/// Issue 16, defect 15: the replay after a crash applied today's `queues.message_queue_max_size`,
/// not the one in force when the batches were acknowledged, so a restart with another bound
/// brought back queue entries that had been dead-lettered (or dropped ones that had not).
/// Written with a bound of 5, killed before any checkpoint, restarted with 50 and then with 2:
/// the queue must be what it was when the daemon was killed.
#[test]
fn the_replay_keeps_the_queue_bound_the_batches_were_written_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = |max: &'static str| {
        Options::env(&[
            ("INDABA_STORAGE__CHECKPOINT_INTERVAL", "1h"),
            ("INDABA_SERVICE__SHARED_SECRET", SECRET),
            ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
            ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
            ("INDABA_QUEUES__MESSAGE_QUEUE_MAX_SIZE", max),
        ])
    };
    let daemon = Daemon::start_with(dir.path(), env("5"));
    let conversation = daemon.conversation(1, 2);
    for i in 0..12 {
        daemon.send(1, conversation, &format!("queued {i}"));
    }
    let queue = |daemon: &Daemon| {
        let (status, body) = service(daemon, "GET", "/api/messages/queue/2?peek=true", None);
        assert_eq!(status, 200, "{body}");
        body
    };
    let acknowledged = queue(&daemon);
    assert_eq!(acknowledged["count"], 5, "{acknowledged}");
    daemon.crash();

    for max in ["50", "2"] {
        let crashed = tempfile::tempdir().expect("tempdir");
        // The files as the crash left them (the secrets too), for each restart.
        for entry in std::fs::read_dir(dir.path()).expect("read dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                std::fs::copy(entry.path(), crashed.path().join(entry.file_name())).expect("copy");
            }
        }
        let daemon = Daemon::start_with(crashed.path(), env(max));
        assert!(
            daemon.log_text().contains("journal replayed"),
            "{}",
            daemon.log_text()
        );
        assert_eq!(
            queue(&daemon),
            acknowledged,
            "restarted with a bound of {max}"
        );
    }
}

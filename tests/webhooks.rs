//! Webhooks (PROTOCOL.md section 8.2) against the real daemon and a real HTTP sink in this
//! process: every acknowledged message arrives as an event across kill -9 rounds; a batch that
//! failed comes again unchanged; a dead host does not stop messaging and the backlog keeps the
//! newest `max_pending`; events are signed, shaped as documented and in id order; bad settings
//! are refused at start with exit 2.

mod common;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Options};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SERVICE_SECRET: &str = "webhooks-test-service-secret";
const HOOK_SECRET: &str = "webhooks-test-signing-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// One POST the sink received.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("batch body is JSON")
    }

    fn events(&self) -> Vec<Value> {
        self.json()["events"].as_array().expect("events").clone()
    }
}

/// A tiny HTTP/1.1 server standing in for the host app: records each POST and answers the
/// next scripted status (200 once the script is used up).
struct Sink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    fn start(script: &[u16]) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (sink, script) = (sink.clone(), script.clone());
                std::thread::spawn(move || serve(stream, &sink, &script));
            }
        });
        Sink { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/indaba/", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Every event received so far, in the order received.
    fn events(&self) -> Vec<Value> {
        self.received().iter().flat_map(Received::events).collect()
    }

    /// Waits until `done` holds for what was received.
    fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.received()) {
            assert!(
                Instant::now() < deadline,
                "sink: {what} not received in {WAIT:?}; got {:?}",
                self.received()
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(stream: TcpStream, sink: &Mutex<Vec<Received>>, script: &Mutex<VecDeque<u16>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let status = script.lock().expect("lock").pop_front().unwrap_or(200);
    sink.lock().expect("lock").push(Received { headers, body });
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} Scripted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

/// A 0600 file holding the signing key.
fn secret_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("webhook_secret");
    std::fs::write(&path, format!("{HOOK_SECRET}\n")).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Dev mode with webhooks to `url`, sends unthrottled, the service API on, and `extra`.
fn options(url: &str, secret: &Path, extra: &[(&str, &str)]) -> Options {
    let secret = secret.display().to_string();
    let mut env = vec![
        ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
        ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
        ("INDABA_SERVICE__SHARED_SECRET", SERVICE_SECRET),
        ("INDABA_WEBHOOKS__URL", url),
        ("INDABA_WEBHOOKS__SECRET_FILE", secret.as_str()),
        ("INDABA_WEBHOOKS__BATCH_INTERVAL", "50ms"),
    ];
    env.extend_from_slice(extra);
    Options::env(&env)
}

fn stats(d: &Daemon) -> Value {
    let resp = d
        .http
        .get(d.url("/api/stats"))
        .header("X-Service-Token", SERVICE_SECRET)
        .send()
        .expect("GET /api/stats");
    let (status, body) = common::split(resp);
    assert_eq!(status, 200, "{body}");
    body["webhooks"].clone()
}

fn wait_stats(d: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = stats(d);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats: {what}; last {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The ids of the messages that `message.created` events name.
fn created_ids(events: &[Value]) -> BTreeSet<u64> {
    events
        .iter()
        .filter(|e| e["type"] == "message.created")
        .map(|e| e["data"]["id"].as_u64().expect("message id"))
        .collect()
}

#[test]
fn every_acknowledged_message_arrives_as_an_event_across_kill_9() {
    const ROUNDS: u64 = 3;
    const SENDERS: u64 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let sink = Sink::start(&[]);
    let data = dir.path().join("data");
    let mut acknowledged = BTreeSet::new();
    let mut conversations = Vec::new();
    for round in 0..ROUNDS {
        let daemon = Arc::new(Daemon::start_with(
            &data,
            options(
                &sink.url(),
                &secret,
                &[("INDABA_WEBHOOKS__BATCH_MAX", "20")],
            ),
        ));
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
                        let resp = d
                            .http
                            .post(d.url("/api/v1/messaging/messages/"))
                            .bearer_auth(&token)
                            .timeout(Duration::from_secs(5))
                            .json(&json!({"conversation": conv, "text": format!("r{round} s{s} m{i}")}))
                            .send();
                        match resp.map(common::split) {
                            Ok((201, body)) => {
                                acked.lock().expect("lock").push(body["id"].as_u64().expect("id"))
                            }
                            Ok((status, body)) => panic!("unexpected {status}: {body}"),
                            Err(_) => break, // the daemon is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500 + 200 * round));
        daemon.signal("KILL");
        for t in threads {
            t.join().expect("sender");
        }
        let mut daemon = Arc::into_inner(daemon).expect("sole owner");
        assert!(!daemon.wait_exit(Duration::from_secs(10)).success());
        let acked = acked.lock().expect("lock").clone();
        assert!(!acked.is_empty(), "round {round}: nothing acknowledged");
        acknowledged.extend(acked);
    }
    // The last start delivers whatever the kills left in the outbox.
    let daemon = Daemon::start_with(&data, options(&sink.url(), &secret, &[]));
    wait_stats(&daemon, "the outbox drains", |s| s["webhook_pending"] == 0);
    let events = sink.events();
    let created = created_ids(&events);
    let missing: Vec<u64> = acknowledged.difference(&created).copied().collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never arrived as events: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(20)]
    );
    // No event for a write that is not there: each names a stored message.
    for id in created.difference(&acknowledged) {
        let (status, body) = daemon.get(100, &format!("/api/v1/messaging/messages/{id}/"));
        assert_eq!(
            status, 200,
            "event for message {id}, which is not stored: {body}"
        );
    }
    // Within each batch, ids strictly increase; a batch sent again after a crash is the only
    // way back, and it repeats ids the host has (de-duplicated by id).
    for r in sink.received() {
        let ids: Vec<u64> = r
            .events()
            .iter()
            .map(|e| e["id"].as_u64().expect("id"))
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "batch out of order: {ids:?}"
        );
    }
    eprintln!(
        "{} acknowledged messages, {} events received ({} distinct) over {ROUNDS} kill -9 rounds",
        acknowledged.len(),
        events.len(),
        events
            .iter()
            .map(|e| e["id"].as_u64())
            .collect::<BTreeSet<_>>()
            .len()
    );
    daemon.stop();
}

#[test]
fn a_failed_batch_is_sent_again_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let sink = Sink::start(&[500]);
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        options(
            &sink.url(),
            &secret,
            &[("INDABA_WEBHOOKS__BATCH_INTERVAL", "300ms")],
        ),
    );
    let conv = daemon.conversation(1, 2);
    for i in 0..3 {
        daemon.send(1, conv, &format!("hello {i}"));
    }
    sink.wait_for("the batch, twice", |r| r.len() >= 2);
    let received = sink.received();
    let (first, again) = (&received[0], &received[1]);
    assert_eq!(first.body, again.body, "the retry carries the same body");
    assert_eq!(
        first.headers.get("x-indaba-delivery"),
        again.headers.get("x-indaba-delivery")
    );
    assert_eq!(
        first.headers.get("x-indaba-delivery").map(String::as_str),
        first.events()[0]["id"]
            .as_u64()
            .map(|id| id.to_string())
            .as_deref(),
        "X-Indaba-Delivery is the first event's id"
    );
    assert_eq!(
        created_ids(&again.events()).len(),
        3,
        "{:?}",
        again.events()
    );
    let s = wait_stats(&daemon, "delivered", |s| s["webhook_pending"] == 0);
    assert_eq!(s["webhook_failures"], 1, "{s}");
    assert_eq!(
        s["webhook_delivered"], 4,
        "conversation.created + 3 messages: {s}"
    );
    assert!(
        daemon.log_text().contains("answered 500"),
        "the failure is logged"
    );
    daemon.stop();
}

#[test]
fn a_dead_host_does_not_stop_messaging_and_the_backlog_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/hooks/", dead.local_addr().expect("addr"));
    drop(dead);
    let data = dir.path().join("data");
    let daemon = Daemon::start_with(
        &data,
        options(
            &dead_url,
            &secret,
            &[("INDABA_WEBHOOKS__MAX_PENDING", "20")],
        ),
    );
    let conv = daemon.conversation(1, 2);
    let mut sent = Vec::new();
    for i in 0..60 {
        sent.push(
            daemon.send(1, conv, &format!("into the void {i}"))["id"]
                .as_u64()
                .expect("id"),
        );
    }
    // 61 events (the conversation, 60 messages), 20 kept.
    let s = wait_stats(&daemon, "41 dropped", |s| s["webhook_dropped"] == 41);
    assert_eq!(s["webhook_pending"], 20, "{s}");
    assert_eq!(s["webhook_delivered"], 0, "{s}");
    assert!(s["webhook_failures"].as_u64().unwrap_or(0) >= 1, "{s}");
    let metrics = daemon
        .http
        .get(daemon.url("/metrics"))
        .header("X-Service-Token", SERVICE_SECRET)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("indaba_webhook_dropped_total 41"),
        "{metrics}"
    );
    assert!(metrics.contains("indaba_webhook_pending 20"), "{metrics}");
    assert!(
        daemon.wait_for_log("webhook backlog full", WAIT),
        "the drop is logged at WARN"
    );
    daemon.stop();

    // The host is back: exactly the 20 newest arrive, oldest first; the count of drops stays.
    let sink = Sink::start(&[]);
    let daemon = Daemon::start_with(
        &data,
        options(
            &sink.url(),
            &secret,
            &[("INDABA_WEBHOOKS__MAX_PENDING", "20")],
        ),
    );
    wait_stats(&daemon, "the backlog delivered", |s| {
        s["webhook_pending"] == 0
    });
    let ids: Vec<u64> = sink
        .events()
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, (42..=61).collect::<Vec<_>>());
    let created: Vec<u64> = created_ids(&sink.events()).into_iter().collect();
    assert_eq!(created, sent[40..].to_vec(), "the newest 20 messages");
    assert_eq!(stats(&daemon)["webhook_dropped"], 41);
    daemon.stop();
}

#[test]
fn events_are_signed_shaped_as_documented_and_in_id_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let sink = Sink::start(&[]);
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        options(
            &sink.url(),
            &secret,
            &[
                ("INDABA_WEBHOOKS__BATCH_MAX", "3"),
                (
                    "INDABA_WEBHOOKS__AUTH_HEADER",
                    "X-Erlang-Service: host-token",
                ),
                ("INDABA_LIMITS__PRESENCE_GRACE", "100ms"),
            ],
        ),
    );
    // User 2 comes online (and later goes), then user 1 writes to 2 and 3 and 2 reads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("ws://{}/ws/chat/?token={}", daemon.addr, daemon.token(2));
    let ws = runtime
        .block_on(tokio_tungstenite::connect_async(url))
        .expect("socket")
        .0;
    sink.wait_for("user.online", |r| {
        r.iter()
            .flat_map(Received::events)
            .any(|e| e["type"] == "user.online")
    });
    let conv = daemon.conversation(1, 2);
    let (status, group) = daemon.post(
        1,
        "/api/v1/messaging/conversations/",
        &json!({"participants": [2, 3], "subject": "Viewing"}),
    );
    assert_eq!(status, 201, "{group}");
    let first = daemon.send(1, conv, "to two");
    let second = daemon.send(1, group["id"].as_u64().expect("id"), "to both");
    let (status, _) = daemon.post(
        2,
        &format!("/api/v1/messaging/messages/{}/mark_as_read/", first["id"]),
        &json!({}),
    );
    assert_eq!(status, 200);
    drop(ws);
    sink.wait_for("user.offline", |r| {
        r.iter()
            .flat_map(Received::events)
            .any(|e| e["type"] == "user.offline")
    });

    let received = sink.received();
    let mut last = 0;
    for r in &received {
        assert_eq!(
            r.headers.get("x-indaba-signature"),
            Some(&format!("sha256={}", hmac_hex(&r.body))),
            "signature of {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            r.headers.get("x-erlang-service").map(String::as_str),
            Some("host-token")
        );
        let events = r.events();
        assert!(
            !events.is_empty() && events.len() <= 3,
            "batch_max 3: {events:?}"
        );
        for e in events {
            let id = e["id"].as_u64().expect("id");
            assert!(id > last, "event {id} after {last}: not in id order");
            last = id;
            assert!(
                e["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{e}"
            );
        }
    }
    let events = sink.events();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "user.online",
            "conversation.created",
            "conversation.created",
            "message.created",
            "message.created",
            "message.read",
            "user.offline"
        ],
        "{events:?}"
    );
    let by_type = |t: &str| {
        events
            .iter()
            .filter(|e| e["type"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(by_type("user.online")[0]["data"]["user_id"], 2);
    assert!(by_type("user.offline")[0]["data"]["at"].is_string());
    let conversations = by_type("conversation.created");
    assert_eq!(conversations[0]["data"]["id"], conv);
    assert_eq!(conversations[1]["data"]["participants"], json!([1, 2, 3]));
    assert_eq!(conversations[1]["data"]["subject"], "Viewing");
    let messages = by_type("message.created");
    assert_eq!(messages[0]["data"]["id"], first["id"]);
    assert_eq!(messages[0]["data"]["text"], "to two");
    assert_eq!(messages[0]["data"]["sender"], 1);
    // User 2 had a socket open, user 3 none: whom the host should push to.
    assert_eq!(messages[0]["data"]["recipients_online"], json!({"2": true}));
    assert_eq!(messages[1]["data"]["id"], second["id"]);
    assert_eq!(
        messages[1]["data"]["recipients_online"],
        json!({"2": true, "3": false})
    );
    let read = &by_type("message.read")[0]["data"];
    assert_eq!(read["conversation_id"], conv);
    assert_eq!(read["reader_id"], 2);
    assert_eq!(read["up_to_message_id"], first["id"]);
    assert!(read["read_at"].is_string());
    daemon.stop();
}

#[test]
fn bad_webhook_settings_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let secret = secret.display().to_string();
    let data = dir.path().join("data");
    let data = data.display().to_string();
    let cases: [(&[(&str, &str)], &str); 7] = [
        (
            &[("INDABA_WEBHOOKS__URL", "http://93.184.216.34/hook")],
            "webhooks.url",
        ),
        (
            &[("INDABA_WEBHOOKS__URL", "http://django:8000/hook")],
            "allow_insecure",
        ),
        (
            &[("INDABA_WEBHOOKS__URL", "ftp://127.0.0.1/")],
            "webhooks.url",
        ),
        (
            &[("INDABA_WEBHOOKS__SECRET_FILE", "")],
            "webhooks.secret_file",
        ),
        (
            &[("INDABA_WEBHOOKS__EVENTS", "[\"message.sent\"]")],
            "webhooks.events",
        ),
        (&[("INDABA_WEBHOOKS__BATCH_MAX", "0")], "webhooks.batch_max"),
        (
            &[("INDABA_WEBHOOKS__AUTH_HEADER", "no colon")],
            "webhooks.auth_header",
        ),
    ];
    for (extra, named) in cases {
        let mut env = vec![
            ("INDABA_WEBHOOKS__URL", "http://127.0.0.1:9/hook"),
            ("INDABA_WEBHOOKS__SECRET_FILE", secret.as_str()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            if !v.is_empty() {
                env.push((k, v));
            }
        }
        for command in [
            &["check-config"][..],
            &["--data-dir", data.as_str(), "--listen", "127.0.0.1:0"][..],
        ] {
            let (code, _, stderr) = common::run_cli(command, &env);
            assert_eq!(code, 2, "{command:?} {extra:?}: {stderr}");
            assert!(
                stderr.contains(named),
                "{command:?} {extra:?} names {named}: {stderr}"
            );
        }
    }
    // Plain HTTP to a named host is fine once allowed; the default list is every event.
    let (code, stdout, stderr) = common::run_cli(
        &["check-config"],
        &[
            ("INDABA_WEBHOOKS__URL", "http://django:8000/hook"),
            ("INDABA_WEBHOOKS__SECRET_FILE", secret.as_str()),
            ("INDABA_WEBHOOKS__ALLOW_INSECURE", "true"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("user.offline"), "{stdout}");
    // A signing key others can read is refused at start, like every secret file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, stderr) = common::run_cli(
        &["--data-dir", data.as_str(), "--listen", "127.0.0.1:0"],
        &[
            ("INDABA_WEBHOOKS__URL", "http://127.0.0.1:9/hook"),
            ("INDABA_WEBHOOKS__SECRET_FILE", secret.as_str()),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("webhooks.secret_file"), "{stderr}");
}

/// A conversation the service API creates for the host app's own conversation id (contract
/// 8.3) is announced like any other: `conversation.created`, then the message's
/// `message.created`; a second send by the same key creates nothing new.
#[test]
fn a_conversation_made_for_a_host_key_is_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let sink = Sink::start(&[]);
    let daemon = Daemon::start_with(&dir.path().join("data"), options(&sink.url(), &secret, &[]));
    let send = |text: &str| {
        let (status, body) = common::split(
            daemon
                .http
                .post(daemon.url("/api/messages/send"))
                .header("X-Service-Token", SERVICE_SECRET)
                .json(
                    &json!({"conversation_id": 9001, "sender_id": 11, "receiver_id": 12,
                               "text": text}),
                )
                .send()
                .expect("service send"),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["host_conversation_id"], 9001, "{body}");
        (
            body["conversation_id"].as_u64().expect("conversation_id"),
            body["message_id"].as_u64().expect("message_id"),
        )
    };
    let (conv, first) = send("first by the host's key");
    let (again, second) = send("second by the same key");
    assert_eq!(again, conv);
    sink.wait_for("both messages", |_| {
        created_ids(&sink.events()).is_superset(&BTreeSet::from([first, second]))
    });
    let events = sink.events();
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "conversation.created")
        .collect();
    assert_eq!(created.len(), 1, "one conversation.created: {events:?}");
    assert_eq!(created[0]["data"]["id"], conv, "{events:?}");
    let position = |t: &str| events.iter().position(|e| e["type"] == t);
    assert!(
        position("conversation.created") < position("message.created"),
        "the conversation is announced before its first message: {events:?}"
    );
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}

/// The one-to-one conversations a broadcast creates reach the host app like any other new
/// conversation: one `conversation.created` each (as the sender sees it), before its
/// `message.created`; a recipient whose conversation existed, and a second broadcast, create
/// none. (This held before the broadcast's conversations were announced on sockets too; it
/// pins that the two announcements agree.)
#[test]
fn the_conversations_a_broadcast_makes_are_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let sink = Sink::start(&[]);
    let daemon = Daemon::start_with(&dir.path().join("data"), options(&sink.url(), &secret, &[]));
    let existing = daemon.conversation(21, 22);
    let broadcast = |text: &str| {
        let (status, body) = common::split(
            daemon
                .http
                .post(daemon.url("/api/messages/broadcast"))
                .header("X-Service-Token", SERVICE_SECRET)
                .json(&json!({"message": {"sender_id": 21, "text": text},
                               "user_ids": [22, 23, 24]}))
                .send()
                .expect("broadcast"),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recipients"], 3, "{body}");
    };
    let messages = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "message.created")
            .count()
    };
    broadcast("first");
    broadcast("second");
    sink.wait_for("both broadcasts", |_| messages(&sink.events()) == 6);
    let events = sink.events();
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "conversation.created")
        .collect();
    // The REST conversation of 21 and 22, then the broadcast's two.
    assert_eq!(created.len(), 3, "{events:?}");
    assert_eq!(created[0]["data"]["id"], existing, "{events:?}");
    let mut partners = Vec::new();
    for event in &created[1..] {
        let data = &event["data"];
        assert_eq!(data["participants"][0], 21, "{event}");
        partners.push(data["participants"][1].as_u64().expect("participant"));
        let first_message = events.iter().position(|e| {
            e["type"] == "message.created" && e["data"]["conversation"] == data["id"]
        });
        let announced = events.iter().position(|e| e == *event);
        assert!(
            first_message.is_some() && announced < first_message,
            "conversation {} is announced before its first message: {events:?}",
            data["id"]
        );
    }
    assert_eq!(partners, [23, 24], "{events:?}");
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}

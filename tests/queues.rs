//! Per-user queues and the backend service API (contract section 4, seed 001) over real HTTP:
//! priorities, drain and peek, durability across restarts, overflow into dead letters,
//! broadcast, the service secret, stats, and `/metrics` read with a Prometheus parser.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Options, split};
use serde_json::{Value, json};

const SECRET: &str = "service-secret-for-tests-0123456789";

fn with_service(dir: &std::path::Path, extra: &[(&str, &str)]) -> Daemon {
    let mut env = vec![(
        "INDABA_SERVICE__SHARED_SECRET".to_owned(),
        SECRET.to_owned(),
    )];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Daemon::start_with(
        dir,
        Options {
            env,
            ..Options::default()
        },
    )
}

fn service(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    d.service(SECRET, method, path, body)
}

/// Seed 001's `send_message(conversation_id, sender_id, receiver_id, text, ...)` as plain HTTP.
fn service_send(d: &Daemon, sender: u64, receiver: u64, text: &str, priority: &str) -> u64 {
    let (status, body) = service(
        d,
        "POST",
        "/api/messages/send",
        Some(&json!({
            "sender_id": sender, "receiver_id": receiver, "text": text,
            "message_type": "text", "priority": priority, "metadata": {}
        })),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "accepted");
    body["message_id"].as_u64().expect("message_id")
}

fn queue(d: &Daemon, user: u64, query: &str) -> Vec<(u64, String)> {
    let (status, body) = service(
        d,
        "GET",
        &format!("/api/messages/queue/{user}{query}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], user);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(body["count"].as_u64(), Some(messages.len() as u64));
    messages
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().expect("id"),
                m["priority"].as_str().expect("priority").to_owned(),
            )
        })
        .collect()
}

fn stats(d: &Daemon) -> Value {
    let (status, body) = service(d, "GET", "/api/stats", None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn queue_order_drain_peek_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(dir.path(), &[]);
    let low = service_send(&d, 456, 789, "low one", "low");
    let normal = service_send(&d, 456, 789, "normal one", "normal");
    let high = service_send(&d, 456, 789, "high one", "high");
    let normal2 = service_send(&d, 456, 789, "normal two", "normal");
    // All in the same one-to-one conversation, created by the first send.
    let (_, page) = d.get(789, "/api/v1/messaging/conversations/");
    assert_eq!(page["count"], 1);
    assert_eq!(page["results"][0]["participants"], json!([456, 789]));

    let order = vec![
        (high, "high".to_owned()),
        (normal, "normal".to_owned()),
        (normal2, "normal".to_owned()),
        (low, "low".to_owned()),
    ];
    // HEAD would drain without handing the messages over: refused.
    let (status, _) = service(&d, "HEAD", "/api/messages/queue/789", None);
    assert_eq!(status, 405);
    // Peek does not drain; the sender has no queue.
    assert_eq!(queue(&d, 789, "?peek=true"), order);
    assert_eq!(queue(&d, 789, "?peek=true"), order);
    assert!(queue(&d, 456, "?peek=true").is_empty());
    assert_eq!(stats(&d)["queues"]["pending_total"], 4);

    // The queue is durable.
    assert!(d.stop().success());
    let d = with_service(dir.path(), &[]);
    assert_eq!(queue(&d, 789, "?peek=true"), order);

    // Drain in pieces: each call removes what it returns.
    assert_eq!(queue(&d, 789, "?limit=2"), order[..2].to_vec());
    assert_eq!(queue(&d, 789, ""), order[2..].to_vec());
    assert!(queue(&d, 789, "").is_empty());
    let s = stats(&d);
    assert_eq!(s["queues"]["pending_total"], 0);
    // Drained messages stay in history.
    let (status, _) = d.get(789, &format!("/api/v1/messaging/messages/{high}/"));
    assert_eq!(status, 200);
}

#[test]
fn overflow_drops_oldest_lowest_priority_as_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(
        dir.path(),
        &[("INDABA_QUEUES__MESSAGE_QUEUE_MAX_SIZE", "3")],
    );
    let n1 = service_send(&d, 1, 2, "n1", "normal");
    let l1 = service_send(&d, 1, 2, "l1", "low");
    let h1 = service_send(&d, 1, 2, "h1", "high");
    let l2 = service_send(&d, 1, 2, "l2", "low"); // over the bound: l1 (oldest low) goes
    let n2 = service_send(&d, 1, 2, "n2", "normal"); // l2 goes
    let kept: Vec<u64> = queue(&d, 2, "?peek=true")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(kept, vec![h1, n1, n2]);
    assert_eq!(stats(&d)["dead_letters"], 2);
    // Dead letters leave the queue, not the history.
    for id in [l1, l2] {
        let (status, msg) = d.get(2, &format!("/api/v1/messaging/messages/{id}/"));
        assert_eq!(status, 200, "{msg}");
    }
    // The count survives a restart.
    assert!(d.stop().success());
    let d = with_service(
        dir.path(),
        &[("INDABA_QUEUES__MESSAGE_QUEUE_MAX_SIZE", "3")],
    );
    assert_eq!(stats(&d)["dead_letters"], 2);
}

#[test]
fn service_secret_is_required_and_failures_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Off without a secret.
    let off = Daemon::start(dir.path());
    let (status, body) = split(
        off.http
            .get(off.url("/api/stats"))
            .header("X-Service-Token", SECRET)
            .send()
            .expect("GET"),
    );
    assert_eq!(status, 404, "{body}");
    assert!(off.stop().success());

    let d = with_service(dir.path(), &[]);
    let attempts = [
        None,
        Some(("X-Service-Token", "wrong")),
        Some(("X-Service-Token", &SECRET[..SECRET.len() - 1])),
        Some(("Authorization", "Bearer nope")),
    ];
    for header in attempts {
        let mut req = d.http.post(d.url("/api/messages/send")).json(&json!({
            "sender_id": 1, "receiver_id": 2, "text": "x"
        }));
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        let (status, body) = split(req.send().expect("POST"));
        assert_eq!(status, 401, "{header:?}: {body}");
        assert_eq!(body["error"], "invalid_service_token");
    }
    // A user token is not a service token.
    let (status, _) = split(
        d.http
            .get(d.url("/api/stats"))
            .bearer_auth(d.token(1))
            .send()
            .expect("GET"),
    );
    assert_eq!(status, 401);
    // `Authorization: Bearer <secret>` is accepted too.
    let (status, _) = split(
        d.http
            .get(d.url("/api/stats"))
            .bearer_auth(SECRET)
            .send()
            .expect("GET"),
    );
    assert_eq!(status, 200);
    let metrics = scrape(&d);
    assert_eq!(metric(&metrics, "indaba_service_auth_failures_total"), 5.0);
    // Without a secret /metrics is closed too, unless `[metrics] public = true`.
    let (status, _) = split(d.http.get(d.url("/metrics")).send().expect("GET"));
    assert_eq!(status, 401);
    assert!(d.stop().success());
    let open = with_service(dir.path(), &[("INDABA_METRICS__PUBLIC", "true")]);
    let resp = open.http.get(open.url("/metrics")).send().expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn service_sends_are_not_rate_limited_and_validate_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(
        dir.path(),
        &[
            ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1"),
            ("INDABA_LIMITS__MESSAGES_BURST", "2"),
        ],
    );
    for i in 0..20 {
        service_send(&d, 1, 2, &format!("m{i}"), "normal");
    }
    for (body, code) in [
        (
            json!({"sender_id": 1, "text": "no receiver, no conversation"}),
            "invalid_request",
        ),
        (
            json!({"sender_id": 1, "receiver_id": 2, "text": "x", "priority": "urgent"}),
            "invalid_request",
        ),
        (
            json!({"sender_id": 0, "receiver_id": 2, "text": "x"}),
            "invalid_request",
        ),
        (
            json!({"sender_id": 1, "receiver_id": 2, "text": ""}),
            "invalid_request",
        ),
        (
            json!({"sender_id": 1, "receiver_id": 1, "text": "to myself"}),
            "invalid_participants",
        ),
    ] {
        let (status, resp) = service(&d, "POST", "/api/messages/send", Some(&body));
        assert_eq!(
            (status, resp["error"].as_str()),
            (400, Some(code)),
            "{body}: {resp}"
        );
    }
    // Into a conversation the sender is not part of.
    let conv = d.conversation(5, 6);
    let (status, _) = service(
        &d,
        "POST",
        "/api/messages/send",
        Some(&json!({"conversation_id": conv, "sender_id": 1, "text": "intruder"})),
    );
    assert_eq!(status, 404);
}

/// Issue 16, defect 9: a service send with no `conversation_id` created the two users'
/// one-to-one conversation before it validated the message, so a blank text got 400 but left
/// an empty conversation in both users' lists. Every refused send must leave nothing behind.
#[test]
fn refused_service_send_creates_no_conversation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(dir.path(), &[("INDABA_LIMITS__MAX_TEXT_BYTES", "64")]);
    let conversations = |user: u64| {
        let (status, page) = d.get(user, "/api/v1/messaging/conversations/");
        assert_eq!(status, 200, "{page}");
        page["count"].as_u64().expect("count")
    };
    for bad in [
        json!({"sender_id": 31, "receiver_id": 32, "text": ""}),
        json!({"sender_id": 31, "receiver_id": 32, "text": "  \n\t "}),
        json!({"sender_id": 31, "receiver_id": 32, "text": "x".repeat(65)}),
        json!({"sender_id": 31, "receiver_id": 32, "text": "hi", "priority": "urgent"}),
        json!({"sender_id": 31, "receiver_id": 32, "text": "hi", "message_type": "Bad Type"}),
        json!({"sender_id": 31, "receiver_id": 32, "text": "hi", "metadata": [1, 2]}),
        json!({"sender_id": 31, "receiver_id": 32, "text": "hi", "client_id": ""}),
    ] {
        let (status, resp) = service(&d, "POST", "/api/messages/send", Some(&bad));
        assert_eq!(status, 400, "{bad}: {resp}");
        assert_eq!(
            (conversations(31), conversations(32)),
            (0, 0),
            "after {bad}"
        );
    }
    // The same users' first valid send creates the conversation, in both lists.
    service_send(&d, 31, 32, "hello", "normal");
    assert_eq!((conversations(31), conversations(32)), (1, 1));
}

#[test]
fn broadcast_to_ten_thousand_users_some_online() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(dir.path(), &[]);
    let users: Vec<u64> = (10_000..20_000).collect();
    // Two recipients are online: they get it live.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let online: Vec<_> = [10_000u64, 10_001]
        .iter()
        .map(|u| {
            let url = format!("ws://{}/ws/chat/?token={}", d.addr, d.token(*u));
            rt.block_on(async move {
                let (ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("connect");
                ws
            })
        })
        .collect();
    let started = Instant::now();
    let (status, body) = service(
        &d,
        "POST",
        "/api/messages/broadcast",
        Some(&json!({
            "message": {"sender_id": 1, "text": "System announcement", "message_type": "system"},
            "user_ids": users,
        })),
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "accepted", "recipients": 10_000}));
    eprintln!("broadcast to 10,000 recipients answered in {took:?} (debug build)");

    let mut copies = Vec::new();
    for (ws, user) in online.into_iter().zip([10_000u64, 10_001]) {
        let event = rt.block_on(async move {
            use futures_util::StreamExt;
            let mut ws = ws;
            let deadline = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    frame = ws.next() => {
                        let text = frame.expect("open").expect("frame").into_text().expect("text");
                        let v: Value = serde_json::from_str(&text).expect("json");
                        if v["type"] == "new_message" { break v; }
                    }
                    _ = &mut deadline => panic!("no broadcast on the online socket"),
                }
            }
        });
        assert_eq!(event["text"], "System announcement");
        assert_eq!(event["message_type"], "system");
        assert_eq!(event["priority"], "high");
        assert_eq!(event["sender_id"], 1);
        // A copy of its own: its id, in the user's own conversation with the sender.
        assert_eq!(event["receiver_id"], user);
        let (_, convs) = d.get(user, "/api/v1/messaging/conversations/");
        assert_eq!(
            event["conversation_id"], convs["results"][0]["id"],
            "{convs}"
        );
        copies.push(event["message_id"].as_u64().expect("message_id"));
    }
    assert_ne!(copies[0], copies[1]);
    // Offline recipients find it in their queue, in their one-to-one conversation with the sender.
    let waiting = queue(&d, 19_999, "?peek=true");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, "high");
    let (_, convs) = d.get(19_999, "/api/v1/messaging/conversations/");
    assert_eq!(convs["results"][0]["participants"], json!([1, 19_999]));
    assert_eq!(
        convs["results"][0]["last_message"]["message_type"],
        "system"
    );
    // A second broadcast reuses those conversations.
    let (status, _) = service(
        &d,
        "POST",
        "/api/messages/broadcast",
        Some(&json!({"message": {"sender_id": 1, "text": "again"}, "user_ids": [19_999, 19_999]})),
    );
    assert_eq!(status, 200);
    let (_, convs) = d.get(19_999, "/api/v1/messaging/conversations/");
    assert_eq!(convs["count"], 1);
    assert_eq!(queue(&d, 19_999, "?peek=true").len(), 2);
}

#[test]
fn stats_metrics_and_the_engine_health_alias() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(
        dir.path(),
        &[("INDABA_QUEUES__MESSAGE_QUEUE_MAX_SIZE", "2")],
    );
    for i in 0..5 {
        service_send(&d, 1, 2, &format!("m{i}"), "normal");
    }
    let conv = d.conversation(3, 4);
    d.send(3, conv, "over REST");
    let (status, _) = d.post(
        3,
        "/api/v1/messaging/messages/",
        &json!({"conversation": conv, "text": ""}),
    );
    assert_eq!(status, 400);

    let s = stats(&d);
    for key in [
        "messages_processed",
        "messages_persisted",
        "persistence_failures",
        "uptime_seconds",
        "connections",
        "users_online",
        "dead_letters",
        "version",
    ] {
        assert!(!s[key].is_null(), "stats lack {key}: {s}");
    }
    assert_eq!(s["messages_persisted"], 6);
    assert_eq!(s["messages_processed"], 6);
    assert_eq!(s["persistence_failures"], 0);
    assert_eq!(s["dead_letters"], 3);
    assert_eq!(s["queues"]["pending_total"], 3);
    assert_eq!(s["queues"]["max_user_pending"], 2);
    assert!(
        s["memory"]["rss_bytes"]
            .as_u64()
            .is_some_and(|b| b > 1_000_000)
    );

    let m = scrape(&d);
    assert_eq!(metric(&m, "indaba_messages_persisted_total"), 6.0);
    assert_eq!(metric(&m, "indaba_dead_letters_total"), 3.0);
    assert_eq!(metric(&m, "indaba_queue_pending"), 3.0);
    assert!(metric(&m, "indaba_resident_memory_bytes") > 1e6);
    assert!(metric(&m, "indaba_connections") >= 1.0);
    let rejected = m
        .samples
        .iter()
        .find(|s| {
            s.metric == "indaba_messages_rejected_total"
                && s.labels.get("reason") == Some("invalid_request")
        })
        .expect("rejected by reason");
    assert_eq!(value(&rejected.value), 1.0);
    // Durability is timed apart from the writer's work: every committed batch was made
    // durable by one journal sync or was a checkpoint (a durable commit, part of its time).
    let commits = observations(&m, "indaba_commit_seconds");
    let syncs = observations(&m, "indaba_journal_sync_seconds");
    let checkpoints = observations(&m, "indaba_checkpoint_seconds");
    assert!(syncs > 0.0, "messages were journaled");
    // A batch still on its way (a delivered entry's removal) may be counted on one side only.
    assert!(
        (syncs + checkpoints - commits).abs() <= 1.0,
        "{syncs} syncs and {checkpoints} checkpoints for {commits} commits"
    );
    assert!(metric(&m, "indaba_journal_sync_seconds_sum") > 0.0);
    assert!(metric(&m, "indaba_checkpoint_seconds_sum") <= metric(&m, "indaba_commit_seconds_sum"));

    let (status, health) = d.get(1, "/api/v1/messaging/erlang/health/");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["engine"], "indaba");
    let (status, _) = split(
        d.http
            .get(d.url("/api/v1/messaging/erlang/health/"))
            .send()
            .expect("GET"),
    );
    assert_eq!(status, 401, "the alias needs a user token");
}

/// Regression (issue 16, defect 16): `messages_processed` counted every send that passed
/// validation, including those the writer then refused (unknown conversation, a receiver who
/// is not a participant, a `client_id` conflict) and idempotent repeats: 47 processed for 40
/// stored and 0 failures. Processed is now what was taken on to store: stored, or failed in
/// its commit; refusals are counted by reason in `indaba_messages_rejected_total`.
#[test]
fn stats_count_processed_sends_not_refused_ones() {
    const MSGS: &str = "/api/v1/messaging/messages/";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = with_service(dir.path(), &[]);
    let conv = d.conversation(1, 2);
    let theirs = d.conversation(3, 4);
    // Stored: three REST sends, one service send, a broadcast to two users.
    for text in ["one", "two", "three"] {
        d.send(1, conv, text);
    }
    service_send(&d, 5, 6, "hi", "normal");
    let (status, body) = service(
        &d,
        "POST",
        "/api/messages/broadcast",
        Some(&json!({"message": {"sender_id": 7, "text": "news"}, "user_ids": [8, 9]})),
    );
    assert_eq!(
        (status, body["recipients"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    // Refused, each for its own reason, and one idempotent repeat.
    let refusals = [
        (
            json!({"conversation": conv, "text": "   "}),
            400,
            "invalid_request",
        ),
        (
            json!({"conversation": 424242, "text": "x"}),
            404,
            "not_found",
        ),
        (
            json!({"conversation": theirs, "text": "x"}),
            404,
            "not_found",
        ),
        (
            json!({"conversation": conv, "text": "x", "receiver": 9}),
            400,
            "invalid_receiver",
        ),
    ];
    for (body, want, code) in &refusals {
        let (status, answer) = d.post(1, MSGS, body);
        assert_eq!(
            (status, answer["error"].as_str()),
            (*want, Some(*code)),
            "{answer}"
        );
    }
    let once = json!({"conversation": conv, "text": "once", "client_id": "c-1"});
    assert_eq!(d.post(1, MSGS, &once).0, 201);
    assert_eq!(
        d.post(1, MSGS, &once).0,
        200,
        "a repeat of the same client_id"
    );
    let other = json!({"conversation": conv, "text": "other", "client_id": "c-1"});
    assert_eq!(d.post(1, MSGS, &other).0, 409);

    let stored = 3 + 1 + 2 + 1;
    let s = stats(&d);
    assert_eq!(s["messages_persisted"], stored, "{s}");
    assert_eq!(s["persistence_failures"], 0, "{s}");
    assert_eq!(
        s["messages_processed"], stored,
        "processed = persisted + failures: {s}"
    );
    let metrics = scrape(&d);
    assert_eq!(
        metric(&metrics, "indaba_messages_accepted_total"),
        f64::from(stored)
    );
    let rejected = |reason: &str| {
        metrics
            .samples
            .iter()
            .find(|s| {
                s.metric == "indaba_messages_rejected_total"
                    && s.labels.get("reason") == Some(reason)
            })
            .map_or(0.0, |s| value(&s.value))
    };
    assert_eq!(rejected("not_found"), 2.0);
    assert_eq!(rejected("invalid_request"), 1.0);
    assert_eq!(rejected("invalid_receiver"), 1.0);
    assert_eq!(rejected("client_id_conflict"), 1.0);
}

fn scrape(d: &Daemon) -> prometheus_parse::Scrape {
    let resp = d
        .http
        .get(d.url("/metrics"))
        .header("X-Service-Token", SECRET)
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().expect("body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse")
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

/// How many observations the histogram `name` holds (its `+Inf` bucket).
fn observations(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    match &sample(scrape, name).value {
        prometheus_parse::Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than == f64::INFINITY)
            .map(|b| b.count)
            .unwrap_or_else(|| panic!("{name} has no +Inf bucket")),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    value(&sample(scrape, name).value)
}

fn sample<'a>(scrape: &'a prometheus_parse::Scrape, name: &str) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

//! Every acknowledged write survives `kill -9`.
//!
//! Several threads send messages as fast as they are acknowledged; the daemon is killed with
//! SIGKILL mid-stream; after a restart every message that got a 201 must be there with its
//! text, and ids must still be strictly increasing. Repeated over several rounds on the same
//! data file, so recovery from a crash is itself crashed into.

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
        let daemon = Arc::new(Daemon::start_with(
            dir.path(),
            Options::env(&[
                ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
                ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
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

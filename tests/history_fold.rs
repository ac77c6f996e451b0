//! The history tail is folded into the history and client-id indexes a bounded chunk at a time
//! (`store::history`), so no single batch stalls the writer for the whole tail. Spread over
//! several batches, the fold must still leave every message in its conversation's history and
//! every client id answered once — after `kill -9` (the journal replays batches that folded)
//! and after a restart (the tail is rebuilt from the messages above the indexed id).

mod common;

use std::collections::BTreeMap;

use common::{Daemon, Options};
use indaba::store::history::{FOLD_AT, FOLD_CHUNK};
use serde_json::json;

const MSGS: &str = "/api/v1/messaging/messages/";

fn start(dir: &std::path::Path) -> Daemon {
    Daemon::start_with(
        dir,
        Options::env(&[
            ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
            ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
            ("INDABA_METRICS__PUBLIC", "true"),
        ]),
    )
}

/// Sends `count` messages from user 1, from number `from` on, alternating between the two
/// conversations, each with client id `c<number>`. Returns number → (conversation, id).
fn send(
    d: &Daemon,
    convs: [u64; 2],
    from: usize,
    count: usize,
    sent: &mut BTreeMap<usize, (u64, u64)>,
) {
    for i in from..from + count {
        let conv = convs[i % 2];
        let (status, body) = d.post(
            1,
            MSGS,
            &json!({"conversation": conv, "text": format!("m{i}"), "client_id": format!("c{i}")}),
        );
        assert_eq!(status, 201, "{body}");
        sent.insert(i, (conv, body["id"].as_u64().expect("id")));
    }
}

/// Every id of `conv` as user 2 pages it back from the newest, oldest first.
fn history(d: &Daemon, conv: u64, reader: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut path = format!("{MSGS}?conversation={conv}&limit=200");
    loop {
        let (status, page) = d.get(reader, &path);
        assert_eq!(status, 200, "{page}");
        let got: Vec<u64> = page["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|m| m["id"].as_u64().expect("id"))
            .collect();
        let Some(&oldest) = got.first() else { break };
        ids.splice(0..0, got);
        if page["next"].is_null() {
            break;
        }
        path = format!("{MSGS}?conversation={conv}&limit=200&before={oldest}");
    }
    ids
}

/// Both conversations' histories hold exactly what was sent, once each and in order, and
/// every client id resent gets its first message back (200, not a second message).
fn check(d: &Daemon, convs: [u64; 2], sent: &BTreeMap<usize, (u64, u64)>) {
    for (n, &conv) in convs.iter().enumerate() {
        let expected: Vec<u64> = sent
            .values()
            .filter(|(c, _)| *c == conv)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            history(d, conv, 2 + n as u64),
            expected,
            "conversation {conv}"
        );
    }
    // Every 7th, and the newest: from the index and from the tail.
    let last = *sent.keys().last().expect("sent");
    for (&i, &(conv, id)) in sent.iter().filter(|(i, _)| **i % 7 == 0 || **i == last) {
        let (status, body) = d.post(
            1,
            MSGS,
            &json!({"conversation": conv, "text": format!("m{i}"), "client_id": format!("c{i}")}),
        );
        assert_eq!((status, body["id"].as_u64()), (200, Some(id)), "c{i}");
    }
}

/// `indaba_history_fold_size`: how many folds, and how many folded at most `FOLD_CHUNK`.
fn folds(d: &Daemon) -> (u64, u64) {
    let text = d
        .http
        .get(d.url("/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .expect("metrics");
    let value = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}")) as u64
    };
    let bound = format!("indaba_history_fold_size_bucket{{le=\"{FOLD_CHUNK}.0\"}} ");
    (value("indaba_history_fold_size_count "), value(&bound))
}

#[test]
fn a_fold_spread_over_batches_keeps_every_message_across_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sent = BTreeMap::new();
    let d = start(dir.path());
    let convs = [d.conversation(1, 2), d.conversation(1, 3)];
    // One message per batch (each send waits for its answer): the tail reaches FOLD_AT, a
    // chunk is folded, and it reaches FOLD_AT again.
    let first = FOLD_AT + FOLD_CHUNK + 100;
    send(&d, convs, 0, first, &mut sent);
    let (count, bounded) = folds(&d);
    assert!(count >= 2, "{count} folds");
    assert_eq!(
        bounded, count,
        "a fold folded more than {FOLD_CHUNK} messages"
    );
    check(&d, convs, &sent);
    // The batches that folded are replayed from the journal.
    d.crash();

    let d = start(dir.path());
    check(&d, convs, &sent);
    // The tail rebuilt at start goes on folding from where the replay left it.
    send(&d, convs, first, 2 * FOLD_CHUNK, &mut sent);
    assert!(folds(&d).0 >= 1, "folded after the restart");
    check(&d, convs, &sent);
    d.stop();

    let d = start(dir.path());
    check(&d, convs, &sent);
    d.stop();
}

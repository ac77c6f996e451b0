//! A damaged journal never costs acknowledged writes silently, nor gives their ids twice.
//!
//! Issue 16, defect 2: after a `kill -9`, one changed byte in `indaba.journal`'s header lost
//! 29, 102 and 32 acknowledged messages in three trials with nothing above INFO in the log;
//! damage inside a record dropped every record after it; the journal was then emptied and the
//! lost ids were given to new messages. Each test here runs the real daemon under mixed load
//! (REST, WebSocket and service sends) with no time-driven checkpoint, so most of what it
//! acknowledged lives in the journal alone; kills it with SIGKILL; changes the journal's bytes
//! on disk; and starts it again:
//!
//! * a torn last write (what a crash leaves) is recovered quietly, with every acknowledged
//!   message;
//! * a changed header byte, or a damaged record with whole records after it, stops the start
//!   with an ERROR naming the file, the offset and what is at stake, and leaves the file as it
//!   was;
//! * `serve --accept-journal-loss` then starts, moves the journal aside (it stays on disk),
//!   logs the loss at ERROR, and gives new messages and conversations ids above every one
//!   handed out before the crash.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Options};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "journal-damage-service-secret-0123";
const JOURNAL: &str = "indaba.journal";
/// Where the journal's records start (docs/STORAGE.md, "The journal file").
const RECORDS_START: usize = 4096;
/// The other participant of every conversation: can read every message.
const READER: u64 = 100;

/// No checkpoint on a timer, the service API on, no send rate limit.
fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("INDABA_STORAGE__CHECKPOINT_INTERVAL", "1h"),
        ("INDABA_SERVICE__SHARED_SECRET", SECRET),
        ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
        ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
    ]
}

fn options() -> Options {
    Options::env(&env())
}

/// `indaba serve --accept-journal-loss` on `dir`.
fn accept_loss(dir: &Path) -> Daemon {
    Daemon::start_with_args(dir, options(), &["serve", "--accept-journal-loss"])
}

/// A data dir whose daemon was killed with SIGKILL under load, and what it acknowledged.
struct Crashed {
    dir: tempfile::TempDir,
    /// Message id → text, for every message acknowledged (HTTP 201 or `message_sent`).
    acked: BTreeMap<u64, String>,
    /// The conversations it created.
    conversations: Vec<u64>,
}

impl Crashed {
    fn journal_path(&self) -> PathBuf {
        self.dir.path().join(JOURNAL)
    }

    fn journal(&self) -> Vec<u8> {
        std::fs::read(self.journal_path()).expect("read journal")
    }

    fn write_journal(&self, bytes: &[u8]) {
        std::fs::write(self.journal_path(), bytes).expect("write journal");
    }

    /// The highest message id any client was given.
    fn max_acked(&self) -> u64 {
        *self
            .acked
            .keys()
            .next_back()
            .expect("something acknowledged")
    }
}

/// How a sender sends.
#[derive(Clone, Copy, Debug)]
enum Via {
    Rest,
    Service,
    WebSocket,
}

type Acked = Arc<Mutex<Vec<(u64, String)>>>;

/// Starts a daemon on a fresh data dir, has four users send at once — two over REST, one over
/// the service API, one over a WebSocket — for a moment, and kills it with SIGKILL mid-stream.
fn crash_under_load() -> Crashed {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Arc::new(Daemon::start_with(dir.path(), options()));
    let conversations: Vec<u64> = (1..=4).map(|s| daemon.conversation(s, READER)).collect();
    let acked: Acked = Arc::default();
    let vias = [Via::Rest, Via::Rest, Via::Service, Via::WebSocket];
    let senders: Vec<_> = vias
        .iter()
        .enumerate()
        .map(|(i, via)| {
            let (daemon, acked, via) = (daemon.clone(), acked.clone(), *via);
            let (user, conversation) = (i as u64 + 1, conversations[i]);
            std::thread::spawn(move || send(&daemon, via, user, conversation, None, &acked))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    // By pid: the senders still hold the handle.
    daemon.signal("KILL");
    for sender in senders {
        sender.join().expect("sender thread");
    }
    let mut daemon = Arc::into_inner(daemon).expect("sole owner");
    assert!(!daemon.wait_exit(Duration::from_secs(10)).success());
    let mut by_id = BTreeMap::new();
    for (id, text) in acked.lock().expect("lock").drain(..) {
        assert!(
            by_id.insert(id, text).is_none(),
            "id {id} acknowledged twice"
        );
    }
    for via in vias {
        let prefix = format!("{via:?} ");
        assert!(
            by_id.values().any(|t| t.starts_with(&prefix)),
            "nothing acknowledged over {via:?}"
        );
    }
    Crashed {
        dir,
        acked: by_id,
        conversations,
    }
}

/// Sends from `user` into `conversation` until `count` messages are acknowledged (`None`: until
/// the daemon is gone), recording each acknowledged id and text.
fn send(d: &Daemon, via: Via, user: u64, conversation: u64, count: Option<usize>, acked: &Acked) {
    let texts = (0..count.unwrap_or(usize::MAX)).map(|i| format!("{via:?} {user} {i}"));
    let push = |id: &Value, text: String| {
        let id = id.as_u64().expect("message id");
        acked.lock().expect("lock").push((id, text));
    };
    // A send the daemon did not answer (it was killed): stop; anything else unexpected fails.
    let stopped = |outcome: Result<(u16, Value), reqwest::Error>| match outcome {
        Ok((201, body)) => Some(body),
        Ok((status, body)) => panic!("{via:?} send answered {status}: {body}"),
        Err(_) if count.is_none() => None,
        Err(e) => panic!("{via:?} send failed: {e}"),
    };
    match via {
        Via::Rest => {
            let token = d.token(user);
            for text in texts {
                let sent = d
                    .http
                    .post(d.url("/api/v1/messaging/messages/"))
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(5))
                    .json(&json!({"conversation": conversation, "text": text}))
                    .send()
                    .map(common::split);
                let Some(body) = stopped(sent) else { return };
                push(&body["id"], text);
            }
        }
        Via::Service => {
            for text in texts {
                let sent = d
                    .http
                    .post(d.url("/api/messages/send"))
                    .header("X-Service-Token", SECRET)
                    .timeout(Duration::from_secs(5))
                    .json(
                        &json!({"conversation_id": conversation, "sender_id": user, "text": text}),
                    )
                    .send()
                    .map(common::split);
                let Some(body) = stopped(sent) else { return };
                push(&body["message_id"], text);
            }
        }
        Via::WebSocket => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let url = format!("ws://{}/ws/chat/?token={}", d.addr, d.token(user));
                let (mut ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("WebSocket connect");
                for (i, text) in texts.enumerate() {
                    let client_id = format!("ws-{i}");
                    let frame = json!({"type": "chat_message", "conversation_id": conversation,
                                       "text": text, "client_id": client_id});
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        assert!(count.is_none(), "the daemon closed the socket");
                        return;
                    }
                    loop {
                        let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
                        let event: Value = match next {
                            Ok(Some(Ok(Message::Text(t)))) => {
                                serde_json::from_str(&t).expect("JSON event")
                            }
                            Ok(Some(Ok(_))) => continue,
                            other => {
                                assert!(count.is_none(), "no message_sent: {other:?}");
                                return;
                            }
                        };
                        assert_ne!(event["type"], "error", "{event}");
                        if event["type"] == "message_sent" && event["client_id"] == client_id {
                            push(&event["message_id"], text);
                            break;
                        }
                    }
                }
            });
        }
    }
}

/// A record as docs/STORAGE.md lays the journal out, found by walking the lengths from the
/// first record without checking tags (this test changes bytes; it does not check them).
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: usize,
    /// Bytes in front of the payload.
    head: usize,
    len: usize,
    seq: u64,
}

impl Rec {
    fn end(&self) -> usize {
        self.offset + self.head + self.len
    }

    /// The message ids its batch gave: the first, and the next after its last.
    fn message_ids(&self, journal: &[u8]) -> std::ops::Range<u64> {
        let payload = &journal[self.offset + self.head..];
        let field = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8"));
        field(8)..field(16)
    }
}

/// The records from the start of the journal while each follows the one before: whole, with
/// a greater seq (and in format 3, the file's record marker in front).
fn walk(journal: &[u8]) -> Vec<Rec> {
    let format = u32::from_le_bytes(journal[8..12].try_into().expect("4"));
    // Format 2: length, seq, tag. Format 3: a marker in front of them.
    let (head, marker) = match format {
        2 => (28, 0),
        3 => (36, 8),
        other => panic!("journal format {other}"),
    };
    let mut records: Vec<Rec> = Vec::new();
    let mut offset = RECORDS_START;
    while offset + head <= journal.len() {
        let at = |i: usize| &journal[offset + i..];
        if marker > 0 && at(0)[..marker] != journal[RECORDS_START..RECORDS_START + marker] {
            break;
        }
        let len = u32::from_le_bytes(at(marker)[..4].try_into().expect("4")) as usize;
        let seq = u64::from_le_bytes(at(marker + 4)[..8].try_into().expect("8"));
        let rec = Rec {
            offset,
            head,
            len,
            seq,
        };
        if rec.end() > journal.len() || records.last().is_some_and(|r| r.seq >= seq) {
            break;
        }
        records.push(rec);
        offset = rec.end();
    }
    records
}

/// Runs `indaba serve` on `dir`, which must refuse to start: its exit status and its log.
/// Fails the test if it starts listening instead.
fn refused_start(dir: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(common::BIN)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir)
        .env_remove("RUST_LOG")
        .env_remove("INDABA_CONFIG")
        .envs(env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn indaba");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = std::thread::spawn({
        let log = log.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().expect("lock").push(line);
            }
        }
    });
    let text = || log.lock().expect("lock").join("\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            reader.join().expect("log reader");
            return (status, text());
        }
        if text().contains("listening on") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("indaba started on a damaged journal:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts on the damaged journal and checks the refusal: a failed exit, an ERROR that names
/// the file, `offset` and `stake`, and the journal exactly as it was.
fn assert_refused(crashed: &Crashed, offset: usize, stake: &str) {
    assert_refused_saying(
        crashed,
        &[
            format!("offset {offset}"),
            stake.to_owned(),
            "--accept-journal-loss".to_owned(),
        ],
    );
}

/// Starts on the journal and checks the refusal: a failed exit, an ERROR that names the file
/// and says each of `needed`, and the journal exactly as it was.
fn assert_refused_saying(crashed: &Crashed, needed: &[String]) {
    let before = crashed.journal();
    let (status, log) = refused_start(crashed.dir.path());
    assert!(!status.success(), "{status}: {log}");
    let error = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{log}"));
    let path = crashed.journal_path().display().to_string();
    for needed in std::iter::once(&path).chain(needed) {
        assert!(error.contains(needed.as_str()), "no `{needed}` in: {error}");
    }
    assert!(
        crashed.journal() == before,
        "the refused start changed the journal"
    );
}

/// Every acknowledged message is readable with its text, except those in `lost` (ids the
/// daemon reported lost), which are gone.
fn verify(d: &Daemon, crashed: &Crashed, lost: &[std::ops::Range<u64>]) {
    for (id, text) in &crashed.acked {
        let (status, body) = d.get(READER, &format!("/api/v1/messaging/messages/{id}/"));
        if lost.iter().any(|r| r.contains(id)) {
            assert_eq!(status, 404, "message {id} was reported lost: {body}");
        } else {
            assert_eq!(status, 200, "acknowledged message {id} lost: {body}");
            assert_eq!(body["text"], text.as_str());
        }
    }
}

/// New messages over each way in, and new conversations, all get ids above every one given
/// before the crash. Each sender's conversation is found again, or made again if its creation
/// was lost: then under a new id.
fn assert_new_ids_are_above(d: &Daemon, crashed: &Crashed) {
    let newest = *crashed.conversations.iter().max().expect("conversations");
    let acked: Acked = Arc::default();
    for (i, via) in [Via::Rest, Via::Service, Via::WebSocket]
        .into_iter()
        .enumerate()
    {
        let user = i as u64 + 1;
        let conversation = d.conversation(user, READER);
        assert!(
            conversation == crashed.conversations[i] || conversation > newest,
            "conversation id {conversation} again"
        );
        send(d, via, user, conversation, Some(3), &acked);
    }
    let max = crashed.max_acked();
    for (id, text) in acked.lock().expect("lock").iter() {
        assert!(
            *id > max,
            "new message `{text}` got id {id}, not above {max}"
        );
    }
    let conversation = d.conversation(7, 8);
    assert!(
        conversation > newest,
        "conversation id {conversation} again"
    );
}

/// The moved-aside journal: one `indaba.journal.damaged-*` file, byte for byte the journal
/// as it was.
fn assert_moved_aside(crashed: &Crashed, damaged: &[u8]) -> PathBuf {
    let aside: Vec<PathBuf> = std::fs::read_dir(crashed.dir.path())
        .expect("read data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("indaba.journal.damaged-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(std::fs::read(&aside[0]).expect("read") == damaged);
    aside[0].clone()
}

/// The log's ERROR line naming `needle`.
fn error_line(d: &Daemon, needle: &str) -> String {
    let log = d.log_text();
    log.lines()
        .find(|l| l.contains("ERROR") && l.contains(needle))
        .unwrap_or_else(|| panic!("no ERROR line with `{needle}`:\n{log}"))
        .to_owned()
}

#[test]
fn a_torn_last_write_is_recovered_quietly_with_every_acknowledged_message() {
    let crashed = crash_under_load();
    let mut journal = crashed.journal();
    let records = walk(&journal);
    let last = *records.last().expect("records in the journal");
    // What a crash during the next write leaves: its front (marker, length, seq) and part of
    // its payload, never synced, so never acknowledged.
    let mut torn = journal[last.offset..last.end()].to_vec();
    let seq_at = last.head - 24;
    torn[seq_at..seq_at + 8].copy_from_slice(&(last.seq + 1).to_le_bytes());
    torn.truncate(last.head + last.len / 2);
    let end = last.end();
    if journal.len() < end + torn.len() {
        journal.resize(end + torn.len(), 0);
    }
    journal[end..end + torn.len()].copy_from_slice(&torn);
    crashed.write_journal(&journal);

    let d = Daemon::start_with(crashed.dir.path(), options());
    verify(&d, &crashed, &[]);
    assert_new_ids_are_above(&d, &crashed);
    let log = d.log_text();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.is_empty(),
        "a torn write is no reason to warn: {loud:?}"
    );
    assert!(log.contains("journal replayed"), "{log}");
    // Said once, at INFO, with where the torn record starts.
    let torn = format!("offset={}", last.end());
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("cut short") && l.contains(&torn)),
        "{log}"
    );
}

#[test]
fn a_changed_header_byte_stops_the_start_until_the_loss_is_accepted() {
    let crashed = crash_under_load();
    let journal = crashed.journal();
    let records = walk(&journal);
    assert!(!records.is_empty(), "records in the journal");
    let stake = format!("{} records", records.len());
    // The journal id, the key, the header's check (format 3) and the zeros after it.
    for at in [20, 40, 60, 3000] {
        let mut damaged = journal.clone();
        damaged[at] ^= 0x10;
        crashed.write_journal(&damaged);
        assert_refused(&crashed, if at < 72 { 0 } else { at }, &stake);
    }

    // The key itself damaged: nothing in the file can be checked, so nothing is replayed.
    let mut damaged = journal.clone();
    damaged[40] ^= 0x10;
    crashed.write_journal(&damaged);
    let d = accept_loss(crashed.dir.path());
    let aside = assert_moved_aside(&crashed, &damaged);
    let error = error_line(&d, &aside.display().to_string());
    assert!(error.contains(&stake), "{error}");
    let lost: Vec<_> = records.iter().map(|r| r.message_ids(&journal)).collect();
    verify(&d, &crashed, &lost);
    assert_new_ids_are_above(&d, &crashed);

    // The next start is an ordinary one, with a journal of its own.
    d.stop();
    let d = Daemon::start_with(crashed.dir.path(), options());
    assert_new_ids_are_above(&d, &crashed);
}

#[test]
fn a_damaged_record_with_whole_records_after_it_stops_the_start_until_the_loss_is_accepted() {
    let crashed = crash_under_load();
    let journal = crashed.journal();
    let records = walk(&journal);
    assert!(
        records.len() >= 3,
        "too few records to damage one in the middle: {records:?}"
    );
    let k = records.len() / 2;
    let hit = records[k];
    // The last byte of its tag.
    let mut damaged = journal.clone();
    damaged[hit.offset + hit.head - 1] ^= 0x01;
    crashed.write_journal(&damaged);
    let after = records.len() - k - 1;
    assert_refused(&crashed, hit.offset, &format!("{after} records"));
    // Refused again at the next try: nothing was applied or changed.
    assert_refused(&crashed, hit.offset, &format!("{after} records"));

    let d = accept_loss(crashed.dir.path());
    let aside = assert_moved_aside(&crashed, &damaged);
    let error = error_line(&d, &aside.display().to_string());
    assert!(error.contains(&format!("offset {}", hit.offset)), "{error}");
    // The records before the damage are replayed; the damaged one and those after it are lost.
    let lost: Vec<_> = records[k..]
        .iter()
        .map(|r| r.message_ids(&journal))
        .collect();
    let (first, last) = (lost[0].start, lost[lost.len() - 1].end - 1);
    assert!(
        error.contains(&format!("message ids {first}..={last}")),
        "{error}"
    );
    verify(&d, &crashed, &lost);
    assert_new_ids_are_above(&d, &crashed);
}

/// Journal formats 1 and 2 were written by development builds only, and this build no longer
/// reads them. Such a build killed under load leaves acknowledged messages in its journal
/// alone: the start must stop, with an error naming the file, and leave the file as it was —
/// neither replay a format this build no longer reads, nor empty it.
#[test]
fn a_development_format_journal_holding_records_stops_the_start_and_is_kept() {
    let crashed = crash_under_load();
    let journal = crashed.journal();
    let records = walk(&journal);
    assert!(!records.is_empty(), "nothing journaled");
    // The same batches as format 2 wrote them: a header without its tag; records without the
    // marker, whose payloads had no queue bound (the 8 bytes after the message ids), tagged
    // under the header's key.
    let mut old = journal[..RECORDS_START].to_vec();
    old[8..12].copy_from_slice(&2u32.to_le_bytes());
    old[56..72].fill(0);
    let key = &journal[24..56];
    for record in &records {
        let payload = &journal[record.offset + record.head..record.end()];
        let payload = [&payload[..24], &payload[32..]].concat();
        let mut head = Vec::new();
        head.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
        head.extend_from_slice(&record.seq.to_le_bytes());
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(&head);
        mac.update(&payload);
        head.extend_from_slice(&mac.finalize().into_bytes()[..16]);
        old.extend_from_slice(&head);
        old.extend_from_slice(&payload);
    }
    crashed.write_journal(&old);
    for _ in 0..2 {
        assert_refused_saying(
            &crashed,
            &[
                "journal format 2".to_owned(),
                "move the journal away".to_owned(),
            ],
        );
    }
    assert!(
        crashed.journal() == old,
        "the refused starts changed the journal"
    );
}

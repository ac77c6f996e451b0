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
    let record: indaba::model::MessageRecord =
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
        assert_eq!(status, 200, "history page {path}: {page}\n{}", d.log_text());
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

// ---------------------------------------------------------------------------------------------
// A full disk

/// A tmpfs of its own, mounted on a temp dir and unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) when not root: only root may mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .expect("effective uid");
        if euid != "0" {
            eprintln!("skipped: mounting a tmpfs for a full disk needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            mounted.success(),
            "mount -t tmpfs failed as root (a container without CAP_SYS_ADMIN?)"
        );
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free byte, in a file of its own.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join("filler")).expect("filler");
        let chunk = vec![0x5a_u8; 64 << 10];
        loop {
            if let Err(e) = file.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, not {e}");
                break;
            }
        }
        // The last pages a partial write left free.
        for _ in 0..64 {
            let _ = file.write_all(&[0x5a]);
        }
    }

    /// Gives the space back.
    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// What the daemon answered to sends.
#[derive(Default)]
struct Sends {
    /// (id, text) of each 201, in order.
    acknowledged: Vec<(u64, String)>,
    /// Texts refused with 503 `storage_unavailable`.
    refused: Vec<String>,
}

impl Sends {
    /// Sends `text`; anything but a 201 or a 503 `storage_unavailable` fails the test.
    fn send(&mut self, d: &Daemon, conversation: u64, text: String) -> bool {
        let (status, body) = d.post(
            1,
            MSGS,
            &json!({"conversation": conversation, "text": text}),
        );
        match status {
            201 => {
                self.acknowledged
                    .push((body["id"].as_u64().expect("id"), text));
                true
            }
            503 => {
                assert_eq!(body["error"], "storage_unavailable", "{body}");
                self.refused.push(text);
                false
            }
            _ => panic!("send answered {status}: {body}"),
        }
    }

    /// Sends until one is refused (the writer met the full disk), for at most `within`.
    fn until_refused(&mut self, d: &Daemon, conversation: u64, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        let mut i = 0;
        while self.send(d, conversation, format!("sent on a full disk {i}")) {
            assert!(
                std::time::Instant::now() < deadline,
                "no send was refused on a full disk"
            );
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends until one is acknowledged again, for at most `within`.
    fn until_acknowledged(&mut self, d: &Daemon, conversation: u64, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        let mut i = 0;
        while !self.send(d, conversation, format!("sent once space is back {i}")) {
            assert!(
                std::time::Instant::now() < deadline,
                "writes never came back after space was freed"
            );
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every acknowledged message is in the history with its text, no refused one is, and
    /// ids grew in the order they were acknowledged.
    fn check(&self, d: &Daemon, conversation: u64) {
        let mut texts = std::collections::BTreeMap::new();
        for id in history_ids(d, 1, conversation) {
            let (status, message) = d.get(1, &format!("{MSGS}{id}/"));
            assert_eq!(status, 200, "{message}");
            texts.insert(id, message["text"].as_str().expect("text").to_owned());
        }
        for (id, text) in &self.acknowledged {
            assert_eq!(texts.get(id), Some(text), "acknowledged message {id} lost");
        }
        for text in &self.refused {
            assert!(
                !texts.values().any(|t| t == text),
                "refused message {text:?} was stored"
            );
        }
        let ids: Vec<u64> = self.acknowledged.iter().map(|(id, _)| *id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids not increasing: {ids:?}"
        );
    }
}

/// Health, as (status, body).
fn health(d: &Daemon) -> (u16, Value) {
    common::split(d.http.get(d.url("/health")).send().expect("GET /health"))
}

/// A daemon with `env` on a data dir inside a tmpfs of its own, with a conversation of users 1
/// and 2 and 20 messages in it.
struct FullDisk {
    tmpfs: Tmpfs,
    data: std::path::PathBuf,
    env: Vec<(&'static str, &'static str)>,
    d: Daemon,
    conversation: u64,
    sends: Sends,
}

impl FullDisk {
    /// `None` when not root (see [`Tmpfs::mount`]).
    fn start(env: &[(&'static str, &'static str)]) -> Option<FullDisk> {
        let tmpfs = Tmpfs::mount("24m")?;
        let data = tmpfs.path().join("data");
        let d = Daemon::start_with(&data, options(env));
        let conversation = d.conversation(1, 2);
        let mut sends = Sends::default();
        for i in 0..20 {
            assert!(sends.send(&d, conversation, format!("before {i}")));
        }
        Some(FullDisk {
            tmpfs,
            data,
            env: env.to_vec(),
            d,
            conversation,
            sends,
        })
    }

    /// Fills the disk and sends until a send is refused.
    fn fill(&mut self) {
        self.tmpfs.fill();
        self.sends
            .until_refused(&self.d, self.conversation, Duration::from_secs(30));
    }

    /// Refused writes, then recovery (see [`refuse_then_recover`]).
    fn recover(&mut self) {
        refuse_then_recover(&self.tmpfs, &self.d, self.conversation, &mut self.sends);
    }

    /// Stops the daemon (it must exit with `code`), frees the disk, starts it again and checks
    /// every message; returns the log of the stopped daemon.
    fn restart(self, code: i32) -> String {
        let FullDisk {
            tmpfs,
            data,
            env,
            mut d,
            conversation,
            sends,
        } = self;
        d.signal("TERM");
        let status = d.wait_exit(Duration::from_secs(30));
        let log = d.log_text();
        assert_eq!(status.code(), Some(code), "{status:?}\n{log}");
        if tmpfs.path().join("filler").exists() {
            tmpfs.free();
        }
        let d = Daemon::start_with(&data, options(&env));
        sends.check(&d, conversation);
        log
    }
}

/// Once a send was refused on the full disk: sends refused with 503 `storage_unavailable`,
/// reads answered from what is durable, `/health` 503; once space is back, writes resume by
/// themselves.
fn refuse_then_recover(tmpfs: &Tmpfs, d: &Daemon, conversation: u64, sends: &mut Sends) {
    // Refused again at once, while the disk stays full.
    assert!(!sends.send(d, conversation, "still full".to_owned()));
    sends.check(d, conversation);
    let (status, body) = health(d);
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("unavailable")),
        "{body}"
    );

    tmpfs.free();
    sends.until_acknowledged(d, conversation, Duration::from_secs(30));
    for i in 0..5 {
        assert!(sends.send(d, conversation, format!("after recovery {i}")));
    }
    assert_eq!(health(d).0, 200);
    sends.check(d, conversation);
}

#[test]
fn a_full_disk_under_the_journal_refuses_writes_keeps_reads_and_recovers() {
    // No checkpoint for a while: the journal grows with each batch, so its first append past
    // the space it has hits ENOSPC (and so does the checkpoint meant to cover it).
    let Some(mut disk) = FullDisk::start(&[("INDABA_STORAGE__CHECKPOINT_INTERVAL", "60s")]) else {
        return;
    };
    disk.fill();
    disk.recover();
    let log = disk.restart(0);
    assert!(log.contains("journal write failed"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
}

#[test]
fn a_full_disk_at_a_checkpoint_refuses_writes_keeps_reads_and_recovers() {
    let Some(mut disk) = FullDisk::start(&[("INDABA_STORAGE__CHECKPOINT_INTERVAL", "1s")]) else {
        return;
    };
    // Grow the journal to about 1 MiB (where the next batch is a checkpoint), so that once the
    // disk is full its appends still land in space it has: only checkpoints hit ENOSPC.
    let bulky = "x".repeat(8000);
    for i in 0..140 {
        let text = format!("bulky {i} {bulky}");
        assert!(disk.sends.send(&disk.d, disk.conversation, text));
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        disk.sends
            .send(&disk.d, disk.conversation, "a checkpoint".to_owned())
    );
    // Journaled on the full disk, then refused at the next checkpoint.
    let before = disk.sends.acknowledged.len();
    disk.fill();
    assert!(
        disk.sends.acknowledged.len() > before,
        "nothing was journaled while the disk was full"
    );
    disk.recover();
    let log = disk.restart(0);
    assert!(!log.contains("journal write failed"), "{log}");
}

#[test]
fn a_full_disk_without_the_journal_refuses_writes_keeps_reads_and_recovers() {
    let Some(mut disk) = FullDisk::start(&[("INDABA_STORAGE__JOURNAL", "false")]) else {
        return;
    };
    disk.fill();
    disk.recover();
    disk.restart(0);
}

#[test]
fn a_stop_while_the_disk_is_full_exits_1_and_keeps_every_acknowledged_message() {
    let Some(mut disk) = FullDisk::start(&[("INDABA_STORAGE__CHECKPOINT_INTERVAL", "60s")]) else {
        return;
    };
    disk.fill();
    let log = disk.restart(1);
    assert!(!log.contains("stopped cleanly"), "{log}");
    assert!(log.contains("final checkpoint"), "{log}");
}

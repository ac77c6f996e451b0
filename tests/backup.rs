//! `indaba backup DEST` against the real binary: online through the admin socket while messages
//! keep arriving, offline from a stopped daemon's data dir, and its errors. A backup counts only
//! if a second daemon, started on a directory holding nothing but the backup (and the same
//! secrets), serves the messages it should hold.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, Options, run_cli};
use serde_json::{Value, json};

/// Runs `indaba backup DEST --data-dir DIR`; (exit code, stdout, stderr).
fn backup(data_dir: &Path, dest: &Path) -> (i32, String, String) {
    let data = data_dir.display().to_string();
    let dest = dest.display().to_string();
    run_cli(&["backup", &dest, "--data-dir", &data], &[])
}

/// The value of a `key: value` line of the backup report.
fn report_field<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` in the report:\n{stdout}"))
}

/// A fresh data dir holding only `backup` as the data file, plus the original's dev-mode
/// secrets (the backup is sealed with the same key, and tokens use the same secret).
fn restore(backup: &Path, original: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::copy(backup, dir.path().join("indaba.redb")).expect("copy backup");
    for secret in ["encryption.key", "jwt_secret"] {
        std::fs::copy(original.join(secret), dir.path().join(secret)).expect("copy secret");
    }
    dir
}

/// Sends `text` as user 1 into `conversation`; the message JSON once acknowledged.
fn send(daemon: &Daemon, conversation: u64, text: &str) -> Option<Value> {
    let resp = daemon
        .http
        .post(daemon.url("/api/v1/messaging/messages/"))
        .bearer_auth(daemon.token(1))
        .json(&json!({"conversation": conversation, "text": text}))
        .send()
        .ok()?;
    match common::split(resp) {
        (201, body) => Some(body),
        _ => None,
    }
}

/// The message `id` as user 2 sees it, or the status code.
fn message(daemon: &Daemon, id: u64) -> Result<Value, u16> {
    match daemon.get(2, &format!("/api/v1/messaging/messages/{id}/")) {
        (200, body) => Ok(body),
        (status, _) => Err(status),
    }
}

fn unlimited_sends() -> Options {
    Options::env(&[
        ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
        ("INDABA_LIMITS__MESSAGES_PER_SECOND", "100000"),
    ])
}

#[test]
fn online_backup_while_sending_holds_every_message_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let daemon = Daemon::start_with(&data, unlimited_sends());
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket)
        .expect("admin.sock exists while running")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin.sock has mode {mode:o}");

    let conv = daemon.conversation(1, 2);
    let daemon = Arc::new(daemon);
    // (id, text) of every acknowledged message, in acknowledgement order.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    for i in 0..100 {
        let text = format!("before {i}");
        let sent = send(&daemon, conv, &text).expect("send before the backup");
        let id = sent["id"].as_u64().expect("id");
        acked.lock().expect("lock").push((id, text));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let (daemon, acked, stop) = (daemon.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 5000 {
                    let text = format!("during {t}-{i}");
                    if let Some(sent) = send(&daemon, conv, &text) {
                        let id = sent["id"].as_u64().expect("id");
                        acked.lock().expect("lock").push((id, text));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    let before = acked.lock().expect("lock").clone();
    let dest = dir.path().join("nightly.redb");
    let (code, stdout, stderr) = backup(&data, &dest);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().expect("sender");
    }
    assert_eq!(code, 0, "{stderr}");
    assert!(
        report_field(&stdout, "source").starts_with("running daemon"),
        "{stdout}"
    );
    let size = std::fs::metadata(&dest).expect("DEST written").len();
    assert_eq!(report_field(&stdout, "bytes"), size.to_string(), "{stdout}");
    assert_eq!(report_field(&stdout, "tables"), "14", "{stdout}");
    assert!(stdout.contains("  msgid_message "), "{stdout}");
    let mode = std::fs::metadata(&dest).expect("dest").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the backup has mode {mode:o}");
    assert!(!dir.path().join("nightly.redb.partial").exists());
    let all = acked.lock().expect("lock").clone();
    assert!(
        all.len() > before.len(),
        "no message was sent during the backup"
    );

    let restored = restore(&dest, &data);
    let second = Daemon::start(restored.path());
    for (id, text) in &before {
        let found = message(&second, *id).unwrap_or_else(|status| {
            panic!("message {id}, acknowledged before the backup: {status}")
        });
        assert_eq!(found["text"], text.as_str(), "message {id}");
    }
    // One snapshot: ids grow in commit order, so the backup holds every acknowledged message
    // up to the newest one it holds, and none is missing in between.
    let (status, page) = second.get(
        2,
        &format!("/api/v1/messaging/messages/?conversation={conv}&page_size=1"),
    );
    assert_eq!(status, 200, "{page}");
    let restored_count = page["count"].as_u64().expect("count");
    let mut ids: Vec<u64> = all.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let newest = ids[usize::try_from(restored_count).expect("count") - 1];
    assert!(
        message(&second, newest).is_ok(),
        "the backup's newest acknowledged message {newest} is missing"
    );
    for id in ids.iter().filter(|id| **id > newest) {
        assert_eq!(
            message(&second, *id).err(),
            Some(404),
            "message {id} is newer than the snapshot"
        );
    }
    assert!(second.stop().success());

    let daemon = Arc::into_inner(daemon).expect("sole owner");
    assert!(daemon.stop().success());
    assert!(
        !socket.exists(),
        "admin.sock left behind after a clean stop"
    );
}

#[test]
fn backup_of_a_stopped_daemon_reads_the_data_file_and_leaves_it_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data);
    let conv = daemon.conversation(1, 2);
    let sent: Vec<Value> = (0..20)
        .map(|i| daemon.send(1, conv, &format!("offline {i}")))
        .collect();
    assert!(daemon.stop().success());
    let original = std::fs::read(data.join("indaba.redb")).expect("data file");

    let dest = dir.path().join("offline.redb");
    let (code, stdout, stderr) = backup(&data, &dest);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report_field(&stdout, "source"),
        format!("data file {}", data.join("indaba.redb").display()),
        "{stdout}"
    );
    assert!(stdout.contains("  msgid_message 20\n"), "{stdout}");
    assert_eq!(
        std::fs::read(data.join("indaba.redb")).expect("data file"),
        original,
        "the backup modified the data file"
    );

    let restored = restore(&dest, &data);
    let second = Daemon::start(restored.path());
    for body in &sent {
        let id = body["id"].as_u64().expect("id");
        let found = message(&second, id).unwrap_or_else(|s| panic!("message {id}: {s}"));
        assert_eq!(found["text"], body["text"]);
    }
    // The restored daemon goes on where the original stopped.
    let next = second.send(2, conv, "after restore");
    assert!(next["id"].as_u64() > sent[19]["id"].as_u64());
    assert!(second.stop().success());
}

#[test]
fn an_unwritable_destination_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data);

    let missing_dir = dir.path().join("no-such-dir").join("b.redb");
    let (code, stdout, stderr) = backup(&data, &missing_dir);
    assert_eq!(code, 1, "{stdout}");
    let partial = format!("{}.partial", missing_dir.display());
    assert!(
        stderr.contains(&format!("cannot write the backup to {partial}")),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");

    let (code, _, stderr) = backup(&data, dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("is a directory"), "{stderr}");

    // A directory the caller may not write (root may write anywhere, so only when not root).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    if std::fs::write(locked.join("probe"), b"").is_err() {
        let (code, _, stderr) = backup(&data, &locked.join("b.redb"));
        assert_eq!(code, 1);
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }

    // The daemon is untouched and still answers.
    let (status, _) = daemon.get(1, "/health");
    assert_eq!(status, 200);
    assert!(daemon.stop().success());
}

#[test]
fn after_a_crash_the_stale_socket_is_replaced_and_the_offline_copy_refuses_a_dirty_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data);
    let conv = daemon.conversation(1, 2);
    let sent = daemon.send(1, conv, "survives the crash");
    daemon.crash();
    assert!(
        data.join("admin.sock").exists(),
        "kill -9 leaves the socket"
    );

    // Nobody answers on the socket, and the file was not closed cleanly: refused, not guessed.
    let dest = dir.path().join("b.redb");
    let (code, _, stderr) = backup(&data, &dest);
    assert_eq!(code, 1);
    assert!(stderr.contains("not closed cleanly"), "{stderr}");
    assert!(!dest.exists() && !dir.path().join("b.redb.partial").exists());

    let daemon = Daemon::start(&data);
    assert!(
        daemon.log_text().contains("replaced a stale admin socket"),
        "{}",
        daemon.log_text()
    );
    let (code, stdout, stderr) = backup(&data, &dest);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        report_field(&stdout, "source").starts_with("running daemon"),
        "{stdout}"
    );
    let restored = restore(&dest, &data);
    assert!(daemon.stop().success());
    let second = Daemon::start(restored.path());
    let id = sent["id"].as_u64().expect("id");
    assert_eq!(
        message(&second, id).map(|m| m["text"].clone()),
        Ok(json!("survives the crash"))
    );
}

#[test]
fn the_admin_socket_answers_only_its_protocol() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data);
    let ask = |request: &[u8]| {
        let mut stream =
            std::os::unix::net::UnixStream::connect(data.join("admin.sock")).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.write_all(request).expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        answer
    };
    let answer = ask(b"restore everything\n");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "error unknown_request the requests are `backup` and `api <METHOD> <PATH>`\n"
    );
    let answer = ask(&[b'x'; 200]);
    assert!(
        answer.starts_with(b"error unknown_request "),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The raw protocol: a status line with the length, then exactly that many bytes of redb.
    let answer = ask(b"backup\n");
    let newline = answer
        .iter()
        .position(|b| *b == b'\n')
        .expect("status line");
    let status = std::str::from_utf8(&answer[..newline]).expect("utf-8");
    let len: usize = status
        .strip_prefix("ok ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("status {status:?}"));
    let body = &answer[newline + 1..];
    assert_eq!(body.len(), len);
    let file: PathBuf = dir.path().join("raw.redb");
    std::fs::write(&file, body).expect("write");
    let db = redb::Database::open(&file).expect("a redb file");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let meta = txn
        .open_table(indaba::store::tables::META)
        .expect("name_value");
    assert_eq!(
        meta.get(indaba::store::tables::meta::SCHEMA_VERSION)
            .expect("get")
            .map(|v| v.value()),
        Some(indaba::store::tables::SCHEMA_VERSION)
    );
    assert!(daemon.stop().success());
}

#[test]
fn admin_clients_that_stall_do_not_hold_up_a_stop() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(&data);
    let socket = data.join("admin.sock");
    // One says nothing; one asks for a backup (1 MiB, more than the socket buffers) and never
    // reads it, so the daemon's stream is blocked on it.
    let _silent = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let mut greedy = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    greedy.write_all(b"backup\n").expect("write");
    std::thread::sleep(Duration::from_millis(500));

    let started = std::time::Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(!socket.exists(), "admin.sock left behind");
}

//! At-rest encryption: what users write never reaches the disk in the clear, and keys are
//! checked and rotated as documented.

mod common;

use common::{Daemon, Options, config_file, key_file};
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn marker_text_metadata_and_subject_never_reach_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nonce: u64 = std::process::id() as u64 * 7919 + indaba::time::now_ms();
    let text_marker = format!("TEXTMARKER{nonce}");
    let meta_marker = format!("METAMARKER{nonce}");
    let subject_marker = format!("SUBJECTMARKER{nonce}");

    let daemon = Daemon::start(dir.path());
    let (status, conv) = daemon.post(
        1,
        "/api/v1/messaging/conversations/",
        &json!({"participants": [1, 2], "subject": subject_marker}),
    );
    assert_eq!(status, 201, "{conv}");
    let conv_id = conv["id"].as_u64().expect("id");
    for _ in 0..20 {
        let (status, msg) = daemon.post(
            1,
            "/api/v1/messaging/messages/",
            &json!({"conversation": conv_id, "text": text_marker, "metadata": {"note": meta_marker}}),
        );
        assert_eq!(status, 201, "{msg}");
    }
    // The markers are really stored: the API gives them back.
    let (_, page) = daemon.get(
        2,
        &format!("/api/v1/messaging/messages/?conversation={conv_id}"),
    );
    assert_eq!(page["results"][0]["text"], text_marker.as_str());
    assert_eq!(page["results"][0]["metadata"]["note"], meta_marker.as_str());
    let (_, conv) = daemon.get(2, &format!("/api/v1/messaging/conversations/{conv_id}/"));
    assert_eq!(conv["subject"], subject_marker.as_str());
    assert!(daemon.stop().success());

    let raw = std::fs::read(dir.path().join("indaba.redb")).expect("read data file");
    for marker in [&text_marker, &meta_marker, &subject_marker] {
        assert!(!contains(&raw, marker), "{marker} found in the clear");
    }
    // The check itself works: the client id is stored in the clear on purpose (it is an
    // index key), so it must be found.
    let daemon = Daemon::start(dir.path());
    let client_marker = format!("CLIENTID{nonce}");
    let (status, _) = daemon.post(
        1,
        "/api/v1/messaging/messages/",
        &json!({"conversation": conv_id, "text": "x", "client_id": client_marker}),
    );
    assert_eq!(status, 201);
    assert!(daemon.stop().success());
    let raw = std::fs::read(dir.path().join("indaba.redb")).expect("read data file");
    assert!(
        contains(&raw, &client_marker),
        "scan cannot see plain bytes"
    );
}

#[test]
fn wrong_key_is_refused_and_rotation_keeps_old_data_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let old_key = key_file(dir.path(), "old.key");
    let (config, secret) = config_file(dir.path(), &old_key, "");
    let options = |config: &std::path::Path| Options {
        config: Some(config.to_owned()),
        secret: Some(secret.clone()),
        env: vec![],
    };
    let daemon = Daemon::start_with(&data, options(&config));
    let conv = daemon.conversation(1, 2);
    let first = daemon.send(1, conv, "sealed with the old key");
    assert!(daemon.stop().success());

    // A different key: refused at start, with a message that says what is wrong.
    let new_key = key_file(dir.path(), "new.key");
    let (config, _) = config_file(dir.path(), &new_key, "");
    let err = Daemon::try_start(&data, options(&config))
        .err()
        .expect("wrong key must be refused");
    assert!(err.contains("encryption key does not match"), "{err}");

    // The new key as current, the old one retired: old data opens, new data is written.
    let (config, _) = config_file(
        dir.path(),
        &new_key,
        &format!("old_encryption_key_files = [\"{}\"]", old_key.display()),
    );
    let daemon = Daemon::start_with(&data, options(&config));
    let (status, msg) = daemon.get(2, &format!("/api/v1/messaging/messages/{}/", first["id"]));
    assert_eq!(status, 200);
    assert_eq!(msg["text"], "sealed with the old key");
    let second = daemon.send(2, conv, "sealed with the new key");
    let (_, msg) = daemon.get(1, &format!("/api/v1/messaging/messages/{}/", second["id"]));
    assert_eq!(msg["text"], "sealed with the new key");
    assert!(daemon.stop().success());

    // The key can also come from the environment instead of a file.
    let hex = std::fs::read_to_string(&new_key).expect("key");
    let config = dir.path().join("env.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nold_encryption_key_files = [\"{}\"]\n[auth]\njwt_secret = \"{secret}\"\n",
            old_key.display()
        ),
    )
    .expect("write");
    let mut opts = options(&config);
    opts.env = vec![("INDABA_STORAGE__ENCRYPTION_KEY".into(), hex.trim().into())];
    let daemon = Daemon::start_with(&data, opts);
    let (status, _) = daemon.get(1, &format!("/api/v1/messaging/messages/{}/", second["id"]));
    assert_eq!(status, 200);
}

/// Senders' opened data keys are bounded (`storage.data_key_cache`, docs/STORAGE.md): with room
/// for one, each message of another sender evicts the last one's key. Every message still
/// reads back, before and after a restart, the evicted senders' later messages too.
#[test]
fn messages_of_senders_whose_keys_were_evicted_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options::env(&[("INDABA_STORAGE__DATA_KEY_CACHE", "1")]);
    let daemon = Daemon::start_with(dir.path(), options.clone());
    let ours = daemon.conversation(1, 2);
    let theirs = daemon.conversation(3, 4);
    let mut sent = Vec::new();
    for round in 0..3 {
        for (sender, conversation) in [(1, ours), (2, ours), (3, theirs), (1, ours)] {
            let text = format!("round {round} from {sender}");
            daemon.send(sender, conversation, &text);
            sent.push((conversation, text));
        }
    }
    let history = |daemon: &Daemon, reader: u64, conversation: u64| -> Vec<String> {
        let path = format!("/api/v1/messaging/messages/?conversation={conversation}&limit=200");
        let (status, page) = daemon.get(reader, &path);
        assert_eq!(status, 200, "{page}");
        page["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|m| m["text"].as_str().expect("text").to_owned())
            .collect()
    };
    let expected = |conversation: u64| -> Vec<String> {
        sent.iter()
            .filter(|(c, _)| *c == conversation)
            .map(|(_, text)| text.clone())
            .collect()
    };
    assert_eq!(history(&daemon, 2, ours), expected(ours));
    assert_eq!(history(&daemon, 4, theirs), expected(theirs));
    assert!(daemon.stop().success());

    let daemon = Daemon::start_with(dir.path(), options);
    assert_eq!(history(&daemon, 1, ours), expected(ours));
    assert_eq!(history(&daemon, 3, theirs), expected(theirs));
    assert!(daemon.stop().success());
}

//! Start, stop, restart and refuse to start: the daemon's life as an operator sees it.

mod common;

use std::time::Duration;

use common::{Daemon, Options, config_file, key_file, run_cli};
use serde_json::json;

#[test]
fn restart_keeps_data_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path());
    let (status, health) = daemon.get(1, "/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], indaba::VERSION);
    let conv = daemon.conversation(1, 2);
    let sent = daemon.send(1, conv, "persist me");
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let daemon = Daemon::start(dir.path());
    let (status, page) = daemon.get(
        2,
        &format!("/api/v1/messaging/messages/?conversation={conv}"),
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 1);
    assert_eq!(page["results"][0]["id"], sent["id"]);
    assert_eq!(page["results"][0]["text"], "persist me");
    // Ids keep increasing across restarts.
    let next = daemon.send(2, conv, "after restart");
    assert!(next["id"].as_u64() > sent["id"].as_u64());
    assert!(daemon.stop().success());
}

#[test]
fn api_health_alias_and_dev_mode_secrets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path());
    let (status, body) = common::split(
        daemon
            .http
            .get(daemon.url("/api/health/"))
            .send()
            .expect("GET"),
    );
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    for name in ["jwt_secret", "encryption.key", "indaba.redb"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .expect(name)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
    }
    let secret = std::fs::read(dir.path().join("jwt_secret")).expect("secret");
    assert!(daemon.stop().success());
    // Reused, not regenerated, on the next start.
    let daemon = Daemon::start(dir.path());
    assert_eq!(
        std::fs::read(dir.path().join("jwt_secret")).expect("secret"),
        secret
    );
    assert!(daemon.stop().success());
}

#[test]
fn first_log_lines_say_where_and_how() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path());
    let log = daemon.log_text();
    assert!(log.contains("listening on http://127.0.0.1:"), "{log}");
    assert!(log.contains(&dir.path().display().to_string()), "{log}");
    assert!(log.contains("indaba token --user-id"), "{log}");
}

#[test]
fn second_daemon_on_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Daemon::start(dir.path());
    let err = Daemon::try_start(dir.path(), Options::default())
        .err()
        .expect("second start must fail");
    assert!(err.contains("already in use"), "{err}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = dir.path().display().to_string();
    let (code, _, stderr) = run_cli(&["--listen", &addr, "--data-dir", &data], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn corrupt_data_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("indaba.redb");
    let garbage: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, &garbage).expect("write");
    let data = dir.path().display().to_string();
    let (code, _, stderr) = run_cli(&["--listen", "127.0.0.1:0", "--data-dir", &data], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot open data file"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        garbage,
        "file was modified"
    );
}

#[test]
fn data_dir_that_is_not_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let data = file.join("sub").display().to_string();
    let (code, _, stderr) = run_cli(&["--listen", "127.0.0.1:0", "--data-dir", &data], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("data directory"), "{stderr}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Make a valid file, then stamp a future schema version into it.
    let daemon = Daemon::start(dir.path());
    assert!(daemon.stop().success());
    {
        let db = redb::Database::open(dir.path().join("indaba.redb")).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn
                .open_table(indaba::store::tables::META)
                .expect("meta table");
            meta.insert(
                indaba::store::tables::meta::SCHEMA_VERSION,
                indaba::store::tables::SCHEMA_VERSION + 1,
            )
            .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = Daemon::try_start(dir.path(), Options::default())
        .err()
        .expect("must refuse");
    assert!(err.contains("newer than this indaba supports"), "{err}");
}

#[test]
fn config_file_without_secrets_names_the_missing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[server]\nshutdown_timeout = \"5s\"\n").expect("write");
    let cfg = config.display().to_string();
    let data = dir.path().join("data").display().to_string();
    let (code, _, stderr) = run_cli(&["--config", &cfg, "--data-dir", &data], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("storage.encryption_key_file"), "{stderr}");

    let key = key_file(dir.path(), "k");
    std::fs::write(
        &config,
        format!("[storage]\nencryption_key_file = \"{}\"\n", key.display()),
    )
    .expect("write");
    let (code, _, stderr) = run_cli(&["--config", &cfg, "--data-dir", &data], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("auth.jwt_secret"), "{stderr}");
    // Nothing was generated behind the operator's back.
    assert!(!dir.path().join("data").join("jwt_secret").exists());
}

#[test]
fn bad_config_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[limits]\nmax_frame_bytes = \"big\"\n").expect("write");
    let cfg = config.display().to_string();
    let (code, _, stderr) = run_cli(&["check-config", "--config", &cfg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("limits.max_frame_bytes"), "{stderr}");

    let (code, _, stderr) = run_cli(&["check-config"], &[("INDABA_SERVER__LISTEN", "nowhere")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("INDABA_SERVER__LISTEN"), "{stderr}");
}

#[test]
fn world_readable_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "k");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (config, _) = config_file(dir.path(), &key, "");
    let cfg = config.display().to_string();
    let data = dir.path().join("data").display().to_string();
    let (code, _, stderr) = run_cli(&["--config", &cfg, "--data-dir", &data], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn check_config_redacts_secrets_and_keygen_prints_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "k");
    let (config, secret) = config_file(dir.path(), &key, "");
    let cfg = config.display().to_string();
    let (code, stdout, stderr) = run_cli(
        &["check-config", "--config", &cfg],
        &[("INDABA_SERVICE__SHARED_SECRET", "service-secret-abcdefgh")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains(&secret), "{stdout}");
    assert!(!stdout.contains("service-secret-abcdefgh"), "{stdout}");
    assert!(stdout.contains("[limits]"), "{stdout}");

    let (code, stdout, _) = run_cli(&["keygen"], &[]);
    assert_eq!(code, 0);
    let hex = stdout.trim();
    assert_eq!(hex.len(), 64);
    assert!(indaba::crypto::Key::parse(hex).is_some());

    let (code, stdout, _) = run_cli(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(indaba::VERSION), "{stdout}");
}

#[test]
fn token_command_mints_a_working_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path());
    let data = dir.path().display().to_string();
    let (code, stdout, stderr) = run_cli(
        &[
            "token",
            "--user-id",
            "5",
            "--ttl",
            "10m",
            "--data-dir",
            &data,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let resp = daemon
        .http
        .get(daemon.url("/api/v1/messaging/conversations/unread_count/"))
        .bearer_auth(stdout.trim())
        .send()
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    // And a request without a token is refused with the contract's shape.
    let (status, body) = common::split(
        daemon
            .http
            .get(daemon.url("/api/v1/messaging/conversations/"))
            .send()
            .expect("GET"),
    );
    assert_eq!(status, 401);
    assert_eq!(body["error"], "not_authenticated");
}

#[test]
fn sighup_reloads_the_log_level_from_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "k");
    let (config, secret) = config_file(dir.path(), &key, "");
    let original = std::fs::read_to_string(&config).expect("read");
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(config.clone()),
            secret: Some(secret),
            env: vec![],
        },
    );
    // At the default `info`, request logs (debug) do not appear.
    daemon.get(1, "/api/v1/messaging/conversations/");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !daemon.log_text().contains("request"),
        "{}",
        daemon.log_text()
    );

    std::fs::write(&config, format!("{original}\n[log]\nlevel = \"debug\"\n")).expect("write");
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("log level reloaded", Duration::from_secs(5)),
        "{}",
        daemon.log_text()
    );
    daemon.get(1, "/api/v1/messaging/conversations/?token=secret-in-query");
    assert!(
        daemon.wait_for_log("status=200", Duration::from_secs(5)),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(
        !log.contains("secret-in-query"),
        "query string logged: {log}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_stalled_upload_gets_408_and_does_not_hold_up_a_stop() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_LIMITS__BODY_TIMEOUT", "1s")]),
    );
    let head = format!(
        "POST /api/v1/messaging/messages/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        daemon.token(1)
    );
    let mut stream = std::net::TcpStream::connect(daemon.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write");
    let mut response = vec![0u8; 4096];
    let n = stream.read(&mut response).expect("a response, not a hang");
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");

    // Another stalled client while stopping: the stop still completes, cleanly.
    let mut stalled = std::net::TcpStream::connect(daemon.addr).expect("connect");
    stalled.write_all(head.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    assert!(daemon.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Regression (issue 16, defect 4): one connection holding half a request made a graceful stop
/// wait for its whole `shutdown_timeout` and exit 1 (systemd then records a failed stop): hyper
/// waits out its header timeout for a half-sent head, the handler its body timeout for a
/// half-sent body, and a connection that never sent a byte counted as busy. Now each is closed
/// as soon as the stop begins — the half-sent requests with a JSON 503, the silent connection
/// without a word — and the daemon exits 0 long before `shutdown_timeout`.
#[test]
fn a_half_sent_request_does_not_hold_up_a_stop() {
    use std::io::Write;
    // What the stalled client sent, given the daemon (for a token); and the answer it gets.
    let half_head = |_: &Daemon| {
        "POST /api/v1/messaging/messages/ HTTP/1.1\r\nHost: x\r\nContent-Le".to_owned()
    };
    let half_body = |d: &Daemon| {
        format!(
            "POST /api/v1/messaging/messages/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"conv",
            d.token(1)
        )
    };
    let nothing = |_: &Daemon| String::new();
    type Request<'a> = &'a dyn Fn(&Daemon) -> String;
    let cases: [(&str, Request, Option<u16>); 3] = [
        ("half a request head", &half_head, Some(503)),
        ("a whole head and half its body", &half_body, Some(503)),
        ("nothing at all", &nothing, None),
    ];
    for (what, request, answer) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        // Timeouts far longer than the wait below, so only closing the request can end it.
        let mut daemon = Daemon::start_with(
            dir.path(),
            Options::env(&[
                ("INDABA_SERVER__SHUTDOWN_TIMEOUT", "120s"),
                ("INDABA_LIMITS__BODY_TIMEOUT", "120s"),
            ]),
        );
        // A finished request first, so the stop also has an idle keep-alive connection.
        let (status, _) = daemon.get(1, "/health");
        assert_eq!(status, 200);
        let mut stalled = std::net::TcpStream::connect(daemon.addr).expect("connect");
        stalled
            .write_all(request(&daemon).as_bytes())
            .expect("write");
        std::thread::sleep(Duration::from_millis(300));
        daemon.signal("TERM");
        // Well under the 120 s shutdown_timeout (and under hyper's 30 s header timeout).
        let status = daemon.wait_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "{what}: exit {status:?}\n{}",
            daemon.log_text()
        );
        match answer {
            Some(code) => common::read_response(&mut stalled)
                .unwrap_or_else(|| panic!("{what}: no answer"))
                .assert_error(code, "shutting_down"),
            None => assert!(
                common::read_response(&mut stalled).is_none(),
                "{what}: closed without an answer"
            ),
        }
    }
}

#[test]
fn pending_requests_finish_and_data_survives_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_LIMITS__MESSAGES_BURST", "1000000")]),
    );
    let conv = daemon.conversation(1, 2);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let daemon = std::sync::Arc::new(daemon);
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (d, acked) = (daemon.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0..200 {
                    let resp = d
                        .http
                        .post(d.url("/api/v1/messaging/messages/"))
                        .bearer_auth(d.token(1))
                        .json(&json!({"conversation": conv, "text": format!("t{t}-{i}")}))
                        .send();
                    match resp.map(common::split) {
                        Ok((201, body)) => acked.lock().expect("lock").push(body["id"].clone()),
                        // Refused while draining, or the connection closed: not acknowledged.
                        _ => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal("TERM");
    for s in senders {
        s.join().expect("sender");
    }
    let mut daemon = std::sync::Arc::into_inner(daemon).expect("sole owner");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the stop"
    );

    let daemon = Daemon::start(dir.path());
    for id in &acked {
        let (status, _) = daemon.get(2, &format!("/api/v1/messaging/messages/{id}/"));
        assert_eq!(status, 200, "acknowledged message {id} lost");
    }
}

#[test]
fn a_second_stop_signal_exits_at_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_SERVER__SHUTDOWN_TIMEOUT", "30s")]),
    );
    // A client that asks for far more than the socket buffers hold and reads none of it: the
    // response being written keeps the graceful stop waiting (a request whose handler runs is
    // finished, not cut).
    let mut stalled = std::net::TcpStream::connect(daemon.addr).expect("connect");
    let pipelined = "GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
    stalled.write_all(pipelined.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal("TERM");
    assert!(daemon.wait_for_log("draining", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "the first signal drains, it does not exit"
    );
    let started = std::time::Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// What `check-config --config CONFIG` says about `file`, the secret file config key `key`
/// names, holding `secret` with mode 0644: refused naming the key and the fix; at 0600
/// accepted without printing the secret; with the inline secret (`inline_var`) as well,
/// refused naming both. Leaves the file at 0600.
fn check_config_holds_a_secret_file_to_its_rules(
    config: &std::path::Path,
    file: &std::path::Path,
    secret: &str,
    key: &str,
    inline_var: &str,
) {
    use std::os::unix::fs::PermissionsExt;
    let cfg = config.display().to_string();
    // A world-readable secret is refused before anything starts, naming the key and the fix.
    let (code, _, stderr) = run_cli(&["check-config", "--config", &cfg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(key), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");

    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stdout, stderr) = run_cli(&["check-config", "--config", &cfg], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(secret), "{stdout}");

    // Both the inline secret and the file: refused, naming both.
    let (code, _, stderr) = run_cli(
        &["check-config", "--config", &cfg],
        &[(inline_var, "an-inline-secret-0123456789")],
    );
    assert_eq!(code, 2, "{stderr}");
    let inline_key = key.strip_suffix("_file").expect("a *_file key");
    assert!(
        stderr.contains(&format!("either {inline_key} or {key}, not both")),
        "{stderr}"
    );
}

#[test]
fn jwt_secret_file_is_checked_by_check_config_and_used_by_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "k");
    let secret = "secret-from-a-file-0123456789";
    let secret_file = dir.path().join("jwt_secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nencryption_key_file = \"{}\"\n[auth]\njwt_secret_file = \"{}\"\n",
            key.display(),
            secret_file.display()
        ),
    )
    .expect("write config");
    check_config_holds_a_secret_file_to_its_rules(
        &config,
        &secret_file,
        secret,
        "auth.jwt_secret_file",
        "INDABA_AUTH__JWT_SECRET",
    );

    // The daemon verifies tokens signed with the file's secret, without its newline.
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            secret: Some(secret.to_owned()),
            env: vec![],
        },
    );
    let (status, body) = daemon.get(1, "/api/v1/messaging/conversations/");
    assert_eq!(status, 200, "{body}");
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Operator defects of issue 16 (items 10, 11, 17): each test below failed on the code before
// its fix.

/// Runs `indaba ARGS` in `cwd` until it exits or `timeout` passes (then it is killed and the
/// code is -1), so a daemon that starts when it should refuse cannot hang the test.
fn run_in(
    cwd: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (i32, String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(common::BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("INDABA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn indaba");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Every non-empty line of `log` as JSON; panics on a line that is not.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{log}"))
        })
        .collect()
}

/// One request on a fresh connection that closes after the answer: (status, body as JSON).
fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A production-style config (key file, JWT secret) with `extra` TOML appended at the top
/// level of its own sections; returns the file, the JWT secret and the key file.
fn production_config(
    dir: &std::path::Path,
    sections: &str,
) -> (std::path::PathBuf, String, std::path::PathBuf) {
    let key = key_file(dir, "k");
    let (config, secret) = config_file(dir, &key, "");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, format!("{text}{sections}")).expect("write");
    (config, secret, key)
}

#[test]
fn a_log_level_typo_is_refused_by_check_config_and_at_start() {
    // `verbose` and `inf` are valid EnvFilter syntax (a target name): they passed, and the
    // daemon then logged nothing at all.
    for level in ["verbose", "inf", "indaba=loud"] {
        let (code, _, stderr) = run_cli(&["check-config"], &[("INDABA_LOG__LEVEL", level)]);
        assert_eq!(code, 2, "{level}: {stderr}");
        assert!(stderr.contains("log.level"), "{level}: {stderr}");
        assert!(stderr.contains("INDABA_LOG__LEVEL"), "{level}: {stderr}");
    }
    for level in [
        "debug",
        "WARN",
        "off",
        "indaba=debug,hyper=warn",
        "info,indaba::ws=trace",
    ] {
        let (code, _, stderr) = run_cli(&["check-config"], &[("INDABA_LOG__LEVEL", level)]);
        assert_eq!(code, 0, "{level} is a real filter: {stderr}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let (code, _, stderr) = run_in(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", &data],
        &[("INDABA_LOG__LEVEL", "verbose")],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "the daemon must refuse to start: {stderr}");
    assert!(stderr.contains("log.level"), "{stderr}");
}

#[test]
fn sighup_with_a_bad_log_level_keeps_the_old_level_and_logs_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, secret, _) = production_config(dir.path(), "[log]\nlevel = \"info\"\n");
    let original = std::fs::read_to_string(&config).expect("read");
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(config.clone()),
            secret: Some(secret),
            env: vec![],
        },
    );
    std::fs::write(&config, original.replace("\"info\"", "\"inf\"")).expect("write");
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("log.level", Duration::from_secs(5)),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("log.level"))
        .expect("the reload error");
    assert!(line.contains("ERROR"), "{line}");
    assert!(!log.contains("log level reloaded"), "{log}");
    // Still at `info`: the stop's info lines appear.
    let log = daemon.log.clone();
    assert!(daemon.stop().success());
    let log = log.lock().expect("log").join("\n");
    assert!(log.contains("stopped cleanly"), "{log}");
}

#[test]
fn start_up_errors_are_json_lines_when_log_format_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    // A missing secret, with the format from the file.
    let key = key_file(dir.path(), "k");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nencryption_key_file = \"{}\"\n[log]\nformat = \"json\"\n",
            key.display()
        ),
    )
    .expect("write");
    let cfg = config.display().to_string();
    let timeout = Duration::from_secs(20);
    let (code, _, stderr) = run_in(
        dir.path(),
        &["--config", &cfg, "--data-dir", &data],
        &[],
        timeout,
    );
    assert_eq!(code, 2, "{stderr}");
    let lines = json_lines(&stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l.to_string().contains("auth.jwt_secret")),
        "{stderr}"
    );

    // A config error in another key, with the format from the environment.
    let (code, _, stderr) = run_in(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", &data],
        &[
            ("INDABA_LOG__FORMAT", "json"),
            ("INDABA_LOG__LEVEL", "verbose"),
        ],
        timeout,
    );
    assert_eq!(code, 2, "{stderr}");
    let lines = json_lines(&stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l.to_string().contains("log.level")),
        "{stderr}"
    );

    // A run-time start-up failure: the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, stderr) = run_in(
        dir.path(),
        &["--listen", &addr, "--data-dir", &data],
        &[("INDABA_LOG__FORMAT", "json")],
        timeout,
    );
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stderr);
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l.to_string().contains(&format!("cannot listen on {addr}"))),
        "{stderr}"
    );
}

#[test]
fn the_sighup_reload_line_has_one_level_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, secret, _) = production_config(dir.path(), "[log]\nformat = \"json\"\n");
    let original = std::fs::read_to_string(&config).expect("read");
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(config.clone()),
            secret: Some(secret),
            env: vec![],
        },
    );
    std::fs::write(
        &config,
        original.replace("[log]\n", "[log]\nlevel = \"debug\"\n"),
    )
    .expect("write");
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("log level reloaded", Duration::from_secs(5)),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("log level reloaded"))
        .expect("reload line");
    assert_eq!(line.matches("\"level\":").count(), 1, "{line}");
    let event: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(event["level"], "INFO", "{line}");
    assert_eq!(event["log_level"], "debug", "{line}");
    assert!(daemon.stop().success());
}

#[test]
fn check_config_opens_the_key_ring_against_the_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, secret, key) = production_config(dir.path(), "");
    let data = dir.path().join("data");
    let daemon = Daemon::start_with(
        &data,
        Options {
            config: Some(config.clone()),
            secret: Some(secret),
            env: vec![],
        },
    );
    let conv = daemon.conversation(1, 2);
    daemon.send(1, conv, "sealed with the first key");
    let cfg = config.display().to_string();
    let data_arg = data.display().to_string();
    // While the daemon holds the data file, the keys cannot be checked against it: said, not
    // passed off as checked.
    let (code, _, stderr) = run_cli(
        &["check-config", "--config", &cfg, "--data-dir", &data_arg],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("not checked"), "{stderr}");
    assert!(daemon.stop().success());

    let (code, _, stderr) = run_cli(
        &["check-config", "--config", &cfg, "--data-dir", &data_arg],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");

    // Rotate as docs/OPERATIONS.md shows, but forget to list the retired key.
    let old_id = format!("{:08x}", indaba::crypto::Key::load(&key).expect("key").id());
    let retired = dir.path().join("k.1");
    std::fs::rename(&key, &retired).expect("mv");
    let new_key = key_file(dir.path(), "k");
    let (code, _, stderr) = run_cli(
        &["check-config", "--config", &cfg, "--data-dir", &data_arg],
        &[],
    );
    assert_eq!(
        code, 2,
        "a key ring that cannot open the data passed: {stderr}"
    );
    assert!(stderr.contains(&old_id), "{stderr}");
    assert!(
        stderr.contains("storage.old_encryption_key_files"),
        "{stderr}"
    );
    assert_eq!(new_key, key);

    // Listed: passes.
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace(
            "[storage]\n",
            &format!(
                "[storage]\nold_encryption_key_files = [\"{}\"]\n",
                retired.display()
            ),
        ),
    )
    .expect("write");
    let (code, _, stderr) = run_cli(
        &["check-config", "--config", &cfg, "--data-dir", &data_arg],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn token_without_the_daemons_data_dir_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = run_in(
        dir.path(),
        &["token", "--user-id", "1"],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.trim().is_empty(), "a token was printed: {stdout}");
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(
        !dir.path().join("indaba-data").exists(),
        "`indaba token` created a data dir"
    );
    let elsewhere = dir.path().join("elsewhere").display().to_string();
    let (code, _, stderr) = run_in(
        dir.path(),
        &["token", "--user-id", "1", "--data-dir", &elsewhere],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&elsewhere), "{stderr}");
    assert!(!dir.path().join("elsewhere").exists());
}

#[test]
fn service_shared_secret_file_keeps_the_secret_out_of_the_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("service_secret");
    let service_secret = "service-secret-from-a-file-0123";
    std::fs::write(&secret_file, format!("{service_secret}\n")).expect("write");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (config, secret, _) = production_config(
        dir.path(),
        &format!(
            "[service]\nshared_secret_file = \"{}\"\n",
            secret_file.display()
        ),
    );
    check_config_holds_a_secret_file_to_its_rules(
        &config,
        &secret_file,
        service_secret,
        "service.shared_secret_file",
        "INDABA_SERVICE__SHARED_SECRET",
    );

    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            secret: Some(secret),
            env: vec![],
        },
    );
    let stats = |token: &str| {
        daemon
            .http
            .get(daemon.url("/api/stats"))
            .header("X-Service-Token", token)
            .send()
            .expect("GET")
            .status()
            .as_u16()
    };
    assert_eq!(stats(service_secret), 200);
    assert_eq!(stats("not-the-service-secret-at-all"), 401);
    assert!(daemon.stop().success());
}

#[test]
fn a_toml_syntax_error_names_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:8765\"\nshutdown_timeout = \n",
    )
    .expect("write");
    let cfg = config.display().to_string();
    let (code, _, stderr) = run_cli(&["check-config", "--config", &cfg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 3, column 20"), "{stderr}");
    assert!(stderr.contains(&cfg), "{stderr}");
}

#[test]
fn listen_accepts_localhost_and_explains_other_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = run_cli(
        &["check-config"],
        &[("INDABA_SERVER__LISTEN", "localhost:9000")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:9000\""), "{stdout}");

    let data = dir.path().join("data").display().to_string();
    let (code, _, stderr) = run_cli(
        &[
            "check-config",
            "--listen",
            "localhost:9001",
            "--data-dir",
            &data,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");

    let (code, _, stderr) = run_cli(
        &["check-config"],
        &[("INDABA_SERVER__LISTEN", "chat.example.com:80")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:8765"), "a hint: {stderr}");
    let (code, _, stderr) = run_cli(&["check-config", "--listen", "chat.example.com:80"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("127.0.0.1:8765"), "a hint: {stderr}");

    // And the daemon listens there.
    let (code, _, stderr) = run_in(
        dir.path(),
        &["--listen", "localhost:0", "--data-dir", &data],
        &[],
        Duration::from_secs(3),
    );
    assert_eq!(code, -1, "still running after 3 s: {stderr}");
    assert!(
        stderr.contains("listening on http://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn the_dev_token_hint_is_only_printed_in_dev_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, secret, _) = production_config(dir.path(), "");
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            secret: Some(secret),
            env: vec![],
        },
    );
    let log = daemon.log_text();
    assert!(log.contains("listening on"), "{log}");
    assert!(!log.contains("indaba token"), "{log}");
    assert!(daemon.stop().success());
}

#[test]
fn health_answers_at_the_connection_limit_and_ready_says_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_LIMITS__MAX_CONNECTIONS", "3")]),
    );
    let (status, body) = raw_get(daemon.addr, "/ready");
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    // Two idle connections plus the probe's own: at the limit.
    let mut idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(daemon.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = raw_get(daemon.addr, "/ready");
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("at_connection_limit")),
        "{body}"
    );
    // One more: the next connection is over the limit. Liveness still answers.
    idle.push(std::net::TcpStream::connect(daemon.addr).expect("connect"));
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = raw_get(daemon.addr, "/health");
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    let (status, body) = raw_get(daemon.addr, "/api/health/");
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    let (status, body) = raw_get(daemon.addr, "/ready");
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("at_connection_limit")),
        "{body}"
    );
    let (status, body) = raw_get(daemon.addr, "/api/v1/messaging/conversations/");
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("too_many_connections")),
        "{body}"
    );
    drop(idle);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = raw_get(daemon.addr, "/ready");
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.stop().success());
}

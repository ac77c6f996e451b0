//! systemd's notify protocol, against the real binary: a unix datagram socket in a temp dir
//! stands in for systemd's `NOTIFY_SOCKET`, so what `Type=notify-reload` relies on is checked
//! end to end: `READY=1` only once the port answers, `RELOADING=1` + `MONOTONIC_USEC` and
//! `READY=1` around SIGHUP, `STOPPING=1` on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Options};

/// The stand-in service manager: receives what the daemon sends to `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        Manager { socket }
    }

    /// The next datagram, or `None` after `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut buf = vec![0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
}

/// The daemon started by hand (not through `common::Daemon`, which waits for the "listening"
/// log line): here the notification alone must say when the port is ready. Killed on drop.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Spawned {
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }
}

/// A loopback port free a moment ago, so the test knows the address before the daemon logs it.
fn free_port() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    probe.local_addr().expect("probe addr")
}

/// `GET /health` over a plain socket, without retries: the status code, or the error.
fn health(addr: std::net::SocketAddr) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))
}

#[test]
fn ready_only_once_serving_then_reload_then_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let manager = Manager::bind(&socket_path);
    let addr = free_port();
    let child = Command::new(common::BIN)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .env_remove("INDABA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn indaba");
    let daemon = Spawned(child);

    let ready = manager.recv(Duration::from_secs(30));
    assert_eq!(ready.as_deref(), Some("READY=1\n"), "first notification");
    // Right after READY=1, with no retry: systemd starts dependent units on it.
    assert_eq!(
        health(addr),
        Ok(200),
        "READY=1 came before the port answered"
    );

    daemon.signal("HUP");
    let reloading = manager
        .recv(Duration::from_secs(10))
        .expect("RELOADING=1 after SIGHUP");
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines.first(), Some(&"RELOADING=1"), "{reloading:?}");
    let usec = lines
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        usec.parse::<u64>().is_ok_and(|u| u > 0),
        "MONOTONIC_USEC={usec}"
    );
    assert_eq!(
        manager.recv(Duration::from_secs(10)).as_deref(),
        Some("READY=1\n"),
        "READY=1 after the reload"
    );
    assert_eq!(health(addr), Ok(200));

    daemon.signal("TERM");
    assert_eq!(
        manager.recv(Duration::from_secs(10)).as_deref(),
        Some("STOPPING=1\n"),
        "STOPPING=1 on SIGTERM"
    );
    let mut daemon = daemon;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        manager.recv(Duration::from_millis(200)),
        None,
        "nothing after STOPPING=1"
    );
}

#[test]
fn an_unreachable_notify_socket_is_logged_and_the_daemon_serves_anyway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("no-such-socket");
    let nowhere = nowhere.display().to_string();
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        Options::env(&[("NOTIFY_SOCKET", &nowhere)]),
    );
    let (status, body) = daemon.get(1, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(
        daemon.wait_for_log("cannot notify the service manager", Duration::from_secs(5)),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.stop().success());
}

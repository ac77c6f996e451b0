//! Starts the real `indaba` binary on an ephemeral loopback port with a temp data dir, and
//! talks to it over real HTTP. Shared by every integration test file.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use indaba::auth::jwt::{TokenMinter, TokenType};
use serde_json::Value;

pub mod django;
pub mod ws;

/// A WebSocket client connection (tokio-tungstenite).
pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_indaba");

/// A running daemon. Killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread copying stderr into `log`; joined once the process has exited, so a test
    /// that looks at the log after the exit sees the last lines too.
    reader: Option<std::thread::JoinHandle<()>>,
    secret: Vec<u8>,
    pub http: reqwest::blocking::Client,
}

/// How to start a daemon.
#[derive(Clone, Default)]
pub struct Options {
    /// `--config` file; without it the daemon runs in dev mode.
    pub config: Option<PathBuf>,
    /// The JWT secret the config file names (dev mode reads it from the data dir).
    pub secret: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Options {
    /// Dev mode with these `INDABA_*` overrides.
    pub fn env(pairs: &[(&str, &str)]) -> Options {
        Options {
            env: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Options::default()
        }
    }
}

impl Daemon {
    /// Dev mode on `data_dir`.
    pub fn start(data_dir: &Path) -> Daemon {
        Self::start_with(data_dir, Options::default())
    }

    pub fn start_with(data_dir: &Path, options: Options) -> Daemon {
        match Self::try_start(data_dir, options) {
            Ok(d) => d,
            Err(output) => panic!("daemon did not start:\n{output}"),
        }
    }

    /// Starts the daemon; `Err` carries its output if it exited instead of listening.
    pub fn try_start(data_dir: &Path, options: Options) -> Result<Daemon, String> {
        Self::try_start_args(data_dir, options, &[])
    }

    /// [`Daemon::start_with`], with `args` after the global ones: a subcommand and its flags
    /// (`serve --accept-journal-loss`).
    pub fn start_with_args(data_dir: &Path, options: Options, args: &[&str]) -> Daemon {
        match Self::try_start_args(data_dir, options, args) {
            Ok(d) => d,
            Err(output) => panic!("daemon did not start:\n{output}"),
        }
    }

    /// [`Daemon::start_with`] with another build of the daemon than this one's (an older
    /// release, to make a data dir in the schema it wrote).
    pub fn start_bin(bin: &Path, data_dir: &Path, options: Options) -> Daemon {
        match Self::try_start_bin(bin, data_dir, options, &[]) {
            Ok(d) => d,
            Err(output) => panic!("{} did not start:\n{output}", bin.display()),
        }
    }

    fn try_start_args(data_dir: &Path, options: Options, args: &[&str]) -> Result<Daemon, String> {
        Self::try_start_bin(Path::new(BIN), data_dir, options, args)
    }

    fn try_start_bin(
        bin: &Path,
        data_dir: &Path,
        options: Options,
        args: &[&str],
    ) -> Result<Daemon, String> {
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("RUST_LOG")
            .env_remove("INDABA_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(config) = &options.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args);
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn indaba");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let addr = line
                    .split("listening on http://")
                    .nth(1)
                    // Text lines end the address at a space, JSON lines at the closing quote.
                    .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
                    .map(str::to_owned);
                // Record the line before announcing it, so the log already holds it.
                sink.lock().expect("log lock").push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(log.lock().expect("log lock").join("\n"));
            }
        };
        let secret = match options.secret {
            Some(s) => s.into_bytes(),
            None => std::fs::read_to_string(data_dir.join("jwt_secret"))
                .expect("dev-mode jwt_secret")
                .trim()
                .as_bytes()
                .to_vec(),
        };
        Ok(Daemon {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            log,
            reader: Some(reader),
            secret,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// An access token for `user_id`, signed with the daemon's secret.
    pub fn token(&self, user_id: u64) -> String {
        self.mint(user_id, None)
    }

    /// An access token for `user_id` that also carries a `username` claim.
    pub fn named_token(&self, user_id: u64, name: &str) -> String {
        self.mint(user_id, Some(name))
    }

    fn mint(&self, user_id: u64, name: Option<&str>) -> String {
        TokenMinter::new(&self.secret, "user_id")
            .mint(user_id, name, TokenType::Access, Duration::from_secs(600))
            .expect("mint")
    }

    pub fn get(&self, user: u64, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(self.token(user))
            .send()
            .expect("GET");
        split(resp)
    }

    pub fn post(&self, user: u64, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(self.token(user))
            .json(body)
            .send()
            .expect("POST");
        split(resp)
    }

    /// Creates (or finds) the conversation of `a` and `b`, as `a`.
    pub fn conversation(&self, a: u64, b: u64) -> u64 {
        let (status, body) = self.post(
            a,
            "/api/v1/messaging/conversations/",
            &serde_json::json!({"participants": [a, b]}),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
        body["id"].as_u64().expect("conversation id")
    }

    /// Sends `text` from `from` into `conversation`; returns the message JSON.
    pub fn send(&self, from: u64, conversation: u64, text: &str) -> Value {
        let (status, body) = self.post(
            from,
            "/api/v1/messaging/messages/",
            &serde_json::json!({"conversation": conversation, "text": text}),
        );
        assert_eq!(status, 201, "{body}");
        body
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Its stderr is closed: the reader ends once it has the last line.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(20))
    }

    /// `kill -9`: no chance to clean up.
    pub fn crash(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn split(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Runs `indaba` with `args` to completion (for CLI and start-up error tests).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("INDABA_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run indaba");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a 0600 key file holding a fresh key; returns its path.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    indaba::crypto::Key::create_file(&path).expect("key file");
    path
}

/// A production-style config file (secrets set, no dev-mode generation).
pub fn config_file(dir: &Path, key: &Path, extra: &str) -> (PathBuf, String) {
    let secret = "integration-test-secret-0123456789".to_owned();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\nencryption_key_file = \"{}\"\n{extra}\n[auth]\njwt_secret = \"{secret}\"\n",
            key.display()
        ),
    )
    .expect("write config");
    (path, secret)
}

impl Daemon {
    /// A request as `user` (any method), for the cases the helpers above do not cover.
    pub fn request(
        &self,
        method: &str,
        user: u64,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.token(user))
    }

    /// A service API call with `secret` in `X-Service-Token`, and a JSON body if given.
    pub fn service(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.service_via("X-Service-Token", secret, method, path, body)
    }

    /// [`Daemon::service`] with the secret in `header` (the service API takes several).
    pub fn service_via(
        &self,
        header: &str,
        secret: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, self.url(path))
            .header(header, secret);
        if let Some(body) = body {
            req = req.json(body);
        }
        split(req.send().expect("service call"))
    }

    /// The JWT secret the daemon verifies with.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines, names lower-cased: `("content-type", "application/json")`.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the contract's error shape: `status`, JSON with `error` = `code` and a detail.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        assert_eq!(self.body["error"], code, "{self:?}");
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:?}"
        );
    }
}

/// Reads one HTTP/1.1 response from `stream` (10 s at most), and nothing past it (the next
/// pipelined response stays for the next call): `None` if the connection closed or stayed
/// silent before a whole response came.
pub fn read_response(stream: &mut std::net::TcpStream) -> Option<RawResponse> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.trim_end().split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Sends `request` as raw bytes on a new connection to `addr` and reads the answer. The bytes
/// are written from another thread, so a request refused while it is still being sent cannot
/// block the read.
pub fn raw_request(addr: SocketAddr, request: Vec<u8>) -> Option<RawResponse> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let response = read_response(&mut stream);
    // Unblocks the writer if the daemon stopped reading.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    response
}

//! Fuzz targets: each takes arbitrary bytes, drives one parser of untrusted input the way the
//! daemon does, and panics on a crash or on a broken invariant (never on a refusal: refusing
//! bad input is the parsers' job). Not an API: `fuzz/` (cargo-fuzz, libFuzzer) and the stable
//! driver in `tests/fuzz.rs` call them; docs/RELIABILITY.md says how to run them and add one.
//!
//! * [`ws_frames`]: bytes from a WebSocket client, read by the daemon's frame reader in two
//!   ways (whole, and dribbled in pieces), reassembled and parsed as each dialect would.
//! * [`http_request`]: one HTTP request (method, target, headers, body) sent to a real accept
//!   loop on a loopback port, over a real store: the routes, path ids, query and body
//!   extractors, the handlers behind them. No answer may be a 5xx, every error is JSON.
//! * [`jwt`]: access and refresh tokens, as given, or signed with the verifier's secret around
//!   arbitrary claims and headers (so the claims are read, not only the signature refused).
//! * [`journal`]: arbitrary bytes as a journal file, opened and scanned as a start does; or
//!   arbitrary records, sealed as the writer seals them and then torn or damaged, where the
//!   scan must tell a torn last write (quiet) from damage (refused) and lose no valid prefix.
//! * [`config`]: a config file and environment overrides, loaded and validated.
//!
//! Over the ~600-line guide (issue 17) and the next to split, one file per target (the sections
//! below): the targets share only the [`Scratch`] directory helper.

#![doc(hidden)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use fastwebsockets::OpCode;

use crate::auth::jwt::{TokenMinter, TokenType, TokenVerifier, VerifyKey};
use crate::store::engine::journal::{self, Journal, Opened, RECORD_HEADER, RECORDS_START};
use crate::ws::frames::{self, Assembler, Message};
use crate::ws::protocol::{self, ChatIn, ConversationIn, NotificationsIn};
use crate::ws::reader::{ReadError, take_frame};

/// A fuzz target: arbitrary bytes in, a panic for anything wrong.
pub type Target = fn(&[u8]);

/// Every target, by the name its directories in `fuzz/` carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("ws_frames", ws_frames),
    ("http_request", http_request),
    ("jwt", jwt),
    ("journal", journal),
    ("config", config),
];

/// A directory of its own under the system's temp dir, removed on drop (the library has no
/// `tempfile`: it is a dev-dependency).
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    /// Under `INDABA_FUZZ_TMPDIR`, else `/dev/shm` where there is one (the journal targets
    /// sync what they write: on a disk that is most of their time), else the temp dir.
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::var_os("INDABA_FUZZ_TMPDIR")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("indaba-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("fuzz scratch dir");
        Scratch(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames

/// Largest frame payload and message the frame target allows: small, so that the size checks
/// are met as often as the rest.
const WS_MAX_FRAME: usize = 1024;
const WS_MAX_MESSAGE: usize = 2048;

/// What a reader made of a stream of bytes: the frames (fin, opcode, payload) and how it
/// ended (the violation's close code, if any).
#[derive(Debug, PartialEq, Eq)]
struct FramesRead {
    frames: Vec<(bool, u8, Vec<u8>)>,
    violation: Option<u16>,
}

/// Feeds `wire` to the frame reader `piece` bytes at a time, as reads from a socket would.
fn read_frames(wire: &[u8], piece: usize) -> FramesRead {
    let mut buf = BytesMut::new();
    let mut read = FramesRead {
        frames: Vec::new(),
        violation: None,
    };
    for chunk in wire.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match take_frame(&mut buf, WS_MAX_FRAME) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= WS_MAX_FRAME, "frame over the limit");
                    read.frames
                        .push((frame.fin, frame.opcode as u8, frame.payload.to_vec()));
                }
                Ok(None) => break,
                Err(ReadError::Violation(v)) => {
                    read.violation = Some(v.code);
                    return read;
                }
                Err(ReadError::Gone) => unreachable!("no socket here"),
            }
        }
    }
    read
}

/// The first byte says in what pieces the rest arrives; the rest is what a client sent.
pub fn ws_frames(data: &[u8]) {
    let Some((&piece, wire)) = data.split_first() else {
        return;
    };
    let whole = read_frames(wire, wire.len());
    let dribbled = read_frames(wire, usize::from(piece % 64) + 1);
    assert_eq!(
        whole, dribbled,
        "the frames read must not depend on how the bytes arrived"
    );
    // What the session does with them: control frames checked, data frames reassembled, and
    // each text message parsed by every dialect.
    let mut assembler = Assembler::new(WS_MAX_MESSAGE);
    for (fin, opcode, payload) in whole.frames {
        let opcode = OpCode::try_from(opcode).expect("the reader returns known opcodes");
        match opcode {
            OpCode::Close => {
                if let Ok(code) = frames::check_close(&payload) {
                    assert!(matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999));
                }
                return;
            }
            OpCode::Ping | OpCode::Pong => {}
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let frame = fastwebsockets::Frame::new(
                    fin,
                    opcode,
                    None,
                    fastwebsockets::Payload::Owned(payload),
                );
                match assembler.push(&frame) {
                    Ok(Some(Message::Text(text))) => {
                        assert!(text.len() <= WS_MAX_MESSAGE, "message over the limit");
                        let _ = protocol::parse::<ChatIn>(&text);
                        let _ = protocol::parse::<ConversationIn>(&text);
                        let _ = protocol::parse::<NotificationsIn>(&text);
                    }
                    Ok(Some(Message::Binary(bytes))) => {
                        assert!(bytes.len() <= WS_MAX_MESSAGE, "message over the limit");
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP requests

/// The daemon the HTTP target talks to: one per process, over a store in a scratch dir.
struct Served {
    addr: SocketAddr,
    /// `{user}`, `{user2}` and `{service}` in a request stand for these.
    user: String,
    user2: String,
    service: String,
    _runtime: tokio::runtime::Runtime,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        use crate::config::{Config, Secret};
        use crate::crypto::{Key, Keyring};
        use crate::store::{Store, WriterOptions};

        let dir = Scratch::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let secret = b"fuzzing-secret-0123456789abcdef!".to_vec();
        let service = "fuzzing-service-secret".to_owned();
        let addr = runtime.block_on(async {
            let keyring =
                Arc::new(Keyring::new(&Key::generate().expect("key"), &[]).expect("ring"));
            let (store, writer) = Store::open(dir.path(), keyring, WriterOptions::standalone(64))
                .expect("open the store");
            // The writer runs for the life of the process.
            std::mem::forget(writer);
            let shutdown = tokio_util::sync::CancellationToken::new();
            let hub = Arc::new(crate::hub::Hub::new(store.clone(), Duration::from_secs(5)));
            let config = Config::default();
            let state = crate::state::AppState::new(
                config,
                store,
                crate::users::Directory::default(),
                hub,
                Arc::new(crate::metrics::Metrics::new()),
                &VerifyKey::Secret(secret.clone()),
                Some(&secret),
                Some(Secret::new(service.clone())),
                shutdown.clone(),
            )
            .expect("state");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let tasks = state.tasks.clone();
            tokio::spawn(crate::http::server::accept_loop(
                listener,
                Arc::new(state),
                tasks,
                shutdown,
            ));
            addr
        });
        // The store keeps its files open, and lives as long as the process: its directory
        // goes now, so that nothing is left behind however the process ends.
        drop(dir);
        let minter = TokenMinter::new(&secret, "user_id");
        let token = |id| {
            minter
                .mint(id, None, TokenType::Access, Duration::from_secs(86_400))
                .expect("mint")
        };
        Served {
            addr,
            user: token(1),
            user2: token(2),
            service,
            _runtime: runtime,
        }
    })
}

/// Whether `b` may be in a method or a header name (RFC 9110 `tchar`).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request in the form of the corpus files (`fuzz/corpus/http_request`):
///
/// ```text
/// METHOD /target?query
/// Header: value
///
/// body
/// ```
///
/// `{user}`, `{user2}` and `{service}` in the head stand for user 1's and user 2's access
/// tokens and the service secret. The target sets `Host`, `Content-Length` and
/// `Connection: close` itself (the body is always whole: HTTP framing is hyper's).
pub fn http_request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    // Whatever the bytes, a request goes out (a mutation anywhere must reach the daemon):
    // the head is read as UTF-8 with replacements, bytes a target cannot carry are
    // percent-encoded, a header line that cannot be one is left out.
    let head = String::from_utf8_lossy(head);
    let served = served();
    let head = head
        .replace('\r', "")
        .replace("{user}", &served.user)
        .replace("{user2}", &served.user2)
        .replace("{service}", &served.service);
    let mut lines = head.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let method = if !method.is_empty() && method.bytes().all(tchar) {
        method
    } else {
        "GET"
    };
    let target = target.trim_end_matches(" HTTP/1.1");
    let mut target: String = target
        .bytes()
        .map(|b| match b {
            b'!'..=b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    if !target.starts_with('/') {
        target.insert(0, '/');
    }
    target.truncate(4000);
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: fuzz.test\r\n");
    let framing = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "expect",
        "te",
    ];
    let mut content_type = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let valid = !name.is_empty()
            && name.bytes().all(tchar)
            && !value.bytes().any(|b| b.is_ascii_control() && b != b'\t');
        if valid && !framing.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            request.push_str(&format!("{name}: {value}\r\n"));
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_ascii_lowercase());
            }
        }
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut wire = request.into_bytes();
    wire.extend_from_slice(body);

    let mut stream = TcpStream::connect(served.addr).expect("connect to the fuzzed daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(&wire).expect("send the request");
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        panic!("no whole answer within 30 s: {e}");
    }
    check_answer(method, content_type.as_deref(), body, &answer);
}

/// The daemon's answer to one request: never a 5xx, every error a JSON object, and a POST's
/// body accepted (2xx) only if it is one JSON value and nothing else, unless it was declared a
/// form.
fn check_answer(method: &str, content_type: Option<&str>, sent: &[u8], answer: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(answer) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not an HTTP answer ({other:?}): {:?}",
            String::from_utf8_lossy(answer)
        ),
    };
    let status = response.code.expect("a status");
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let body = &answer[head_len..];
    assert!(
        status < 500,
        "answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    let form = content_type.is_some_and(|t| {
        t.starts_with("application/x-www-form-urlencoded") || t.starts_with("multipart/")
    });
    // Only where a body is read: a GET's body is ignored, as HTTP allows (every POST route
    // reads one, JSON or an empty action body).
    let reads_body = matches!(method, "POST" | "PUT" | "PATCH");
    if (200..300).contains(&status) && reads_body && !sent.trim_ascii().is_empty() && !form {
        assert!(
            serde_json::from_slice::<serde_json::Value>(sent).is_ok(),
            "answered {status} to a body that is not one JSON value: {:?}",
            String::from_utf8_lossy(sent)
        );
    }
    if status >= 400 && method != "HEAD" {
        let content_type = header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "a {status} with content type {content_type:?}"
        );
        if header("transfer-encoding").is_none() {
            let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!(
                    "a {status} whose body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(body)
                )
            });
            assert!(value.is_object(), "a {status} whose body is {value}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JWT

/// The verifier's secret: the target signs claims with it so that they get read.
const JWT_SECRET: &[u8] = b"fuzzing-jwt-secret-0123456789abc";

fn sign(header: &[u8], claims: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET).expect("HMAC takes any key");
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64.encode(mac.finalize().into_bytes()))
}

/// The first byte picks the form: a token as given (0), claims signed under a standard
/// header (1), or a header and claims, split at the first newline, signed (2).
pub fn jwt(data: &[u8]) {
    static VERIFIERS: OnceLock<[TokenVerifier; 2]> = OnceLock::new();
    let [plain, strict] = VERIFIERS.get_or_init(|| {
        let key = VerifyKey::Secret(JWT_SECRET.to_vec());
        [
            TokenVerifier::new(&key, "user_id", None, None).expect("verifier"),
            TokenVerifier::new(&key, "user_id", Some("fuzz-iss"), Some("fuzz-aud"))
                .expect("verifier"),
        ]
    });
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let (token, header, claims) = match form % 3 {
        0 => (String::from_utf8_lossy(rest).into_owned(), None, None),
        1 => {
            let header = br#"{"alg":"HS256","typ":"JWT"}"#;
            (sign(header, rest), Some(&header[..]), Some(rest))
        }
        _ => {
            let (header, claims) = match rest.iter().position(|b| *b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            (sign(header, claims), Some(header), Some(claims))
        }
    };
    let json = |bytes: Option<&[u8]>| {
        bytes.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
    };
    for (verifier, strict) in [(plain, false), (strict, true)] {
        for result in [verifier.verify(&token), verifier.verify_refresh(&token)] {
            let Ok(identity) = result else { continue };
            assert!(
                (1..crate::MAX_ID).contains(&identity.user_id),
                "user id {} accepted",
                identity.user_id
            );
            // Accepted only as signed here, with the one algorithm the secret allows, and
            // with an expiry (and the issuer and audience when configured).
            if let Some(header) = header {
                let header = json(Some(header)).expect("an accepted token's header is JSON");
                assert_eq!(header["alg"], "HS256", "accepted with header {header}");
                let claims = json(claims).expect("an accepted token's claims are JSON");
                assert!(claims["exp"].is_number(), "accepted without exp: {claims}");
                if strict {
                    assert_eq!(claims["iss"], "fuzz-iss", "accepted: {claims}");
                    let aud = &claims["aud"];
                    assert!(
                        aud == "fuzz-aud"
                            || aud
                                .as_array()
                                .is_some_and(|a| a.iter().any(|v| v == "fuzz-aud")),
                        "accepted: {claims}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The journal

/// The first byte picks the form: a whole journal file (even), or records sealed as the
/// writer seals them and then damaged (odd).
pub fn journal(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    if form % 2 == 0 {
        journal_file(rest);
    } else {
        journal_records(rest);
    }
}

/// Arbitrary bytes as `indaba.journal`, opened and scanned as a start does: it may be
/// refused, never crash, and a journal that may hold records (opened as it is) is never
/// changed by opening or scanning it.
fn journal_file(bytes: &[u8]) {
    let dir = Scratch::new();
    let path = dir.path().join(journal::JOURNAL_FILE);
    std::fs::write(&path, bytes).expect("write the journal");
    // The id in the header, so that a header that checks is read as this data file's.
    let id = bytes
        .get(16..24)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let Ok((journal, opened)) = Journal::open(dir.path(), id) else {
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "a refused journal is left as it is"
        );
        return;
    };
    for after in [0, 1, 5] {
        let Ok(scan) = journal.scan(after) else {
            continue;
        };
        check_scan(&scan, after);
    }
    if opened == Opened::Existing {
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "opening and scanning changed a journal that may hold acknowledged batches"
        );
    }
}

/// What holds of any scan: seqs strictly increase above `after`, torn and damaged are not
/// both, and each record's payload is read back (a refusal, never a crash).
fn check_scan(scan: &journal::Scan, after: u64) {
    let mut last = after;
    for record in &scan.records {
        assert!(record.seq > last, "seq {} after {last}", record.seq);
        last = record.seq;
    }
    assert!(
        scan.torn_at.is_none() || scan.damage.is_none(),
        "torn and damaged at once"
    );
    let lost = scan.damage.iter().flat_map(|d| &d.lost);
    for record in scan.records.iter().chain(lost) {
        let _ = crate::store::engine::record::decode(&record.payload);
    }
}

/// Records from the input (each a length byte and that many bytes of payload; seqs 1, 2, …),
/// sealed into a fresh journal as the writer does, then one fault from the last three bytes:
/// the file cut short (a torn write: quiet, every whole record replayed), or one byte changed
/// (damage: every record before it replayed; a record after it reported as lost, never
/// replayed; a change in the last record reads as a torn write).
fn journal_records(input: &[u8]) {
    let Some((mut rest, fault)) = input.split_last_chunk::<3>() else {
        return;
    };
    let mut payloads = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        payloads.push(&tail[..len]);
        rest = &tail[len..];
    }
    let dir = Scratch::new();
    let path = dir.path().join(journal::JOURNAL_FILE);
    // A new journal, its header sound, as the store leaves it for the writer.
    let (journal, opened) = Journal::open(dir.path(), 7).expect("a new journal");
    assert_eq!(opened, Opened::Created);
    let mut written = Vec::new();
    let mut offset = RECORDS_START;
    let mut ends = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let mut record = vec![0; RECORD_HEADER];
        record.extend_from_slice(payload);
        let seq = i as u64 + 1;
        journal.seal(&mut record, seq);
        journal.write_at(offset, &record).expect("write");
        offset += record.len() as u64;
        ends.push(offset);
        written.push(journal::Record {
            seq,
            payload: payload.to_vec(),
        });
    }
    drop(journal);
    let records_len = offset - RECORDS_START;
    let at = u64::from(u16::from_le_bytes([fault[1], fault[2]])) % (records_len + 1);
    // Which record holds byte `RECORDS_START + at` (or `written.len()` past the end).
    let holder = ends
        .iter()
        .position(|end| RECORDS_START + at < *end)
        .unwrap_or(written.len());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("reopen");
    let changed = fault[0] >> 1;
    let torn = fault[0] & 1 == 0 || changed == 0 || at == records_len;
    if torn {
        file.set_len(RECORDS_START + at).expect("cut");
    } else {
        use std::os::unix::fs::FileExt;
        let mut byte = [0];
        file.read_exact_at(&mut byte, RECORDS_START + at)
            .expect("read");
        byte[0] ^= changed;
        file.write_all_at(&byte, RECORDS_START + at).expect("write");
    }
    drop(file);

    let (journal, opened) = Journal::open(dir.path(), 7).expect("reopen the journal");
    assert_eq!(opened, Opened::Existing);
    let scan = journal.scan(0).expect("scan");
    check_scan(&scan, 0);
    // Whatever the fault, every record before it is replayed, and nothing else.
    assert_eq!(
        scan.records,
        written[..holder],
        "replayed other than the records before the fault"
    );
    let last = holder + 1 >= written.len();
    match &scan.damage {
        None => assert!(
            torn || last,
            "a change in record {holder} of {} went unreported",
            written.len()
        ),
        Some(damage) => {
            assert!(
                !torn && !last,
                "a torn write (or a change to the last record) reported as damage: {}",
                damage.what
            );
            assert!(damage.checked);
            assert_eq!(
                damage.lost,
                written[holder + 1..],
                "the records past the damage are what is lost"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config

/// A config file, then (after a line `%env`) `KEY=value` lines of environment overrides,
/// loaded and validated as `indaba check-config` does.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once("\n%env\n").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dir = Scratch::new();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, file).expect("write the config");
    if let Ok(config) = crate::config::Config::load(Some(&path), env.clone()) {
        // What `check-config` prints of it, and the log level it would install.
        let _ = config.to_redacted_toml();
        assert!(
            crate::config::check_log_filter(&config.log.level).is_ok(),
            "an accepted config whose log level is refused: {:?}",
            config.log.level
        );
    }
    let _ = crate::config::Config::load(None, env);
}

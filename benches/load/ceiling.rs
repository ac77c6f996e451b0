//! The ceiling (issue 20): a chat server with the daemon's transport and nothing else. The load
//! generator runs it as a process of its own (its own binary with `--serve-ceiling`) and drives
//! it with the same code as the daemon, so each of the daemon's figures can be set against
//! what the transport alone costs on the same machine, in the same session.
//!
//! Shared with the daemon, through the library: hyper's HTTP/1 server and upgrade,
//! fastwebsockets' handshake and frame writer, the daemon's frame reader
//! ([`indaba::ws::reader`]), fragment assembler and close-frame checks
//! ([`indaba::ws::frames`]), write coalescing ([`indaba::ws::coalesce`]), its wire JSON
//! ([`indaba::ws::protocol`] parses `chat_message`, [`indaba::events`] builds
//! `connection_established`, `new_message` and `message_sent`, the very code the daemon runs), the same
//! runtime (tokio, one worker per core), allocator (mimalloc, set in `load.rs`), listen backlog
//! and frame, batch and buffer sizes. Left out: authentication (the user id is read from the
//! token's claims, the signature is not checked), storage, encryption, queues, limits,
//! presence, keep-alive pings, metrics. What the daemon spends above the ceiling is what those
//! cost.
//!
//! It answers the part of the contract the load generator uses, as the daemon does:
//! * `GET /ws/chat/?token=JWT` (or `?user=N`): `connection_established`, then each
//!   `chat_message` is numbered, sent as one `new_message` encoding to every socket of every
//!   participant but the sending one, and answered with `message_sent`;
//! * `POST /api/v1/messaging/conversations/` `{"participants": [...]}` (the caller from its
//!   bearer token) → 201 `{"id": N, "participants": [...]}`;
//! * `POST /api/messages/broadcast` (seed 001's body; any service token): each listed user
//!   gets a `new_message` of its own, priority high, in its one-to-one conversation with the
//!   sender (numbered on first use), on each of its sockets; users with no socket are counted
//!   and skipped.
//!
//! Conversations live in memory for the life of the process. Message ids come from one
//! counter, and a conversation's lock is held while a message is numbered and queued, so every
//! member receives a conversation's messages in id order, as the daemon's one writer gives
//! them. Loopback only; the process stops on SIGTERM or SIGINT, when the generator that
//! started it goes away, or after [`MAX_LIFETIME`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketWrite};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use indaba::error::Code;
use indaba::events::ChatEvent;
use indaba::model::{MessageBody, MessageRecord, Priority};
use indaba::ws::coalesce::Coalesce;
use indaba::ws::frames::{self, Assembler, Message, close};
use indaba::ws::protocol::{self, ChatIn, ChatMessage};
use indaba::ws::reader::{FrameReader, ReadError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

/// The daemon's defaults: `limits.max_frame_bytes`, `limits.max_body_bytes`, and its
/// session's frames per write and coalescing buffer (`src/ws/session.rs`).
const MAX_FRAME: usize = 65_536;
const MAX_BODY: usize = 1_048_576;
const WRITE_BATCH: usize = 64;
const WRITE_BUFFER: usize = 64 * 1024;
/// The daemon's listen backlog (`src/main.rs`): a connect burst is not dropped.
const LISTEN_BACKLOG: u32 = 4096;
/// The daemon's bound on a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a ceiling process lives, whatever happens to the generator.
const MAX_LIFETIME: Duration = Duration::from_secs(4 * 3600);
/// How long a closing socket's writer may take to finish, as in the daemon.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the process checks that the generator that started it is still there.
const PARENT_CHECK: Duration = Duration::from_secs(1);

type Answer = Response<Full<Bytes>>;
type SocketWriter = WebSocketWrite<Coalesce<OwnedWriteHalf>>;

/// Runs the ceiling on `listen` (loopback only) until SIGTERM or SIGINT.
pub(super) fn serve(listen: SocketAddr) -> Result<(), String> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen {listen} is not a loopback address: refused"
        ));
    }
    stop_with_the_generator()?;
    // The daemon's runtime: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ceiling-rt")
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuseaddr(true)
            .map_err(|e| format!("reuseaddr: {e}"))?;
        socket
            .bind(listen)
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .map_err(|e| format!("listen: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?;
        // The line the generator waits for, as the daemon logs it.
        eprintln!("ceiling listening on http://{addr}");
        let state = Arc::new(State::default());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, as the daemon does.
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr(), "ceiling: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(stream, state.clone()));
        }
    })
}

/// Exits the process on SIGTERM or SIGINT (there is nothing to flush), when the parent
/// process is gone (a killed generator must not leave load behind), or after
/// [`MAX_LIFETIME`].
fn stop_with_the_generator() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("ceiling-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                std::process::exit(0);
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    let parent = std::os::unix::process::parent_id();
    std::thread::Builder::new()
        .name("ceiling-watchdog".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            loop {
                std::thread::sleep(PARENT_CHECK);
                // Nothing is printed on the way out: with the generator gone, stderr is a
                // closed pipe, and `eprintln!` would panic this thread instead of exiting.
                if std::os::unix::process::parent_id() != parent || started.elapsed() > MAX_LIFETIME
                {
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("watchdog thread: {e}"))?;
    Ok(())
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, req).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Answer {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws/chat/") => upgrade(state, req),
        (&Method::POST, "/api/v1/messaging/conversations/") => {
            create_conversation(state, req).await
        }
        (&Method::POST, "/api/messages/broadcast") => broadcast(state, req).await,
        (&Method::GET, "/health") => answer(StatusCode::OK, &json!({"status": "ok"})),
        _ => answer(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "detail": "the ceiling serves only what the load generator uses"}),
        ),
    }
}

fn answer(status: StatusCode, body: &Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn bad_request(detail: impl Into<String>) -> Answer {
    answer(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_request", "detail": detail.into()}),
    )
}

// ---------------------------------------------------------------------------------------------
// Who is calling, unchecked
// ---------------------------------------------------------------------------------------------

/// The caller's user id: `?user=N`, or the `user_id` claim of the token in `?token=` or
/// `Authorization: Bearer`, read without checking the signature or the expiry.
fn caller(req: &Request<Incoming>) -> Option<u64> {
    let query = req.uri().query().unwrap_or("");
    let mut token = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "user" => return value.parse().ok(),
            "token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let token = token.or_else(|| {
        let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = header.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    })?;
    let claims = token.split('.').nth(1)?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    let claims: Value = serde_json::from_slice(&claims).ok()?;
    // SimpleJWT writes the id as a string, other issuers as a number.
    match claims.get("user_id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
}

// ---------------------------------------------------------------------------------------------
// Routing state
// ---------------------------------------------------------------------------------------------

/// Who is connected and who is in which conversation.
#[derive(Default)]
struct State {
    /// Live `/ws/chat/` sockets by user.
    sockets: RwLock<HashMap<u64, Vec<Arc<Socket>>>>,
    conversations: RwLock<HashMap<u64, Arc<Conversation>>>,
    /// The one-to-one conversations broadcasts used, by (sender, user).
    one_to_one: Mutex<HashMap<(u64, u64), u64>>,
    last_conversation: AtomicU64,
    last_message: AtomicU64,
    last_socket: AtomicU64,
}

struct Conversation {
    /// Sorted, without duplicates.
    participants: Vec<u64>,
    /// Held while a message is numbered and queued: members receive messages in id order.
    order: Mutex<()>,
}

/// A lock that a panicking holder left poisoned still guards consistent data here (every
/// update is a single insert or removal).
fn unpoisoned<G>(result: Result<G, PoisonError<G>>) -> G {
    result.unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn register(&self, socket: &Arc<Socket>) {
        unpoisoned(self.sockets.write())
            .entry(socket.user)
            .or_default()
            .push(socket.clone());
    }

    fn unregister(&self, socket: &Socket) {
        let mut sockets = unpoisoned(self.sockets.write());
        if let Some(list) = sockets.get_mut(&socket.user) {
            list.retain(|s| s.id != socket.id);
            if list.is_empty() {
                sockets.remove(&socket.user);
            }
        }
    }

    fn conversation(&self, id: u64) -> Option<Arc<Conversation>> {
        unpoisoned(self.conversations.read()).get(&id).cloned()
    }

    fn new_conversation(&self, mut participants: Vec<u64>) -> u64 {
        participants.sort_unstable();
        participants.dedup();
        let id = self.last_conversation.fetch_add(1, Ordering::Relaxed) + 1;
        let conversation = Arc::new(Conversation {
            participants,
            order: Mutex::new(()),
        });
        unpoisoned(self.conversations.write()).insert(id, conversation);
        id
    }

    fn next_message_id(&self) -> u64 {
        self.last_message.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A `chat_message` from `from`: numbered, fanned out, acknowledged.
    fn chat_message(&self, from: &Socket, m: ChatMessage) {
        let Some(conversation) = self
            .conversation(m.conversation_id.into())
            .filter(|c| c.participants.binary_search(&from.user).is_ok())
        else {
            from.outbox.push(Outbound::Text(
                ChatEvent::Error {
                    code: Code::NotFound,
                    detail: "conversation not found",
                    client_ref: m.client_id.as_deref(),
                }
                .to_bytes(),
            ));
            return;
        };
        let body = MessageBody {
            text: m.text,
            metadata_json: m
                .metadata
                .map_or_else(|| "{}".to_owned(), |v| v.to_string()),
        };
        let record = MessageRecord {
            conversation: m.conversation_id.into(),
            sender: from.user,
            receiver: m.receiver_id.map(u64::from),
            message_type: m.message_type.unwrap_or_else(|| "text".to_owned()),
            priority: match m.priority.as_deref() {
                Some("high") => Priority::High,
                Some("low") => Priority::Low,
                _ => Priority::Normal,
            },
            client_id: m.client_id,
            created_at_ms: now_ms(),
            body: Vec::new(),
        };
        let id = {
            let _order = unpoisoned(conversation.order.lock());
            let id = self.next_message_id();
            // One encoding, shared by every socket it goes to.
            let event = ChatEvent::new_message(id, &record, &body).to_bytes();
            let sockets = unpoisoned(self.sockets.read());
            for user in &conversation.participants {
                for socket in sockets.get(user).into_iter().flatten() {
                    // The sending socket hears `message_sent`, the sender's others an echo.
                    if socket.id != from.id {
                        socket.outbox.push(Outbound::Text(event.clone()));
                    }
                }
            }
            id
        };
        from.outbox.push(Outbound::Text(
            ChatEvent::message_sent(id, &record).to_bytes(),
        ));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Answer> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| bad_request(format!("unreadable body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
struct NewConversation {
    participants: Vec<u64>,
}

async fn create_conversation(state: &State, req: Request<Incoming>) -> Answer {
    let Some(user) = caller(&req) else {
        return answer(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthorized", "detail": "no user_id claim in the token"}),
        );
    };
    let body: NewConversation = match read_json(req).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let mut participants = body.participants;
    participants.push(user);
    let id = state.new_conversation(participants);
    let participants = state
        .conversation(id)
        .map(|c| c.participants.clone())
        .unwrap_or_default();
    answer(
        StatusCode::CREATED,
        &json!({"id": id, "participants": participants}),
    )
}

#[derive(Deserialize)]
struct BroadcastBody {
    message: BroadcastMessage,
    user_ids: Vec<u64>,
}

#[derive(Deserialize)]
struct BroadcastMessage {
    sender_id: u64,
    text: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// Each listed user gets its own `new_message` (its own id and one-to-one conversation, as
/// from the daemon), on every socket it has.
async fn broadcast(state: &State, req: Request<Incoming>) -> Answer {
    let body: BroadcastBody = match read_json(req).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let sender = body.message.sender_id;
    let plain = MessageBody {
        text: body.message.text,
        metadata_json: body
            .message
            .metadata
            .map_or_else(|| "{}".to_owned(), |v| v.to_string()),
    };
    let mut record = MessageRecord {
        conversation: 0,
        sender,
        receiver: None,
        message_type: body
            .message
            .message_type
            .unwrap_or_else(|| "system".to_owned()),
        priority: Priority::High,
        client_id: None,
        created_at_ms: now_ms(),
        body: Vec::new(),
    };
    let mut users = body.user_ids;
    users.sort_unstable();
    users.dedup();
    users.retain(|u| *u != sender);
    let mut one_to_one = unpoisoned(state.one_to_one.lock());
    let sockets = unpoisoned(state.sockets.read());
    for user in &users {
        record.conversation = *one_to_one
            .entry((sender, *user))
            .or_insert_with(|| state.last_conversation.fetch_add(1, Ordering::Relaxed) + 1);
        record.receiver = Some(*user);
        let id = state.next_message_id();
        let event = ChatEvent::new_message(id, &record, &plain).to_bytes();
        for socket in sockets.get(user).into_iter().flatten() {
            socket.outbox.push(Outbound::Text(event.clone()));
        }
    }
    answer(
        StatusCode::OK,
        &json!({"status": "accepted", "recipients": users.len()}),
    )
}

// ---------------------------------------------------------------------------------------------
// WebSockets
// ---------------------------------------------------------------------------------------------

fn upgrade(state: &Arc<State>, mut req: Request<Incoming>) -> Answer {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return bad_request("this endpoint speaks WebSocket: send an Upgrade request");
    }
    let Some(user) = caller(&req) else {
        return answer(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthorized", "detail": "give ?user=N or a token with user_id"}),
        );
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(upgraded) => upgraded,
        Err(e) => return bad_request(format!("bad WebSocket handshake: {e}")),
    };
    tokio::spawn(session(state.clone(), upgrade, user));
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// One socket's queue of frames to write, drained by its writer task.
#[derive(Default)]
struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    /// Set once the socket is to close with this code; nothing is queued after it.
    closing: Option<u16>,
}

enum Outbound {
    Text(Bytes),
    Pong(Bytes),
}

impl Outbox {
    fn push(&self, frame: Outbound) {
        let mut queue = unpoisoned(self.queue.lock());
        if queue.closing.is_none() {
            queue.frames.push_back(frame);
            drop(queue);
            self.ready.notify_one();
        }
    }

    fn close(&self, code: u16) {
        unpoisoned(self.queue.lock()).closing.get_or_insert(code);
        self.ready.notify_one();
    }

    /// Waits for frames; moves up to `max` into `batch`, and says whether to close after them.
    async fn next_batch(&self, max: usize, batch: &mut Vec<Outbound>) -> Option<u16> {
        loop {
            {
                let mut queue = unpoisoned(self.queue.lock());
                let n = queue.frames.len().min(max);
                batch.extend(queue.frames.drain(..n));
                if !batch.is_empty() || queue.closing.is_some() {
                    return queue.closing.filter(|_| queue.frames.is_empty());
                }
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }
}

struct Socket {
    id: u64,
    user: u64,
    outbox: Outbox,
}

/// Runs an upgraded socket to the end, as the daemon's session does: this task reads, a
/// writer task drains the outbox in batches, one write each.
async fn session(state: Arc<State>, upgrade: fastwebsockets::upgrade::UpgradeFut, user: u64) {
    let Ok(ws) = upgrade.await else { return };
    let Ok(parts) = ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
    else {
        return;
    };
    let (read, write) = parts.io.into_inner().into_split();
    let mut reader = FrameReader::new(read, parts.read_buf, MAX_FRAME);
    let (_, writer) = fastwebsockets::after_handshake_split(
        tokio::io::empty(),
        Coalesce::new(write, WRITE_BUFFER),
        Role::Server,
    );
    let socket = Arc::new(Socket {
        id: state.last_socket.fetch_add(1, Ordering::Relaxed) + 1,
        user,
        outbox: Outbox::default(),
    });
    socket.outbox.push(Outbound::Text(
        ChatEvent::connection_established(user, socket.id).to_bytes(),
    ));
    state.register(&socket);
    let mut writing = tokio::spawn(write_loop(writer, socket.clone()));
    read_loop(&state, &socket, &mut reader).await;
    state.unregister(&socket);
    socket.outbox.close(close::NORMAL);
    // A peer that stopped reading must not keep the writer forever.
    if Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, &mut writing))
        .await
        .is_err()
    {
        writing.abort();
    }
}

async fn read_loop(state: &State, socket: &Socket, reader: &mut FrameReader) {
    let mut assembler = Assembler::new(MAX_FRAME);
    loop {
        let frame = match reader.read_frame().await {
            Ok(frame) => frame,
            Err(ReadError::Gone) => return,
            Err(ReadError::Violation(v)) => return socket.outbox.close(v.code),
        };
        match frame.opcode {
            OpCode::Close => {
                let code = frames::check_close(&frame.payload).unwrap_or_else(|v| v.code);
                return socket.outbox.close(code);
            }
            OpCode::Ping => socket
                .outbox
                .push(Outbound::Pong(Bytes::copy_from_slice(&frame.payload))),
            OpCode::Pong => {}
            OpCode::Text | OpCode::Binary | OpCode::Continuation => match assembler.push(&frame) {
                Ok(Some(Message::Text(text))) => handle(state, socket, &text),
                Ok(Some(Message::Binary(_))) => socket.outbox.push(Outbound::Text(
                    ChatEvent::Error {
                        code: Code::UnsupportedData,
                        detail: "send JSON text",
                        client_ref: None,
                    }
                    .to_bytes(),
                )),
                Ok(None) => {}
                Err(v) => return socket.outbox.close(v.code),
            },
        }
    }
}

fn handle(state: &State, socket: &Socket, text: &str) {
    let parsed = protocol::parse::<ChatIn>(text);
    let reply = match parsed {
        Ok(ChatIn::ChatMessage(m)) => return state.chat_message(socket, m),
        Ok(ChatIn::Ping) => ChatEvent::Pong,
        Ok(_) => ChatEvent::Error {
            code: Code::UnknownType,
            detail: "the ceiling routes chat messages only",
            client_ref: None,
        },
        Err(ref e) => ChatEvent::Error {
            code: e.code,
            detail: &e.detail,
            client_ref: e.client_ref.as_deref(),
        },
    };
    socket.outbox.push(Outbound::Text(reply.to_bytes()));
}

/// Drains the outbox onto the socket: up to [`WRITE_BATCH`] frames per wake-up, one flush.
async fn write_loop(mut writer: SocketWriter, socket: Arc<Socket>) {
    let mut batch = Vec::new();
    loop {
        let closing = socket.outbox.next_batch(WRITE_BATCH, &mut batch).await;
        // Boxed, as in the daemon: the write's state exists only while a batch goes out, and
        // an idle socket's task should not carry room for it.
        if Box::pin(write_batch(&mut writer, &mut batch))
            .await
            .is_err()
        {
            return;
        }
        // An idle socket keeps no room for a burst it had.
        if batch.capacity() > 8 {
            batch = Vec::new();
        }
        if let Some(code) = closing {
            let close = async {
                writer.write_frame(Frame::close(code, b"")).await?;
                writer.flush().await
            };
            let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
            return;
        }
    }
}

async fn write_batch(
    writer: &mut SocketWriter,
    batch: &mut Vec<Outbound>,
) -> Result<(), WebSocketError> {
    for frame in batch.drain(..) {
        let frame = match &frame {
            Outbound::Text(payload) => Frame::text(Payload::Borrowed(payload)),
            Outbound::Pong(payload) => Frame::pong(Payload::Borrowed(payload)),
        };
        writer.write_frame(frame).await?;
    }
    writer.flush().await
}

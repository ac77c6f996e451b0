//! One WebSocket, from upgrade to close.
//!
//! The socket is split: this task reads (with [`FrameReader`], which holds no buffer while
//! the socket is idle), a writer task drains the socket's [`Outbox`] through fastwebsockets'
//! frame writer. Inbound messages are handled in read order; a send is queued for commit in
//! that order and acknowledged (`message_sent`) by a spawned task once durable, so a client
//! may pipeline.
//!
//! Over the ~600-line guide (issue 17) and the next to split: the writer task ([`Writer`],
//! `write_loop`, the slow-consumer handling) drains the [`Outbox`] on its own task and can be
//! its own file; the reading side (`read_loop`, `impl Session`: one handler per inbound message)
//! would stay here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use super::acks::{self, Acks, Answerer};
use super::coalesce::Coalesce;
use super::frames::{self, Assembler, Message, close};
use super::protocol::{
    self, ChatIn, ConversationIn, ConversationRef, NotificationsIn, Typing, TypingIndicator,
};
use super::reader::{FrameReader, ReadError};
use crate::auth::Identity;
use crate::chat::send::Submitted;
use crate::chat::{self, ChatError, SendRequest, Sender};
use crate::error::Code;
use crate::events::{ChatEvent, ConversationEvent};
use crate::hub::outbox::{CLOSE_SLOW_CONSUMER, Closing, Lane, Outbound, Outbox};
use crate::hub::{Endpoint, Hub, SessionId};
use crate::ids::{self, WireId};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::time::now_ms;

/// Frames other than messages a socket may send per second, and in a burst.
const CONTROL_FRAMES_PER_SECOND: f64 = 20.0;
const CONTROL_FRAMES_BURST: u32 = 60;
/// Messages replayed from the queue per read of the store.
const REPLAY_CHUNK: usize = 256;
/// Most messages one `sync` request returns (the client continues from `last_message_id`).
const SYNC_LIMIT: usize = 500;
/// Frames the writer takes from the outbox per wake-up; they go out in one write.
const WRITE_BATCH: usize = 64;
/// Bytes of a batch buffered before they are written out anyway.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one batch of frames may take to write. Batches are small next to the kernel's send
/// buffer, so a write that blocks this long means the client stopped reading: it is a slow
/// consumer, closed with 4008. Its close frame can only follow the frame in progress, so that
/// (and any 4008 close) gets one more `WRITE_TIMEOUT` before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

type SocketWriter = WebSocketWrite<Coalesce<OwnedWriteHalf>>;

/// What a socket was opened for, after authorization.
#[derive(Debug, Clone)]
pub enum Kind {
    Chat,
    Conversation {
        id: u64,
        participants: Arc<Vec<u64>>,
    },
    Notifications,
    /// Echoes every message (conformance testing only; see `server.websocket_echo`).
    Echo,
}

/// A socket's fixed facts, shared by its handlers.
struct Session {
    state: Arc<AppState>,
    id: SessionId,
    /// The user's id (the token's name, if any, is in `username`: not kept twice).
    user: u64,
    username: Option<String>,
    /// Whether the token claims a name: then it is the name, for the socket's life; else the
    /// directory's is read at each event ([`Session::username`]).
    token_named: bool,
    kind: Kind,
    outbox: Arc<Outbox>,
    /// Frames other than chat messages per second ([`CONTROL_FRAMES_PER_SECOND`]).
    control_budget: TokenBucket,
    /// Sends waiting for their durable answer, in the order they were sent.
    acks: Mutex<Acks<Ack>>,
}

/// One send waiting for its answer ([`super::acks`]).
struct Ack {
    submitted: Submitted,
    /// The send's `client_id`, for `ref` in an error.
    client_ref: Option<String>,
    /// Whether a success is acknowledged with `message_sent` (the conversation dialect has
    /// no acknowledgement).
    ack: bool,
}

/// Runs an upgraded socket to the end. `socket` gives its TCP stream once the handshake is
/// done, with the bytes already read from it past the upgrade request (`None`: the upgrade
/// failed, and was logged). A refusal in `who` closes it at once with that code (4401 bad
/// token, 4403 not a participant), as the contract asks: accepted, then closed. `_connection`
/// keeps the connection counted while the socket lives.
///
/// `socket` is awaited here, not in a task wrapped around this one, which would keep both
/// states for the socket's life: the reader task's future measured 960 bytes so, against 816
/// this way (debug build; 800 when the session read hyper's upgrade itself).
pub async fn run(
    state: Arc<AppState>,
    socket: impl Future<Output = Option<(TcpStream, Bytes)>>,
    who: Result<(Identity, Kind), (u16, &'static str)>,
    _connection: Option<Arc<dyn std::any::Any + Send + Sync>>,
) {
    let Some((stream, early)) = socket.await else {
        return;
    };
    let (read, write) = stream.into_split();
    let max_frame = state.config.limits.max_frame_bytes;
    let mut reader = FrameReader::new(read, early, max_frame);
    let (_, mut writer) = fastwebsockets::after_handshake_split(
        tokio::io::empty(),
        Coalesce::new(write, WRITE_BUFFER),
        Role::Server,
    );
    let (user, kind) = match who {
        Ok(found) => found,
        Err((code, reason)) => {
            let close = send_now(&mut writer, Frame::close(code, reason.as_bytes()));
            let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
            return;
        }
    };

    let hub = state.hub.clone();
    let outbox = Arc::new(Outbox::new(state.config.limits.outbound_buffer));
    let id = hub.new_session_id();
    let endpoint = match &kind {
        Kind::Chat => Some(Endpoint::Chat),
        Kind::Conversation { id, .. } => Some(Endpoint::Conversation(*id)),
        Kind::Notifications => Some(Endpoint::Notifications),
        Kind::Echo => None,
    };
    if matches!(kind, Kind::Chat) {
        // First frame, before the hub can route anything here.
        let _ = outbox.push(
            Lane::Control,
            Outbound::event(ChatEvent::connection_established(user.user_id, id).to_bytes()),
        );
    }
    if matches!(kind, Kind::Chat) {
        // The queue goes first: live messages wait until it has been replayed.
        outbox.begin_replay();
    }
    let fanned_out = endpoint.map(|endpoint| {
        let fanned_out = hub.register(id, user.user_id, endpoint, outbox.clone());
        hub.connected(user.user_id);
        fanned_out
    });
    let token_named = user.username.is_some();
    let username = state.users.lookup(user.user_id).flatten().or(user.username);
    let session = Arc::new(Session {
        state: state.clone(),
        id,
        user: user.user_id,
        username,
        token_named,
        kind,
        outbox: outbox.clone(),
        control_budget: TokenBucket::new(CONTROL_FRAMES_PER_SECOND, CONTROL_FRAMES_BURST),
        acks: Mutex::default(),
    });
    tracing::debug!(session = id, user = session.user, "websocket open");
    if let (Kind::Chat, Some(fanned_out)) = (&session.kind, fanned_out) {
        // The socket is in the hub by now: a message committed for the user after this check
        // reaches it live, and one committed before put the user in the writer's queued set
        // before its fan-out. So an absent user has nothing to replay and needs no task,
        // unless what was held meanwhile must wait for room.
        let user = session.user;
        if state.store.writer().may_have_queued(user) || !outbox.try_end_replay() {
            state.tasks.spawn(replay_queue(session.clone(), fanned_out));
        }
    }

    let activity = Arc::new(AtomicU64::new(now_ms()));
    let mut write_task = tokio::spawn(write_loop(
        Writer {
            socket: writer,
            outbox: outbox.clone(),
            hub: hub.clone(),
            metrics: state.metrics.clone(),
            session: id,
            user: session.user,
        },
        activity.clone(),
        state.config.limits.ping_interval,
        state.shutdown_token(),
    ));

    // Whichever side ends first ends the socket. When the writer is done (it sent a close,
    // or the peer stopped reading or answering), the reader gets a moment for the peer's
    // close reply (if a close went out) and is then dropped: cancelling `read_frame` is fine
    // once the socket goes.
    let reading = read_loop(&session, &mut reader, &activity, max_frame);
    tokio::pin!(reading);
    let writer_done = tokio::select! {
        _ = &mut reading => None,
        closed = &mut write_task => Some(closed.unwrap_or(false)),
    };
    // The close-time timers are boxed here and below: a future keeps room for its largest
    // state all its life, and an idle socket should not carry the few it uses once.
    if let Some(close_sent) = writer_done {
        if close_sent {
            let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, &mut reading)).await;
        }
    } else {
        if !outbox.is_closing() {
            outbox.close(close::NORMAL, "");
        }
        if Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, &mut write_task))
            .await
            .is_err()
        {
            write_task.abort();
        }
    }
    // Whatever ended the socket, its outbox is closed now: tasks still feeding it (a queue
    // replay, a sync) see that and stop.
    outbox.close(close::GOING_AWAY, "");
    if endpoint.is_some() {
        hub.unregister(id);
        hub.disconnected(session.user, &state.shutdown_token());
    }
    tracing::debug!(session = id, "websocket closed");
}

async fn read_loop(
    session: &Arc<Session>,
    reader: &mut FrameReader,
    activity: &AtomicU64,
    max_frame: usize,
) {
    let outbox = &session.outbox;
    let mut assembler = Assembler::new(max_frame);
    loop {
        let frame = match reader.read_frame().await {
            Ok(frame) => frame,
            Err(ReadError::Gone) => return,
            Err(ReadError::Violation(v)) => {
                outbox.close(v.code, v.reason);
                return;
            }
        };
        activity.store(now_ms(), Ordering::Relaxed);
        match frame.opcode {
            OpCode::Close => {
                match frames::check_close(&frame.payload) {
                    Ok(code) => outbox.close(code, ""),
                    Err(v) => outbox.close(v.code, v.reason),
                }
                return;
            }
            OpCode::Ping => {
                let pong = Outbound::Pong(Bytes::copy_from_slice(&frame.payload));
                if outbox.push(Lane::Control, pong).is_err() {
                    return;
                }
            }
            // Its size was checked by the reader; receiving it was the point (`activity`).
            OpCode::Pong => {}
            OpCode::Text | OpCode::Binary | OpCode::Continuation => match assembler.push(&frame) {
                // Boxed: handling a message is the largest state of this loop, and a socket
                // waiting for its next frame should not carry it.
                Ok(Some(message)) => Box::pin(session.handle(message)).await,
                Ok(None) => {}
                Err(v) => {
                    outbox.close(v.code, v.reason);
                    return;
                }
            },
        }
        if outbox.is_closing() {
            return;
        }
    }
}

/// The writing half of a socket and what its writer task reports to.
struct Writer {
    socket: SocketWriter,
    outbox: Arc<Outbox>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Named in the log when the socket is closed as a slow consumer.
    session: SessionId,
    user: u64,
}

/// Drains the outbox onto the socket; pings an idle client and drops a dead one. Returns
/// whether a close frame went out (so a reply may come).
async fn write_loop(
    mut w: Writer,
    activity: Arc<AtomicU64>,
    ping_every: Duration,
    shutdown: CancellationToken,
) -> bool {
    // Set once a batch stalled: what is left of the slow consumer's time for its close.
    let mut close_by = None;
    // The shutdown wait and the ping timer live as long as the loop: made afresh for every
    // wait, each batch registered a waiter with the shutdown token that every socket shares
    // (a lock they all take) and a timer, and took both out again once woken.
    let shutting_down = shutdown.cancelled();
    tokio::pin!(shutting_down);
    let ping_timer = tokio::time::sleep(ping_every);
    tokio::pin!(ping_timer);
    // When the last batch went out: the ping is due `ping_every` after it.
    let mut wrote_at = tokio::time::Instant::now();
    loop {
        // Both allocated for one batch and given back once it is written: kept between
        // batches, the first frame alone (`connection_established`) left 4 slots in each,
        // 4 × 96 + 4 × 48 bytes on every idle socket. An allocation per batch is nothing next
        // to the batch's write.
        let mut batch = Vec::new();
        // Queue entries and commit times of the batch's messages, reported once it is written.
        let mut written = Vec::new();
        let next = tokio::select! {
            biased;
            next = w.outbox.next_batch(WRITE_BATCH, &mut batch) => next,
            _ = &mut shutting_down, if !w.outbox.is_closing() => {
                w.outbox.close(close::GOING_AWAY, "server shutting down");
                continue;
            }
            _ = &mut ping_timer => {
                // Batches went out meanwhile: the ping moves after the last one (the timer is
                // moved only now, not at every batch).
                let due = wrote_at + ping_every;
                if due > tokio::time::Instant::now() {
                    ping_timer.as_mut().reset(due);
                    continue;
                }
                let idle = now_ms().saturating_sub(activity.load(Ordering::Relaxed));
                if idle > 2 * ping_every.as_millis() as u64 {
                    tracing::debug!("websocket peer is not answering: dropped");
                    return false;
                }
                let ping = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""));
                if Box::pin(timed(send_now(&mut w.socket, ping))).await.is_err() {
                    return false;
                }
                wrote_at = tokio::time::Instant::now();
                ping_timer.as_mut().reset(wrote_at + ping_every);
                continue;
            }
        };
        // Frames go into the coalescing buffer and out with the flush; a batch past
        // WRITE_BUFFER is written out on the way, so the whole batch is under the timeout.
        // Boxed: the write's state exists only while a batch goes out.
        let mut write = Box::pin(async {
            for frame in batch.drain(..) {
                let frame = match &frame {
                    Outbound::Text {
                        payload,
                        delivers,
                        committed_ms,
                        ..
                    } => {
                        written.push((*delivers, *committed_ms));
                        Frame::text(Payload::Borrowed(payload))
                    }
                    Outbound::Binary(payload) => Frame::binary(Payload::Borrowed(payload)),
                    Outbound::Pong(payload) => Frame::pong(Payload::Borrowed(payload)),
                };
                w.socket.write_frame(frame).await?;
            }
            w.socket.flush().await
        });
        let sent = match tokio::time::timeout(WRITE_TIMEOUT, write.as_mut()).await {
            Ok(sent) => sent,
            Err(_) => {
                // Not a batch out in WRITE_TIMEOUT: the client cannot keep up. The write in
                // progress cannot be taken back, so the close follows it, in the time left.
                w.outbox
                    .close(CLOSE_SLOW_CONSUMER, "client stopped reading");
                match w.outbox.closing() {
                    Some(c) if c.code == CLOSE_SLOW_CONSUMER => {
                        slow_consumer(w.session, w.user, c.reason)
                    }
                    // Closing for another reason (a shutdown): no more time is given.
                    _ => return false,
                }
                let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
                close_by = Some(deadline);
                match tokio::time::timeout_at(deadline, write.as_mut()).await {
                    Ok(sent) => sent,
                    Err(_) => Err(WebSocketError::ConnectionClosed),
                }
            }
        };
        drop(write);
        if sent.is_err() {
            if close_by.is_some() {
                slow_consumer_dropped(w.session, w.user);
            }
            return false;
        }
        wrote_at = tokio::time::Instant::now();
        let now = now_ms();
        let mut delivered = Vec::new();
        for (delivers, committed_ms) in written.drain(..) {
            if let Some(committed) = committed_ms {
                let waited = now.saturating_sub(committed);
                w.metrics.delivery_seconds.observe(waited as f64 / 1000.0);
            }
            delivered.extend(delivers);
        }
        if !delivered.is_empty() {
            w.metrics.messages_delivered.inc_by(delivered.len() as u64);
            w.hub.delivered(delivered);
        }
        let closing = match next {
            Some(closing) => closing,
            // A stalled batch went out after all: its close is next.
            None if close_by.is_some() => match w.outbox.closing() {
                Some(closing) => closing,
                None => continue,
            },
            None => continue,
        };
        return w.close(closing, close_by).await;
    }
}

impl Writer {
    /// Sends the close frame. A slow consumer's gets the write timeout (what is left of it
    /// after a stalled batch, `close_by`); others get [`CLOSE_TIMEOUT`].
    async fn close(&mut self, closing: Closing, close_by: Option<tokio::time::Instant>) -> bool {
        let slow = closing.code == CLOSE_SLOW_CONSUMER;
        let limit = if slow { WRITE_TIMEOUT } else { CLOSE_TIMEOUT };
        let deadline = close_by.unwrap_or_else(|| tokio::time::Instant::now() + limit);
        // After a stall it was said already.
        if slow && close_by.is_none() {
            slow_consumer(self.session, self.user, closing.reason);
        }
        let frame = Frame::close(closing.code, closing.reason.as_bytes());
        let sent = Box::pin(tokio::time::timeout_at(
            deadline,
            send_now(&mut self.socket, frame),
        ))
        .await;
        let sent = matches!(sent, Ok(Ok(())));
        if slow && !sent {
            slow_consumer_dropped(self.session, self.user);
        }
        sent
    }
}

fn slow_consumer(session: SessionId, user: u64, reason: &str) {
    // What it missed stays in its queue (entries leave only once written) and in `sync`:
    // nothing is lost, but an operator should see why a client keeps reconnecting.
    tracing::info!(
        session,
        user,
        reason,
        "slow consumer: closing its websocket with 4008"
    );
}

fn slow_consumer_dropped(session: SessionId, user: u64) {
    tracing::info!(
        session,
        user,
        within = ?WRITE_TIMEOUT,
        "slow consumer took no close frame: connection dropped"
    );
}

/// Writes one frame and flushes it out of the coalescing buffer.
async fn send_now(writer: &mut SocketWriter, frame: Frame<'_>) -> Result<(), WebSocketError> {
    writer.write_frame(frame).await?;
    writer.flush().await
}

/// A frame write bounded by [`WRITE_TIMEOUT`]; a timeout counts as a failed write.
async fn timed(
    write: impl std::future::Future<Output = Result<(), WebSocketError>>,
) -> Result<(), WebSocketError> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result,
        Err(_) => Err(WebSocketError::ConnectionClosed),
    }
}

/// Delivers the user's queue right after `connection_established`: high priority first, in
/// chunks, each written before the next is read. Entries leave the queue once written.
/// `fanned_out`: the last message fanned out before the socket registered.
async fn replay_queue(session: Arc<Session>, fanned_out: u64) {
    // (Asked again: the socket may be here only to wait for room, see `run`.)
    if session.state.store.writer().may_have_queued(session.user) {
        replay_chunks(&session, fanned_out).await;
    }
    // Live messages held meanwhile follow now (those the replay already sent are dropped).
    session.outbox.end_replay().await;
}

async fn replay_chunks(session: &Session, fanned_out: u64) {
    let user = session.user;
    let capacity = session.state.config.limits.outbound_buffer;
    let chunk = REPLAY_CHUNK.min((capacity / 2).max(1));
    let mut after = None;
    loop {
        let read = session
            .state
            .store
            .read(move |r| r.queued(user, after, chunk))
            .await;
        let (entries, last) = match read {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "queue replay failed");
                return;
            }
        };
        let Some(last) = last else { return };
        after = Some(last);
        let frames: Vec<Outbound> = entries
            .iter()
            .map(|m| Outbound::Text {
                payload: ChatEvent::new_message(m.id, &m.record, &m.body).to_bytes(),
                delivers: Some((user, m.rank, m.id)),
                message_id: Some(m.id),
                committed_ms: None,
            })
            .collect();
        // Waits for room: the socket's own backlog never earns it a 4008.
        if !frames.is_empty()
            && session
                .outbox
                .push_replay(frames, fanned_out)
                .await
                .is_err()
        {
            return;
        }
    }
}

impl Session {
    /// The name this user's events carry: fixed at connect when their token claims one;
    /// otherwise the directory's, read now, so that a name the host app sets while the socket
    /// is open (`PUT /api/users/{id}`) shows at once.
    fn username(&self) -> Option<String> {
        if self.token_named {
            return self.username.clone();
        }
        self.state
            .users
            .lookup(self.user)
            .flatten()
            .or_else(|| self.username.clone())
    }

    fn push(&self, event: Bytes) {
        let _ = self.outbox.push(Lane::Control, Outbound::event(event));
    }

    /// An `error` event in the socket's dialect; the socket stays open.
    fn error(&self, code: Code, detail: &str, client_ref: Option<&str>) {
        self.push(self.error_event(code, detail, client_ref));
    }

    fn error_event(&self, code: Code, detail: &str, client_ref: Option<&str>) -> Bytes {
        match self.kind {
            Kind::Conversation { .. } => ConversationEvent::Error { message: detail }.to_bytes(),
            _ => ChatEvent::Error {
                code,
                detail,
                client_ref,
            }
            .to_bytes(),
        }
    }

    async fn handle(self: &Arc<Self>, message: Message) {
        let text = match (&self.kind, message) {
            (Kind::Echo, Message::Text(text)) => {
                let _ = self
                    .outbox
                    .push(Lane::Control, Outbound::event(Bytes::from(text)));
                return;
            }
            (Kind::Echo, Message::Binary(data)) => {
                let _ = self
                    .outbox
                    .push(Lane::Control, Outbound::Binary(Bytes::from(data)));
                return;
            }
            (_, Message::Binary(_)) => {
                self.error(
                    Code::UnsupportedData,
                    "binary frames are not supported: send JSON text",
                    None,
                );
                return;
            }
            (_, Message::Text(text)) => text,
        };
        match &self.kind {
            Kind::Chat => match protocol::parse::<ChatIn>(&text) {
                Ok(msg @ ChatIn::ChatMessage(_)) => self.chat(msg).await,
                Ok(msg) if self.spend() => self.chat(msg).await,
                Ok(_) => {}
                Err(e) if self.spend() => self.error(e.code, &e.detail, e.client_ref.as_deref()),
                Err(_) => {}
            },
            Kind::Conversation { id, participants } => {
                match protocol::parse::<ConversationIn>(&text) {
                    Ok(msg @ ConversationIn::Message(_)) => {
                        self.conversation(*id, participants, msg).await
                    }
                    Ok(msg) if self.spend() => self.conversation(*id, participants, msg).await,
                    Ok(_) => {}
                    Err(e) if self.spend() => self.error(e.code, &e.detail, None),
                    Err(_) => {}
                }
            }
            Kind::Notifications => match protocol::parse::<NotificationsIn>(&text) {
                Ok(NotificationsIn::Ping) if self.spend() => self.push(ChatEvent::Pong.to_bytes()),
                Err(e) if self.spend() => self.error(e.code, &e.detail, e.client_ref.as_deref()),
                _ => {}
            },
            Kind::Echo => {}
        }
    }

    /// Spends one unit of the socket's budget for frames other than chat messages (which have
    /// the per-user send rate): typing, receipts, sync, joins and bad frames cannot be used to
    /// flood other participants or the store. Over budget, says so once per refusal.
    fn spend(&self) -> bool {
        if self.control_budget.take().is_ok() {
            return true;
        }
        self.error(Code::RateLimited, "too many frames; slow down", None);
        false
    }

    fn sender(&self) -> Sender {
        Sender {
            user: self.user,
            rate_limited: true,
            origin: Some(self.id),
        }
    }

    /// Queues a send now (keeping the socket's order) and acknowledges it once durable.
    async fn send(self: &Arc<Self>, request: SendRequest, ack: bool) {
        let client_ref = request.client_id.clone();
        let submitted = match chat::send::prepare(&self.state, self.sender(), request).await {
            Ok(new) => chat::send::submit(&self.state, new).await,
            Err(e) => Err(e),
        };
        let submitted = match submitted {
            Ok(s) => s,
            Err(e) => return self.send_failed(&e, client_ref.as_deref()),
        };
        let waiting = Ack {
            submitted,
            client_ref,
            ack,
        };
        acks::wait_for_answer(self, waiting);
    }

    fn send_failed(&self, e: &ChatError, client_ref: Option<&str>) {
        self.error(e.code(), &e.to_string(), client_ref);
    }

    /// The participants of `conversation` if the user is one of them.
    async fn membership(&self, conversation: u64) -> Option<Arc<Vec<u64>>> {
        match self.state.hub.participants(conversation).await {
            Ok(Some(p)) if p.contains(&self.user) => Some(p),
            _ => None,
        }
    }

    async fn chat(self: &Arc<Self>, msg: ChatIn) {
        match msg {
            ChatIn::ChatMessage(m) => {
                let request = SendRequest {
                    conversation: Some(m.conversation_id.into()),
                    receiver: m.receiver_id.map(u64::from),
                    text: m.text,
                    message_type: m.message_type,
                    priority: m.priority,
                    metadata: m.metadata,
                    client_id: m.client_id,
                    ..SendRequest::default()
                };
                self.send(request, true).await;
            }
            ChatIn::TypingIndicator(TypingIndicator {
                conversation_id: WireId(conversation_id),
                is_typing,
            }) => match self.membership(conversation_id).await {
                Some(participants) => self.state.hub.typing(
                    self.user,
                    self.username().as_deref(),
                    conversation_id,
                    &participants,
                    is_typing,
                ),
                None => self.error(Code::NotFound, "conversation not found", None),
            },
            ChatIn::ReadReceipt(r) => self.read(ids::plain(r.message_ids), None),
            ChatIn::JoinConversation(ConversationRef {
                conversation_id: WireId(conversation_id),
            }) => {
                let Some(participants) = self.membership(conversation_id).await else {
                    return self.error(Code::NotFound, "conversation not found", None);
                };
                self.state.hub.join(self.id, conversation_id);
                self.push(ChatEvent::Joined { conversation_id }.to_bytes());
                // Who is here right now, so the client need not wait for a change.
                for other in participants.iter().filter(|p| **p != self.user) {
                    let status = self.state.hub.presence.status(*other);
                    self.push(
                        ChatEvent::presence(*other, status.online, status.last_seen_ms).to_bytes(),
                    );
                }
            }
            ChatIn::LeaveConversation(ConversationRef {
                conversation_id: WireId(conversation_id),
            }) => {
                self.state.hub.leave(self.id, conversation_id);
                self.push(ChatEvent::Left { conversation_id }.to_bytes());
            }
            ChatIn::Sync(sync) => {
                let session = self.clone();
                self.state
                    .tasks
                    .spawn(async move { session.sync(sync.since_message_id.0).await });
            }
            ChatIn::Ping => self.push(ChatEvent::Pong.to_bytes()),
        }
    }

    async fn conversation(self: &Arc<Self>, id: u64, participants: &[u64], msg: ConversationIn) {
        match msg {
            ConversationIn::Message(m) => {
                let request = SendRequest {
                    conversation: Some(id),
                    text: m.content,
                    ..SendRequest::default()
                };
                // The conversation dialect has no acknowledgement: the sender hears its own
                // `message` event like everyone in the room.
                self.send(request, false).await;
            }
            ConversationIn::Typing(Typing { is_typing }) => self.state.hub.typing(
                self.user,
                self.username().as_deref(),
                id,
                participants,
                is_typing,
            ),
            ConversationIn::Read(r) => self.read(ids::plain(r.message_ids), Some(id)),
            ConversationIn::Ping => self.push(ConversationEvent::Pong.to_bytes()),
        }
    }

    /// Marks messages read (in `only` if given) and relays the receipts, off the read loop.
    fn read(self: &Arc<Self>, message_ids: Vec<u64>, only: Option<u64>) {
        if let Err(e) = chat::read::check_receipt(&message_ids) {
            return self.send_failed(&e, None);
        }
        let session = self.clone();
        self.state.tasks.spawn(async move {
            let result = chat::read::mark_read(
                &session.state,
                session.user,
                &message_ids,
                only,
                Some(session.id),
            )
            .await;
            if let Err(e) = result {
                session.send_failed(&e, None);
            }
        });
    }

    /// Everything after `since` in the user's conversations, in order, then `sync_complete`.
    async fn sync(&self, since: u64) {
        let user = self.user;
        // With `sync_complete`, the batch fits in half the buffer.
        let limit = SYNC_LIMIT
            .min(self.state.config.limits.outbound_buffer / 2)
            .max(1);
        let found = self
            .state
            .store
            .read(move |r| r.messages_since(user, since, limit))
            .await;
        let page = match found {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "sync failed");
                return self.error(Code::InternalError, "sync failed; try again", None);
            }
        };
        // The last id covered, a damaged message left out included: the next sync goes on
        // after it.
        let last = page.last_id.unwrap_or(since);
        let more = page.more;
        let mut frames: Vec<Outbound> = page
            .messages
            .iter()
            .map(|m| Outbound::Text {
                payload: ChatEvent::new_message(m.id, &m.record, &m.body).to_bytes(),
                delivers: None,
                message_id: Some(m.id),
                committed_ms: None,
            })
            .collect();
        frames.push(Outbound::event(
            ChatEvent::SyncComplete {
                last_message_id: last,
                has_more: more,
            }
            .to_bytes(),
        ));
        // Waits for room like the queue replay: a sync never earns the client a 4008.
        let _ = self.outbox.push_when_room(frames).await;
    }
}

impl Answerer for Session {
    type Waiting = Ack;

    fn acks(&self) -> &Mutex<Acks<Ack>> {
        &self.acks
    }

    fn is_answered(waiting: &Ack) -> bool {
        waiting.submitted.is_answered()
    }

    fn take_client_ref(waiting: &mut Ack) -> Option<String> {
        waiting.client_ref.take()
    }

    async fn answer(&self, waiting: Ack, client_ref: Option<&str>) -> Option<Bytes> {
        match waiting.submitted.finish(&self.state).await {
            Ok(sent) if waiting.ack => {
                Some(ChatEvent::message_sent(sent.id, &sent.record).to_bytes())
            }
            Ok(_) => None,
            Err(e) => Some(self.error_event(e.code(), &e.to_string(), client_ref)),
        }
    }

    fn unanswered(&self, client_ref: Option<&str>) -> Bytes {
        tracing::error!(
            session = self.id,
            user = self.user,
            client_ref,
            "answering a send failed: its sender is told its outcome is unknown"
        );
        self.error_event(
            Code::InternalError,
            "the send's outcome is unknown: send it again with the same client_id",
            client_ref,
        )
    }

    fn deliver(&self, frames: Vec<Bytes>) {
        let _ = self
            .outbox
            .push_all(Lane::Control, frames.into_iter().map(Outbound::event));
    }

    fn spawn(this: Arc<Self>) {
        let tasks = this.state.tasks.clone();
        tasks.spawn(acks::answer_acks(this));
    }
}

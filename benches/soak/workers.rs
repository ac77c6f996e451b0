//! The mixed load: one task per worker and round. A round's workers start once its daemon
//! listens and land once it is gone; an operation in flight is never abandoned, it ends with
//! an answer or with the connection, so each worker knows what was acknowledged, what was
//! refused and what is in doubt. Sends in doubt that carry a `client_id` are sent again, the
//! same body, first thing in the next round.
//!
//! Workers: REST senders, WebSocket senders (`chat_message` → `message_sent`, a few in flight
//! per socket), service senders (prioritised, into a conversation or to a receiver), a
//! broadcaster, socket readers (queue replay on connect, then live; `read_receipt`s now and
//! then) and a drainer (the service queue drain of the users who never connect, and their
//! `mark_as_read`s).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::api::{Api, As, Reply, TIMED_OUT, event};
use super::ledger::{
    Book, Cast, Delivery, Drain, LostDrain, Marker, Outcome, Route, Seen, SendRecord, Via, text,
};

/// `chat_message`s one socket has in flight at most.
const WS_WINDOW: usize = 4;
/// Share of REST and service sends with a `client_id` (WebSocket sends all have one: it is
/// how their `message_sent` is matched). The others cannot be retried when in doubt.
const CLIENT_ID_SHARE: f64 = 0.8;
/// The broadcaster pauses this many times longer than the others.
const BROADCAST_PACE: f64 = 8.0;
/// Largest `limit` of a drain during the load.
const MAX_DRAIN: usize = 200;
/// Share of answered drains followed by a `mark_as_read` of a drained message.
const MARK_SHARE: f64 = 0.3;
/// A reader sends a `read_receipt` after this many deliveries.
const RECEIPT_EVERY: u32 = 20;
/// How long a socket may stay open after its round's daemon is gone before it counts as hung.
const SOCKET_END_GRACE: Duration = Duration::from_secs(5);
/// Filler after the stamp of a message text, up to this many characters.
const MAX_FILLER: usize = 120;
/// Error codes that mean "not now", not "never": the send is retried like a lost one.
const TRANSIENT: [&str; 3] = ["shutting_down", "storage_unavailable", "unavailable"];

/// What one round gives its workers.
#[derive(Debug, Clone)]
pub(crate) struct RoundCtx {
    pub(crate) round: u32,
    pub(crate) api: Api,
    /// Fired once this round's daemon has exited: no operation starts after it.
    pub(crate) stop: CancellationToken,
    /// Mean pause between one worker's operations.
    pub(crate) pause: Duration,
    /// This run's tag, at the start of every text.
    pub(crate) tag: String,
}

/// What the workers did in one round.
#[derive(Debug, Default, Clone)]
pub(crate) struct RoundStats {
    pub(crate) acked: BTreeMap<Via, u64>,
    /// Sends whose answer was lost (or was "shutting down") this round.
    pub(crate) in_doubt: u64,
    /// Sends of an earlier round sent again this round.
    pub(crate) retries: u64,
    pub(crate) refused: u64,
    pub(crate) drains: u64,
    pub(crate) drained: u64,
    pub(crate) lost_drains: u64,
    pub(crate) delivered: u64,
    pub(crate) markers: u64,
    pub(crate) receipts: u64,
    /// Sockets the daemon closed with 4008 (slow consumer): allowed, counted.
    pub(crate) slow_consumer_closes: u64,
    /// Odd answers and events, by kind (none is expected).
    pub(crate) odd: BTreeMap<String, u64>,
}

impl RoundStats {
    fn odd(&mut self, what: impl Into<String>) {
        *self.odd.entry(what.into()).or_default() += 1;
    }

    pub(crate) fn acked_total(&self) -> u64 {
        self.acked.values().sum()
    }

    pub(crate) fn merge(&mut self, other: &RoundStats) {
        for (via, n) in &other.acked {
            *self.acked.entry(*via).or_default() += n;
        }
        self.in_doubt += other.in_doubt;
        self.retries += other.retries;
        self.refused += other.refused;
        self.drains += other.drains;
        self.drained += other.drained;
        self.lost_drains += other.lost_drains;
        self.delivered += other.delivered;
        self.markers += other.markers;
        self.receipts += other.receipts;
        self.slow_consumer_closes += other.slow_consumer_closes;
        for (what, n) in &other.odd {
            *self.odd.entry(what.clone()).or_default() += n;
        }
    }
}

/// Sleeps about `mean × pace` (uniform over twice that); false once the round stops.
async fn pause(ctx: &RoundCtx, rng: &mut fastrand::Rng, pace: f64) -> bool {
    let wait = ctx.pause.mul_f64(2.0 * rng.f64() * pace);
    tokio::select! {
        _ = ctx.stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// A worker whose daemon stopped answering waits for the round to end.
async fn park(ctx: &RoundCtx) {
    ctx.stop.cancelled().await;
}

/// Everything that sends, reads or drains.
#[derive(Debug)]
pub(crate) enum Worker {
    Http(HttpSender),
    Socket(SocketUser),
    Drainer(Drainer),
}

impl Worker {
    async fn run(&mut self, ctx: &RoundCtx) -> RoundStats {
        let mut stats = RoundStats::default();
        match self {
            Worker::Http(w) => w.run(ctx, &mut stats).await,
            Worker::Socket(w) => w.run(ctx, &mut stats).await,
            Worker::Drainer(w) => w.run(ctx, &mut stats).await,
        }
        stats
    }
}

/// All the workers of a run.
#[derive(Debug)]
pub(crate) struct Crew {
    pub(crate) workers: Vec<Worker>,
}

impl Crew {
    pub(crate) fn new(cast: &Cast, seed: u64) -> Crew {
        let mut workers = Vec::new();
        let rng = |n: usize| fastrand::Rng::with_seed(seed.wrapping_add(n as u64 * 7919));
        let http = |workers: &mut Vec<Worker>, via, user, routes: Vec<Route>, pace, rng| {
            let n = workers.len();
            workers.push(Worker::Http(HttpSender {
                via,
                user,
                routes,
                book: Book::new(n),
                rng,
                pace,
            }));
        };
        for (user, routes) in &cast.rest {
            let r = rng(workers.len());
            http(&mut workers, Via::Rest, *user, routes.clone(), 1.0, r);
        }
        for (user, routes) in &cast.service {
            let r = rng(workers.len());
            http(&mut workers, Via::Service, *user, routes.clone(), 1.0, r);
        }
        let r = rng(workers.len());
        http(
            &mut workers,
            Via::Broadcast,
            cast.broadcaster,
            vec![cast.broadcast_route()],
            BROADCAST_PACE,
            r,
        );
        let sockets = cast
            .ws
            .iter()
            .map(|(user, routes)| (*user, Some(routes.clone())))
            .chain(cast.readers.iter().map(|user| (*user, None)));
        for (user, routes) in sockets {
            let n = workers.len();
            workers.push(Worker::Socket(SocketUser {
                user,
                sends: routes.map(|routes| (routes, Book::new(n))),
                deliveries: Vec::new(),
                connections: 0,
                rng: rng(n),
            }));
        }
        let n = workers.len();
        workers.push(Worker::Drainer(Drainer {
            users: cast.drained.clone(),
            drains: Vec::new(),
            lost: Vec::new(),
            markers: Vec::new(),
            rng: rng(n),
        }));
        Crew { workers }
    }

    /// Starts every worker on `ctx`'s round.
    pub(crate) fn launch(
        &mut self,
        ctx: &RoundCtx,
    ) -> Vec<tokio::task::JoinHandle<(Worker, RoundStats)>> {
        self.workers
            .drain(..)
            .map(|mut worker| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let stats = worker.run(&ctx).await;
                    (worker, stats)
                })
            })
            .collect()
    }

    /// Waits for every worker of the round (its daemon is gone, so each ends soon), takes
    /// them back and sums what they did.
    pub(crate) async fn land(
        &mut self,
        handles: Vec<tokio::task::JoinHandle<(Worker, RoundStats)>>,
    ) -> Result<RoundStats, String> {
        let mut total = RoundStats::default();
        for handle in handles {
            let (worker, stats) = handle.await.map_err(|e| format!("a worker failed: {e}"))?;
            total.merge(&stats);
            self.workers.push(worker);
        }
        Ok(total)
    }

    /// Every send of the run.
    pub(crate) fn records(&self) -> impl Iterator<Item = &SendRecord> {
        self.workers.iter().flat_map(|w| {
            let book = match w {
                Worker::Http(h) => Some(&h.book),
                Worker::Socket(s) => s.sends.as_ref().map(|(_, b)| b),
                Worker::Drainer(_) => None,
            };
            book.into_iter().flat_map(|b| b.records.iter())
        })
    }

    /// Ends the run: what still waits for a retry is in doubt for good.
    pub(crate) fn give_up(&mut self) {
        for worker in &mut self.workers {
            match worker {
                Worker::Http(h) => h.book.give_up(),
                Worker::Socket(SocketUser {
                    sends: Some((_, book)),
                    ..
                }) => book.give_up(),
                _ => {}
            }
        }
    }

    pub(crate) fn deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.workers.iter().flat_map(|w| match w {
            Worker::Socket(s) => s.deliveries.as_slice(),
            _ => &[],
        })
    }

    pub(crate) fn drainer(&self) -> Option<&Drainer> {
        self.workers.iter().find_map(|w| match w {
            Worker::Drainer(d) => Some(d),
            _ => None,
        })
    }

    /// The number of connections each socket user made.
    pub(crate) fn connections(&self) -> HashMap<u64, u32> {
        self.workers
            .iter()
            .filter_map(|w| match w {
                Worker::Socket(s) => Some((s.user, s.connections)),
                _ => None,
            })
            .collect()
    }
}

/// A new record for `book`: a random route, a unique text, a `client_id` when `with_id`.
fn fresh(
    book: &mut Book,
    ctx: &RoundCtx,
    rng: &mut fastrand::Rng,
    via: Via,
    sender: u64,
    routes: &[Route],
    with_id: bool,
) -> usize {
    let route = routes[rng.usize(..routes.len())].clone();
    let seq = book.next_seq();
    let text = text(
        &ctx.tag,
        via,
        book.worker,
        seq,
        ctx.round,
        rng.usize(..=MAX_FILLER),
    );
    let priority = match via {
        Via::Service => ["high", "normal", "low"][rng.usize(..3)],
        Via::Broadcast => "high",
        Via::Rest | Via::Ws => "normal",
    };
    let conversation = match &route {
        Route::Conversation { id, .. } => Some(*id),
        _ => None,
    };
    book.add(SendRecord {
        via,
        worker: book.worker,
        seq,
        sender,
        route,
        conversation,
        client_id: with_id.then(|| format!("{}-{}{}-{seq}", ctx.tag, via.name(), book.worker)),
        text,
        priority,
        first_round: ctx.round,
        attempts: 1,
        outcome: Outcome::Pending,
    })
}

/// Sends over HTTP one at a time: REST messages, service sends or service broadcasts.
#[derive(Debug)]
pub(crate) struct HttpSender {
    via: Via,
    user: u64,
    routes: Vec<Route>,
    pub(crate) book: Book,
    rng: fastrand::Rng,
    /// Pause multiplier (the broadcaster's is larger).
    pace: f64,
}

impl HttpSender {
    async fn run(&mut self, ctx: &RoundCtx, stats: &mut RoundStats) {
        while !ctx.stop.is_cancelled() {
            let i = match self.book.take_retry() {
                Some(i) => {
                    stats.retries += 1;
                    i
                }
                None => {
                    let with_id = self.via != Via::Broadcast && self.rng.f64() < CLIENT_ID_SHARE;
                    fresh(
                        &mut self.book,
                        ctx,
                        &mut self.rng,
                        self.via,
                        self.user,
                        &self.routes,
                        with_id,
                    )
                }
            };
            let (path, body, who) = self.request(&self.book.records[i]);
            let reply = ctx.api.post(who, &path, &body).await;
            if !self.settle(ctx, i, reply, stats) {
                park(ctx).await;
                return;
            }
            if !pause(ctx, &mut self.rng, self.pace).await {
                return;
            }
        }
    }

    fn request(&self, r: &SendRecord) -> (String, Value, As) {
        match (self.via, &r.route) {
            (Via::Rest, route) => {
                let mut body = json!({"conversation": r.conversation, "text": r.text});
                if let Route::Conversation { .. } = route
                    && let Some(cid) = &r.client_id
                {
                    body["client_id"] = json!(cid);
                }
                (
                    "/api/v1/messaging/messages/".into(),
                    body,
                    As::User(r.sender),
                )
            }
            (Via::Broadcast, route) => (
                "/api/messages/broadcast".into(),
                json!({
                    "message": {"sender_id": r.sender, "text": r.text, "message_type": "system"},
                    "user_ids": route.recipients(),
                }),
                As::Service,
            ),
            (_, route) => {
                let mut body = json!({
                    "sender_id": r.sender,
                    "text": r.text,
                    "message_type": "text",
                    "priority": r.priority,
                });
                match route {
                    Route::Conversation { id, .. } => body["conversation_id"] = json!(id),
                    Route::OneToOne { receiver } => body["receiver_id"] = json!(receiver),
                    Route::Broadcast { .. } => {}
                }
                if let Some(cid) = &r.client_id {
                    body["client_id"] = json!(cid);
                }
                ("/api/messages/send".into(), body, As::Service)
            }
        }
    }

    /// Records what the answer says; false when the daemon stopped answering.
    fn settle(&mut self, ctx: &RoundCtx, i: usize, reply: Reply, stats: &mut RoundStats) -> bool {
        let record = &self.book.records[i];
        match reply {
            Reply::Answer { status, body } if status == 200 || status == 201 => {
                let (id, conversation, names_it) = match self.via {
                    Via::Rest => (
                        body["id"].as_u64(),
                        body["conversation"].as_u64(),
                        body["text"] == record.text.as_str()
                            && body["sender"].as_u64() == Some(record.sender),
                    ),
                    Via::Service => (
                        body["message_id"].as_u64(),
                        body["conversation_id"].as_u64(),
                        true,
                    ),
                    Via::Broadcast | Via::Ws => (
                        None,
                        None,
                        body["recipients"].as_u64() == Some(record.route.recipients().len() as u64),
                    ),
                };
                let wants_id = self.via != Via::Broadcast;
                if !names_it
                    || (wants_id && id.is_none())
                    || record.conversation.is_some_and(|c| conversation != Some(c))
                {
                    stats.refused += 1;
                    self.book
                        .refused(i, format!("{status} names another message: {body}"));
                    return true;
                }
                if status == 200 && wants_id && record.attempts == 1 {
                    // A fresh client_id answered as a repeat: another message is taken for it.
                    stats.odd(format!("{} 200 for a first send", self.via.name()));
                }
                if self.book.records[i].conversation.is_none() {
                    self.book.records[i].conversation = conversation;
                }
                self.book.acked(i, id, ctx.round);
                *stats.acked.entry(self.via).or_default() += 1;
                true
            }
            Reply::Answer { status: 503, .. } | Reply::Lost { .. } => {
                if let Reply::Lost { why, .. } = &reply
                    && why.starts_with(TIMED_OUT)
                {
                    // A kill ends a request at once; one that hangs met a live daemon.
                    stats.odd(format!("{} send {why}", self.via.name()));
                }
                stats.in_doubt += 1;
                self.book.in_doubt(i);
                false
            }
            Reply::Answer { status, body } => {
                stats.refused += 1;
                let code = body["error"].as_str().unwrap_or("?").to_owned();
                self.book.refused(i, format!("{status} {code}: {body}"));
                true
            }
        }
    }
}

/// A user on one `/ws/chat/` socket per round: a sender (with routes) or a reader.
#[derive(Debug)]
pub(crate) struct SocketUser {
    pub(crate) user: u64,
    pub(crate) sends: Option<(Vec<Route>, Book)>,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) connections: u32,
    rng: fastrand::Rng,
}

impl SocketUser {
    /// Connects, and connects again whenever the socket ends before the round does, as a
    /// client would (while the daemon is down, every attempt is refused at once).
    async fn run(&mut self, ctx: &RoundCtx, stats: &mut RoundStats) {
        loop {
            if ctx.stop.is_cancelled() {
                return;
            }
            match ctx.api.connect(self.user).await {
                Ok(ws) => self.session(ws, ctx, stats).await,
                Err(_) => {
                    let retry = tokio::time::sleep(Duration::from_millis(100));
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        _ = retry => {}
                    }
                }
            }
        }
    }

    /// One connection, until it ends.
    async fn session(&mut self, ws: super::api::Ws, ctx: &RoundCtx, stats: &mut RoundStats) {
        self.connections += 1;
        let connection = self.connections;
        let (mut sink, mut stream) = ws.split();
        // client_id → record, for the sends waiting for `message_sent`.
        let mut outstanding: HashMap<String, usize> = HashMap::new();
        let mut next_send = Instant::now();
        let mut until_receipt = RECEIPT_EVERY;
        let mut hung_after: Option<Instant> = None;
        loop {
            let can_send =
                self.sends.is_some() && hung_after.is_none() && outstanding.len() < WS_WINDOW;
            tokio::select! {
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                                        if let Message::Close(Some(close)) = &frame {
                        // 1001 is a shutdown, 4008 a client that did not keep up (a busy
                        // machine can stall the soak); a kill -9 sends no close at all.
                        match u16::from(close.code) {
                            1001 => {}
                            4008 => stats.slow_consumer_closes += 1,
                            code => stats.odd(format!("socket closed with {code}")),
                        }
                    }
                    let Some(event) = event(&frame) else { continue };
                    match event["type"].as_str() {
                        Some("new_message") => {
                            let Some(message) = Seen::from_event(&event) else {
                                stats.odd("new_message without its fields");
                                continue;
                            };
                            stats.delivered += 1;
                            let id = message.id;
                            self.deliveries.push(Delivery {
                                user: self.user,
                                message,
                                round: ctx.round,
                                connection,
                            });
                            until_receipt -= 1;
                            if until_receipt == 0 && self.sends.is_none() {
                                until_receipt = RECEIPT_EVERY;
                                let receipt = json!({"type": "read_receipt", "message_ids": [id]});
                                if sink.send(Message::Text(receipt.to_string().into())).await.is_ok() {
                                    stats.receipts += 1;
                                }
                            }
                        }
                        Some("message_sent") => self.sent(ctx, &event, &mut outstanding, stats),
                        Some("error") => self.error(&event, &mut outstanding, stats),
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(next_send), if can_send => {
                    let Some((routes, book)) = self.sends.as_mut() else { continue };
                    let i = match book.take_retry() {
                        Some(i) => {
                            stats.retries += 1;
                            i
                        }
                        None => fresh(book, ctx, &mut self.rng, Via::Ws, self.user, routes, true),
                    };
                    let r = &book.records[i];
                    let cid = r.client_id.clone().unwrap_or_default();
                    let frame = json!({
                        "type": "chat_message",
                        "conversation_id": r.conversation,
                        "text": r.text,
                        "client_id": cid,
                    });
                    outstanding.insert(cid, i);
                    if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                        break;
                    }
                    next_send = Instant::now() + ctx.pause.mul_f64(2.0 * self.rng.f64());
                }
                _ = ctx.stop.cancelled(), if hung_after.is_none() => {
                    // The daemon is gone: read what it sent before, until the socket ends.
                    hung_after = Some(Instant::now() + SOCKET_END_GRACE);
                }
                _ = tokio::time::sleep_until(hung_after.unwrap_or_else(Instant::now)), if hung_after.is_some() => {
                    stats.odd("socket still open after its daemon ended");
                    break;
                }
            }
        }
        if let Some((_, book)) = self.sends.as_mut() {
            for i in outstanding.into_values() {
                stats.in_doubt += 1;
                book.in_doubt(i);
            }
        }
    }

    fn sent(
        &mut self,
        ctx: &RoundCtx,
        event: &Value,
        outstanding: &mut HashMap<String, usize>,
        stats: &mut RoundStats,
    ) {
        let Some((_, book)) = self.sends.as_mut() else {
            stats.odd("message_sent on a socket that sent nothing");
            return;
        };
        let i = event["client_id"]
            .as_str()
            .and_then(|cid| outstanding.remove(cid));
        let (Some(i), Some(id)) = (i, event["message_id"].as_u64()) else {
            stats.odd("message_sent for no send in flight");
            return;
        };
        if event["conversation_id"].as_u64() != book.records[i].conversation {
            stats.refused += 1;
            book.refused(
                i,
                format!("message_sent names another conversation: {event}"),
            );
            return;
        }
        book.acked(i, Some(id), ctx.round);
        *stats.acked.entry(Via::Ws).or_default() += 1;
    }

    fn error(
        &mut self,
        event: &Value,
        outstanding: &mut HashMap<String, usize>,
        stats: &mut RoundStats,
    ) {
        let code = event["code"].as_str().unwrap_or("?");
        let send = event["ref"]
            .as_str()
            .and_then(|cid| outstanding.remove(cid));
        match (send, self.sends.as_mut()) {
            (Some(i), Some((_, book))) if TRANSIENT.contains(&code) => {
                stats.in_doubt += 1;
                book.in_doubt(i);
            }
            (Some(i), Some((_, book))) => {
                stats.refused += 1;
                book.refused(i, format!("error event: {event}"));
            }
            _ => stats.odd(format!("error event {code}")),
        }
    }
}

/// Drains the queues of the users who never connect, and marks some of what it drained as
/// read (as the user).
#[derive(Debug)]
pub(crate) struct Drainer {
    pub(crate) users: Vec<u64>,
    pub(crate) drains: Vec<Drain>,
    pub(crate) lost: Vec<LostDrain>,
    pub(crate) markers: Vec<Marker>,
    rng: fastrand::Rng,
}

impl Drainer {
    async fn run(&mut self, ctx: &RoundCtx, stats: &mut RoundStats) {
        while !ctx.stop.is_cancelled() {
            let user = self.users[self.rng.usize(..self.users.len())];
            let limit = self.rng.usize(1..=MAX_DRAIN);
            let path = format!("/api/messages/queue/{user}?limit={limit}");
            match ctx.api.get(As::Service, &path).await {
                Reply::Answer { status: 200, body } => {
                    let messages: Option<Vec<Seen>> = body["messages"]
                        .as_array()
                        .map(|all| all.iter().filter_map(Seen::from_json).collect());
                    let messages = messages.unwrap_or_default();
                    if body["count"].as_u64() != Some(messages.len() as u64) {
                        stats.odd("drain count differs from its messages");
                    }
                    stats.drains += 1;
                    stats.drained += messages.len() as u64;
                    let last = messages.last().cloned();
                    self.drains.push(Drain {
                        user,
                        round: ctx.round,
                        messages,
                    });
                    if let Some(m) = last
                        && self.rng.f64() < MARK_SHARE
                        && !self.mark(ctx, user, &m, stats).await
                    {
                        park(ctx).await;
                        return;
                    }
                }
                Reply::Answer { status: 503, .. } | Reply::Lost { reached: false, .. } => {
                    park(ctx).await;
                    return;
                }
                Reply::Answer { status, body } => stats.odd(format!("drain {status} {body}")),
                Reply::Lost { reached: true, why } => {
                    if why.starts_with(TIMED_OUT) {
                        stats.odd(format!("drain {why}"));
                    }
                    stats.lost_drains += 1;
                    self.lost.push(LostDrain {
                        user,
                        round: ctx.round,
                        limit,
                    });
                    park(ctx).await;
                    return;
                }
            }
            if !pause(ctx, &mut self.rng, 1.0).await {
                return;
            }
        }
    }

    /// `mark_as_read` of `m` as `user`; false when the daemon stopped answering.
    async fn mark(&mut self, ctx: &RoundCtx, user: u64, m: &Seen, stats: &mut RoundStats) -> bool {
        let path = format!("/api/v1/messaging/messages/{}/mark_as_read/", m.id);
        match ctx.api.post(As::User(user), &path, &json!({})).await {
            Reply::Answer { status: 200, .. } => {
                stats.markers += 1;
                self.markers.push(Marker {
                    user,
                    conversation: m.conversation,
                    id: m.id,
                });
                true
            }
            Reply::Answer { status: 503, .. } | Reply::Lost { .. } => false,
            Reply::Answer { status, body } => {
                stats.odd(format!("mark_as_read {status} {body}"));
                true
            }
        }
    }
}

impl Crew {
    /// Writes what the run sent and saw into `dir` (tab-separated, one line per send, drain
    /// and delivery): the evidence beside the data files when the audit finds something.
    pub(crate) fn write_ledger(&self, dir: &std::path::Path) -> Result<(), String> {
        use std::io::Write;
        let create = |name: &str| -> Result<std::io::BufWriter<std::fs::File>, String> {
            let path = dir.join(name);
            std::fs::File::create(&path)
                .map(std::io::BufWriter::new)
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let io = |e: std::io::Error| format!("writing the ledger: {e}");
        let mut sends = create("sends.tsv")?;
        writeln!(
            sends,
            "worker\tseq\tvia\tsender\tconversation\tclient_id\tfirst_round\tattempts\toutcome\ttext"
        )
        .map_err(io)?;
        for r in self.records() {
            writeln!(
                sends,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:?}\t{}",
                r.worker,
                r.seq,
                r.via.name(),
                r.sender,
                r.conversation.map_or("-".into(), |c| c.to_string()),
                r.client_id.as_deref().unwrap_or("-"),
                r.first_round,
                r.attempts,
                r.outcome,
                r.text
            )
            .map_err(io)?;
        }
        sends.flush().map_err(io)?;
        let mut deliveries = create("deliveries.tsv")?;
        writeln!(deliveries, "user\tid\tround\tconnection").map_err(io)?;
        for d in self.deliveries() {
            writeln!(
                deliveries,
                "{}\t{}\t{}\t{}",
                d.user, d.message.id, d.round, d.connection
            )
            .map_err(io)?;
        }
        deliveries.flush().map_err(io)?;
        let mut drains = create("drains.tsv")?;
        writeln!(drains, "user\tround\tanswered\tlimit_or_ids").map_err(io)?;
        if let Some(drainer) = self.drainer() {
            for d in &drainer.drains {
                let ids: Vec<String> = d.messages.iter().map(|m| m.id.to_string()).collect();
                writeln!(drains, "{}\t{}\tyes\t{}", d.user, d.round, ids.join(",")).map_err(io)?;
            }
            for l in &drainer.lost {
                writeln!(drains, "{}\t{}\tno\t{}", l.user, l.round, l.limit).map_err(io)?;
            }
        }
        drains.flush().map_err(io)
    }
}

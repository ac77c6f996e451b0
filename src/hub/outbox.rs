//! The bounded outbound buffer of one socket.
//!
//! Events wait in lanes: control first (acknowledgements, replies, queue replay and `sync`,
//! which must keep their order), then high, normal and low priority. So on a backlogged
//! socket a high-priority message overtakes lower ones. Past `limits.outbound_buffer` events
//! the socket is closed with 4008: a client that stops reading must not hold memory or slow
//! anyone else, and loses nothing (undelivered messages stay in its queue, and `sync` finds
//! them).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::model::Priority;
use crate::store::QueueKey;

/// Close code for a client that cannot keep up.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Slots a lane keeps once emptied; a larger one is freed (see `Outbox::next_batch`).
const KEEP_LANE: usize = 4;

/// Which lane an event waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Replies and ordered batches: always first, first in first out.
    Control,
    /// Messages, by priority.
    Message(Priority),
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Lane::Control => 0,
            Lane::Message(p) => 1 + usize::from(p.rank()),
        }
    }
}

/// One frame to send.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A JSON text frame; `delivers` names the queue entry it discharges once written,
    /// `message_id` lets the session skip a live copy of a message it already replayed.
    Text {
        payload: Bytes,
        delivers: Option<QueueKey>,
        message_id: Option<u64>,
        /// When the message was committed (live delivery), to measure delivery latency.
        committed_ms: Option<u64>,
    },
    /// A binary frame (only the echo endpoint sends these).
    Binary(Bytes),
    /// Reply to a client's ping.
    Pong(Bytes),
}

impl Outbound {
    /// The message this frame carries, if any.
    pub fn message_id(&self) -> Option<u64> {
        match self {
            Outbound::Text { message_id, .. } => *message_id,
            _ => None,
        }
    }

    /// A plain event frame.
    pub fn event(payload: Bytes) -> Self {
        Outbound::Text {
            payload,
            delivers: None,
            message_id: None,
            committed_ms: None,
        }
    }
}

/// Why the socket is closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: &'static str,
}

#[derive(Debug, Default)]
struct State {
    lanes: [VecDeque<Outbound>; 4],
    len: usize,
    closing: Option<Closing>,
    /// While the queue is replayed, live messages wait here (counted in `len`), so that
    /// the replay comes first and nothing arrives twice.
    replaying: bool,
    held: VecDeque<(Lane, Outbound)>,
    /// Messages already sent by the replay: their live copies are dropped.
    replayed: HashSet<u64>,
}

/// The outbound buffer: many producers (the hub, the session), one consumer (the writer task).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when there is something to send.
    notify: Notify,
    /// Wakes batch producers when the writer made room (or the socket closes).
    room: Notify,
    capacity: usize,
}

/// The outbox is closed (or has just been closed because it overflowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain queues: a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event. Past the bound the outbox closes with 4008 and refuses.
    pub fn push(&self, lane: Lane, frame: Outbound) -> Result<(), Closed> {
        self.admit(1, |state| {
            if state.replaying && matches!(lane, Lane::Message(_)) {
                state.held.push_back((lane, frame));
            } else {
                state.lanes[lane.index()].push_back(frame);
            }
        })
    }

    /// Adds a batch that must arrive in order and together (queue replay, `sync`); refused
    /// whole, with a 4008 close, if it does not fit.
    pub fn push_batch(&self, frames: Vec<Outbound>) -> Result<(), Closed> {
        self.admit(frames.len(), |state| state.lanes[0].extend(frames))
    }

    /// Starts a queue replay: live messages are held back until [`Outbox::end_replay`].
    pub fn begin_replay(&self) {
        self.lock().replaying = true;
    }

    /// Queues replayed messages (ahead of live ones), waiting for room rather than
    /// overflowing: a batch the server generates must never cost the client a 4008. Returns
    /// `Err` once the socket is closing.
    pub async fn push_replay(&self, frames: Vec<Outbound>) -> Result<(), Closed> {
        let ids: Vec<u64> = frames.iter().filter_map(Outbound::message_id).collect();
        self.push_when_room(frames).await?;
        self.lock().replayed.extend(ids);
        Ok(())
    }

    /// Ends the replay: held live messages follow, minus those the replay already sent.
    pub fn end_replay(&self) {
        let mut state = self.lock();
        state.replaying = false;
        let held = std::mem::take(&mut state.held);
        let replayed = std::mem::take(&mut state.replayed);
        for (lane, frame) in held {
            if frame.message_id().is_some_and(|id| replayed.contains(&id)) {
                state.len -= 1;
            } else {
                state.lanes[lane.index()].push_back(frame);
            }
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Queues an ordered batch in the control lane once there is room for it (the writer
    /// frees room as it writes), leaving half the buffer for live events. Batches larger than
    /// half the buffer are refused outright.
    pub async fn push_when_room(&self, frames: Vec<Outbound>) -> Result<(), Closed> {
        let limit = self.capacity / 2 + 1;
        if frames.len() > limit {
            return Err(Closed);
        }
        loop {
            let waiting = self.room.notified();
            {
                let mut state = self.lock();
                if state.closing.is_some() {
                    return Err(Closed);
                }
                if state.len + frames.len() <= limit {
                    state.len += frames.len();
                    state.lanes[0].extend(frames);
                    drop(state);
                    self.notify.notify_one();
                    return Ok(());
                }
            }
            waiting.await;
        }
    }

    /// Runs `add` (which queues `count` frames) if they fit; otherwise closes with 4008.
    fn admit(&self, count: usize, add: impl FnOnce(&mut State)) -> Result<(), Closed> {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Err(Closed);
        }
        let fits = state.len + count <= self.capacity;
        if fits {
            add(&mut state);
            state.len += count;
        } else {
            state.closing = Some(Closing {
                code: CLOSE_SLOW_CONSUMER,
                reason: "outbound buffer full: client is not reading",
            });
        }
        drop(state);
        self.notify.notify_one();
        if fits { Ok(()) } else { Err(Closed) }
    }

    /// Asks the writer to close the socket with `code` as soon as it can (ahead of any
    /// backlog). The first reason given wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(Closing { code, reason });
        }
        drop(state);
        self.notify.notify_one();
        self.room.notify_waiters();
    }

    /// Frames waiting (held ones included).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a close has been asked for.
    pub fn is_closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// Takes up to `max` frames in lane order, or the close, waiting while there is nothing.
    pub async fn next_batch(&self, max: usize, out: &mut Vec<Outbound>) -> Option<Closing> {
        loop {
            {
                let mut state = self.lock();
                if let Some(closing) = &state.closing {
                    return Some(closing.clone());
                }
                if state.len > 0 {
                    for lane in 0..state.lanes.len() {
                        while out.len() < max {
                            match state.lanes[lane].pop_front() {
                                Some(frame) => out.push(frame),
                                None => break,
                            }
                        }
                    }
                    state.len -= out.len();
                    if state.len == 0 {
                        // Emptied: an idle socket keeps no lane storage from a burst, while a
                        // busy one keeps its few slots instead of reallocating every batch.
                        for lane in state.lanes.iter_mut() {
                            if lane.capacity() > KEEP_LANE {
                                *lane = VecDeque::new();
                            }
                        }
                    }
                    drop(state);
                    self.room.notify_waiters();
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Outbound {
        Outbound::event(Bytes::from_static(s.as_bytes()))
    }

    fn payloads(frames: &[Outbound]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Outbound::Text { payload, .. } => String::from_utf8_lossy(payload).into_owned(),
                Outbound::Binary(_) | Outbound::Pong(_) => "binary".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn high_priority_overtakes_and_control_goes_first() {
        let outbox = Outbox::new(10);
        outbox
            .push(Lane::Message(Priority::Low), text("low"))
            .expect("push");
        outbox
            .push(Lane::Message(Priority::Normal), text("normal"))
            .expect("push");
        outbox
            .push(Lane::Message(Priority::High), text("high"))
            .expect("push");
        outbox.push(Lane::Control, text("ack")).expect("push");
        let mut out = Vec::new();
        assert_eq!(outbox.next_batch(10, &mut out).await, None);
        assert_eq!(payloads(&out), ["ack", "high", "normal", "low"]);
    }

    #[tokio::test]
    async fn live_messages_wait_for_the_replay_and_are_not_duplicated() {
        let outbox = Outbox::new(10);
        outbox.begin_replay();
        let message = |label: &'static str, id: u64| Outbound::Text {
            payload: Bytes::from_static(label.as_bytes()),
            delivers: None,
            message_id: Some(id),
            committed_ms: None,
        };
        outbox
            .push(Lane::Message(Priority::High), message("live 7", 7))
            .expect("push");
        outbox
            .push(Lane::Message(Priority::Normal), message("live 9", 9))
            .expect("push");
        outbox
            .push_replay(vec![message("replay 7", 7)])
            .await
            .expect("replay");
        let mut out = Vec::new();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(
            payloads(&out),
            ["replay 7"],
            "live messages wait during the replay"
        );
        outbox.end_replay();
        out.clear();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(payloads(&out), ["live 9"], "the live copy of 7 is dropped");
        assert_eq!(outbox.len(), 0);
    }

    #[tokio::test]
    async fn server_batches_wait_for_room_instead_of_4008() {
        let outbox = std::sync::Arc::new(Outbox::new(6));
        for label in ["a", "b", "c"] {
            outbox.push(Lane::Control, text(label)).expect("push");
        }
        let producer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push_when_room(vec![text("d"), text("e")]).await })
        };
        tokio::task::yield_now().await;
        assert!(!outbox.is_closing(), "a waiting batch is not an overflow");
        let mut out = Vec::new();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(producer.await.expect("task"), Ok(()));
        out.clear();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(payloads(&out), ["d", "e"]);
    }

    #[tokio::test]
    async fn overflow_closes_with_4008() {
        let outbox = Outbox::new(2);
        outbox.push(Lane::Control, text("a")).expect("push");
        outbox.push(Lane::Control, text("b")).expect("push");
        assert_eq!(outbox.push(Lane::Control, text("c")), Err(Closed));
        let mut out = Vec::new();
        let closing = outbox.next_batch(10, &mut out).await.expect("closing");
        assert_eq!(closing.code, CLOSE_SLOW_CONSUMER);
        assert_eq!(outbox.push(Lane::Control, text("d")), Err(Closed));
    }
}

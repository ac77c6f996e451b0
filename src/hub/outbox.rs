//! The bounded outbound buffer of one socket.
//!
//! Events wait in lanes: control first (acknowledgements, replies, queue replay and `sync`,
//! which must keep their order), then high, normal and low priority. So on a backlogged
//! socket a high-priority message overtakes lower ones. Past `limits.outbound_buffer` events
//! the socket is closed with 4008: a client that stops reading must not hold memory or slow
//! anyone else, and loses nothing (undelivered messages stay in its queue, and `sync` finds
//! them).
//!
//! While the user's queue is replayed, live messages are *held* behind it, in a bound of
//! their own. They are not in the lanes: the writer cannot send them yet, so they must neither
//! wake it (it would find nothing to take) nor count against the room the replay waits for
//! (the replay would wait for itself). Both happened: a replay with a few hundred live
//! messages held stopped for good while the writer spun on empty batches (issue 16).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::model::Priority;
use crate::store::QueueKey;

/// Close code for a client that cannot keep up.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

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
    /// Frames in `lanes`: what the writer can take now. At most the capacity.
    queued: usize,
    closing: Option<Closing>,
    /// While the queue is replayed, live messages wait in `held` (at most the capacity, on
    /// top of the lanes), so that the replay comes first and nothing arrives twice.
    replaying: bool,
    held: VecDeque<(Lane, Outbound)>,
    /// Replayed messages whose live copy has not come yet but may: it is dropped when it
    /// does, during the replay or after it. Live messages reach a socket in id order, so the
    /// set is pruned as they pass, and it only ever holds messages fanned out after the socket
    /// registered (see [`Outbox::push_replay`]): a few, not the whole queue.
    replayed: BTreeSet<u64>,
    /// The highest live message id pushed so far.
    last_live: u64,
}

impl State {
    /// Whether live `frame` is a copy of a message the replay already sent.
    fn replayed_already(&mut self, frame: &Outbound) -> bool {
        let Some(id) = frame.message_id() else {
            return false;
        };
        self.last_live = self.last_live.max(id);
        if self.replayed.is_empty() {
            return false;
        }
        let seen = self.replayed.remove(&id);
        // Replayed ids below this one will not come live any more.
        self.replayed = self.replayed.split_off(&id);
        seen
    }

    /// Notes replayed messages (`ids`, those fanned out after the socket registered): a
    /// live copy that came already is dropped from `held`, one still to come is remembered.
    fn replayed(&mut self, ids: HashSet<u64>) {
        let mut came = HashSet::new();
        self.held.retain(|(_, frame)| match frame.message_id() {
            Some(id) if ids.contains(&id) => {
                came.insert(id);
                false
            }
            _ => true,
        });
        let last_live = self.last_live;
        self.replayed.extend(
            ids.into_iter()
                .filter(|id| !came.contains(id) && *id > last_live),
        );
    }
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
        self.push_all(lane, [frame])
    }

    /// [`Outbox::push`] of several events in order, in one lock and with one wake-up of the
    /// writer.
    pub fn push_all(
        &self,
        lane: Lane,
        frames: impl IntoIterator<Item = Outbound>,
    ) -> Result<(), Closed> {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Err(Closed);
        }
        let mut wake = false;
        for frame in frames {
            if let Lane::Message(_) = lane {
                if state.replayed_already(&frame) {
                    continue;
                }
                if state.replaying {
                    if state.held.len() >= self.capacity {
                        drop(state);
                        return self.overflow();
                    }
                    state.held.push_back((lane, frame));
                    // Nothing for the writer to take: it is not woken.
                    continue;
                }
            }
            if state.queued >= self.capacity {
                drop(state);
                // The close wakes the writer.
                return self.overflow();
            }
            state.lanes[lane.index()].push_back(frame);
            state.queued += 1;
            wake = true;
        }
        drop(state);
        if wake {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Closes with 4008: the client is not reading what it is sent.
    fn overflow(&self) -> Result<(), Closed> {
        self.close(
            CLOSE_SLOW_CONSUMER,
            "outbound buffer full: client is not reading",
        );
        Err(Closed)
    }

    /// Starts a queue replay: live messages are held back until [`Outbox::end_replay`].
    pub fn begin_replay(&self) {
        self.lock().replaying = true;
    }

    /// Queues replayed messages (ahead of live ones), waiting for room rather than
    /// overflowing: a batch the server generates must never cost the client a 4008. Messages
    /// with ids up to `fanned_out` were fanned out before the socket registered, so no live
    /// copy of them will come; those above it are remembered, and their live copies dropped.
    /// Returns `Err` once the socket is closing.
    pub async fn push_replay(&self, frames: Vec<Outbound>, fanned_out: u64) -> Result<(), Closed> {
        let ids: HashSet<u64> = frames
            .iter()
            .filter_map(Outbound::message_id)
            .filter(|id| *id > fanned_out)
            .collect();
        // Noted in the same lock as the frames are queued, so no live copy slips between.
        self.queue_when_room(frames, |state| state.replayed(ids))
            .await
    }

    /// Ends the replay: held live messages follow. They join the lanes once there is room
    /// for all of them, so that the move itself cannot overflow the buffer of a client that
    /// reads; meanwhile new live messages are held too.
    pub async fn end_replay(&self) {
        loop {
            let waiting = self.room.notified();
            if self.try_end_replay() {
                return;
            }
            waiting.await;
        }
    }

    /// [`Outbox::end_replay`] if the held messages fit now; false if they do not.
    pub fn try_end_replay(&self) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            state.replaying = false;
            state.held = VecDeque::new();
            return true;
        }
        if state.queued + state.held.len() > self.capacity {
            return false;
        }
        state.replaying = false;
        let held = std::mem::take(&mut state.held);
        state.queued += held.len();
        for (lane, frame) in held {
            state.lanes[lane.index()].push_back(frame);
        }
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Queues an ordered batch in the control lane once there is room for it (the writer
    /// frees room as it writes), leaving half the buffer for live events. Batches larger than
    /// half the buffer are refused outright.
    pub async fn push_when_room(&self, frames: Vec<Outbound>) -> Result<(), Closed> {
        self.queue_when_room(frames, |_| {}).await
    }

    /// [`Outbox::push_when_room`], running `then` on the state in the lock that queues.
    async fn queue_when_room(
        &self,
        frames: Vec<Outbound>,
        then: impl FnOnce(&mut State),
    ) -> Result<(), Closed> {
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
                // Held messages do not count: they wait for this replay to end.
                if state.queued + frames.len() <= limit {
                    state.queued += frames.len();
                    state.lanes[0].extend(frames);
                    then(&mut state);
                    drop(state);
                    self.notify.notify_one();
                    return Ok(());
                }
            }
            waiting.await;
        }
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
        let state = self.lock();
        state.queued + state.held.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a close has been asked for.
    pub fn is_closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// The close asked for, if any.
    pub fn closing(&self) -> Option<Closing> {
        self.lock().closing.clone()
    }

    /// Frame slots allocated in the lanes and the held queue.
    #[cfg(test)]
    fn slots(&self) -> usize {
        let state = self.lock();
        state.lanes.iter().map(VecDeque::capacity).sum::<usize>() + state.held.capacity()
    }

    /// Takes up to `max` frames in lane order, or the close, waiting while there is nothing
    /// to take (held messages cannot be taken yet). Returns `None` with at least one frame.
    pub async fn next_batch(&self, max: usize, out: &mut Vec<Outbound>) -> Option<Closing> {
        loop {
            {
                let mut state = self.lock();
                if let Some(closing) = &state.closing {
                    return Some(closing.clone());
                }
                if state.queued > 0 {
                    for lane in 0..state.lanes.len() {
                        while out.len() < max {
                            match state.lanes[lane].pop_front() {
                                Some(frame) => out.push(frame),
                                None => break,
                            }
                        }
                    }
                    state.queued -= out.len();
                    if state.queued == 0 {
                        // Emptied: an idle socket keeps no lane storage. Keeping a few slots
                        // saved a busy socket an allocation per burst, but left every idle
                        // one 4 × 96 bytes from its first frame (`connection_established`).
                        for lane in state.lanes.iter_mut() {
                            if lane.capacity() > 0 {
                                *lane = VecDeque::new();
                            }
                        }
                    }
                    drop(state);
                    self.room.notify_waiters();
                    return None;
                }
            }
            // A push in between left a permit: `notify_one` is not lost.
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
    async fn push_all_queues_in_order_and_overflows_like_push() {
        let outbox = Outbox::new(3);
        outbox.push(Lane::Control, text("first")).expect("push");
        outbox
            .push_all(Lane::Control, [text("second"), text("third")])
            .expect("push_all");
        let mut out = Vec::new();
        assert_eq!(outbox.next_batch(10, &mut out).await, None);
        assert_eq!(payloads(&out), ["first", "second", "third"]);
        // Past the bound: closed with 4008, what fitted stays queued ahead of the close.
        let over = outbox.push_all(Lane::Control, [text("a"), text("b"), text("c"), text("d")]);
        assert_eq!(over, Err(Closed));
        assert_eq!(outbox.closing().map(|c| c.code), Some(CLOSE_SLOW_CONSUMER));
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.push_all(Lane::Control, [text("e")]), Err(Closed));
    }

    #[tokio::test]
    async fn an_emptied_outbox_keeps_no_slots() {
        // Every idle socket went through this: its first frame, then nothing.
        let outbox = Outbox::new(10);
        outbox
            .push(Lane::Control, text("connection_established"))
            .expect("push");
        assert!(outbox.slots() > 0);
        let mut out = Vec::new();
        assert_eq!(outbox.next_batch(10, &mut out).await, None);
        assert_eq!(out.len(), 1);
        assert_eq!(outbox.slots(), 0, "an idle socket keeps no lane storage");
    }

    fn message(label: &'static str, id: u64) -> Outbound {
        Outbound::Text {
            payload: Bytes::from_static(label.as_bytes()),
            delivers: None,
            message_id: Some(id),
            committed_ms: None,
        }
    }

    /// Pushes a live message (held while a replay runs).
    fn live(outbox: &Outbox, priority: Priority, label: &'static str, id: u64) {
        outbox
            .push(Lane::Message(priority), message(label, id))
            .expect("push");
    }

    #[tokio::test]
    async fn live_messages_wait_for_the_replay_and_are_not_duplicated() {
        let outbox = Outbox::new(10);
        outbox.begin_replay();
        live(&outbox, Priority::High, "live 7", 7);
        live(&outbox, Priority::Normal, "live 9", 9);
        outbox
            .push_replay(vec![message("replay 7", 7)], 0)
            .await
            .expect("replay");
        let mut out = Vec::new();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(
            payloads(&out),
            ["replay 7"],
            "live messages wait during the replay"
        );
        outbox.end_replay().await;
        out.clear();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(payloads(&out), ["live 9"], "the live copy of 7 is dropped");
        assert_eq!(outbox.len(), 0);
    }

    /// Regression (issue 16): held messages counted against the replay's room, so a replay
    /// with half a buffer of them held waited for ever, and the writer, woken with nothing
    /// it could take, was handed empty batches in a loop.
    #[tokio::test]
    async fn held_messages_neither_block_the_replay_nor_wake_the_writer() {
        let outbox = Outbox::new(16);
        outbox.begin_replay();
        for id in 100..110 {
            live(&outbox, Priority::Normal, "live", id);
        }
        let mut out = Vec::new();
        let idle = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            outbox.next_batch(64, &mut out),
        )
        .await;
        assert!(idle.is_err(), "nothing to take: the writer waits");
        assert!(out.is_empty());
        // The replay's batches get half the buffer (9) however many are held.
        let replay: Vec<Outbound> = (1..=9).map(|id| message("replay", id)).collect();
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            outbox.push_replay(replay, 0),
        )
        .await
        .expect("the replay is not held up by held messages")
        .expect("not closed");
        outbox.next_batch(64, &mut out).await;
        assert_eq!(out.len(), 9);
        outbox.end_replay().await;
        out.clear();
        outbox.next_batch(64, &mut out).await;
        assert_eq!(out.len(), 10, "the held messages follow");
    }

    #[tokio::test]
    async fn held_messages_have_a_bound_of_their_own() {
        let outbox = Outbox::new(4);
        outbox.begin_replay();
        for id in 1..=4 {
            live(&outbox, Priority::Low, "live", id);
        }
        assert_eq!(
            outbox.push(Lane::Message(Priority::Low), message("live", 5)),
            Err(Closed)
        );
        let mut out = Vec::new();
        let closing = outbox.next_batch(10, &mut out).await.expect("closing");
        assert_eq!(closing.code, CLOSE_SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn held_messages_join_the_lanes_once_they_fit() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        outbox.begin_replay();
        for id in 1..=3 {
            live(&outbox, Priority::Normal, "live", id);
        }
        outbox.push(Lane::Control, text("a")).expect("push");
        outbox.push(Lane::Control, text("b")).expect("push");
        // 2 queued + 3 held > 4: moving them now would overflow a client that reads.
        let ending = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.end_replay().await })
        };
        tokio::task::yield_now().await;
        assert!(!ending.is_finished(), "waits for room");
        let mut out = Vec::new();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(payloads(&out), ["a", "b"]);
        ending.await.expect("task");
        out.clear();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(out.len(), 3);
        assert!(!outbox.is_closing());
    }

    #[tokio::test]
    async fn live_copies_that_came_before_the_replay_reached_them_are_dropped() {
        let outbox = Outbox::new(10);
        outbox.begin_replay();
        for id in [7, 8] {
            live(&outbox, Priority::Normal, "live", id);
        }
        outbox
            .push_replay(vec![message("replay 7", 7), message("replay 8", 8)], 0)
            .await
            .expect("replay");
        // A later live message passes the replayed ids: it must not revive 7 and 8.
        live(&outbox, Priority::Normal, "live 9", 9);
        outbox.end_replay().await;
        let mut out = Vec::new();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(payloads(&out), ["replay 7", "replay 8", "live 9"]);
    }

    #[tokio::test]
    async fn a_live_copy_after_the_replay_is_dropped_too() {
        let outbox = Outbox::new(10);
        outbox.begin_replay();
        // 5 was fanned out before the socket registered: no live copy will come.
        outbox
            .push_replay(vec![message("replay 5", 5), message("replay 8", 8)], 5)
            .await
            .expect("replay");
        outbox.end_replay().await;
        // The fan-out of 8 ran after the replay read it, and after the replay ended.
        live(&outbox, Priority::Normal, "live 8", 8);
        live(&outbox, Priority::Normal, "live 9", 9);
        let mut out = Vec::new();
        outbox.next_batch(10, &mut out).await;
        assert_eq!(payloads(&out), ["replay 5", "replay 8", "live 9"]);
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

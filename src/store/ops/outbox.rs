//! The webhook outbox: events for the host app, written in the commit of the change that
//! causes them (PROTOCOL.md section 8.2).
//!
//! A write that should tell the host comes wrapped: [`super::Op::Emitting`] holds the op and
//! an [`Emit`] (which event types are wanted, the backlog bound, who was online). The wrapper
//! applies the op, then writes one [`EventRecord`] per thing the op did: each message it
//! stored, each conversation it created, the read marker it moved. So the events are in the
//! same transaction as the change: a crash keeps both or neither, and a refused op writes no
//! event. The journal holds the wrapper with its [`Emit`], so a replay writes the same events
//! under the same ids.
//!
//! Presence has no stored change of its own: [`super::Op::RecordPresence`] writes just its
//! event. The delivery (`crate::webhooks`) removes what the host acknowledged with
//! [`super::Op::AckEvents`].
//!
//! The outbox is bounded by `webhooks.max_pending` (carried in each [`Emit`], so a replay bounds
//! it as the first run did): an event beyond it drops the oldest, counted in `events_dropped`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use redb::ReadableTable;

use super::{Answer, Op, OpError, Tables, wr};
use crate::config::WebhookEvent;
use crate::model::{Event, EventRecord};
use crate::store::StoreError;
use crate::store::records::encode;

/// A set of [`WebhookEvent`]s, as one byte in the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventKinds(u8);

impl EventKinds {
    fn bit(kind: WebhookEvent) -> u8 {
        1 << (kind as u8)
    }

    pub fn contains(self, kind: WebhookEvent) -> bool {
        self.0 & Self::bit(kind) != 0
    }
}

impl<'a> FromIterator<&'a WebhookEvent> for EventKinds {
    fn from_iter<I: IntoIterator<Item = &'a WebhookEvent>>(kinds: I) -> Self {
        Self(kinds.into_iter().fold(0, |set, k| set | Self::bit(*k)))
    }
}

/// What the events of one op need besides the op itself; journaled with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Emit {
    /// The event types to write (`webhooks.events`).
    pub kinds: EventKinds,
    /// `webhooks.max_pending` when the request was made.
    pub max_pending: u64,
    /// Which of the op's recipients had a socket open when it was requested, sorted: the
    /// `recipients_online` of its `message.created` events. Taken by the caller, as the store
    /// knows nothing of sockets, and journaled, so a replay writes what the first run did.
    pub online: Vec<u64>,
}

/// A presence change to record ([`super::Op::RecordPresence`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PresenceChange {
    pub user: u64,
    pub online: bool,
    /// When it happened (Unix ms).
    pub at_ms: u64,
    /// `webhooks.max_pending` when it happened.
    pub max_pending: u64,
}

/// Applies `op`, then writes the events of what it did that `emit` asks for.
pub(super) fn emitting(
    t: &mut Tables<'_>,
    op: Op,
    emit: Emit,
    now_ms: u64,
) -> Result<Answer, OpError> {
    let stored_before = t.stored.len();
    let created_before = t.conversations_created.len();
    let reader = match &op {
        Op::MarkRead {
            user, conversation, ..
        } => Some((*user, *conversation)),
        _ => None,
    };
    let answer = op.apply(t, now_ms)?;
    // The op has written: from here on a failure must take the whole batch back with it.
    let mut events = Vec::new();
    if emit.kinds.contains(WebhookEvent::ConversationCreated) {
        for (conversation, creator) in &t.conversations_created[created_before..] {
            events.push(Event::ConversationCreated {
                conversation: *conversation,
                creator: *creator,
            });
        }
    }
    if emit.kinds.contains(WebhookEvent::MessageCreated) {
        for message in &t.stored[stored_before..] {
            let recipients_online = message
                .participants
                .iter()
                .filter(|u| **u != message.record.sender)
                .map(|u| (*u, emit.online.binary_search(u).is_ok()))
                .collect();
            events.push(Event::MessageCreated {
                message: message.id,
                recipients_online,
            });
        }
    }
    if emit.kinds.contains(WebhookEvent::MessageRead)
        && let (Some((reader, conversation)), Answer::MarkedRead(marked)) = (reader, &answer)
        && marked.advanced
    {
        events.push(Event::MessageRead {
            conversation,
            reader,
            up_to: marked.read_marker,
            read_at_ms: now_ms,
        });
    }
    for event in events {
        push(t, event, emit.max_pending, now_ms).map_err(OpError::Abort)?;
    }
    Ok(answer)
}

/// Writes a presence event.
pub(super) fn record_presence(
    t: &mut Tables<'_>,
    change: PresenceChange,
    now_ms: u64,
) -> Result<(), OpError> {
    let event = Event::Presence {
        user: change.user,
        online: change.online,
        at_ms: change.at_ms,
    };
    push(t, event, change.max_pending, now_ms).map_err(OpError::Abort)
}

/// Removes every event up to `up_to` (the host acknowledged them); answers how many.
pub(super) fn ack(t: &mut Tables<'_>, up_to: u64) -> Result<u64, OpError> {
    let mut removed = 0;
    loop {
        let first = t.events.first().map_err(wr)?.map(|(id, _)| id.value());
        match first {
            Some(id) if id <= up_to => {
                t.events.remove(id).map_err(wr)?;
                removed += 1;
            }
            _ => break,
        }
    }
    t.events_pending = t.events_pending.saturating_sub(removed);
    Ok(removed)
}

/// Appends one event, then drops the oldest while more than `max_pending` wait.
fn push(t: &mut Tables<'_>, event: Event, max_pending: u64, now_ms: u64) -> Result<(), StoreError> {
    let id = t.next_event_id.unwrap_or(1);
    let record = EventRecord {
        created_at_ms: now_ms,
        event,
    };
    t.events.insert(id, encode(&record)?.as_slice())?;
    t.next_event_id = Some(id + 1);
    t.events_pending += 1;
    while t.events_pending > max_pending {
        let Some((oldest, _)) = t.events.pop_first()? else {
            // The count ran ahead of the table (it cannot, but the table is the truth).
            t.events_pending = 0;
            break;
        };
        t.events_pending -= 1;
        t.events_dropped += 1;
        t.events_dropped_added += 1;
        t.events_dropped_through = oldest.value();
    }
    Ok(())
}

/// Logs dropped events at WARN, at most once a minute (the writer calls it for every durable
/// batch, so drops that happened since the last line are told once the minute is up).
#[derive(Debug, Default)]
pub struct DropLog {
    last: Option<Instant>,
    /// Dropped since the last line, and the newest id among them.
    untold: u64,
    through: u64,
}

/// Shortest time between two drop warnings.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

impl DropLog {
    /// `dropped` more events (the newest `through`) were dropped by a batch just made durable.
    pub fn note(&mut self, dropped: u64, through: u64, total: u64) {
        if dropped > 0 {
            self.untold += dropped;
            self.through = self.through.max(through);
        }
        if self.untold == 0 || self.last.is_some_and(|l| l.elapsed() < DROP_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            dropped = self.untold,
            through_event_id = self.through,
            total_dropped = total,
            "webhook backlog full (webhooks.max_pending): the oldest undelivered events were dropped and will never reach the host app"
        );
        self.last = Some(Instant::now());
        self.untold = 0;
    }
}

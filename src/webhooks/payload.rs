//! The JSON of a batch: `{"events": [{"id", "type", "created_at", "data"}]}`, built from the
//! outbox's records on one read snapshot (the outbox holds ids; messages and conversations are
//! read, and opened, here).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::WebhookEvent;
use crate::model::{Event, EventRecord};
use crate::store::StoreError;
use crate::store::reader::Reader;
use crate::time::rfc3339_ms;
use crate::views::{ConversationJson, MessageJson};

/// A batch stops growing once its body passes this many bytes (it always holds one event):
/// Django refuses a body above `DATA_UPLOAD_MAX_MEMORY_SIZE` (2.5 MB by default) before the
/// view runs, and a refused batch is retried, not skipped. 100 messages of the largest text
/// and metadata would be ~3.3 MB.
pub const BODY_BUDGET: usize = 1 << 20;

/// One batch, ready to sign and send.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Its first and last event ids (`X-Indaba-Delivery` is the first).
    pub first: u64,
    pub last: u64,
    /// Events in it.
    pub count: u64,
    pub body: Bytes,
}

/// One event on the wire.
#[derive(Debug, Serialize)]
struct EventJson {
    id: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    data: Value,
}

/// `message.created`'s data: the message JSON plus who was online.
#[derive(Debug, Serialize)]
struct MessageCreated {
    #[serde(flatten)]
    message: MessageJson,
    recipients_online: BTreeMap<u64, bool>,
}

/// The next batch after event `after`: up to `max` events, and no more than fit
/// [`BODY_BUDGET`]; `None` if no event waits.
pub fn read_batch(r: &Reader<'_>, after: u64, max: usize) -> Result<Option<Batch>, StoreError> {
    let events = r.events_after(after, max)?;
    let Some(first) = events.first().map(|(id, _)| *id) else {
        return Ok(None);
    };
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"events\":[");
    let (mut last, mut count) = (first, 0);
    for (id, record) in events {
        if count > 0 && body.len() >= BODY_BUDGET {
            break;
        }
        if count > 0 {
            body.push(b',');
        }
        let event = event_json(r, id, record)?;
        serde_json::to_writer(&mut body, &event)
            .map_err(|e| StoreError::Encoding(e.to_string()))?;
        last = id;
        count += 1;
    }
    body.extend_from_slice(b"]}");
    Ok(Some(Batch {
        first,
        last,
        count,
        body: Bytes::from(body),
    }))
}

fn event_json(r: &Reader<'_>, id: u64, record: EventRecord) -> Result<EventJson, StoreError> {
    let (kind, data) = match record.event {
        Event::MessageCreated {
            message,
            recipients_online,
        } => {
            let online: BTreeMap<u64, bool> = recipients_online.into_iter().collect();
            let data = match message_json(r, message)? {
                Some(json) => serde_json::to_value(MessageCreated {
                    message: json,
                    recipients_online: online,
                }),
                // Damaged on the disk (reported at ERROR by the store): the host still learns
                // that the message exists and whom to tell.
                None => {
                    Ok(json!({"id": message, "recipients_online": online, "unavailable": true}))
                }
            }
            .map_err(|e| StoreError::Encoding(e.to_string()))?;
            (WebhookEvent::MessageCreated, data)
        }
        Event::MessageRead {
            conversation,
            reader,
            up_to,
            read_at_ms,
        } => (
            WebhookEvent::MessageRead,
            json!({
                "conversation_id": conversation,
                "reader_id": reader,
                "up_to_message_id": up_to,
                "read_at": rfc3339_ms(read_at_ms),
            }),
        ),
        Event::ConversationCreated {
            conversation,
            creator,
        } => {
            let data = match r.conversation_view(creator, conversation)? {
                Some(view) => serde_json::to_value(ConversationJson::from(view))
                    .map_err(|e| StoreError::Encoding(e.to_string()))?,
                None => json!({"id": conversation, "unavailable": true}),
            };
            (WebhookEvent::ConversationCreated, data)
        }
        Event::Presence {
            user,
            online,
            at_ms,
        } => (
            if online {
                WebhookEvent::UserOnline
            } else {
                WebhookEvent::UserOffline
            },
            json!({"user_id": user, "at": rfc3339_ms(at_ms)}),
        ),
    };
    Ok(EventJson {
        id,
        kind: kind.name(),
        created_at: rfc3339_ms(record.created_at_ms),
        data,
    })
}

/// Message `id` as its sender sees it; `None` if it cannot be read back.
fn message_json(r: &Reader<'_>, id: u64) -> Result<Option<MessageJson>, StoreError> {
    let Some((record, body)) = r.readable_message(id)? else {
        return Ok(None);
    };
    let Some(conversation) = r.conversation(record.conversation)? else {
        return Ok(None);
    };
    let sender = record.sender;
    let view = r.message_view(sender, id, record, body, &conversation)?;
    Ok(Some(MessageJson::from(view)))
}

//! Everything the daemon sends on a WebSocket (contract section 3), as typed events.
//!
//! Two dialects, one enum each: [`ChatEvent`] for `/ws/chat/` (seed 002) and
//! `/ws/notifications/`, which share its `error`, `pong` and `unread_count`; and
//! [`ConversationEvent`] for `/ws/chat/{id}/` (seeds 003 and 004). The `type` of each event is
//! its variant's name in snake case, and its fields are the contract's, in the contract's
//! order (`type` first).
//!
//! An event is serialized once, by [`ChatEvent::to_bytes`] or [`ConversationEvent::to_bytes`],
//! into [`Bytes`] that every socket it goes to shares. Incoming frames are read in
//! [`crate::ws::protocol`].

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::Code;
use crate::model::{MessageBody, MessageRecord, SYSTEM_MESSAGE_TYPE};
use crate::time::rfc3339_ms;
use crate::views::ConversationJson;

/// An event on `/ws/chat/` or `/ws/notifications/`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent<'a> {
    /// The first frame on `/ws/chat/`.
    ConnectionEstablished { user_id: u64, session_id: String },
    /// A message, to its recipients and to the sender's other sockets; also a queue replay
    /// and a `sync`.
    NewMessage {
        message_id: u64,
        conversation_id: u64,
        sender_id: u64,
        receiver_id: Option<u64>,
        text: &'a str,
        message_type: &'a str,
        priority: &'static str,
        metadata: Value,
        created_at: String,
    },
    /// The sender's acknowledgement, once the message is durable.
    MessageSent {
        message_id: u64,
        conversation_id: u64,
        client_id: Option<&'a str>,
        created_at: String,
    },
    /// A participant's typing change.
    TypingIndicator {
        conversation_id: u64,
        user_id: u64,
        is_typing: bool,
    },
    /// To a sender: `reader_id` read these of their messages.
    ReadReceipt {
        conversation_id: u64,
        message_ids: &'a [u64],
        reader_id: u64,
        read_at: String,
    },
    /// An operator deleted these messages, or erased their sender: they are tombstones now
    /// (`"deleted": true`, `"text": ""` over REST).
    MessageDeleted {
        conversation_id: u64,
        message_ids: &'a [u64],
    },
    /// The user's total unread count, to their notification sockets and other chat sockets.
    UnreadCount { unread_count: u64 },
    /// A new message, on `/ws/notifications/`.
    Notification { notification: Notice },
    /// A conversation as the user sees it over REST, on `/ws/notifications/`.
    ConversationUpdated { conversation: &'a ConversationJson },
    /// A participant of a joined conversation came or went.
    Presence {
        user_id: u64,
        status: &'static str,
        last_seen: Option<String>,
    },
    /// The answer to `join_conversation`.
    Joined { conversation_id: u64 },
    /// The answer to `leave_conversation`.
    Left { conversation_id: u64 },
    /// The end of a `sync` batch.
    SyncComplete {
        last_message_id: u64,
        has_more: bool,
    },
    /// The answer to `{"type":"ping"}`.
    Pong,
    /// A frame that was refused; the socket stays open. `ref` echoes the frame's `client_id`.
    Error {
        code: Code,
        detail: &'a str,
        #[serde(rename = "ref")]
        client_ref: Option<&'a str>,
    },
}

/// What a `notification` event is about.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    NewMessage {
        conversation_id: u64,
        message_id: u64,
        sender_id: u64,
    },
}

/// An event on a conversation socket, `/ws/chat/{id}/`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConversationEvent<'a> {
    /// A message in the conversation, to every socket on it, the sender's included.
    Message { message: RoomMessage<'a> },
    /// A system message ([`SYSTEM_MESSAGE_TYPE`]: a service broadcast) in the conversation:
    /// seed 003's `notification` event, carrying the same message object.
    Notification { notification: RoomMessage<'a> },
    /// A participant's typing change (not to the typist).
    Typing {
        user_id: u64,
        username: Option<&'a str>,
        is_typing: bool,
    },
    /// `user_id` read these messages.
    ReadReceipt {
        user_id: u64,
        message_ids: &'a [u64],
    },
    /// An operator deleted these messages of the conversation (see [`ChatEvent`]'s).
    MessageDeleted {
        conversation_id: u64,
        message_ids: &'a [u64],
    },
    /// The answer to `{"type":"ping"}`.
    Pong,
    /// A frame that was refused (seeds 003/004 read `message`); the socket stays open.
    Error { message: &'a str },
}

/// A message as seeds 003/004 show it.
#[derive(Debug, Serialize)]
pub struct RoomMessage<'a> {
    pub id: u64,
    pub sender_id: u64,
    pub content: &'a str,
    pub is_read: bool,
    pub created_at: String,
}

fn to_bytes(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// The stored metadata as JSON (an object; `{}` if it cannot be read).
fn metadata(body: &MessageBody) -> Value {
    serde_json::from_str(&body.metadata_json).unwrap_or_else(|_| Value::Object(Default::default()))
}

impl<'a> ChatEvent<'a> {
    /// The event as the bytes of one text frame.
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn connection_established(user_id: u64, session_id: u64) -> Self {
        ChatEvent::ConnectionEstablished {
            user_id,
            session_id: format!("s{session_id}"),
        }
    }

    pub fn new_message(id: u64, record: &'a MessageRecord, body: &'a MessageBody) -> Self {
        ChatEvent::NewMessage {
            message_id: id,
            conversation_id: record.conversation,
            sender_id: record.sender,
            receiver_id: record.receiver,
            text: &body.text,
            message_type: &record.message_type,
            priority: record.priority.as_str(),
            metadata: metadata(body),
            created_at: rfc3339_ms(record.created_at_ms),
        }
    }

    pub fn message_sent(id: u64, record: &'a MessageRecord) -> Self {
        ChatEvent::MessageSent {
            message_id: id,
            conversation_id: record.conversation,
            client_id: record.client_id.as_deref(),
            created_at: rfc3339_ms(record.created_at_ms),
        }
    }

    pub fn notification(id: u64, record: &MessageRecord) -> Self {
        ChatEvent::Notification {
            notification: Notice::NewMessage {
                conversation_id: record.conversation,
                message_id: id,
                sender_id: record.sender,
            },
        }
    }

    pub fn read_receipt(
        conversation_id: u64,
        message_ids: &'a [u64],
        reader_id: u64,
        read_at_ms: u64,
    ) -> Self {
        ChatEvent::ReadReceipt {
            conversation_id,
            message_ids,
            reader_id,
            read_at: rfc3339_ms(read_at_ms),
        }
    }

    pub fn presence(user_id: u64, online: bool, last_seen_ms: Option<u64>) -> Self {
        ChatEvent::Presence {
            user_id,
            status: if online { "online" } else { "offline" },
            last_seen: last_seen_ms.map(rfc3339_ms),
        }
    }
}

/// The `new_message` events of one message's copies, each with an id, conversation and
/// receiver of its own (a broadcast: every user gets a copy in their one-to-one conversation
/// with the sender). What the copies share (the text, type, priority, metadata and time: most
/// of the event, and all of its escaping and formatting) is encoded once; each copy only
/// writes its numbers in front of it. Each copy's bytes are exactly those of
/// [`ChatEvent::new_message`].
#[derive(Debug)]
pub struct NewMessageCopies {
    sender: u64,
    /// The event from `"text"` to its end.
    shared: Vec<u8>,
}

impl NewMessageCopies {
    /// The copies of `record` (whose id, conversation and receiver do not matter) with `body`.
    pub fn new(record: &MessageRecord, body: &MessageBody) -> Self {
        let event = ChatEvent::new_message(0, record, body).to_bytes();
        // The fields before `text` are numbers and `null`, so the first `"text":` is the field.
        let start = event
            .windows(TEXT_FIELD.len())
            .position(|w| w == TEXT_FIELD)
            .unwrap_or(event.len());
        Self {
            sender: record.sender,
            shared: event[start..].to_vec(),
        }
    }

    /// The event of the copy numbered `id` in `conversation`, to `receiver`.
    pub fn copy(&self, id: u64, conversation: u64, receiver: Option<u64>) -> Bytes {
        use std::io::Write;
        let mut out = Vec::with_capacity(self.shared.len() + 112);
        let _ = write!(
            out,
            r#"{{"type":"new_message","message_id":{id},"conversation_id":{conversation},"sender_id":{},"receiver_id":"#,
            self.sender
        );
        match receiver {
            Some(r) => {
                let _ = write!(out, "{r},");
            }
            None => out.extend_from_slice(b"null,"),
        }
        out.extend_from_slice(&self.shared);
        Bytes::from(out)
    }
}

const TEXT_FIELD: &[u8] = br#""text":"#;

impl<'a> ConversationEvent<'a> {
    /// The event as the bytes of one text frame.
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    /// A message as the conversation socket shows it: `message`, or `notification` for a
    /// system message.
    pub fn message(id: u64, record: &MessageRecord, body: &'a MessageBody) -> Self {
        let message = RoomMessage {
            id,
            sender_id: record.sender,
            content: &body.text,
            is_read: false,
            created_at: rfc3339_ms(record.created_at_ms),
        };
        if record.message_type == SYSTEM_MESSAGE_TYPE {
            ConversationEvent::Notification {
                notification: message,
            }
        } else {
            ConversationEvent::Message { message }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Priority;

    fn parsed(bytes: Bytes) -> Value {
        serde_json::from_slice(&bytes).expect("an event is JSON")
    }

    fn record() -> (MessageRecord, MessageBody) {
        let record = MessageRecord {
            conversation: 12,
            sender: 1,
            receiver: Some(2),
            message_type: "text".into(),
            priority: Priority::High,
            client_id: Some("c-1".into()),
            created_at_ms: 1_795_000_000_123,
            body: Vec::new(),
        };
        let body = MessageBody {
            text: "Hello".into(),
            metadata_json: r#"{"k":1}"#.into(),
        };
        (record, body)
    }

    /// A broadcast's copies share one encoding of their text: each must still be the very
    /// bytes `new_message` makes, whatever the text holds.
    #[test]
    fn copies_of_a_message_are_byte_for_byte_new_message() {
        let (mut record, mut body) = record();
        for text in [
            "Hello",
            "quotes \" and \"text\": inside, \\ \u{1} émoji 🎉",
            "",
        ] {
            body.text = text.into();
            let copies = NewMessageCopies::new(&record, &body);
            for (id, conversation, receiver) in
                [(1, 2, Some(3)), (u64::MAX, 7, None), (0, 0, Some(0))]
            {
                record.conversation = conversation;
                record.receiver = receiver;
                assert_eq!(
                    copies.copy(id, conversation, receiver),
                    ChatEvent::new_message(id, &record, &body).to_bytes(),
                    "{text:?} {id} {conversation} {receiver:?}"
                );
            }
        }
    }

    /// Every event as the contract spells it: the same JSON the `json!` builders made before
    /// the events were typed.
    #[test]
    fn events_keep_their_wire_json() {
        let (record, body) = record();
        let at = "2026-11-18T11:06:40.123Z";
        let conversation = ConversationJson {
            id: 12,
            participants: vec![1, 2],
            property: None,
            booking: None,
            subject: None,
            is_archived: false,
            unread_count: 0,
            last_message: None,
            created_at: at.into(),
            updated_at: at.into(),
            host_id: Some(9001),
        };
        let cases = [
            (
                ChatEvent::connection_established(7, 3).to_bytes(),
                json!({"type": "connection_established", "user_id": 7, "session_id": "s3"}),
            ),
            (
                ChatEvent::new_message(345, &record, &body).to_bytes(),
                json!({"type": "new_message", "message_id": 345, "conversation_id": 12,
                       "sender_id": 1, "receiver_id": 2, "text": "Hello", "message_type": "text",
                       "priority": "high", "metadata": {"k": 1}, "created_at": at}),
            ),
            (
                ChatEvent::message_sent(345, &record).to_bytes(),
                json!({"type": "message_sent", "message_id": 345, "conversation_id": 12,
                       "client_id": "c-1", "created_at": at}),
            ),
            (
                ChatEvent::TypingIndicator {
                    conversation_id: 12,
                    user_id: 1,
                    is_typing: true,
                }
                .to_bytes(),
                json!({"type": "typing_indicator", "conversation_id": 12, "user_id": 1,
                       "is_typing": true}),
            ),
            (
                ChatEvent::read_receipt(12, &[4, 5], 2, record.created_at_ms).to_bytes(),
                json!({"type": "read_receipt", "conversation_id": 12, "message_ids": [4, 5],
                       "reader_id": 2, "read_at": at}),
            ),
            (
                ChatEvent::UnreadCount { unread_count: 9 }.to_bytes(),
                json!({"type": "unread_count", "unread_count": 9}),
            ),
            (
                ChatEvent::notification(345, &record).to_bytes(),
                json!({"type": "notification", "notification": {"kind": "new_message",
                       "conversation_id": 12, "message_id": 345, "sender_id": 1}}),
            ),
            (
                ChatEvent::presence(2, false, Some(record.created_at_ms)).to_bytes(),
                json!({"type": "presence", "user_id": 2, "status": "offline", "last_seen": at}),
            ),
            (
                ChatEvent::presence(2, true, None).to_bytes(),
                json!({"type": "presence", "user_id": 2, "status": "online", "last_seen": null}),
            ),
            (
                ChatEvent::Joined {
                    conversation_id: 12,
                }
                .to_bytes(),
                json!({"type": "joined", "conversation_id": 12}),
            ),
            (
                ChatEvent::Left {
                    conversation_id: 12,
                }
                .to_bytes(),
                json!({"type": "left", "conversation_id": 12}),
            ),
            (
                ChatEvent::SyncComplete {
                    last_message_id: 40,
                    has_more: true,
                }
                .to_bytes(),
                json!({"type": "sync_complete", "last_message_id": 40, "has_more": true}),
            ),
            (
                ChatEvent::ConversationUpdated {
                    conversation: &conversation,
                }
                .to_bytes(),
                json!({"type": "conversation_updated", "conversation": {"id": 12,
                       "participants": [1, 2], "property": null, "booking": null,
                       "subject": null, "is_archived": false, "unread_count": 0,
                       "last_message": null, "created_at": at, "updated_at": at,
                       "host_id": 9001}}),
            ),
            (
                ChatEvent::MessageDeleted {
                    conversation_id: 12,
                    message_ids: &[4, 5],
                }
                .to_bytes(),
                json!({"type": "message_deleted", "conversation_id": 12, "message_ids": [4, 5]}),
            ),
            (
                ConversationEvent::MessageDeleted {
                    conversation_id: 12,
                    message_ids: &[4],
                }
                .to_bytes(),
                json!({"type": "message_deleted", "conversation_id": 12, "message_ids": [4]}),
            ),
            (ChatEvent::Pong.to_bytes(), json!({"type": "pong"})),
            (
                ChatEvent::Error {
                    code: Code::TextTooLong,
                    detail: "too long",
                    client_ref: None,
                }
                .to_bytes(),
                json!({"type": "error", "code": "text_too_long", "detail": "too long",
                       "ref": null}),
            ),
            (
                ConversationEvent::message(345, &record, &body).to_bytes(),
                json!({"type": "message", "message": {"id": 345, "sender_id": 1,
                       "content": "Hello", "is_read": false, "created_at": at}}),
            ),
            (
                ConversationEvent::message(
                    346,
                    &MessageRecord {
                        message_type: SYSTEM_MESSAGE_TYPE.into(),
                        ..record.clone()
                    },
                    &body,
                )
                .to_bytes(),
                json!({"type": "notification", "notification": {"id": 346, "sender_id": 1,
                       "content": "Hello", "is_read": false, "created_at": at}}),
            ),
            (
                ConversationEvent::Typing {
                    user_id: 1,
                    username: Some("ann"),
                    is_typing: false,
                }
                .to_bytes(),
                json!({"type": "typing", "user_id": 1, "username": "ann", "is_typing": false}),
            ),
            (
                ConversationEvent::ReadReceipt {
                    user_id: 2,
                    message_ids: &[4],
                }
                .to_bytes(),
                json!({"type": "read_receipt", "user_id": 2, "message_ids": [4]}),
            ),
            (ConversationEvent::Pong.to_bytes(), json!({"type": "pong"})),
            (
                ConversationEvent::Error { message: "bad" }.to_bytes(),
                json!({"type": "error", "message": "bad"}),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parsed(bytes), expected);
        }
    }

    /// Fields go out in one stable order, `type` first, as the contract lists them.
    #[test]
    fn field_order_is_stable() {
        let (record, _) = record();
        assert_eq!(
            &ChatEvent::message_sent(345, &record).to_bytes()[..],
            br#"{"type":"message_sent","message_id":345,"conversation_id":12,"client_id":"c-1","created_at":"2026-11-18T11:06:40.123Z"}"#
        );
        assert_eq!(&ChatEvent::Pong.to_bytes()[..], br#"{"type":"pong"}"#);
    }
}

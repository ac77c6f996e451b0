//! The WebSocket wire format: typed inbound messages per dialect, and builders for every
//! outbound event (contract section 3). Events are serialized once into [`Bytes`] and shared by
//! every socket they go to.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{MessageBody, MessageRecord};
use crate::time::rfc3339_ms;

/// Client → server on `/ws/chat/` (seed 002).
#[derive(Debug)]
pub enum ChatIn {
    ChatMessage(ChatMessage),
    TypingIndicator(TypingIndicator),
    ReadReceipt(ReadReceipt),
    JoinConversation(ConversationRef),
    LeaveConversation(ConversationRef),
    Sync(Sync),
    Ping,
}

/// `chat_message`.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub conversation_id: u64,
    #[serde(default)]
    pub receiver_id: Option<u64>,
    pub text: String,
    #[serde(default)]
    pub message_type: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `typing_indicator` (`receiver_id` is accepted and ignored: every other participant hears it).
#[derive(Debug, Deserialize)]
pub struct TypingIndicator {
    pub conversation_id: u64,
    pub is_typing: bool,
}

/// `read_receipt`, and the conversation dialect's `read`.
#[derive(Debug, Deserialize)]
pub struct ReadReceipt {
    pub message_ids: Vec<u64>,
}

/// `join_conversation` / `leave_conversation`.
#[derive(Debug, Deserialize)]
pub struct ConversationRef {
    pub conversation_id: u64,
}

/// `sync`.
#[derive(Debug, Deserialize)]
pub struct Sync {
    pub since_message_id: u64,
}

/// Client → server on `/ws/chat/{conversation_id}/` (seeds 003 and 004).
#[derive(Debug)]
pub enum ConversationIn {
    Message(ConversationMessage),
    Typing(Typing),
    Read(ReadReceipt),
    Ping,
}

/// `message` in the conversation dialect.
#[derive(Debug, Deserialize)]
pub struct ConversationMessage {
    pub content: String,
}

/// `typing` in the conversation dialect.
#[derive(Debug, Deserialize)]
pub struct Typing {
    pub is_typing: bool,
}

/// Client → server on `/ws/notifications/`: only keep-alives.
#[derive(Debug)]
pub enum NotificationsIn {
    Ping,
}

/// A dialect: which `type`s it knows and how each is read.
pub trait Dialect: Sized {
    /// Reads a message of type `kind`; `None` if the dialect has no such type.
    fn read(kind: &str, value: Value) -> Option<Result<Self, FieldError>>;
}

/// A field that could not be read, with its path.
#[derive(Debug)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

fn field<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| FieldError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

impl Dialect for ChatIn {
    fn read(kind: &str, value: Value) -> Option<Result<Self, FieldError>> {
        Some(match kind {
            "chat_message" => field(value).map(ChatIn::ChatMessage),
            "typing_indicator" => field(value).map(ChatIn::TypingIndicator),
            "read_receipt" => field(value).map(ChatIn::ReadReceipt),
            "join_conversation" => field(value).map(ChatIn::JoinConversation),
            "leave_conversation" => field(value).map(ChatIn::LeaveConversation),
            "sync" => field(value).map(ChatIn::Sync),
            "ping" => Ok(ChatIn::Ping),
            _ => return None,
        })
    }
}

impl Dialect for ConversationIn {
    fn read(kind: &str, value: Value) -> Option<Result<Self, FieldError>> {
        Some(match kind {
            "message" => field(value).map(ConversationIn::Message),
            "typing" => field(value).map(ConversationIn::Typing),
            "read" => field(value).map(ConversationIn::Read),
            "ping" => Ok(ConversationIn::Ping),
            _ => return None,
        })
    }
}

impl Dialect for NotificationsIn {
    fn read(kind: &str, _: Value) -> Option<Result<Self, FieldError>> {
        (kind == "ping").then_some(Ok(NotificationsIn::Ping))
    }
}

/// Why an inbound frame could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: &'static str,
    pub detail: String,
    /// The frame's `client_id`, echoed back as `ref`.
    pub client_ref: Option<String>,
}

/// Parses one inbound text frame of dialect `D`.
pub fn parse<D: Dialect>(text: &str) -> Result<D, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError {
        code: "invalid_json",
        detail: format!("invalid JSON: {e}"),
        client_ref: None,
    })?;
    let client_ref = value
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
        return Err(ParseError {
            code: "invalid_message",
            detail: "a JSON object with a string `type` is required".into(),
            client_ref,
        });
    };
    match D::read(&kind, value) {
        Some(Ok(message)) => Ok(message),
        Some(Err(e)) => Err(ParseError {
            code: "invalid_message",
            detail: if e.path == "." {
                format!("`{kind}`: {}", e.message)
            } else {
                format!("`{kind}` field `{}`: {}", e.path, e.message)
            },
            client_ref,
        }),
        None => Err(ParseError {
            code: "unknown_type",
            detail: format!("unknown message type `{kind}`"),
            client_ref,
        }),
    }
}

fn to_bytes(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

fn metadata(body: &MessageBody) -> Value {
    serde_json::from_str(&body.metadata_json).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// `connection_established`, the first frame on `/ws/chat/`.
pub fn connection_established(user_id: u64, session_id: u64) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "connection_established",
        "user_id": user_id,
        "session_id": format!("s{session_id}"),
    }))
}

/// `new_message` on `/ws/chat/`.
pub fn new_message(id: u64, record: &MessageRecord, body: &MessageBody) -> Bytes {
    #[derive(Serialize)]
    struct NewMessage<'a> {
        r#type: &'static str,
        message_id: u64,
        conversation_id: u64,
        sender_id: u64,
        receiver_id: Option<u64>,
        text: &'a str,
        message_type: &'a str,
        priority: &'static str,
        metadata: Value,
        created_at: String,
    }
    to_bytes(&NewMessage {
        r#type: "new_message",
        message_id: id,
        conversation_id: record.conversation,
        sender_id: record.sender,
        receiver_id: record.receiver,
        text: &body.text,
        message_type: &record.message_type,
        priority: record.priority.as_str(),
        metadata: metadata(body),
        created_at: rfc3339_ms(record.created_at_ms),
    })
}

/// `message_sent`: the sender's acknowledgement, once durable.
pub fn message_sent(id: u64, record: &MessageRecord) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "message_sent",
        "message_id": id,
        "conversation_id": record.conversation,
        "client_id": record.client_id,
        "created_at": rfc3339_ms(record.created_at_ms),
    }))
}

/// `message` on a conversation socket.
pub fn conversation_message(id: u64, record: &MessageRecord, body: &MessageBody) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "message",
        "message": {
            "id": id,
            "sender_id": record.sender,
            "content": body.text,
            "is_read": false,
            "created_at": rfc3339_ms(record.created_at_ms),
        },
    }))
}

/// `notification` of a new message on `/ws/notifications/`.
pub fn notification(id: u64, record: &MessageRecord) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "notification",
        "notification": {
            "kind": "new_message",
            "conversation_id": record.conversation,
            "message_id": id,
            "sender_id": record.sender,
        },
    }))
}

/// `typing_indicator` on `/ws/chat/`.
pub fn typing_indicator(conversation: u64, user: u64, is_typing: bool) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "typing_indicator",
        "conversation_id": conversation,
        "user_id": user,
        "is_typing": is_typing,
    }))
}

/// `typing` on a conversation socket.
pub fn typing(user: u64, username: Option<&str>, is_typing: bool) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "typing",
        "user_id": user,
        "username": username,
        "is_typing": is_typing,
    }))
}

/// `read_receipt` to a sender's `/ws/chat/` sockets.
pub fn read_receipt(conversation: u64, message_ids: &[u64], reader: u64, read_at_ms: u64) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "read_receipt",
        "conversation_id": conversation,
        "message_ids": message_ids,
        "reader_id": reader,
        "read_at": rfc3339_ms(read_at_ms),
    }))
}

/// `read_receipt` on a conversation socket.
pub fn conversation_read_receipt(user: u64, message_ids: &[u64]) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "read_receipt",
        "user_id": user,
        "message_ids": message_ids,
    }))
}

/// `unread_count`, to the reader's other sockets and notification sockets.
pub fn unread_count(count: u64) -> Bytes {
    to_bytes(&serde_json::json!({"type": "unread_count", "unread_count": count}))
}

/// `conversation_updated` on `/ws/notifications/`, with the conversation as the REST API shows
/// it to that user.
pub fn conversation_updated(conversation: &impl Serialize) -> Bytes {
    to_bytes(&serde_json::json!({"type": "conversation_updated", "conversation": conversation}))
}

/// `presence` to sockets that joined a conversation of `user`.
pub fn presence(user: u64, online: bool, last_seen_ms: Option<u64>) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "presence",
        "user_id": user,
        "status": if online { "online" } else { "offline" },
        "last_seen": last_seen_ms.map(rfc3339_ms),
    }))
}

/// `joined` / `left`.
pub fn membership_reply(joined: bool, conversation: u64) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": if joined { "joined" } else { "left" },
        "conversation_id": conversation,
    }))
}

/// `sync_complete` after a `sync` batch.
pub fn sync_complete(last_message_id: u64, has_more: bool) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "sync_complete",
        "last_message_id": last_message_id,
        "has_more": has_more,
    }))
}

/// `pong` (the JSON one, answering `{"type":"ping"}`).
pub fn pong() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}

/// `error` on `/ws/chat/` and `/ws/notifications/`: the socket stays open.
pub fn error(code: &str, detail: &str, client_ref: Option<&str>) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "error",
        "code": code,
        "detail": detail,
        "ref": client_ref,
    }))
}

/// `error` in the conversation dialect (seeds 003/004 read `message`).
pub fn conversation_error(message: &str) -> Bytes {
    to_bytes(&serde_json::json!({"type": "error", "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_distinguishes_malformed_unknown_and_bad_fields() {
        let e = parse::<ChatIn>("{nope").expect_err("bad json");
        assert_eq!(e.code, "invalid_json");
        let e = parse::<ChatIn>(r#"{"type":"dance","client_id":"c1"}"#).expect_err("unknown");
        assert_eq!(
            (e.code, e.client_ref.as_deref()),
            ("unknown_type", Some("c1"))
        );
        let e = parse::<ChatIn>(r#"{"type":"chat_message","conversation_id":"x","text":"hi"}"#)
            .expect_err("bad field");
        assert_eq!(e.code, "invalid_message");
        assert!(e.detail.contains("conversation_id"), "{}", e.detail);
        let ok = parse::<ChatIn>(
            r#"{"type":"chat_message","conversation_id":1,"receiver_id":2,"text":"Hello!"}"#,
        )
        .expect("seed 002 message");
        assert!(matches!(
            ok,
            ChatIn::ChatMessage(ChatMessage {
                conversation_id: 1,
                ..
            })
        ));
        assert!(matches!(
            parse::<ChatIn>(r#"{"type":"ping"}"#),
            Ok(ChatIn::Ping)
        ));
        let conv = parse::<ConversationIn>(r#"{"type":"message","content":"Test message"}"#)
            .expect("seed 003 message");
        assert!(matches!(conv, ConversationIn::Message(_)));
    }
}

//! What clients send on a WebSocket (contract section 3): typed inbound messages per dialect,
//! and [`parse`], which reads a text frame as one of them or says precisely why not. What the
//! daemon sends is in [`crate::events`].

use serde::Deserialize;
use serde_json::Value;

use crate::error::Code;
use crate::ids::WireId;

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
    pub conversation_id: WireId,
    #[serde(default)]
    pub receiver_id: Option<WireId>,
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
    pub conversation_id: WireId,
    pub is_typing: bool,
}

/// `read_receipt`, and the conversation dialect's `read`.
#[derive(Debug, Deserialize)]
pub struct ReadReceipt {
    pub message_ids: Vec<WireId>,
}

/// `join_conversation` / `leave_conversation`.
#[derive(Debug, Deserialize)]
pub struct ConversationRef {
    pub conversation_id: WireId,
}

/// `sync`.
#[derive(Debug, Deserialize)]
pub struct Sync {
    pub since_message_id: WireId,
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
    pub code: Code,
    pub detail: String,
    /// The frame's `client_id`, echoed back as `ref`.
    pub client_ref: Option<String>,
}

/// Parses one inbound text frame of dialect `D`.
pub fn parse<D: Dialect>(text: &str) -> Result<D, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError {
        code: Code::InvalidJson,
        detail: format!("invalid JSON: {e}"),
        client_ref: None,
    })?;
    let client_ref = value
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
        return Err(ParseError {
            code: Code::InvalidMessage,
            detail: "a JSON object with a string `type` is required".into(),
            client_ref,
        });
    };
    match D::read(&kind, value) {
        Some(Ok(message)) => Ok(message),
        Some(Err(e)) => Err(ParseError {
            code: Code::InvalidMessage,
            detail: if e.path == "." {
                format!("`{kind}`: {}", e.message)
            } else {
                format!("`{kind}` field `{}`: {}", e.path, e.message)
            },
            client_ref,
        }),
        None => Err(ParseError {
            code: Code::UnknownType,
            detail: format!("unknown message type `{kind}`"),
            client_ref,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_distinguishes_malformed_unknown_and_bad_fields() {
        let e = parse::<ChatIn>("{nope").expect_err("bad json");
        assert_eq!(e.code, Code::InvalidJson);
        let e = parse::<ChatIn>(r#"{"type":"dance","client_id":"c1"}"#).expect_err("unknown");
        assert_eq!(
            (e.code, e.client_ref.as_deref()),
            (Code::UnknownType, Some("c1"))
        );
        let e = parse::<ChatIn>(r#"{"type":"chat_message","conversation_id":"x","text":"hi"}"#)
            .expect_err("bad field");
        assert_eq!(e.code, Code::InvalidMessage);
        assert!(e.detail.contains("conversation_id"), "{}", e.detail);
        let ok = parse::<ChatIn>(
            r#"{"type":"chat_message","conversation_id":1,"receiver_id":2,"text":"Hello!"}"#,
        )
        .expect("seed 002 message");
        assert!(matches!(
            ok,
            ChatIn::ChatMessage(ChatMessage {
                conversation_id: WireId(1),
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

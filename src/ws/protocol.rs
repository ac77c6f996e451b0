//! What clients send on a WebSocket (contract section 3): typed inbound messages per dialect,
//! and [`parse`], which reads a text frame as one of them or says precisely why not. What the
//! daemon sends is in [`crate::events`].

use std::borrow::Cow;

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
    /// Reads a message of type `kind` straight from the frame's text (a JSON object); `None`
    /// if the dialect has no such type or the text does not read as it ([`parse`] then reads
    /// it through a [`Value`] to say why).
    fn read_text(kind: &str, text: &str) -> Option<Self>;
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

/// A frame's text read as `T`, if it reads.
fn direct<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_str(text).ok()
}

impl Dialect for ChatIn {
    fn read_text(kind: &str, text: &str) -> Option<Self> {
        match kind {
            "chat_message" => direct(text).map(ChatIn::ChatMessage),
            "typing_indicator" => direct(text).map(ChatIn::TypingIndicator),
            "read_receipt" => direct(text).map(ChatIn::ReadReceipt),
            "join_conversation" => direct(text).map(ChatIn::JoinConversation),
            "leave_conversation" => direct(text).map(ChatIn::LeaveConversation),
            "sync" => direct(text).map(ChatIn::Sync),
            "ping" => Some(ChatIn::Ping),
            _ => None,
        }
    }

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
    fn read_text(kind: &str, text: &str) -> Option<Self> {
        match kind {
            "message" => direct(text).map(ConversationIn::Message),
            "typing" => direct(text).map(ConversationIn::Typing),
            "read" => direct(text).map(ConversationIn::Read),
            "ping" => Some(ConversationIn::Ping),
            _ => None,
        }
    }

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
    fn read_text(kind: &str, _: &str) -> Option<Self> {
        (kind == "ping").then_some(NotificationsIn::Ping)
    }

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
///
/// A well-formed message is read straight from the text: its `type` first, then the message
/// itself. Building a [`Value`] tree first and reading the message out of it (a map, a key and
/// a value allocated per field) was ~13% of the runtime threads' CPU in the closed loop
/// (docs/PERFORMANCE.md, "The runtime side per message"). Anything that does not read so —
/// bad JSON, a missing or unknown `type`, a bad field, a repeated key (which the tree allows,
/// the last one counting) — goes the [`Value`] way, which gives exactly what it gave before:
/// the message, or the error with the field's path and the frame's `client_id`.
pub fn parse<D: Dialect>(text: &str) -> Result<D, ParseError> {
    if let Some(message) = read_directly(text) {
        return Ok(message);
    }
    parse_value(text)
}

/// Just the `type` of a frame, borrowed from its text unless it holds escapes.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

fn read_directly<D: Dialect>(text: &str) -> Option<D> {
    // Only an object: serde reads a struct from an array of its fields too, which is not a
    // message ([`parse_value`] refuses it).
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
        || skips_leniently(text)
    {
        return None;
    }
    let envelope: Envelope = serde_json::from_str(text).ok()?;
    D::read_text(&envelope.kind, text)
}

/// Whether `text` may hold what serde accepts in a field it skips but a [`Value`] refuses: a
/// number out of `f64`'s range (only one with an exponent or hundreds of digits can be), a
/// `\u` escape (a lone surrogate), or nesting past serde_json's recursion limit of 128 (only
/// a frame with that many `[` and `{` can). Looked for anywhere, strings included: a false
/// alarm only sends the frame the slower way.
fn skips_leniently(text: &str) -> bool {
    let mut digits = 0usize;
    let mut previous = 0u8;
    let mut opened = 0usize;
    for &b in text.as_bytes() {
        if matches!(b, b'[' | b'{') {
            opened += 1;
            if opened >= 100 {
                return true;
            }
        }
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= 300 {
                return true;
            }
        } else {
            if (matches!(b, b'e' | b'E') && previous.is_ascii_digit())
                || (b == b'u' && previous == b'\\')
            {
                return true;
            }
            digits = 0;
        }
        previous = b;
    }
    false
}

/// [`parse`] through a [`Value`] tree: what every frame went through before, and what says
/// precisely why a frame is not a message.
fn parse_value<D: Dialect>(text: &str) -> Result<D, ParseError> {
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

    /// Read straight from the text or through a `Value`, every frame gives the same message or
    /// the same error.
    #[test]
    fn reading_directly_gives_what_the_value_tree_gives() {
        let frames = [
            r#"{"type":"chat_message","conversation_id":1,"receiver_id":2,"text":"Hello!"}"#,
            r#" {"text":"h\u00e9 \"q\"","type":"chat_\u006dessage","conversation_id":"7","client_id":"c1","metadata":{"a":[1,{"b":null}]},"priority":"high","message_type":"offer","extra":[1,2]}"#,
            r#"{"type":"chat_message","conversation_id":12.0,"text":"x","receiver_id":null,"metadata":null}"#,
            r#"{"type":"chat_message","conversation_id":1.5,"text":"x","client_id":"c2"}"#,
            r#"{"type":"chat_message","conversation_id":-1,"text":"x"}"#,
            r#"{"type":"chat_message","conversation_id":1,"text":"a","text":"b"}"#,
            r#"{"type":"ping","type":"chat_message","conversation_id":1,"text":"x"}"#,
            r#"{"type":"chat_message","conversation_id":1}"#,
            r#"{"type":"chat_message","conversation_id":1,"text":5}"#,
            r#"["chat_message",1,null,"text"]"#,
            r#"[{"type":"ping"}]"#,
            r#""ping""#,
            r#"{"type":7}"#,
            r#"{"type":"ping"} x"#,
            r#"{"type":"ping","n":1e999}"#,
            r#"{"type":"chat_message","conversation_id":1,"text":"x","n":-2E+400}"#,
            r#"{"type":"chat_message","conversation_id":1,"text":"x","s":"\ud800"}"#,
            r#"{"type":"chat_message","conversation_id":1,"text":"x","s":"\ud83d\ude00"}"#,
            r#"{"type":"ping","s":"\x"}"#,
            r#"{"type":"ping","n":01}"#,
            r#"{"type":"chat_message","conversation_id":1,"text":"x","n":1.5e3,"ok":true}"#,
            r#"{"type":"typing_indicator","conversation_id":3,"is_typing":true,"receiver_id":4}"#,
            r#"{"type":"read_receipt","message_ids":[1,"2",3.0]}"#,
            r#"{"type":"read_receipt","message_ids":[1,"x"]}"#,
            r#"{"type":"join_conversation","conversation_id":3}"#,
            r#"{"type":"sync","since_message_id":"0"}"#,
            r#"{"type":"message","content":"Test message"}"#,
            r#"{"type":"typing","is_typing":false}"#,
            r#"{"type":"read","message_ids":[9]}"#,
            "{\n\t\"type\" : \"ping\"\r}",
            "{nope",
            "",
        ];
        let long = format!(
            r#"{{"type":"chat_message","conversation_id":1,"text":"x","n":{}}}"#,
            "9".repeat(400)
        );
        let deep = format!(
            r#"{{"type":"ping","n":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let frames = frames.iter().copied().chain([long.as_str(), deep.as_str()]);
        fn same<D: Dialect + std::fmt::Debug>(frame: &str) {
            assert_eq!(
                format!("{:?}", parse::<D>(frame)),
                format!("{:?}", parse_value::<D>(frame)),
                "{frame}"
            );
        }
        for frame in frames {
            same::<ChatIn>(frame);
            same::<ConversationIn>(frame);
            same::<NotificationsIn>(frame);
        }
    }

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

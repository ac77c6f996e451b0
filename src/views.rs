//! The JSON of conversations and messages as the contract shows them (section 2): REST bodies,
//! the service API's queue drain, and the `conversation_updated` event, which carries a
//! conversation as its user sees it over REST.

use serde::Serialize;

use crate::store::reader::{ConversationView, MessageView};
use crate::time::rfc3339_ms;

/// Message JSON.
#[derive(Debug, Serialize)]
pub struct MessageJson {
    pub id: u64,
    pub conversation: u64,
    pub sender: u64,
    pub receiver: Option<u64>,
    pub text: String,
    pub message_type: String,
    pub priority: &'static str,
    pub metadata: serde_json::Value,
    pub client_id: Option<String>,
    pub is_read: bool,
    pub read_at: Option<String>,
    pub created_at: String,
}

impl From<MessageView> for MessageJson {
    fn from(view: MessageView) -> Self {
        let metadata = serde_json::from_str(&view.body.metadata_json)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default()));
        Self {
            id: view.id,
            conversation: view.record.conversation,
            sender: view.record.sender,
            receiver: view.record.receiver,
            text: view.body.text,
            message_type: view.record.message_type,
            priority: view.record.priority.as_str(),
            metadata,
            client_id: view.record.client_id,
            is_read: view.is_read,
            read_at: None,
            created_at: rfc3339_ms(view.record.created_at_ms),
        }
    }
}

/// Conversation JSON, from the caller's point of view.
#[derive(Debug, Serialize)]
pub struct ConversationJson {
    pub id: u64,
    pub participants: Vec<u64>,
    pub property: Option<u64>,
    pub booking: Option<u64>,
    pub subject: Option<String>,
    pub is_archived: bool,
    pub unread_count: u64,
    pub last_message: Option<MessageJson>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<ConversationView> for ConversationJson {
    fn from(view: ConversationView) -> Self {
        Self {
            id: view.id,
            participants: view.record.participants,
            property: view.record.property,
            booking: view.record.booking,
            subject: view.subject,
            is_archived: view.membership.archived,
            unread_count: view.membership.unread,
            last_message: view.last_message.map(MessageJson::from),
            created_at: rfc3339_ms(view.record.created_at_ms),
            updated_at: rfc3339_ms(view.record.updated_at_ms),
        }
    }
}

/// `{"count","next","previous","results"}`.
#[derive(Debug, Serialize)]
pub struct Paginated<T> {
    pub count: u64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<T>,
}

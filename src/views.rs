//! The JSON of conversations and messages as the contract shows them (section 2): REST bodies,
//! the service API's queue drain, and the `conversation_updated` event, which carries a
//! conversation as its user sees it over REST. Each type is also its schema in the OpenAPI
//! document (`ToSchema`), so the document shows what is serialized.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::reader::{ConversationView, MessageView};
use crate::time::rfc3339_ms;

/// A message as the caller sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Message,
    example = json!({
        "id": 345, "conversation": 1, "sender": 1, "receiver": 2, "text": "Hello",
        "message_type": "text", "priority": "normal", "metadata": {}, "client_id": null,
        "is_read": false, "read_at": null, "created_at": "2026-11-22T10:30:00.123Z",
        "deleted": false
    })
)]
pub struct MessageJson {
    /// Assigned in commit order; strictly increasing across the daemon.
    #[schema(value_type = crate::views::IdSchema)]
    pub id: u64,
    /// Conversation id.
    #[schema(value_type = crate::views::IdSchema)]
    pub conversation: u64,
    /// User id of the sender.
    #[schema(value_type = crate::views::IdSchema)]
    pub sender: u64,
    /// Named receiver; defaults to the other participant of a two-person conversation; null in
    /// a larger conversation when none was named.
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    pub receiver: Option<u64>,
    pub text: String,
    #[schema(pattern = "^[a-z0-9_]{1,32}$", example = "text")]
    pub message_type: String,
    #[schema(value_type = PriorityName)]
    pub priority: &'static str,
    /// Free-form JSON object, `{}` when none was sent.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// The sender's idempotency key, if one was sent.
    #[schema(required = true)]
    pub client_id: Option<String>,
    /// For a recipient: the caller has read it. For the sender: every other participant has
    /// read it.
    pub is_read: bool,
    /// Always null: read state is a per-(user, conversation) read marker, not a per-message
    /// timestamp.
    #[schema(required = true, format = DateTime)]
    pub read_at: Option<String>,
    #[schema(format = DateTime, example = "2026-11-22T10:30:00.123Z")]
    pub created_at: String,
    /// True once an operator deleted the message or erased its sender: a tombstone, whose
    /// `text` is `""` and `metadata` `{}`.
    pub deleted: bool,
}

/// A message's priority.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Priority)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub enum PriorityName {
    High,
    Normal,
    Low,
}

impl From<MessageView> for MessageJson {
    fn from(view: MessageView) -> Self {
        let metadata = serde_json::from_str(&view.body.metadata_json)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default()));
        let deleted = view.record.is_deleted();
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
            deleted,
        }
    }
}

/// A conversation from the caller's point of view (`is_archived` and `unread_count` are the
/// caller's own).
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Conversation,
    example = json!({
        "id": 1, "participants": [1, 2], "property": 7, "booking": null,
        "subject": "Inquiry about property", "is_archived": false, "unread_count": 0,
        "last_message": null, "created_at": "2026-11-22T10:30:00.123Z",
        "updated_at": "2026-11-22T10:30:00.123Z"
    })
)]
pub struct ConversationJson {
    #[schema(value_type = crate::views::IdSchema)]
    pub id: u64,
    /// User ids, ascending, the creator included.
    #[schema(value_type = Vec<IdSchema>)]
    pub participants: Vec<u64>,
    /// Opaque id owned by the host app.
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    pub property: Option<u64>,
    /// Opaque id owned by the host app.
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    pub booking: Option<u64>,
    /// Null when none (or an empty one) was given.
    #[schema(required = true)]
    pub subject: Option<String>,
    pub is_archived: bool,
    pub unread_count: u64,
    /// The newest message, or null.
    #[schema(required = true)]
    pub last_message: Option<MessageJson>,
    #[schema(format = DateTime, example = "2026-11-22T10:30:00.123Z")]
    pub created_at: String,
    /// Time of the newest message, else of creation.
    #[schema(format = DateTime, example = "2026-11-22T10:30:00.123Z")]
    pub updated_at: String,
}

/// The schema of an id: an integer, 1 ≤ id < 2^53 (JavaScript reads it exactly).
#[derive(Debug)]
pub struct IdSchema;

impl utoipa::PartialSchema for IdSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_schema().into()
    }
}

impl ToSchema for IdSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Id")
    }
}

/// An id's schema, inline.
pub fn id_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(crate::MAX_ID - 1))
        .build()
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
#[derive(Debug, Serialize, ToSchema)]
pub struct Paginated<T> {
    /// Everything in the listing, not only this page.
    pub count: u64,
    /// Absolute URL of the next page (other query parameters kept), or null.
    #[schema(required = true, format = "uri")]
    pub next: Option<String>,
    /// Absolute URL of the previous page (other query parameters kept), or null.
    #[schema(required = true, format = "uri")]
    pub previous: Option<String>,
    pub results: Vec<T>,
}

impl<T> Paginated<T> {
    /// Page `page` (from 1) of a listing of `count` items, `page_size` to a page, holding
    /// `results`; `link(n)` is page n's absolute URL. `None` for a page past the end (page 1
    /// always exists), which Django REST framework answers with 404 "Invalid page.".
    pub fn page(
        page: usize,
        page_size: usize,
        count: u64,
        results: Vec<T>,
        link: impl Fn(usize) -> String,
    ) -> Option<Self> {
        if page > 1 && results.is_empty() {
            return None;
        }
        let has_next = (page as u64).saturating_mul(page_size as u64) < count;
        Some(Paginated {
            count,
            next: has_next.then(|| link(page + 1)),
            previous: (page > 1).then(|| link(page - 1)),
            results,
        })
    }
}

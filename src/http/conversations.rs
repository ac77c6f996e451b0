//! `/api/v1/messaging/conversations/…`: list, create (de-duplicated), detail, unread count,
//! archive and read markers, and presence. What a change means is [`crate::chat`]'s.

use std::sync::Arc;

use axum::extract::State;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Conversation, Count, EmptyBody, Flag, Id, Json, Link, Query, User};
use crate::chat::conversations::{self, CreateRequest};
use crate::chat::read;
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::http::openapi::{EmptyBodySchema, Error};
use crate::http::pagination::PageRequest;
use crate::ids::{self, WireId};
use crate::state::AppState;
use crate::views::{ConversationJson, Paginated};

/// Most users one presence request may ask about.
pub const MAX_PRESENCE_IDS: usize = 200;
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;

/// `POST /conversations/` body. Unknown fields are ignored, as Django REST framework does. The
/// caller is always added to `participants`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = CreateConversation,
    example = json!({"participants": [1, 2], "property": 1, "booking": null, "subject": "Inquiry about property"})
)]
pub struct CreateBody {
    /// 1 to 100 user ids; besides the caller at least one other user is needed (else 400
    /// `invalid_participants`).
    #[schema(min_items = 1, max_items = 100)]
    participants: Vec<WireId>,
    /// Opaque host-app id; part of the de-duplication key.
    #[serde(default)]
    property: Option<WireId>,
    /// Opaque host-app id; part of the de-duplication key.
    #[serde(default)]
    booking: Option<WireId>,
    /// At most 1024 bytes (else 400 `subject_too_long`); empty means none. Not part of the
    /// de-duplication key.
    #[serde(default)]
    #[schema(max_length = 1024)]
    subject: Option<String>,
}

/// `GET /conversations/` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `true` lists the archived conversations only, `false` (default) the others. Accepts
    /// true/false, 1/0, yes/no, any case.
    #[param(value_type = Option<bool>, default = false)]
    archived: Option<Flag>,
    /// Page number, from 1. A page past the end answers 404 `{"error":"not_found","detail":"Invalid page."}` (page 1 always exists).
    #[param(value_type = Option<u64>, minimum = 1, default = 1)]
    page: Option<Count>,
    /// Conversations per page, 1 to 100. Values above 100 are capped at 100, as Django REST
    /// framework caps page sizes.
    #[param(value_type = Option<u64>, minimum = 1, default = 20)]
    page_size: Option<Count>,
}

/// List the caller's conversations
///
/// Most recently active first (newest message; conversations without messages by creation,
/// newest first). Paginated with absolute `next`/`previous` links; `count` is the number of
/// conversations in the whole listing (archived or not, as asked).
#[utoipa::path(
    get,
    path = "/api/v1/messaging/conversations/",
    operation_id = "listConversations",
    tag = "conversations",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of conversations.", body = Paginated<ConversationJson>),
        (status = 404, description = "A page past the end (`Invalid page.`).", body = Error),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    user: User,
    Query(query): Query<ListQuery>,
    link: Link,
) -> Result<HttpResponse, ApiError> {
    let archived = query.archived.is_some_and(|f| f.0);
    let page = PageRequest::new(
        query.page,
        query.page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    let user = user.id();
    let (count, results) = state
        .store
        .read(move |r| {
            let all = r.user_conversations(user, archived)?;
            let mut results = Vec::new();
            for (conv, _) in all.iter().skip(page.skip()).take(page.size()) {
                if let Some(view) = r.conversation_view(user, *conv)? {
                    results.push(ConversationJson::from(view));
                }
            }
            Ok((all.len() as u64, results))
        })
        .await?;
    page.answer(count, results, &link)
}

/// Create a conversation (de-duplicated)
///
/// The caller is always a participant. The same participant set with the same `property` and
/// `booking` returns the existing conversation with 200 (its subject unchanged) instead of
/// creating a duplicate.
#[utoipa::path(
    post,
    path = "/api/v1/messaging/conversations/",
    operation_id = "createConversation",
    tag = "conversations",
    responses(
        (status = 200, description = "An identical conversation (same participants, property and booking) already exists; it is returned.", body = ConversationJson),
        (status = 201, description = "Created.", body = ConversationJson),
        (status = 400, description = "Malformed body, a missing or mistyped field, an id out of range, no participant besides the caller, or a subject over 1024 bytes. `error` is one of: `invalid_json`, `invalid_request`, `invalid_body`, `invalid_participants`, `subject_too_long`.", body = Error),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    user: User,
    Json(body): Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let request = CreateRequest {
        participants: ids::plain(body.participants),
        property: body.property.map(u64::from),
        booking: body.booking.map(u64::from),
        subject: body.subject,
    };
    let created = conversations::create(&state, user.id(), request).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &created.conversation))
}

/// One conversation
///
/// One conversation, as the caller sees it.
#[utoipa::path(
    get,
    path = "/api/v1/messaging/conversations/{id}/",
    operation_id = "getConversation",
    tag = "conversations",
    params(Id<Conversation>),
    responses((status = 200, description = "The conversation.", body = ConversationJson))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Conversation>,
    user: User,
) -> Result<HttpResponse, ApiError> {
    let view = conversations::view(&state, user.id(), id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// The caller's unread messages over all their conversations.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"unread_count": 3}))]
pub struct UnreadCount {
    /// Unread messages over all the caller's conversations (archived ones included).
    unread_count: u64,
}

/// Unread count
///
/// Unread messages over all the caller's conversations; maintained on write, never counted by
/// scanning history.
#[utoipa::path(
    get,
    path = "/api/v1/messaging/conversations/unread_count/",
    operation_id = "getUnreadCount",
    tag = "conversations",
    responses((status = 200, description = "The count.", body = UnreadCount))
)]
pub async fn unread_count(
    State(state): State<Arc<AppState>>,
    user: User,
) -> Result<HttpResponse, ApiError> {
    let user = user.id();
    let unread_count = state.store.read(move |r| r.unread_total(user)).await?;
    Ok(json_response(StatusCode::OK, &UnreadCount { unread_count }))
}

/// Archive a conversation
///
/// Archives the conversation for the caller only. A new message from someone else un-archives
/// it for its recipients. Idempotent. Answers the updated conversation.
#[utoipa::path(
    post,
    path = "/api/v1/messaging/conversations/{id}/archive/",
    operation_id = "archiveConversation",
    tag = "conversations",
    params(Id<Conversation>),
    request_body(content = Option<EmptyBodySchema>, description = "None, or `{}`."),
    responses((status = 200, description = "The updated conversation.", body = ConversationJson))
)]
pub async fn archive(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Conversation>,
    user: User,
    _: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    let view = conversations::set_archived(&state, user.id(), id, true).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Unarchive a conversation
///
/// Brings the conversation back to the caller's main list. Idempotent. Answers the updated
/// conversation.
#[utoipa::path(
    post,
    path = "/api/v1/messaging/conversations/{id}/unarchive/",
    operation_id = "unarchiveConversation",
    tag = "conversations",
    params(Id<Conversation>),
    request_body(content = Option<EmptyBodySchema>, description = "None, or `{}`."),
    responses((status = 200, description = "The updated conversation.", body = ConversationJson))
)]
pub async fn unarchive(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Conversation>,
    user: User,
    _: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    let view = conversations::set_archived(&state, user.id(), id, false).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Mark a whole conversation read
///
/// Moves the caller's read marker to the newest message: its `unread_count` becomes 0.
/// Idempotent. Answers the updated conversation.
#[utoipa::path(
    post,
    path = "/api/v1/messaging/conversations/{id}/mark_all_read/",
    operation_id = "markAllRead",
    tag = "conversations",
    params(Id<Conversation>),
    request_body(content = Option<EmptyBodySchema>, description = "None, or `{}`."),
    responses((status = 200, description = "The updated conversation.", body = ConversationJson))
)]
pub async fn mark_all_read(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Conversation>,
    user: User,
    _: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    let view = read::mark_all_read(&state, user.id(), id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /presence/` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// Comma-separated user ids (1 ≤ id < 2^53, spaces around them allowed, empty items
    /// skipped), at most 200 distinct.
    // The pattern says exactly that, but for the 200: an id of at most 15 digits, or a
    // 16-digit one up to 9007199254740991, digit by digit (schemathesis checks both ways).
    #[param(
        pattern = "^ *(?:0*(?:[1-9][0-9]{0,14}|[1-8][0-9]{15}|900[0-6][0-9]{12}|90070[0-9]{11}|90071[0-8][0-9]{10}|900719[0-8][0-9]{9}|9007199[0-1][0-9]{8}|90071992[0-4][0-9]{7}|900719925[0-3][0-9]{6}|9007199254[0-6][0-9]{5}|90071992547[0-3][0-9]{4}|9007199254740[0-8][0-9]{2}|90071992547409[0-8][0-9]|900719925474099[0-1]) *)?(?:, *(?:0*(?:[1-9][0-9]{0,14}|[1-8][0-9]{15}|900[0-6][0-9]{12}|90070[0-9]{11}|90071[0-8][0-9]{10}|900719[0-8][0-9]{9}|9007199[0-1][0-9]{8}|90071992[0-4][0-9]{7}|900719925[0-3][0-9]{6}|9007199254[0-6][0-9]{5}|90071992547[0-3][0-9]{4}|9007199254740[0-8][0-9]{2}|90071992547409[0-8][0-9]|900719925474099[0-1]) *)?)*$",
        example = "1,2"
    )]
    user_ids: String,
}

/// One user's presence.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"user_id": 2, "online": false, "last_seen": null}))]
pub struct PresenceEntry {
    #[schema(value_type = crate::views::IdSchema)]
    user_id: u64,
    /// True while the user has a live socket.
    online: bool,
    /// When the user last connected or disconnected since the daemon started; null if never
    /// seen.
    #[schema(required = true, format = DateTime)]
    last_seen: Option<String>,
}

/// Online state of contacts
///
/// Presence of the listed users who share a conversation with the caller; other ids (and the
/// caller's own) are left out, as if unknown. Duplicates are answered once, in the order asked.
/// Presence is kept in memory and comes from WebSocket connections.
#[utoipa::path(
    get,
    path = "/api/v1/messaging/presence/",
    operation_id = "getPresence",
    tag = "presence",
    params(PresenceQuery),
    responses(
        (status = 200, description = "One entry per visible user.", body = Vec<PresenceEntry>),
        (status = 400, description = "`user_ids` is missing, not a comma-separated list of ids, or lists more than 200 ids. `error` is `invalid_query`.", body = Error),
    )
)]
pub async fn presence(
    State(state): State<Arc<AppState>>,
    user: User,
    Query(query): Query<PresenceQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut ids = Vec::new();
    for part in query
        .user_ids
        .split(',')
        .map(|p| p.trim_matches(' '))
        .filter(|p| !p.is_empty())
    {
        let id = ids::parse_in_range(part).ok_or_else(|| {
            ApiError::refused(
                Code::InvalidQuery,
                "`user_ids` must be a comma-separated list of user ids",
            )
        })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_PRESENCE_IDS {
        return Err(ApiError::refused(
            Code::InvalidQuery,
            format!("at most {MAX_PRESENCE_IDS} user ids at once"),
        ));
    }
    let user = user.id();
    let contacts = state.store.read(move |r| r.contacts(user)).await?;
    let results: Vec<_> = ids
        .into_iter()
        .filter(|id| contacts.contains(id))
        .map(|id| {
            let status = state.hub.presence.status(id);
            PresenceEntry {
                user_id: id,
                online: status.online,
                last_seen: status.last_seen_ms.map(crate::time::rfc3339_ms),
            }
        })
        .collect();
    Ok(json_response(StatusCode::OK, &results))
}

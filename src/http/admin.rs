//! `/api/admin/…`: the operators' API (contract section 9), behind the service secret. The
//! same routes answer `indaba admin` over the admin socket ([`super::local`]). What each
//! action does is [`crate::chat::moderation`]'s; these handlers read the request and show the
//! outcome. The JSON is the contract's: the `/admin/` console reads it as it is.

use std::sync::Arc;

use axum::extract::State;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Conversation, Count, EmptyBody, Id, Link, Message, Query, Service, UserPath};
use crate::chat::moderation;
use crate::error::{ApiError, HttpResponse, json_response};
use crate::http::openapi::{EmptyBodySchema, Error};
use crate::http::pagination::PageRequest;
use crate::state::AppState;
use crate::store::reader::UserSummary;
use crate::time::rfc3339_ms;
use crate::views::Paginated;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 100;

/// A user as an operator sees them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = AdminUser,
    example = json!({"id": 7, "username": "amara", "display_name": null, "online": true,
        "last_seen": "2026-11-22T10:30:00.123Z", "disabled": false, "queue_length": 0,
        "conversations": 3})
)]
pub struct UserJson {
    #[schema(value_type = crate::views::IdSchema)]
    pub id: u64,
    /// The local account's name, or the latest `username` claim of an external user.
    #[schema(required = true)]
    pub username: Option<String>,
    #[schema(required = true)]
    pub display_name: Option<String>,
    /// A socket of theirs is open (or closed less than the presence grace ago).
    pub online: bool,
    /// When their last socket closed, or opened if one is open; null if none since the start.
    #[schema(required = true, format = DateTime)]
    pub last_seen: Option<String>,
    /// An operator disabled them: their tokens get 403 `user_disabled`.
    pub disabled: bool,
    /// Messages waiting in their delivery queue.
    pub queue_length: u64,
    /// Conversations they are in.
    pub conversations: u64,
}

impl UserJson {
    fn new(state: &AppState, user: UserSummary) -> Self {
        let presence = state.hub.presence.status(user.id);
        UserJson {
            id: user.id,
            username: user.record.username,
            display_name: user.record.display_name,
            online: presence.online,
            last_seen: presence.last_seen_ms.map(rfc3339_ms),
            disabled: user.disabled_since_ms.is_some() || state.users.is_disabled(user.id),
            queue_length: user.queue_length,
            conversations: user.conversations,
        }
    }
}

/// `GET /api/admin/users/` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Page number, from 1. A page past the end answers 404 (`Invalid page.`; page 1 always
    /// exists).
    #[param(value_type = Option<u64>, minimum = 1, default = 1)]
    page: Option<Count>,
    /// Users per page, 1 to 100 (larger values are capped at 100).
    #[param(value_type = Option<u64>, minimum = 1, default = 50)]
    page_size: Option<Count>,
    /// Only users whose id is this, or whose username or display name contains it (any case).
    q: Option<String>,
}

/// List users
///
/// Every user the daemon has a record of (seen in a token, or a local account), by id.
/// Paginated with absolute `next`/`previous` links that keep `q`; `count` is the number of
/// users that match.
#[utoipa::path(
    get,
    path = "/api/admin/users/",
    operation_id = "adminListUsers",
    tag = "admin",
    params(UsersQuery),
    responses(
        (status = 200, description = "A page of users.", body = Paginated<UserJson>),
        (status = 404, description = "A page past the end (`Invalid page.`), or the service API is off.", body = Error),
    )
)]
pub async fn list_users(
    State(state): State<Arc<AppState>>,
    _: Service,
    Query(query): Query<UsersQuery>,
    link: Link,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::new(
        query.page,
        query.page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    let q = query.q;
    let (count, users) = state
        .store
        .read(move |r| r.user_summaries(q.as_deref(), page.skip(), page.size()))
        .await?;
    let results: Vec<UserJson> = users
        .into_iter()
        .map(|u| UserJson::new(&state, u))
        .collect();
    page.answer(count, results, &link)
}

async fn user_json(state: &Arc<AppState>, id: u64) -> Result<UserJson, ApiError> {
    let user = state
        .store
        .read(move |r| r.user_summary(id))
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    Ok(UserJson::new(state, user))
}

/// One user
#[utoipa::path(
    get,
    path = "/api/admin/users/{id}",
    operation_id = "adminGetUser",
    tag = "admin",
    params(Id<UserPath>),
    responses(
        (status = 200, description = "The user.", body = UserJson),
        (status = 404, description = "No such user (`not_found`), or the service API is off.", body = Error),
    )
)]
pub async fn get_user(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<UserPath>,
    _: Service,
) -> Result<HttpResponse, ApiError> {
    Ok(json_response(StatusCode::OK, &user_json(&state, id).await?))
}

/// Disable a user
///
/// Durably. From now on their tokens get 403 `user_disabled` (REST, logins and refreshes), their
/// WebSocket upgrades are closed with 4403, and their open sockets are closed with 4403 at
/// once. Their data stays. Disabling a disabled user changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/disable",
    operation_id = "adminDisableUser",
    tag = "admin",
    params(Id<UserPath>),
    request_body(content = Option<EmptyBodySchema>, description = "None, or an empty JSON object."),
    responses(
        (status = 200, description = "The user, disabled.", body = UserJson),
        (status = 404, description = "No such user (`not_found`), or the service API is off.", body = Error),
    )
)]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<UserPath>,
    _: Service,
    _: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    moderation::set_disabled(&state, id, true).await?;
    Ok(json_response(StatusCode::OK, &user_json(&state, id).await?))
}

/// Enable a user
///
/// Durably: their tokens work again. Enabling a user who is not disabled changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/enable",
    operation_id = "adminEnableUser",
    tag = "admin",
    params(Id<UserPath>),
    request_body(content = Option<EmptyBodySchema>, description = "None, or an empty JSON object."),
    responses(
        (status = 200, description = "The user, enabled.", body = UserJson),
        (status = 404, description = "No such user (`not_found`; an erased user too), or the service API is off.", body = Error),
    )
)]
pub async fn enable(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<UserPath>,
    _: Service,
    _: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    moderation::set_disabled(&state, id, false).await?;
    match user_json(&state, id).await {
        Ok(user) => Ok(json_response(StatusCode::OK, &user)),
        // An erased user enabled again has no record until their next request.
        Err(ApiError::NotFound(_)) => Err(ApiError::NotFound("user not found")),
        Err(e) => Err(e),
    }
}

/// What an erasure removed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminErasure)]
pub struct ErasureJson {
    #[schema(value_type = crate::views::IdSchema)]
    pub id: u64,
    /// Always true.
    pub erased: bool,
    /// Their messages that became tombstones now.
    pub messages_deleted: u64,
    /// Entries removed from their queue.
    pub queue_entries_removed: u64,
    /// Conversations whose read state of theirs was removed.
    pub conversations: u64,
}

/// Erase a user
///
/// Erasure on request (GDPR art. 17), irreversibly: their account, profile, queue and read
/// state are removed; every message they sent keeps its place as a tombstone (`"deleted":
/// true`, `"text": ""`, `"metadata": {}`), and participants' open sockets get
/// `message_deleted`. Their data key is destroyed, the journal emptied and the data file
/// rewritten (docs/STORAGE.md, "Erasure"). They stay disabled: tokens they still hold get 403
/// `user_disabled`.
#[utoipa::path(
    delete,
    path = "/api/admin/users/{id}",
    operation_id = "adminEraseUser",
    tag = "admin",
    params(Id<UserPath>),
    responses(
        (status = 200, description = "The user is erased.", body = ErasureJson),
        (status = 404, description = "No such user (`not_found`), or the service API is off.", body = Error),
    )
)]
pub async fn erase(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<UserPath>,
    _: Service,
) -> Result<HttpResponse, ApiError> {
    let erased = moderation::erase(&state, id).await?;
    Ok(json_response(
        StatusCode::OK,
        &ErasureJson {
            id,
            erased: true,
            messages_deleted: erased
                .tombstoned
                .iter()
                .map(|t| t.message_ids.len() as u64)
                .sum(),
            queue_entries_removed: erased.queue_entries,
            conversations: erased.memberships,
        },
    ))
}

/// A deleted message.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminDeletedMessage)]
pub struct DeletedJson {
    #[schema(value_type = crate::views::IdSchema)]
    pub id: u64,
    #[schema(value_type = crate::views::IdSchema)]
    pub conversation: u64,
    /// Always true.
    pub deleted: bool,
    /// Always empty.
    pub text: String,
}

/// Delete a message
///
/// Moderation: the message becomes a tombstone (`"deleted": true`, `"text": ""`,
/// `"metadata": {}`) for everyone, durably, and the journal no longer holds it; participants'
/// open sockets get `message_deleted`. Deleting a tombstone again answers the same.
#[utoipa::path(
    delete,
    path = "/api/admin/messages/{id}",
    operation_id = "adminDeleteMessage",
    tag = "admin",
    params(Id<Message>),
    responses(
        (status = 200, description = "The message is a tombstone.", body = DeletedJson),
        (status = 404, description = "No such message (`not_found`), or the service API is off.", body = Error),
    )
)]
pub async fn delete_message(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Message>,
    _: Service,
) -> Result<HttpResponse, ApiError> {
    let deleted = moderation::delete_message(&state, id).await?;
    Ok(json_response(
        StatusCode::OK,
        &DeletedJson {
            id,
            conversation: deleted.conversation,
            deleted: true,
            text: String::new(),
        },
    ))
}

/// A conversation as an operator sees it: no subject, no message text.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminConversation)]
pub struct ConversationJson {
    #[schema(value_type = crate::views::IdSchema)]
    pub id: u64,
    #[schema(value_type = Vec<crate::views::IdSchema>)]
    pub participants: Vec<u64>,
    /// Opaque host-app id.
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    pub property: Option<u64>,
    /// Opaque host-app id.
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    pub booking: Option<u64>,
    /// Messages in it, tombstones included.
    pub message_count: u64,
    /// Its newest message, or null.
    #[schema(required = true, value_type = Option<crate::views::IdSchema>)]
    pub last_message_id: Option<u64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it was created or last got a message.
    #[schema(format = DateTime)]
    pub last_activity: String,
}

/// One conversation's metadata
#[utoipa::path(
    get,
    path = "/api/admin/conversations/{id}",
    operation_id = "adminGetConversation",
    tag = "admin",
    params(Id<Conversation>),
    responses(
        (status = 200, description = "The conversation.", body = ConversationJson),
        (status = 404, description = "No such conversation (`not_found`), or the service API is off.", body = Error),
    )
)]
pub async fn get_conversation(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<Conversation>,
    _: Service,
) -> Result<HttpResponse, ApiError> {
    let record = state
        .store
        .read(move |r| r.conversation(id))
        .await?
        .ok_or(ApiError::NotFound("conversation not found"))?;
    Ok(json_response(
        StatusCode::OK,
        &ConversationJson {
            id,
            participants: record.participants,
            property: record.property,
            booking: record.booking,
            message_count: record.message_count,
            last_message_id: record.last_message_id,
            created_at: rfc3339_ms(record.created_at_ms),
            last_activity: rfc3339_ms(record.updated_at_ms),
        },
    ))
}

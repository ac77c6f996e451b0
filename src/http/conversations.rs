//! `/api/v1/messaging/conversations/…`: list, create (de-duplicated), detail, unread count,
//! archive and read markers, and presence. What a change means is [`crate::chat`]'s.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::request::{Ctx, Query, read_empty, read_json};
use crate::chat::conversations::{self, CreateRequest};
use crate::chat::read;
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::views::{ConversationJson, Paginated};

/// Most users one presence request may ask about.
pub const MAX_PRESENCE_IDS: usize = 200;
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;

/// `POST /conversations/` body. Unknown fields are ignored, as Django REST framework does.
#[derive(Debug, Deserialize)]
struct CreateBody {
    participants: Vec<u64>,
    #[serde(default)]
    property: Option<u64>,
    #[serde(default)]
    booking: Option<u64>,
    #[serde(default)]
    subject: Option<String>,
}

/// `GET /conversations/?archived=&page=&page_size=`
pub async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let archived = query.flag("archived")?.unwrap_or(false);
    let page = query.count("page", usize::MAX)?.unwrap_or(1);
    let page_size = query
        .capped("page_size", MAX_PAGE_SIZE)?
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let user = ctx.user.user_id;
    let (count, results) = ctx
        .state
        .store
        .read(move |r| {
            let all = r.user_conversations(user, archived)?;
            let mut results = Vec::new();
            for (conv, _) in all
                .iter()
                .skip((page - 1).saturating_mul(page_size))
                .take(page_size)
            {
                if let Some(view) = r.conversation_view(user, *conv)? {
                    results.push(ConversationJson::from(view));
                }
            }
            Ok((all.len() as u64, results))
        })
        .await?;
    // As Django REST framework: a page past the end is 404 "Invalid page." (page 1 always exists).
    if page > 1 && results.is_empty() {
        return Err(ApiError::NotFound("Invalid page."));
    }
    let path = req.uri().path();
    let link = |p: usize| {
        format!(
            "{}{}?{}",
            ctx.base_url,
            path,
            query.with(&[("page", Some(p.to_string()))])
        )
    };
    let has_next = (page as u64).saturating_mul(page_size as u64) < count;
    Ok(json_response(
        StatusCode::OK,
        &Paginated {
            count,
            next: has_next.then(|| link(page + 1)),
            previous: (page > 1).then(|| link(page - 1)),
            results,
        },
    ))
}

/// `POST /conversations/`: 201 when created, 200 with the existing one when the same
/// participants, property and booking already have a conversation.
pub async fn create(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let body: CreateBody = read_json(req, &ctx.state.config.limits).await?;
    let request = CreateRequest {
        participants: body.participants,
        property: body.property,
        booking: body.booking,
        subject: body.subject,
    };
    let created = conversations::create(ctx.state, ctx.user.user_id, request).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &created.conversation))
}

/// `GET /conversations/{id}/`
pub async fn get(ctx: &Ctx<'_>, id: u64) -> Result<HttpResponse, ApiError> {
    let view = conversations::view(ctx.state, ctx.user.user_id, id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /conversations/unread_count/`
pub async fn unread_count(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let user = ctx.user.user_id;
    let total = ctx.state.store.read(move |r| r.unread_total(user)).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"unread_count": total}),
    ))
}

/// `POST /conversations/{id}/archive/` and `/unarchive/`: the caller's own view only.
pub async fn set_archived(
    ctx: &Ctx<'_>,
    id: u64,
    archived: bool,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    read_empty(req, &ctx.state.config.limits).await?;
    let view = conversations::set_archived(ctx.state, ctx.user.user_id, id, archived).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /conversations/{id}/mark_all_read/`: the caller's read marker moves to the newest message.
pub async fn mark_all_read(
    ctx: &Ctx<'_>,
    id: u64,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    read_empty(req, &ctx.state.config.limits).await?;
    let view = read::mark_all_read(ctx.state, ctx.user.user_id, id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /presence/?user_ids=1,2`: online state of users who share a conversation with the
/// caller; other ids are left out, as if unknown.
pub async fn presence(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let raw = query.get("user_ids").ok_or_else(|| {
        ApiError::refused(Code::InvalidQuery, "query parameter `user_ids` is required")
    })?;
    let mut ids = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = super::request::parse_id(part).ok_or_else(|| {
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
    let user = ctx.user.user_id;
    let contacts = ctx.state.store.read(move |r| r.contacts(user)).await?;
    let results: Vec<_> = ids
        .into_iter()
        .filter(|id| contacts.contains(id))
        .map(|id| {
            let status = ctx.state.hub.presence.status(id);
            serde_json::json!({
                "user_id": id,
                "online": status.online,
                "last_seen": status.last_seen_ms.map(crate::time::rfc3339_ms),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &results))
}

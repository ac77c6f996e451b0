//! `/api/v1/auth/…`: local accounts for standalone use — register, token, refresh, me — and
//! finding a user to talk to (`users/`).
//!
//! Tokens are shaped like SimpleJWT's, so a front end written for the Django app works here too.
//! Failed logins are limited per client address and per username (429 with `Retry-After`), and
//! a login takes as long for an unknown username as for a wrong password.

use std::net::{IpAddr, SocketAddr};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::request::{Ctx, Query, read_json};
use crate::auth::jwt::{TokenMinter, TokenType};
use crate::auth::{AuthError, password};
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::limits::{client_ip, retry_after_secs};
use crate::state::AppState;
use crate::store::NewAccount;

/// Django's username rules: up to 150 of letters, digits and `@.+-_`.
pub const MAX_USERNAME_CHARS: usize = 150;
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Lifetime of refresh tokens (SimpleJWT's default).
const REFRESH_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct RefreshBody {
    refresh: String,
}

fn minter(state: &AppState) -> Result<&TokenMinter, ApiError> {
    state.minter.as_ref().ok_or_else(|| {
        ApiError::refused(
            Code::LocalAccountsUnavailable,
            "local accounts need auth.jwt_secret; this server takes tokens from an external issuer",
        )
    })
}

fn caller_ip(state: &AppState, peer: SocketAddr, req: &Request<Incoming>) -> IpAddr {
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    client_ip(peer, xff, &state.config.server.trusted_proxies)
}

fn too_many(wait: std::time::Duration) -> ApiError {
    ApiError::RateLimited {
        detail: "too many attempts; try again later",
        retry_after_secs: retry_after_secs(wait),
    }
}

/// `POST /api/v1/auth/register/` → 201 `{"id","username","display_name"}`.
pub async fn register(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.auth.allow_registration {
        return Err(ApiError::refused(
            Code::RegistrationDisabled,
            "registration is switched off on this server",
        ));
    }
    minter(state)?;
    // Hashing is deliberately expensive: registrations count against the address's budget.
    let ip = caller_ip(state, peer, &req);
    state.login_ip_limiter.take(&ip).map_err(too_many)?;
    let body: RegisterBody = read_json(req, &state.config.limits).await?;
    let username = body.username.trim().to_owned();
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || !username
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c))
    {
        return Err(ApiError::refused(
            Code::InvalidUsername,
            format!("username must be 1 to {MAX_USERNAME_CHARS} letters, digits or @.+-_"),
        ));
    }
    if body.password.len() < MIN_PASSWORD_BYTES || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::refused(
            Code::InvalidPassword,
            format!("password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    let display_name = body
        .display_name
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if display_name
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_USERNAME_CHARS)
    {
        return Err(ApiError::refused(
            Code::InvalidRequest,
            format!("display_name is longer than {MAX_USERNAME_CHARS} characters"),
        ));
    }
    let password_hash = password::hash(body.password).await?;
    let id = state
        .store
        .writer()
        .register_account(NewAccount {
            username: username.clone(),
            display_name: display_name.clone(),
            password_hash,
            id_base: state.config.auth.local_id_base,
        })
        .await?;
    state.users.add_account(id, username.clone());
    tracing::info!(user_id = id, "local account registered");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": id, "username": username, "display_name": display_name}),
    ))
}

/// `POST /api/v1/auth/token/` → `{"access","refresh"}`.
pub async fn token(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let minter = minter(state)?;
    let ip = caller_ip(state, peer, &req);
    let body: TokenBody = read_json(req, &state.config.limits).await?;
    let username = body.username.trim().to_owned();
    state.login_ip_limiter.check(&ip).map_err(too_many)?;
    state
        .login_name_limiter
        .check(&username)
        .map_err(too_many)?;

    let name = username.clone();
    let account = state.store.read(move |r| r.account(&name)).await?;
    let (id, stored_hash, account_name) = match account {
        Some((id, record)) => (Some(id), record.password_hash, record.username),
        None => (None, None, None),
    };
    if !password::verify(body.password, stored_hash).await? {
        // Count the failure against both budgets; the answer is the same either way.
        let _ = state.login_ip_limiter.take(&ip);
        let _ = state.login_name_limiter.take(&username);
        tracing::debug!("login failed");
        return Err(AuthError::BadCredentials.into());
    }
    let id = id.ok_or(AuthError::BadCredentials)?;
    let issue = |kind, ttl| {
        minter
            .mint(id, account_name.as_deref(), kind, ttl)
            .map_err(ApiError::Internal)
    };
    let access = issue(TokenType::Access, state.config.auth.access_token_ttl)?;
    let refresh = issue(TokenType::Refresh, REFRESH_TTL)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"access": access, "refresh": refresh}),
    ))
}

/// `POST /api/v1/auth/token/refresh/` → `{"access"}`.
pub async fn refresh(state: &AppState, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let minter = minter(state)?;
    let body: RefreshBody = read_json(req, &state.config.limits).await?;
    let who = state.verifier.verify_refresh(body.refresh.trim())?;
    let access = minter
        .mint(
            who.user_id,
            who.username.as_deref(),
            TokenType::Access,
            state.config.auth.access_token_ttl,
        )
        .map_err(ApiError::Internal)?;
    Ok(json_response(StatusCode::OK, &json!({"access": access})))
}

/// `GET /api/v1/auth/me/` → `{"id","username","display_name"}`.
pub async fn me(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let id = ctx.user.user_id;
    let record = ctx.state.store.read(move |r| r.user(id)).await?;
    let (username, display_name) = match record {
        Some(r) => (r.username, r.display_name),
        None => (ctx.user.username.clone(), None),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "username": username, "display_name": display_name}),
    ))
}

/// `GET /api/v1/auth/users/?username=NAME` → `{"id","username","display_name"}` of the local
/// account called exactly `NAME`; 404 otherwise.
///
/// How a user starts a conversation with someone they know by name. Deliberately no listing
/// and no prefix or case-insensitive match, so the users cannot be enumerated; only local
/// accounts have a name that is theirs (an external user's name is a token claim that others
/// may share). Lookups that find nobody count against a per-caller budget (429 with
/// `Retry-After` beyond it), so guessing names is as slow as guessing them at registration.
pub async fn find_user(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let name = query
        .get("username")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::refused(Code::InvalidQuery, "query parameter `username` is required")
        })?
        .to_owned();
    let caller = ctx.user.user_id;
    let limiter = &ctx.state.user_lookup_limiter;
    limiter.check(&caller).map_err(too_many)?;
    let found = if name.chars().count() > MAX_USERNAME_CHARS {
        None
    } else {
        ctx.state.store.read(move |r| r.account(&name)).await?
    };
    let Some((id, record)) = found else {
        let _ = limiter.take(&caller);
        return Err(ApiError::NotFound("no user with that username"));
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "username": record.username, "display_name": record.display_name}),
    ))
}

/// `GET /api/v1/auth/users/{id}/` → `{"id","username","display_name"}` of the caller or of
/// someone who shares a conversation with them (the names a conversation list shows); 404 for
/// anyone else, as for a user who does not exist. Names are null when none is known.
pub async fn get_user(ctx: &Ctx<'_>, id: u64) -> Result<HttpResponse, ApiError> {
    let caller = ctx.user.user_id;
    let record = ctx
        .state
        .store
        .read(move |r| {
            if id != caller && !r.contacts(caller)?.contains(&id) {
                return Ok(None);
            }
            r.user(id).map(Some)
        })
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    let (username, display_name) = record.map_or((None, None), |r| (r.username, r.display_name));
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "username": username, "display_name": display_name}),
    ))
}

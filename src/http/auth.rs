//! `/api/v1/auth/…`: local accounts for standalone use — register, token, refresh, me — and
//! finding a user to talk to (`users/`).
//!
//! Tokens are shaped like SimpleJWT's, so a front end written for the Django app works here too.
//! Failed logins are limited per client address and per username (429 with `Retry-After`), and
//! a login takes as long for an unknown username as for a wrong password.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ClientIp, DISABLED, Id, Json, Query, User, UserPath};
use crate::auth::jwt::{TokenMinter, TokenType};
use crate::auth::{AuthError, password};
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::limits::retry_after_secs;
use crate::state::AppState;
use crate::store::NewAccount;

/// Django's username rules: up to 150 of letters, digits and `@.+-_`.
pub const MAX_USERNAME_CHARS: usize = 150;
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Lifetime of refresh tokens (SimpleJWT's default).
const REFRESH_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `POST /register/` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = Register,
    example = json!({"username": "ann", "password": "correct horse battery", "display_name": "Ann"})
)]
pub struct RegisterBody {
    /// Trimmed; 1 to 150 letters, digits or `@.+-_` (else 400 `invalid_username`).
    #[schema(min_length = 1, max_length = 150)]
    username: String,
    /// 8 to 1024 bytes (else 400 `invalid_password`).
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    password: String,
    /// Trimmed; empty means none; at most 150 characters (else 400 `invalid_request`).
    #[serde(default)]
    #[schema(max_length = 150)]
    display_name: Option<String>,
}

/// `POST /token/` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = TokenRequest,
    example = json!({"username": "ann", "password": "correct horse battery"})
)]
pub struct TokenBody {
    /// Trimmed before lookup.
    username: String,
    #[schema(format = Password)]
    password: String,
}

/// `POST /token/refresh/` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = RefreshRequest)]
pub struct RefreshBody {
    /// A refresh token (`token_type: "refresh"`) signed with the shared secret.
    refresh: String,
}

/// A user as others see them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = User,
    example = json!({"id": 1_000_000_000_000_u64, "username": "ann", "display_name": "Ann"})
)]
pub struct UserJson {
    #[schema(value_type = crate::views::IdSchema)]
    id: u64,
    /// The local account's name; for a user known only from tokens, the token's `username`
    /// claim, or null.
    #[schema(required = true)]
    username: Option<String>,
    #[schema(required = true)]
    display_name: Option<String>,
}

/// SimpleJWT-shaped HS256 tokens. The user id is written as a decimal string in
/// `auth.user_id_claim`; claims `token_type`, `exp`, `iat`, `jti`, `username`. Access tokens
/// live `auth.access_token_ttl` (default 1 h), refresh tokens 24 h.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// Access token (JWT).
    access: String,
    /// Refresh token (JWT, `token_type: "refresh"`).
    refresh: String,
}

/// A new access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessToken {
    /// A new access token (JWT).
    access: String,
}

/// `GET /users/?username=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindUserQuery {
    /// The exact username.
    #[param(min_length = 1, example = "ann")]
    username: String,
}

/// Local accounts are on: this server signs its own tokens (403 otherwise).
#[derive(Debug)]
pub struct LocalAccounts;

impl LocalAccounts {
    fn minter(state: &AppState) -> Result<&TokenMinter, ApiError> {
        state.minter.as_ref().ok_or_else(|| {
            ApiError::refused(
                Code::LocalAccountsUnavailable,
                "local accounts need auth.jwt_secret; this server takes tokens from an external issuer",
            )
        })
    }
}

impl FromRequestParts<Arc<AppState>> for LocalAccounts {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        LocalAccounts::minter(state).map(|_| LocalAccounts)
    }
}

/// Registration is open (403 otherwise), and the client's address has budget left for one
/// (429): hashing is deliberately expensive, so every registration counts against it. Checked
/// before the body is read.
#[derive(Debug)]
pub struct Registration;

impl FromRequestParts<Arc<AppState>> for Registration {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if !state.config.auth.allow_registration {
            return Err(ApiError::refused(
                Code::RegistrationDisabled,
                "registration is switched off on this server",
            ));
        }
        LocalAccounts::minter(state)?;
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        state.login_ip_limiter.take(&ip).map_err(too_many)?;
        Ok(Registration)
    }
}

fn too_many(wait: std::time::Duration) -> ApiError {
    ApiError::RateLimited {
        detail: "too many attempts; try again later",
        retry_after_secs: retry_after_secs(wait),
    }
}

/// Register a local account
///
/// Creates a local account (Argon2id password hash) with an id from `auth.local_id_base`
/// upward. Off when `auth.allow_registration` is false (403 `registration_disabled`) or when
/// tokens come from a public-key issuer (403 `local_accounts_unavailable`). Every attempt,
/// successful or not, takes one token from the per-address login budget (20, refilling one per
/// 6 s).
#[utoipa::path(
    post,
    path = "/api/v1/auth/register/",
    operation_id = "register",
    tag = "auth",
    responses(
        (status = 201, description = "The account was created.", body = UserJson),
        (status = 400, description = "Malformed body, a missing or mistyped field, or an invalid username, password or display name. `error` is one of: `invalid_json`, `invalid_request`, `invalid_body`, `invalid_username`, `invalid_password`.", body = crate::http::openapi::Error),
        (status = 403, description = "Registration is switched off, or local accounts are unavailable. `error` is one of: `registration_disabled`, `local_accounts_unavailable`.", body = crate::http::openapi::Error),
        (status = 409, description = "A local account with this username exists. `error` is `username_taken`.", body = crate::http::openapi::Error),
        (status = 429, description = "Too many attempts from this client address. `error` is `rate_limited`.", body = crate::http::openapi::Error,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn register(
    State(state): State<Arc<AppState>>,
    _: Registration,
    Json(body): Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
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
        &UserJson {
            id,
            username: Some(username),
            display_name,
        },
    ))
}

/// Log in (obtain a token pair)
///
/// SimpleJWT's `TokenObtainPairView`: username and password of a local account → access and
/// refresh token. Failed logins are limited to 20 per client address (refilling one per 6 s)
/// and 10 per username (refilling one per 30 s); once either budget is empty every attempt —
/// even with the right password — gets 429. An unknown username takes as long as a wrong
/// password and gets the same answer.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token/",
    operation_id = "obtainToken",
    tag = "auth",
    responses(
        (status = 200, description = "Logged in.", body = TokenPair),
        (status = 401, description = "Unknown username or wrong password (`invalid_credentials`).", body = crate::http::openapi::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer`."))),
        (status = 403, description = "Local accounts are unavailable (tokens come from a public-key issuer). `error` is `local_accounts_unavailable`.", body = crate::http::openapi::Error),
        (status = 429, description = "Too many failed logins for this client address or username. `error` is `rate_limited`.", body = crate::http::openapi::Error,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn token(
    State(state): State<Arc<AppState>>,
    _: LocalAccounts,
    ClientIp(ip): ClientIp,
    Json(body): Json<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    let minter = LocalAccounts::minter(&state)?;
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
    if state.users.is_disabled(id) {
        return Err(ApiError::refused(Code::UserDisabled, DISABLED));
    }
    let issue = |kind, ttl| {
        minter
            .mint(id, account_name.as_deref(), kind, ttl)
            .map_err(ApiError::Internal)
    };
    let access = issue(TokenType::Access, state.config.auth.access_token_ttl)?;
    let refresh = issue(TokenType::Refresh, REFRESH_TTL)?;
    Ok(json_response(
        StatusCode::OK,
        &TokenPair { access, refresh },
    ))
}

/// Refresh an access token
///
/// SimpleJWT's `TokenRefreshView`: a valid refresh token → a new access token for the same
/// user. Refresh tokens are not rotated.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token/refresh/",
    operation_id = "refreshToken",
    tag = "auth",
    responses(
        (status = 200, description = "A new access token.", body = AccessToken),
        (status = 401, description = "The refresh token is invalid, is an access token (`token_invalid`) or has expired (`token_expired`).", body = crate::http::openapi::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer`."))),
        (status = 403, description = "Local accounts are unavailable (tokens come from a public-key issuer). `error` is `local_accounts_unavailable`.", body = crate::http::openapi::Error),
    )
)]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    _: LocalAccounts,
    Json(body): Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let minter = LocalAccounts::minter(&state)?;
    let who = state.verifier.verify_refresh(body.refresh.trim())?;
    if state.users.is_disabled(who.user_id) {
        return Err(ApiError::refused(Code::UserDisabled, DISABLED));
    }
    let access = minter
        .mint(
            who.user_id,
            who.username.as_deref(),
            TokenType::Access,
            state.config.auth.access_token_ttl,
        )
        .map_err(ApiError::Internal)?;
    Ok(json_response(StatusCode::OK, &AccessToken { access }))
}

/// The caller
///
/// The caller's id, username and display name. Works for external-issuer users too (username
/// from the token's `username` claim, display name null).
#[utoipa::path(
    get,
    path = "/api/v1/auth/me/",
    operation_id = "getMe",
    tag = "auth",
    responses((status = 200, description = "The caller.", body = UserJson))
)]
pub async fn me(State(state): State<Arc<AppState>>, user: User) -> Result<HttpResponse, ApiError> {
    let id = user.id();
    let record = state.store.read(move |r| r.user(id)).await?;
    let (username, display_name) = match record {
        Some(r) => (r.username, r.display_name),
        None => (user.0.username, None),
    };
    Ok(json_response(
        StatusCode::OK,
        &UserJson {
            id,
            username,
            display_name,
        },
    ))
}

/// Find a local account by its exact username
///
/// How a client starts a conversation with someone it knows by name (the demo chat at `/` uses
/// it): the local account whose username is exactly `username` (surrounding spaces ignored;
/// case-sensitive, as usernames are). No listing, no prefix or case-insensitive match, so the
/// users cannot be enumerated. Only local accounts are found: an external user's name is a
/// token claim others may share. Lookups that find nobody are limited to 20 per caller
/// (refilling one per 3 s); once that budget is empty every lookup gets 429.
#[utoipa::path(
    get,
    path = "/api/v1/auth/users/",
    operation_id = "findUserByUsername",
    tag = "auth",
    params(FindUserQuery),
    responses(
        (status = 200, description = "The user.", body = UserJson),
        (status = 400, description = "`username` is missing or blank. `error` is `invalid_query`.", body = crate::http::openapi::Error),
        (status = 404, description = "No local account has exactly this username. `error` is `not_found`.", body = crate::http::openapi::Error),
        (status = 429, description = "Too many lookups that found nobody. `error` is `rate_limited`.", body = crate::http::openapi::Error,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn find_user(
    State(state): State<Arc<AppState>>,
    user: User,
    Query(query): Query<FindUserQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = query.username.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::refused(
            Code::InvalidQuery,
            "query parameter `username` is required",
        ));
    }
    let caller = user.id();
    let limiter = &state.user_lookup_limiter;
    limiter.check(&caller).map_err(too_many)?;
    let found = if name.chars().count() > MAX_USERNAME_CHARS {
        None
    } else {
        state.store.read(move |r| r.account(&name)).await?
    };
    let Some((id, record)) = found else {
        let _ = limiter.take(&caller);
        return Err(ApiError::NotFound("no user with that username"));
    };
    Ok(json_response(
        StatusCode::OK,
        &UserJson {
            id,
            username: record.username,
            display_name: record.display_name,
        },
    ))
}

/// A user the caller talks to
///
/// The id, username and display name of the caller or of a user who shares a conversation with
/// the caller — the names a conversation list shows. Anyone else is 404, as an id that does not
/// exist. Names are null when none is known (a participant never seen in a token).
#[utoipa::path(
    get,
    path = "/api/v1/auth/users/{id}/",
    operation_id = "getUser",
    tag = "auth",
    params(Id<UserPath>),
    responses(
        (status = 200, description = "The user.", body = UserJson),
        (status = 404, description = "No such user, or none who shares a conversation with the caller. `error` is `not_found`.", body = crate::http::openapi::Error),
    )
)]
pub async fn get_user(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<UserPath>,
    user: User,
) -> Result<HttpResponse, ApiError> {
    let caller = user.id();
    let record = state
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
        &UserJson {
            id,
            username,
            display_name,
        },
    ))
}

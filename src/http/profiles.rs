//! `PUT /api/users/{user_id}` (contract 8.3): the host app's backend tells Indaba a user's name,
//! for users whose tokens carry no `username` claim (Django's session users, SimpleJWT without
//! a custom claim): it is the `username` their `typing` events carry.

use std::sync::Arc;

use axum::extract::State;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::MAX_USERNAME_CHARS;
use super::extract::{Id, Json, Resource, Service};
use crate::error::{ApiError, Code, HttpResponse, json_response};
use crate::http::openapi::Error;
use crate::state::AppState;
use crate::store::Profile;

/// The user a profile is for.
#[derive(Debug)]
pub struct ProfileUser;

impl Resource for ProfileUser {
    const PARAM: &'static str = "user_id";
    const NOT_FOUND: &'static str = "no such user";
    const DESCRIPTION: &'static str =
        "The host app's user id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}

/// `PUT /api/users/{user_id}` body. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ProfileUpdate)]
pub struct ProfileBody {
    /// The name events show, 1 to 150 characters (surrounding spaces are trimmed).
    /// Trimmed, 1–150 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 150,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        example = "amara"
    )]
    username: String,
    /// Up to 150 characters; absent or null keeps the one recorded, `""` clears it.
    #[serde(default)]
    #[schema(max_length = 150, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    display_name: Option<String>,
}

/// A user's profile as recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileJson {
    #[schema(value_type = crate::views::IdSchema)]
    id: u64,
    username: String,
    /// As sent (null if none was sent).
    #[schema(required = true)]
    display_name: Option<String>,
}

/// Set a user's name (host app)
///
/// Records the user (if new) with this name, durably. `typing` events of a user whose token
/// has no `username` claim carry it; a token's claim, when there is one, wins. Local accounts
/// keep their own name (409).
#[utoipa::path(
    put,
    path = "/api/users/{user_id}",
    operation_id = "setProfile",
    tag = "service",
    params(Id<ProfileUser>),
    responses(
        (status = 200, description = "Recorded.", body = ProfileJson),
        (status = 400, description = "Malformed JSON, a missing or mistyped field, a blank or overlong name. `error` is one of: `invalid_json`, `invalid_request`, `invalid_body`.", body = Error),
        (status = 409, description = "The user is a local account (`local_account`).", body = Error),
    )
)]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Id(id, _): Id<ProfileUser>,
    _: Service,
    Json(body): Json<ProfileBody>,
) -> Result<HttpResponse, ApiError> {
    let username = checked_name("username", &body.username)?.ok_or_else(|| {
        ApiError::refused(Code::InvalidRequest, "field `username` may not be blank")
    })?;
    let display_name = match &body.display_name {
        Some(name) => Some(checked_name("display_name", name)?.unwrap_or_default()),
        None => None,
    };
    state
        .store
        .writer()
        .set_profile(Profile {
            id,
            username: username.clone(),
            display_name: display_name.clone(),
        })
        .await?;
    state.users.set_name(id, username.clone());
    Ok(json_response(
        StatusCode::OK,
        &ProfileJson {
            id,
            username,
            display_name,
        },
    ))
}

/// `name` trimmed (`None` if blank): at most [`MAX_USERNAME_CHARS`] characters, none of them
/// control characters.
fn checked_name(field: &str, name: &str) -> Result<Option<String>, ApiError> {
    let name = name.trim();
    if name.chars().count() > MAX_USERNAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::refused(
            Code::InvalidRequest,
            format!(
                "field `{field}` must be at most {MAX_USERNAME_CHARS} characters, without control characters"
            ),
        ));
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

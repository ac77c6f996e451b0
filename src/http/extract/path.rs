//! Path ids: a typed [`Id`] per kind of resource, 404 when malformed like when unknown.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};

use crate::error::ApiError;

/// What a path id names, for its 404 and its line in the OpenAPI document.
pub trait Resource: Send + Sync + 'static {
    /// The path parameter's name.
    const PARAM: &'static str;
    /// The 404's detail for an id that is malformed, out of range or unknown.
    const NOT_FOUND: &'static str;
    /// The parameter's description in the OpenAPI document.
    const DESCRIPTION: &'static str;
}

/// A conversation's id in the path.
#[derive(Debug)]
pub struct Conversation;
/// A message's id in the path.
#[derive(Debug)]
pub struct Message;
/// A user's id in the path.
#[derive(Debug)]
pub struct UserPath;
/// The user whose queue the service API drains.
#[derive(Debug)]
pub struct QueueUser;

impl Resource for Conversation {
    const PARAM: &'static str = "id";
    const NOT_FOUND: &'static str = "conversation not found";
    const DESCRIPTION: &'static str =
        "Conversation id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}
impl Resource for Message {
    const PARAM: &'static str = "id";
    const NOT_FOUND: &'static str = "message not found";
    const DESCRIPTION: &'static str = "Message id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}
impl Resource for UserPath {
    const PARAM: &'static str = "id";
    const NOT_FOUND: &'static str = "user not found";
    const DESCRIPTION: &'static str = "User id (decimal, 1 ≤ id < 2^53; anything else is 404).";
}
impl Resource for QueueUser {
    const PARAM: &'static str = "user_id";
    const NOT_FOUND: &'static str = "no such user";
    const DESCRIPTION: &'static str =
        "The user whose queue to read (decimal, 1 ≤ id < 2^53; anything else is 404).";
}

/// The id of an `R` in the path: decimal, 1 ≤ id < 2^53; anything else is 404, as an id that
/// does not exist (and before the caller is checked, so the answer does not depend on it).
#[derive(Debug)]
pub struct Id<R>(pub u64, pub PhantomData<R>);

impl<R: Resource, S: Send + Sync> FromRequestParts<S> for Id<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound(R::NOT_FOUND))?;
        params
            .iter()
            .find(|(name, _)| *name == R::PARAM)
            .and_then(|(_, value)| crate::ids::parse_in_range(value))
            .map(|id| Id(id, PhantomData))
            .ok_or(ApiError::NotFound(R::NOT_FOUND))
    }
}

impl<R: Resource> utoipa::IntoParams for Id<R> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name(R::PARAM)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(R::DESCRIPTION))
                .schema(Some(crate::views::id_schema()))
                .build(),
        ]
    }
}

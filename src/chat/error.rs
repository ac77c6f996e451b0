//! Why an action was refused, mapped to the wire once ([`ChatError::code`]).

use std::time::Duration;

use crate::error::{ApiError, Code};
use crate::store::{StoreError, WriteError};

/// Why a send, a receipt or a conversation change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request itself is wrong; `code` says how, `field` which request field, when it is
    /// about one that `code` does not name already ([`Code::field`]).
    #[error("{detail}")]
    Invalid {
        code: Code,
        detail: String,
        field: Option<&'static str>,
    },
    #[error("sending too fast; slow down")]
    RateLimited { retry_after: Duration },
    #[error("this client_id was already used for a different message")]
    ClientIdConflict,
    /// A broadcast whose later chunks failed after earlier ones were stored and delivered.
    #[error("broadcast failed after {delivered} recipients: {source}")]
    BroadcastPartial { delivered: u64, source: WriteError },
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ChatError {
    pub(crate) fn invalid(code: Code, detail: impl Into<String>) -> Self {
        ChatError::Invalid {
            code,
            detail: detail.into(),
            field: None,
        }
    }

    /// [`ChatError::invalid`] about request field `field` (named as the REST API names it).
    pub(crate) fn invalid_field(
        code: Code,
        field: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ChatError::Invalid {
            code,
            detail: detail.into(),
            field: Some(field),
        }
    }

    /// The wire code: an error response's `error`, an error event's `code`, a refusal's
    /// `reason` in the metrics.
    pub fn code(&self) -> Code {
        match self {
            ChatError::Invalid { code, .. } => *code,
            ChatError::RateLimited { .. } => Code::RateLimited,
            ChatError::ClientIdConflict => Code::ClientIdConflict,
            ChatError::BroadcastPartial { .. } => Code::InternalError,
            ChatError::Write(e) => e.into(),
        }
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        ChatError::Write(e.into())
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Invalid {
                code,
                detail,
                field: Some(field),
            } => ApiError::refused_field(code, field, detail),
            ChatError::Invalid { code, detail, .. } => ApiError::refused(code, detail),
            ChatError::RateLimited { retry_after } => ApiError::RateLimited {
                detail: "sending too fast; slow down",
                retry_after_secs: crate::limits::retry_after_secs(retry_after),
            },
            ChatError::ClientIdConflict => ApiError::refused(e.code(), e.to_string()),
            ChatError::BroadcastPartial { .. } => ApiError::Internal(e.to_string()),
            ChatError::Write(w) => w.into(),
        }
    }
}

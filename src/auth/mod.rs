//! Who is calling: access-token verification and minting ([`jwt`]), and the host app's browser
//! sessions ([`session`]).
//!
//! Local accounts keep Argon2id password hashes ([`password`]).

pub mod jwt;
pub mod password;
pub mod session;

pub use jwt::{AuthError, Identity, TokenMinter, TokenVerifier};
pub use session::{SessionChecker, SessionError};

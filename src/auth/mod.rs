//! Who is calling: access-token verification and minting ([`jwt`]).
//!
//! Local accounts keep Argon2id password hashes ([`password`]).

pub mod jwt;
pub mod password;

pub use jwt::{AuthError, Identity, TokenMinter, TokenVerifier};

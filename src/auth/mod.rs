//! Who is calling: access-token verification and minting ([`jwt`]).
//!
//! Local accounts with Argon2id passwords arrive with the accounts API.

pub mod jwt;

pub use jwt::{AuthError, Identity, TokenMinter, TokenVerifier};

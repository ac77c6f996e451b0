//! JSON Web Tokens: verifying the host app's access tokens, minting our own.
//!
//! The host app (Django with djangorestframework-simplejwt, typically) keeps issuing tokens;
//! Indaba checks them with the shared HS256 secret or a public key. SimpleJWT 5 writes the user
//! id as a string, older versions as a number: both are accepted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::MAX_ID;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The caller, as established by a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: u64,
    /// The `username` claim, when the issuer sends one.
    pub username: Option<String>,
}

/// Why a token was refused. Each maps to 401; the text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication credentials were not provided")]
    Missing,
    #[error("token has expired")]
    Expired,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("a refresh token cannot be used as an access token")]
    RefreshToken,
    #[error("token has no usable `{0}` claim (an integer or decimal string between 1 and 2^53)")]
    BadUserId(String),
    /// Username and password do not match an active local account (SimpleJWT's wording).
    #[error("No active account found with the given credentials")]
    BadCredentials,
    #[error("this is not a refresh token")]
    NotRefreshToken,
    /// The host app says the request's session cookie is not logged in
    /// (`auth.session_check_url`).
    #[error("the session is not logged in")]
    NoSession,
}

/// Where verification keys come from.
#[derive(Clone)]
pub enum VerifyKey {
    /// HS256 shared secret.
    Secret(Vec<u8>),
    /// PEM public key; the algorithm follows from the key type.
    PublicPem(Vec<u8>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyKey::Secret(_) => "VerifyKey::Secret(<redacted>)",
            VerifyKey::PublicPem(_) => "VerifyKey::PublicPem",
        })
    }
}

/// Checks access tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    user_id_claim: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("user_id_claim", &self.user_id_claim)
            .finish()
    }
}

impl TokenVerifier {
    /// Builds a verifier; fails with a message for the operator if a PEM key cannot be used.
    pub fn new(
        key: &VerifyKey,
        user_id_claim: &str,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, String> {
        let (key, algorithms) = match key {
            VerifyKey::Secret(secret) => (DecodingKey::from_secret(secret), vec![Algorithm::HS256]),
            VerifyKey::PublicPem(pem) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    (k, vec![Algorithm::RS256])
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    (k, vec![Algorithm::ES256])
                } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                    (k, vec![Algorithm::EdDSA])
                } else {
                    return Err("not an RSA, EC (P-256) or Ed25519 public key in PEM form".into());
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp"];
        required.extend(issuer.map(|_| "iss"));
        required.extend(audience.map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            key,
            validation,
            user_id_claim: user_id_claim.to_owned(),
        })
    }

    /// Verifies an access token and reads the caller from it.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_kind(token, TokenType::Access)
    }

    /// Verifies a refresh token (`token_type: "refresh"`) and reads its user.
    pub fn verify_refresh(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_kind(token, TokenType::Refresh)
    }

    fn verify_kind(&self, token: &str, kind: TokenType) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::Invalid(format!("missing required claim `{c}`"))
            }
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
            ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet".into()),
            ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted".into()),
            _ => AuthError::Invalid("malformed token".into()),
        })?;
        let claims = data.claims;
        let is_refresh = claims.get("token_type").and_then(Value::as_str) == Some("refresh");
        match kind {
            TokenType::Access if is_refresh => return Err(AuthError::RefreshToken),
            TokenType::Refresh if !is_refresh => return Err(AuthError::NotRefreshToken),
            _ => {}
        }
        let user_id = claims
            .get(&self.user_id_claim)
            .and_then(parse_user_id)
            .ok_or_else(|| AuthError::BadUserId(self.user_id_claim.clone()))?;
        let username = claims
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Identity { user_id, username })
    }
}

/// A user id as JSON: an integer or a decimal string, 1 ≤ id < 2^53.
pub(crate) fn parse_user_id(value: &Value) -> Option<u64> {
    let id = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        _ => return None,
    };
    (1..MAX_ID).contains(&id).then_some(id)
}

/// Mints HS256 tokens shaped like SimpleJWT's, for local accounts and `indaba token`.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    user_id_claim: String,
    /// `iss` and `aud` to write, so our tokens pass our own checks when those are configured.
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMinter")
    }
}

/// Kind of token minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Access,
    Refresh,
}

impl TokenMinter {
    pub fn new(secret: &[u8], user_id_claim: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            user_id_claim: user_id_claim.to_owned(),
            issuer: None,
            audience: None,
        }
    }

    /// Also writes these `iss` and `aud` claims.
    pub fn with_claims(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        self.issuer = issuer.map(str::to_owned);
        self.audience = audience.map(str::to_owned);
        self
    }

    /// A signed token for `user_id`, valid for `ttl`.
    pub fn mint(
        &self,
        user_id: u64,
        username: Option<&str>,
        kind: TokenType,
        ttl: Duration,
    ) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| e.to_string())?;
        let mut claims = Map::new();
        let token_type = match kind {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        };
        claims.insert("token_type".into(), token_type.into());
        claims.insert("exp".into(), (now + ttl.as_secs().max(1)).into());
        claims.insert("iat".into(), now.into());
        claims.insert("jti".into(), hex::encode(jti).into());
        claims.insert(self.user_id_claim.clone(), user_id.to_string().into());
        if let Some(name) = username {
            claims.insert("username".into(), name.into());
        }
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), iss.as_str().into());
        }
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), aud.as_str().into());
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"django-insecure-signing-key-for-tests";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&VerifyKey::Secret(SECRET.to_vec()), "user_id", None, None)
            .expect("verifier")
    }

    fn sign(claims: Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("sign")
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    #[test]
    fn simplejwt_string_and_integer_user_ids() {
        let string_id = sign(serde_json::json!({
            "token_type": "access", "exp": now() + 300, "iat": now(),
            "jti": "8f1c", "user_id": "42"
        }));
        assert_eq!(verifier().verify(&string_id).expect("ok").user_id, 42);
        let int_id = sign(serde_json::json!({
            "token_type": "access", "exp": now() + 300, "user_id": 7, "username": "ann"
        }));
        let who = verifier().verify(&int_id).expect("ok");
        assert_eq!((who.user_id, who.username.as_deref()), (7, Some("ann")));
    }

    #[test]
    fn refused_tokens() {
        let v = verifier();
        let refresh =
            sign(serde_json::json!({"token_type": "refresh", "exp": now() + 300, "user_id": 1}));
        assert_eq!(v.verify(&refresh), Err(AuthError::RefreshToken));
        let expired = sign(serde_json::json!({"exp": now() - 120, "user_id": 1}));
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let no_exp = sign(serde_json::json!({"user_id": 1}));
        assert!(matches!(v.verify(&no_exp), Err(AuthError::Invalid(_))));
        let bad_id = sign(serde_json::json!({"exp": now() + 300, "user_id": "abc"}));
        assert!(matches!(v.verify(&bad_id), Err(AuthError::BadUserId(_))));
        let huge = sign(serde_json::json!({"exp": now() + 300, "user_id": 1u64 << 53}));
        assert!(matches!(v.verify(&huge), Err(AuthError::BadUserId(_))));
        assert!(matches!(v.verify("not.a.jwt"), Err(AuthError::Invalid(_))));
        let other = jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"exp": now() + 300, "user_id": 1}),
            &EncodingKey::from_secret(b"some-other-secret-entirely"),
        )
        .expect("sign");
        assert!(matches!(v.verify(&other), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let strict = TokenVerifier::new(
            &VerifyKey::Secret(SECRET.to_vec()),
            "user_id",
            Some("https://app.example"),
            Some("indaba"),
        )
        .expect("verifier");
        let bare = sign(serde_json::json!({"exp": now() + 300, "user_id": 1}));
        assert!(matches!(strict.verify(&bare), Err(AuthError::Invalid(_))));
        let wrong = sign(serde_json::json!({
            "exp": now() + 300, "user_id": 1, "iss": "https://evil.example", "aud": "indaba"
        }));
        assert!(matches!(strict.verify(&wrong), Err(AuthError::Invalid(_))));
        let ours = TokenMinter::new(SECRET, "user_id")
            .with_claims(Some("https://app.example"), Some("indaba"))
            .mint(5, None, TokenType::Access, Duration::from_secs(60))
            .expect("mint");
        assert_eq!(strict.verify(&ours).expect("accepted").user_id, 5);
    }

    #[test]
    fn leeway_accepts_slightly_expired() {
        let t = sign(serde_json::json!({"exp": now() - 10, "user_id": 3}));
        assert_eq!(verifier().verify(&t).expect("within leeway").user_id, 3);
    }

    #[test]
    fn minted_tokens_verify() {
        let minter = TokenMinter::new(SECRET, "user_id");
        let t = minter
            .mint(99, Some("bob"), TokenType::Access, Duration::from_secs(60))
            .expect("mint");
        assert_eq!(verifier().verify(&t).expect("ok").user_id, 99);
        let r = minter
            .mint(99, None, TokenType::Refresh, Duration::from_secs(60))
            .expect("mint");
        assert_eq!(verifier().verify(&r), Err(AuthError::RefreshToken));
        assert_eq!(verifier().verify_refresh(&r).expect("refresh").user_id, 99);
        assert_eq!(
            verifier().verify_refresh(&t),
            Err(AuthError::NotRefreshToken)
        );
    }
}

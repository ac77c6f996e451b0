//! The state every request handler and socket shares, behind one `Arc`: configuration, the
//! store, token checks, the hub, counters, limiters and the tasks a stop waits for.
//!
//! It lives apart from the wiring (`app`), which builds it: every layer reads the state, and
//! none needs the wiring.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{SessionChecker, TokenMinter, TokenVerifier};
use crate::config::{Config, Secret};
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::users::Directory;
use crate::webhooks::EventPolicy;

/// Everything request handlers share, behind one `Arc`.
#[derive(Debug)]
pub struct AppState {
    /// The effective configuration (limits, auth options, …).
    pub config: Config,
    /// The store handle: readers, the writer queue, the keyring.
    pub store: Store,
    /// Checks access tokens.
    pub verifier: TokenVerifier,
    /// Asks the host app who a session cookie belongs to (`auth.session_check_url`); `None`:
    /// cookies other than `auth.token_cookie` authenticate nobody.
    pub sessions: Option<SessionChecker>,
    /// Signs tokens for local accounts; `None` when tokens come from a public-key issuer.
    pub minter: Option<TokenMinter>,
    /// The service API's secret, from `service.shared_secret` or `service.shared_secret_file`;
    /// `None`: the service API is off.
    pub service_secret: Option<Secret>,
    /// Every recorded user's name, loaded at start; new users provisioned on first sight.
    pub users: Directory,
    /// Live sockets, fan-out, presence.
    pub hub: Arc<Hub>,
    /// Counters and histograms for `/api/stats` and `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Open connections (HTTP and WebSocket), kept by the accept loop.
    pub open_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Every task that must finish before the store stops (connections, sockets, pending
    /// acknowledgements).
    pub tasks: TaskTracker,
    /// Per-user send rate (REST and WebSocket), from `limits.messages_per_second`/`_burst`.
    pub send_limiter: RateLimiter<u64>,
    /// Failed logins per client address.
    pub login_ip_limiter: RateLimiter<IpAddr>,
    /// Failed logins per username.
    pub login_name_limiter: RateLimiter<String>,
    /// Username lookups that found nobody, per caller (`GET /api/v1/auth/users/`).
    pub user_lookup_limiter: RateLimiter<u64>,
    /// For `uptime_seconds`.
    pub started: Instant,
    /// Which webhook events writes ask the store for; `None` while webhooks are off.
    pub events: Option<EventPolicy>,
    /// Fired when the daemon starts to stop; handlers answer 503 from then on.
    shutdown: CancellationToken,
}

/// Failed logins allowed per client address before 429, and the refill (one per 6 s).
const LOGIN_IP_BURST: u32 = 20;
const LOGIN_IP_PER_SECOND: f64 = 1.0 / 6.0;
/// Failed logins allowed per username before 429, and the refill (one per 30 s).
const LOGIN_NAME_BURST: u32 = 10;
const LOGIN_NAME_PER_SECOND: f64 = 1.0 / 30.0;
/// Username lookups that miss, per caller, before 429, and the refill (one per 3 s): a person
/// mistyping a name never meets it, a script guessing names crawls.
const USER_LOOKUP_MISS_BURST: u32 = 20;
const USER_LOOKUP_MISS_PER_SECOND: f64 = 1.0 / 3.0;

impl AppState {
    /// Builds the shared state around an open store.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        users: Directory,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        secrets_verify: &crate::auth::jwt::VerifyKey,
        signing_secret: Option<&[u8]>,
        service_secret: Option<Secret>,
        shutdown: CancellationToken,
    ) -> Result<Self, StateError> {
        let verifier = TokenVerifier::new(
            secrets_verify,
            &config.auth.user_id_claim,
            config.auth.issuer.as_deref(),
            config.auth.audience.as_deref(),
        )
        .map_err(StateError::PublicKey)?;
        let minter = signing_secret.map(|s| {
            TokenMinter::new(s, &config.auth.user_id_claim).with_claims(
                config.auth.issuer.as_deref(),
                config.auth.audience.as_deref(),
            )
        });
        let sessions = SessionChecker::from_config(&config.auth).map_err(StateError::Sessions)?;
        let events = EventPolicy::new(&config.webhooks);
        let limits = &config.limits;
        Ok(Self {
            sessions,
            send_limiter: RateLimiter::sharded(
                f64::from(limits.messages_per_second),
                limits.messages_burst,
            ),
            login_ip_limiter: RateLimiter::sharded(LOGIN_IP_PER_SECOND, LOGIN_IP_BURST),
            login_name_limiter: RateLimiter::sharded(LOGIN_NAME_PER_SECOND, LOGIN_NAME_BURST),
            user_lookup_limiter: RateLimiter::sharded(
                USER_LOOKUP_MISS_PER_SECOND,
                USER_LOOKUP_MISS_BURST,
            ),
            users,
            hub,
            metrics,
            open_connections: Arc::default(),
            tasks: TaskTracker::new(),
            minter,
            service_secret,
            verifier,
            config,
            store,
            started: Instant::now(),
            events,
            shutdown,
        })
    }

    /// True once a stop has begun.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Fires when the daemon starts to stop (sockets close with 1001).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Why the shared state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("`auth.jwt_public_key_file`: {0}")]
    PublicKey(String),
    #[error("{0}")]
    Sessions(String),
}

//! The plain sections of [`Config`](super::Config): where the daemon listens, HTTP, storage,
//! auth, the service API, queues, limits, logging, metrics and the web pages — each a typed
//! struct with its defaults. The checks across fields live in
//! [`Config::validate`](super::Config::validate).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checks::{duration_str, listen_addr};
use super::{ENV_PREFIX, Secret};

/// Where the daemon listens and how it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP and WebSocket listener: an IP address and port, or `localhost:PORT`
    /// (read as `127.0.0.1:PORT`; see [`parse_listen`](super::parse_listen)).
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// How long a graceful stop may take before the daemon exits anyway.
    #[serde(with = "duration_str")]
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` header is believed (the nginx in front).
    pub trusted_proxies: Vec<IpAddr>,
    /// Serve `/ws/echo/`, an echo socket for WebSocket conformance suites (Autobahn); off in
    /// production.
    pub websocket_echo: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            shutdown_timeout: Duration::from_secs(10),
            trusted_proxies: vec![IpAddr::from([127, 0, 0, 1])],
            websocket_echo: false,
        }
    }
}

/// What browsers on other origins may do (contract section 8.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Origins (`scheme://host[:port]`) whose pages may call the REST API with credentials
    /// (CORS), and open cookie-authenticated WebSockets. `"*"`: any origin, without
    /// credentials. Empty: no CORS headers, and cookie-authenticated browser sockets only from
    /// the daemon's own origin.
    pub cors_allowed_origins: Vec<String>,
}

/// The redb file and the at-rest encryption keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding `indaba.redb` (and, in dev mode, the generated secrets).
    pub data_dir: PathBuf,
    /// File with the current 256-bit key (hex or base64), mode 0600.
    pub encryption_key_file: Option<PathBuf>,
    /// The current key inline (hex or base64); meant for `INDABA_STORAGE__ENCRYPTION_KEY`.
    pub encryption_key: Option<Secret>,
    /// Retired keys that still decrypt old values; new writes always use the current key.
    pub old_encryption_key_files: Vec<PathBuf>,
    /// Upper bound on write requests folded into one commit.
    pub commit_batch_max: usize,
    /// Make batches durable in `indaba.journal` (one contiguous write and sync each) and
    /// commit them to the redb file durably only at checkpoints. Off, every batch is a
    /// durable redb commit: one file, slower acknowledgements.
    pub journal: bool,
    /// The longest a batch stays only in the journal before a checkpoint commits it durably to
    /// the redb file: bounds what a restart after a crash replays. A checkpoint holds the
    /// writer while it writes and syncs the pages dirtied since the last one (~1.4 ms every
    /// 50 ms, ~3 ms every 250 ms at 5,000 messages/s): rarer, it holds fewer messages back.
    #[serde(with = "duration_str")]
    pub checkpoint_interval: Duration,
    /// Most senders whose data keys stay opened in memory for sealing (a few hundred bytes
    /// each); a sender beyond them has their key read from the data file again on their next
    /// message. Bounds the memory of a daemon that has seen millions of senders.
    pub data_key_cache: usize,
    /// The longest the writer holds a small batch for more requests before committing it,
    /// when a steady stream makes that worth it (fewer, larger commits: less CPU per message);
    /// requests nobody waits for (delivered-queue removals) wait up to ten times this for one
    /// that someone does. Never at a low rate, nor when batches are large already. Zero: off,
    /// every batch is committed as soon as it is taken.
    #[serde(with = "duration_str")]
    pub commit_delay_max: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./indaba-data"),
            encryption_key_file: None,
            encryption_key: None,
            old_encryption_key_files: Vec::new(),
            commit_batch_max: 4096,
            journal: true,
            checkpoint_interval: Duration::from_millis(250),
            data_key_cache: 65_536,
            commit_delay_max: Duration::from_millis(1),
        }
    }
}

/// Access tokens: the host app's JWTs and local accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret shared with the host app (SimpleJWT's `SIGNING_KEY`).
    pub jwt_secret: Option<Secret>,
    /// File holding the HS256 secret instead of `jwt_secret` (mode 0600, trailing newline
    /// ignored), so the secret stays out of the config file and the environment.
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key for RS256/ES256/EdDSA tokens, instead of `jwt_secret`.
    pub jwt_public_key_file: Option<PathBuf>,
    /// Claim holding the user id (an integer or a decimal string).
    pub user_id_claim: String,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Whether `POST /api/v1/auth/register/` creates local accounts.
    pub allow_registration: bool,
    /// First id handed to a local account, far above the host app's ids.
    pub local_id_base: u64,
    /// Lifetime of access tokens minted by Indaba itself.
    #[serde(with = "duration_str")]
    pub access_token_ttl: Duration,
    /// Name of a cookie that holds an access token (apps that keep SimpleJWT tokens in a
    /// cookie); read on REST requests and WebSocket upgrades that carry no token otherwise.
    pub token_cookie: Option<String>,
    /// The host app's "who is this session" URL (`http://…/api/v1/auth/me/`): a request with
    /// no token but with cookies is authenticated by calling it with the client's `Cookie`.
    pub session_check_url: Option<String>,
    /// How long a session check may take; slower is 503 (close 1011 on a socket).
    #[serde(with = "duration_str")]
    pub session_check_timeout: Duration,
    /// How long a session check's answer is reused for the same cookies.
    #[serde(with = "duration_str")]
    pub session_cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            user_id_claim: "user_id".to_owned(),
            issuer: None,
            audience: None,
            allow_registration: true,
            local_id_base: 1_000_000_000_000,
            access_token_ttl: Duration::from_secs(3600),
            token_cookie: None,
            session_check_url: None,
            session_check_timeout: Duration::from_secs(2),
            session_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// The backend service API of seed 001.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Enables the service API; every call must present it.
    pub shared_secret: Option<Secret>,
    /// File holding that secret instead (mode 0600, trailing newline ignored), so it need not
    /// sit in a config file others may read.
    pub shared_secret_file: Option<PathBuf>,
}

/// Per-user delivery queues.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// Entries kept per user before the oldest lowest-priority ones are dead-lettered.
    pub message_queue_max_size: u64,
    /// Entries older than this many days are dead-lettered.
    pub message_retention_days: u32,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        Self {
            message_queue_max_size: 100_000,
            message_retention_days: 30,
        }
    }
}

/// Limits enforced at the edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections (HTTP and WebSocket) accepted at once.
    pub max_connections: usize,
    /// Largest HTTP request body; larger gets 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request head, and then its body; slower gets 408.
    #[serde(with = "duration_str")]
    pub body_timeout: Duration,
    /// Largest WebSocket frame; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest message text in bytes; larger gets 400.
    pub max_text_bytes: usize,
    /// Events buffered per socket before it is closed with 4008.
    pub outbound_buffer: usize,
    /// A WebSocket idle this long is pinged; one silent for twice as long is dropped.
    #[serde(with = "duration_str")]
    pub ping_interval: Duration,
    /// How long a user stays "online" after their last socket closed (a reload does not flap).
    #[serde(with = "duration_str")]
    pub presence_grace: Duration,
    /// Sustained sends per user per second (REST and WebSocket).
    pub messages_per_second: u32,
    /// Sends a user may burst above the sustained rate.
    pub messages_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_body_bytes: 1_048_576,
            body_timeout: Duration::from_secs(30),
            max_frame_bytes: 65_536,
            max_text_bytes: 16_384,
            outbound_buffer: 1024,
            ping_interval: Duration::from_secs(30),
            presence_grace: Duration::from_secs(5),
            messages_per_second: 20,
            messages_burst: 100,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level or filter directives (`info`, `warn,indaba=debug`); `RUST_LOG` wins when set.
    /// Checked by [`check_log_filter`](super::check_log_filter).
    pub level: String,
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The `log.format` that `INDABA_LOG__FORMAT` or the file at `path` asks for, found
    /// without loading the rest: a start-up error in any other key is then still written in
    /// the format the operator's log pipeline reads. Text when neither says `json`, or when
    /// the file is not even TOML.
    pub fn requested(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Self {
        let from_env = env
            .into_iter()
            .find(|(var, _)| var == &format!("{ENV_PREFIX}LOG__FORMAT"))
            .map(|(_, value)| value);
        let from_file = || {
            let text = std::fs::read_to_string(path?).ok()?;
            let table: toml::Table = toml::from_str(&text).ok()?;
            table.get("log")?.get("format")?.as_str().map(str::to_owned)
        };
        match from_env.or_else(from_file).as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without the service secret (for a private scrape network).
    pub public: bool,
}

/// The web pages served from the binary (`src/http/web.rs`).
///
/// [`Default`] is what a config file gets; with no config file at all (dev mode)
/// [`Config::load`](super::Config::load) turns the demo on, so `cargo run` then a browser is the whole first try.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the demo chat at `/` (local accounts over `/ws/chat/`). Off, `/` and its assets
    /// answer 404. Default: on in dev mode (no config file), off with a config file.
    pub demo: bool,
    /// Serve the operator console at `/admin/` (charts of `/api/stats` and `/metrics`, the users
    /// table of the admin API; signs in with the service secret). Off, `/admin/` and its assets
    /// answer 404. Default off everywhere: an operator turns it on knowingly.
    pub admin: bool,
}

//! The daemon's configuration: one typed [`Config`], read from an optional TOML file and
//! overridden by `INDABA_<SECTION>__<KEY>` environment variables.
//!
//! Every field has a default, so the daemon starts with no file at all ("dev mode"). Unknown keys
//! and bad values are errors that name the key; `config.toml.example` is checked against this
//! struct by a test, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `INDABA_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "INDABA_";

/// Shortest HS256 secret accepted, inline (`auth.jwt_secret`) or from a file.
pub const MIN_JWT_SECRET_BYTES: usize = 16;

/// Shortest service API secret accepted, inline (`service.shared_secret`) or from a file.
pub const MIN_SERVICE_SECRET_BYTES: usize = 16;

/// The whole configuration. Sections mirror `config.toml.example`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub service: ServiceConfig,
    pub queues: QueuesConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub web: WebConfig,
    pub webhooks: WebhooksConfig,
}

/// Where the daemon listens and how it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP and WebSocket listener: an IP address and port, or `localhost:PORT`
    /// (read as `127.0.0.1:PORT`; see [`parse_listen`]).
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
    /// Checked by [`check_log_filter`].
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
/// [`Config::load`] turns the demo on, so `cargo run` then a browser is the whole first try.
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

/// Events posted to the host app (PROTOCOL.md section 8.2; `src/webhooks/`). Off while `url`
/// is unset; the other keys are then ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Where batches of events are POSTed: `https://...`, or `http://` to a loopback or
    /// private IP address (anything else over plain HTTP needs `allow_insecure`).
    pub url: Option<String>,
    /// File holding the HMAC-SHA256 key that signs every batch (mode 0600; the file's bytes
    /// less a trailing newline, at least 16). Required with `url`.
    pub secret_file: Option<PathBuf>,
    /// Which event types are written to the outbox (and so delivered).
    pub events: Vec<WebhookEvent>,
    /// Most events in one POST.
    pub batch_max: usize,
    /// How long the first event of a batch waits for more before the batch is sent.
    #[serde(with = "duration_str")]
    pub batch_interval: Duration,
    /// The longest one POST may take (connect, send, answer); longer counts as a failure.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Undelivered events kept; beyond it the oldest are dropped (counted, logged at WARN).
    pub max_pending: u64,
    /// One extra header sent with every POST, `"Name: value"` (e.g. the token an endpoint
    /// written for the Erlang service checks).
    pub auth_header: Option<Secret>,
    /// Allow plain HTTP to any host (events carry message text: only on a trusted network).
    pub allow_insecure: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret_file: None,
            events: WebhookEvent::ALL.to_vec(),
            batch_max: 100,
            batch_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_pending: 1_000_000,
            auth_header: None,
            allow_insecure: false,
        }
    }
}

/// An event type the host can ask for (`webhooks.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "message.created")]
    MessageCreated,
    #[serde(rename = "message.read")]
    MessageRead,
    #[serde(rename = "conversation.created")]
    ConversationCreated,
    #[serde(rename = "user.online")]
    UserOnline,
    #[serde(rename = "user.offline")]
    UserOffline,
}

impl WebhookEvent {
    /// Every type, in the order the docs list them.
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::MessageCreated,
        WebhookEvent::MessageRead,
        WebhookEvent::ConversationCreated,
        WebhookEvent::UserOnline,
        WebhookEvent::UserOffline,
    ];

    /// The `type` of such an event on the wire.
    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::MessageCreated => "message.created",
            WebhookEvent::MessageRead => "message.read",
            WebhookEvent::ConversationCreated => "conversation.created",
            WebhookEvent::UserOnline => "user.online",
            WebhookEvent::UserOffline => "user.offline",
        }
    }
}

/// Headers the daemon sets itself on a webhook POST, which `webhooks.auth_header` may not
/// replace.
const RESERVED_WEBHOOK_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "x-indaba-signature",
    "x-indaba-delivery",
];

impl WebhooksConfig {
    /// Whether webhooks are on.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let Some(url) = &self.url else {
            return Ok(());
        };
        if let Err(message) = check_webhook_url(url, self.allow_insecure) {
            return invalid("webhooks.url", message);
        }
        if self.secret_file.is_none() {
            return invalid(
                "webhooks.secret_file",
                "must be set with webhooks.url: every batch is signed with the key in this file (mode 0600, at least 16 bytes)".to_owned(),
            );
        }
        if self.events.is_empty() {
            return invalid(
                "webhooks.events",
                "must list at least one event type; to turn webhooks off, unset webhooks.url"
                    .to_owned(),
            );
        }
        if !(1..=MAX_WEBHOOK_BATCH).contains(&self.batch_max) {
            return invalid(
                "webhooks.batch_max",
                format!("must be 1 to {MAX_WEBHOOK_BATCH}"),
            );
        }
        if self.batch_interval > Duration::from_secs(3600) {
            return invalid("webhooks.batch_interval", "must be at most 1h".to_owned());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            return invalid(
                "webhooks.timeout",
                "must be more than zero and at most 5m".to_owned(),
            );
        }
        if self.max_pending == 0 {
            return invalid("webhooks.max_pending", "must be at least 1".to_owned());
        }
        if let Some(header) = &self.auth_header
            && let Err(message) = parse_auth_header(header.expose())
        {
            return invalid("webhooks.auth_header", message);
        }
        Ok(())
    }
}

/// Most events `webhooks.batch_max` may put in one POST.
pub const MAX_WEBHOOK_BATCH: usize = 10_000;

/// Checks a webhook URL: `https`, or `http` to a loopback or private IP address (or
/// `localhost`) unless `allow_insecure`. Host names are not resolved here, so a plain-HTTP URL
/// naming a host needs `allow_insecure`: what it resolves to can change after the check.
pub fn check_webhook_url(url: &str, allow_insecure: bool) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let Some(host) = uri.host() else {
        return Err(format!("`{url}` is not an absolute URL with a host"));
    };
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if allow_insecure => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let private = match bare.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
                // Loopback, or a unique local address (fc00::/7).
                Ok(IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
                Err(_) => bare.eq_ignore_ascii_case("localhost"),
            };
            if private {
                Ok(())
            } else {
                Err(format!(
                    "`{url}`: plain HTTP goes only to a loopback or private IP address (events carry message text); use https, or set webhooks.allow_insecure = true for a trusted network"
                ))
            }
        }
        _ => Err(format!("`{url}` must start with https:// or http://")),
    }
}

/// Splits `webhooks.auth_header` (`"Name: value"`) into a header name and value.
pub fn parse_auth_header(
    text: &str,
) -> Result<(hyper::header::HeaderName, hyper::header::HeaderValue), String> {
    let Some((name, value)) = text.split_once(':') else {
        return Err("must read `Name: value`, e.g. \"X-Erlang-Service: <token>\"".to_owned());
    };
    let name = hyper::header::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| "the part before `:` is not a header name".to_owned())?;
    if RESERVED_WEBHOOK_HEADERS.contains(&name.as_str()) {
        return Err(format!("`{name}` is set by indaba itself"));
    }
    let value = hyper::header::HeaderValue::from_str(value.trim())
        .map_err(|_| "the part after `:` is not a valid header value".to_owned())?;
    Ok((name, value))
}

/// A secret string: never printed by `Debug`, serialized as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Why a configuration could not be loaded. Each variant names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config key `{key}`{origin}: {message}")]
    Key {
        key: String,
        origin: String,
        message: String,
    },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads `path` (if any), applies environment overrides from `env`, and validates.
    ///
    /// `env` is passed in rather than read here so tests can supply their own.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut table, file_label) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| {
                    let (line, column) = line_and_column(&text, e.span().map_or(0, |s| s.start));
                    ConfigError::Syntax {
                        path: path.to_owned(),
                        line,
                        column,
                        message: e.message().trim().to_owned(),
                    }
                })?;
                (table, format!(" in {}", path.display()))
            }
            None => (toml::Table::new(), String::new()),
        };
        let origins = apply_env(&mut table, env)?;
        if path.is_none() {
            dev_mode_defaults(&mut table);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let origin = origins
                    .get(&key)
                    .map(|var| format!(" (from {var})"))
                    .unwrap_or_else(|| file_label.clone());
                ConfigError::Key {
                    key,
                    origin,
                    message: e.into_inner().message().trim().to_owned(),
                }
            })?;
        // Name where a bad value came from, as serde's errors above do.
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => ConfigError::Key {
                key: key.to_owned(),
                origin: origins
                    .get(key)
                    .map(|var| format!(" (from {var})"))
                    .unwrap_or(file_label),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and combinations of options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.server.shutdown_timeout.is_zero() {
            return invalid("server.shutdown_timeout", "must be greater than zero");
        }
        if self.storage.encryption_key.is_some() && self.storage.encryption_key_file.is_some() {
            return invalid(
                "storage.encryption_key",
                "set either storage.encryption_key or storage.encryption_key_file, not both",
            );
        }
        if self.storage.commit_batch_max == 0 {
            return invalid("storage.commit_batch_max", "must be at least 1");
        }
        if self.storage.checkpoint_interval.is_zero()
            || self.storage.checkpoint_interval > Duration::from_secs(3600)
        {
            return invalid(
                "storage.checkpoint_interval",
                "must be more than zero and at most 1h",
            );
        }
        if self.auth.jwt_secret.is_some() && self.auth.jwt_secret_file.is_some() {
            return invalid(
                "auth.jwt_secret",
                "set either auth.jwt_secret or auth.jwt_secret_file, not both",
            );
        }
        if self.auth.jwt_secret.is_some() && self.auth.jwt_public_key_file.is_some() {
            return invalid(
                "auth.jwt_secret",
                "set either auth.jwt_secret or auth.jwt_public_key_file, not both",
            );
        }
        if self.auth.jwt_secret_file.is_some() && self.auth.jwt_public_key_file.is_some() {
            return invalid(
                "auth.jwt_secret_file",
                "set either auth.jwt_secret_file or auth.jwt_public_key_file, not both",
            );
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose().len() < MIN_JWT_SECRET_BYTES
        {
            return invalid("auth.jwt_secret", "must be at least 16 characters");
        }
        if self.auth.user_id_claim.is_empty() {
            return invalid("auth.user_id_claim", "must not be empty");
        }
        if self.auth.local_id_base == 0 || self.auth.local_id_base >= crate::MAX_ID {
            return invalid("auth.local_id_base", "must be between 1 and 2^53");
        }
        if self.auth.access_token_ttl.is_zero() {
            return invalid("auth.access_token_ttl", "must be greater than zero");
        }
        if let Some(name) = &self.auth.token_cookie
            && !is_cookie_name(name)
        {
            return invalid(
                "auth.token_cookie",
                "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~",
            );
        }
        if let Some(url) = &self.auth.session_check_url
            && let Err(message) = check_session_url(url)
        {
            return invalid("auth.session_check_url", &message);
        }
        if self.auth.session_check_timeout.is_zero() {
            return invalid("auth.session_check_timeout", "must be greater than zero");
        }
        for origin in &self.http.cors_allowed_origins {
            if let Err(message) = check_origin(origin) {
                return invalid("http.cors_allowed_origins", &message);
            }
        }
        if let Some(secret) = &self.service.shared_secret
            && secret.expose().len() < MIN_SERVICE_SECRET_BYTES
        {
            return invalid("service.shared_secret", "must be at least 16 characters");
        }
        if self.service.shared_secret.is_some() && self.service.shared_secret_file.is_some() {
            return invalid(
                "service.shared_secret",
                "set either service.shared_secret or service.shared_secret_file, not both",
            );
        }
        if self.limits.ping_interval.is_zero() {
            return invalid("limits.ping_interval", "must be greater than zero");
        }
        if self.limits.body_timeout.is_zero() {
            return invalid("limits.body_timeout", "must be greater than zero");
        }
        if self.queues.message_queue_max_size == 0 {
            return invalid("queues.message_queue_max_size", "must be at least 1");
        }
        if self.queues.message_retention_days == 0 {
            return invalid("queues.message_retention_days", "must be at least 1");
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_connections", limits.max_connections),
            ("limits.max_body_bytes", limits.max_body_bytes),
            ("limits.max_frame_bytes", limits.max_frame_bytes),
            ("limits.max_text_bytes", limits.max_text_bytes),
            ("limits.outbound_buffer", limits.outbound_buffer),
            (
                "limits.messages_per_second",
                limits.messages_per_second as usize,
            ),
            ("limits.messages_burst", limits.messages_burst as usize),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if let Err(message) = check_log_filter(&self.log.level) {
            return invalid("log.level", &message);
        }
        self.webhooks.validate()?;
        Ok(())
    }

    /// The effective configuration as TOML, secrets replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Folds `INDABA_<SECTION>__<KEY>` variables into `table`.
///
/// Values are read as TOML literals where the option is a number, boolean or list (so
/// `INDABA_LIMITS__MAX_CONNECTIONS=500` is a number) and as plain strings otherwise (so a secret
/// of digits stays a string). Returns which variable set which key, for error messages.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut origins = BTreeMap::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let default = defaults
            .get(&section)
            .and_then(|s| s.get(&key))
            .filter(|v| !v.is_str());
        let value = match default {
            Some(_) => parse_literal(&raw).ok_or_else(|| ConfigError::Key {
                key: format!("{section}.{key}"),
                origin: format!(" (from {var})"),
                message: format!("`{raw}` is not a valid value"),
            })?,
            None => toml::Value::String(raw),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Key {
                key: section,
                origin: String::new(),
                message: "must be a table".to_owned(),
            });
        };
        section_table.insert(key.clone(), value);
        origins.insert(format!("{section}.{key}"), var);
    }
    Ok(origins)
}

/// The defaults that differ in dev mode (no config file), filled in where neither the
/// environment nor a file set the key: the demo chat is on, so a newcomer's first `cargo run`
/// serves it. With a config file the [`Default`] values hold (a production install exposes
/// nothing it was not told to).
fn dev_mode_defaults(table: &mut toml::Table) {
    if let toml::Value::Table(web) = table
        .entry("web")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        web.entry("demo").or_insert(toml::Value::Boolean(true));
    }
}

/// Checks a `log.level` value: EnvFilter syntax, and every directive without `=` a level.
///
/// EnvFilter reads a bare word as a target to log at every level, and then logs nothing else:
/// `verbose` or `inf` were accepted and silenced the daemon entirely. A target alone is still
/// possible as `target=trace`.
pub fn check_log_filter(level: &str) -> Result<(), String> {
    use std::str::FromStr;
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("`{level}` is not a level or filter directive: {e}"));
    }
    let bare = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('='));
    for directive in bare {
        if tracing_subscriber::filter::LevelFilter::from_str(directive).is_err() {
            return Err(format!(
                "`{directive}` is not a level (error, warn, info, debug, trace or off); to \
                 filter by module write `module=level`, e.g. `info,indaba=debug`"
            ));
        }
    }
    Ok(())
}

/// A cookie name as RFC 6265 allows it (an HTTP token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks `auth.session_check_url`: an absolute `http://` URL. The check runs on every new
/// cookie, so it is meant for the host app on loopback or a private network; HTTPS would add a
/// TLS stack for a hop that needs none.
fn check_session_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "`{url}` must be an http:// URL of the host app (e.g. \
             http://127.0.0.1:8000/api/v1/auth/me/); https is not supported for this hop"
        ));
    }
    Ok(())
}

/// Checks one `http.cors_allowed_origins` entry: `"*"`, or an origin as browsers send it in
/// `Origin` (`scheme://host[:port]`, no path, no trailing `/`), which is what it is compared
/// with, byte for byte.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let ok = origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https")
            && !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@'])
            && authority.parse::<hyper::http::uri::Authority>().is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not an origin: write scheme://host[:port] as the browser sends it \
             (e.g. https://app.example.com), with no path or trailing /, or \"*\""
        ))
    }
}

/// Reads a listen address: an IP address and port, or `localhost:PORT`, which is
/// `127.0.0.1:PORT` (one listener binds one address; IPv4 loopback is what `localhost` means
/// first on the systems the packages support). Other host names are refused rather than
/// resolved, so the address the daemon binds never depends on DNS at start.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "`{text}` is not an IP address and port: write e.g. 127.0.0.1:8765, 0.0.0.0:8765, \
         [::1]:8765 or localhost:8765 (other host names are not resolved)"
    ))
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// 1-based line and column of byte `offset` in `text`, as editors count them.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn parse_literal(raw: &str) -> Option<toml::Value> {
    let doc: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    doc.get("v").cloned()
}

/// Durations written the human way: `"10s"`, `"1h 30m"`, `"500ms"`.
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"10s\" or \"1h\": {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_file_gives_defaults() {
        let config = Config::load(None, env(&[])).expect("defaults load");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8765");
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.max_frame_bytes, 65_536);
    }

    #[test]
    fn the_demo_page_is_on_in_dev_mode_and_off_with_a_config_file() {
        let dev = Config::load(None, env(&[])).expect("dev mode");
        assert!(dev.web.demo, "no config file: the demo chat is on");
        assert!(!dev.web.admin);
        let dev_off = Config::load(None, env(&[("INDABA_WEB__DEMO", "false")])).expect("env");
        assert!(
            !dev_off.web.demo,
            "the environment turns it off in dev mode"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log]\nlevel = \"info\"\n").expect("write");
        let file = Config::load(Some(&path), env(&[])).expect("file");
        assert!(
            !file.web.demo,
            "a config file without [web]: the demo chat is off"
        );
        let file_on =
            Config::load(Some(&path), env(&[("INDABA_WEB__DEMO", "true")])).expect("env on");
        assert!(file_on.web.demo);
        std::fs::write(&path, "[web]\ndemo = true\nadmin = true\n").expect("write");
        let file_on = Config::load(Some(&path), env(&[])).expect("file on");
        assert!(file_on.web.demo && file_on.web.admin);
        // A bad value is named like any other key.
        std::fs::write(&path, "[web]\ndemo = \"yes\"\n").expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("not a bool");
        assert!(err.to_string().contains("web.demo"), "{err}");
    }

    #[test]
    fn env_overrides_by_type() {
        let config = Config::load(
            None,
            env(&[
                ("INDABA_SERVER__LISTEN", "0.0.0.0:9000"),
                ("INDABA_LIMITS__MAX_CONNECTIONS", "500"),
                ("INDABA_AUTH__JWT_SECRET", "12345678901234567890"),
                ("INDABA_AUTH__ALLOW_REGISTRATION", "false"),
                ("INDABA_SERVER__TRUSTED_PROXIES", "[\"10.0.0.1\"]"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("env overrides apply");
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.limits.max_connections, 500);
        assert_eq!(
            config.auth.jwt_secret.as_ref().map(Secret::expose),
            Some("12345678901234567890")
        );
        assert!(!config.auth.allow_registration);
        assert_eq!(config.server.trusted_proxies.len(), 1);
    }

    #[test]
    fn checkpoint_interval_is_a_bounded_duration() {
        let config = Config::load(
            None,
            env(&[("INDABA_STORAGE__CHECKPOINT_INTERVAL", "250ms")]),
        )
        .expect("a duration");
        assert_eq!(
            config.storage.checkpoint_interval,
            Duration::from_millis(250)
        );
        for bad in ["0s", "2h"] {
            let err = Config::load(None, env(&[("INDABA_STORAGE__CHECKPOINT_INTERVAL", bad)]))
                .expect_err("out of range");
            assert!(
                err.to_string().contains("storage.checkpoint_interval"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err = Config::load(None, env(&[("INDABA_SERVER__LISTN", "x")]))
            .expect_err("unknown key must fail");
        let text = err.to_string();
        assert!(text.contains("INDABA_SERVER__LISTN"), "{text}");
        assert!(text.contains("listn"), "{text}");
    }

    #[test]
    fn bad_env_number_is_named() {
        let err = Config::load(None, env(&[("INDABA_LIMITS__MAX_CONNECTIONS", "lots")]))
            .expect_err("bad number must fail");
        assert!(err.to_string().contains("limits.max_connections"), "{err}");
    }

    #[test]
    fn unknown_file_key_and_bad_value_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("unknown key");
        assert!(err.to_string().contains("server.bogus"), "{err}");

        std::fs::write(&path, "[server]\nshutdown_timeout = \"soon\"\n").expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("bad duration");
        assert!(err.to_string().contains("server.shutdown_timeout"), "{err}");

        std::fs::write(&path, "[limits]\nmax_body_bytes = 0\n").expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("zero limit");
        assert!(err.to_string().contains("limits.max_body_bytes"), "{err}");

        std::fs::write(&path, "[log]\nformat = \"xml\"\n").expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("bad format");
        assert!(err.to_string().contains("log.format"), "{err}");
    }

    #[test]
    fn jwt_secret_sources_exclude_each_other() {
        let err = Config::load(
            None,
            env(&[
                ("INDABA_AUTH__JWT_SECRET", "12345678901234567890"),
                ("INDABA_AUTH__JWT_SECRET_FILE", "/etc/indaba/jwt_secret"),
            ]),
        )
        .expect_err("both set must fail");
        let text = err.to_string();
        assert!(text.contains("auth.jwt_secret_file"), "{text}");
        assert!(text.contains("not both"), "{text}");

        let err = Config::load(
            None,
            env(&[
                ("INDABA_AUTH__JWT_SECRET_FILE", "/etc/indaba/jwt_secret"),
                ("INDABA_AUTH__JWT_PUBLIC_KEY_FILE", "/etc/indaba/jwt.pem"),
            ]),
        )
        .expect_err("file and public key must fail");
        assert!(err.to_string().contains("auth.jwt_secret_file"), "{err}");

        let config = Config::load(
            None,
            env(&[("INDABA_AUTH__JWT_SECRET_FILE", "/etc/indaba/jwt_secret")]),
        )
        .expect("a file alone is fine");
        assert_eq!(
            config.auth.jwt_secret_file.as_deref(),
            Some(Path::new("/etc/indaba/jwt_secret"))
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let config = Config::load(
            None,
            env(&[
                ("INDABA_AUTH__JWT_SECRET", "super-secret-value-123"),
                ("INDABA_SERVICE__SHARED_SECRET", "another-secret-value-456"),
            ]),
        )
        .expect("load");
        let shown = format!("{}\n{:?}", config.to_redacted_toml(), config);
        assert!(!shown.contains("super-secret-value-123"), "{shown}");
        assert!(!shown.contains("another-secret-value-456"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn log_level_must_be_levels_or_target_directives() {
        for good in [
            "info",
            "WARN",
            "off",
            "trace",
            "indaba=debug",
            "warn,indaba=debug",
            "indaba::ws=trace",
        ] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
        // Bare words parse as EnvFilter targets and silenced everything else.
        for bad in ["verbose", "inf", "info,verbose", "indaba=loud", "indaba"] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
        let err = Config::load(None, env(&[("INDABA_LOG__LEVEL", "verbose")])).expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("log.level"), "{text}");
        assert!(text.contains("(from INDABA_LOG__LEVEL)"), "{text}");
        assert!(text.contains("`verbose` is not a level"), "{text}");
    }

    #[test]
    fn listen_takes_addresses_and_localhost_only() {
        assert_eq!(
            parse_listen("localhost:8765"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8765)))
        );
        assert_eq!(
            parse_listen("[::1]:80").map(|a| a.to_string()),
            Ok("[::1]:80".to_owned())
        );
        for bad in ["localhost", "localhost:http", "example.com:80", "8765"] {
            let err = parse_listen(bad).expect_err(bad);
            assert!(err.contains("127.0.0.1:8765"), "{bad}: {err}");
        }
        let config = Config::load(None, env(&[("INDABA_SERVER__LISTEN", "localhost:9000")]))
            .expect("localhost");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn toml_syntax_errors_say_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        // Columns count characters, as editors do, not bytes.
        std::fs::write(&path, "[server]\n# é\nlisten = \"é\" 1\n").expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("syntax");
        assert!(
            matches!(
                err,
                ConfigError::Syntax {
                    line: 3,
                    column: 14,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("", 9), (1, 1));
    }

    #[test]
    fn log_format_is_found_without_loading_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log]\nformat = \"json\"\n[limits]\nbogus = 1\n").expect("write");
        assert_eq!(LogFormat::requested(Some(&path), env(&[])), LogFormat::Json);
        assert_eq!(
            LogFormat::requested(Some(&path), env(&[("INDABA_LOG__FORMAT", "text")])),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::requested(None, env(&[("INDABA_LOG__FORMAT", "json")])),
            LogFormat::Json
        );
        std::fs::write(&path, "[log\nformat = \"json\"\n").expect("write");
        assert_eq!(LogFormat::requested(Some(&path), env(&[])), LogFormat::Text);
    }

    #[test]
    fn host_integration_options_are_checked_by_name() {
        let config = Config::load(
            None,
            env(&[
                ("INDABA_AUTH__TOKEN_COOKIE", "access_token"),
                (
                    "INDABA_AUTH__SESSION_CHECK_URL",
                    "http://127.0.0.1:8000/api/v1/auth/me/",
                ),
                ("INDABA_AUTH__SESSION_CHECK_TIMEOUT", "500ms"),
                (
                    "INDABA_HTTP__CORS_ALLOWED_ORIGINS",
                    r#"["https://app.example.com", "http://localhost:3000"]"#,
                ),
            ]),
        )
        .expect("valid");
        assert_eq!(config.auth.token_cookie.as_deref(), Some("access_token"));
        assert_eq!(
            config.auth.session_check_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(config.auth.session_cache_ttl, Duration::from_secs(60));
        assert_eq!(config.http.cors_allowed_origins.len(), 2);
        for (var, value, key) in [
            ("INDABA_AUTH__TOKEN_COOKIE", "a b", "auth.token_cookie"),
            (
                "INDABA_AUTH__SESSION_CHECK_URL",
                "https://app.example.com/api/v1/auth/me/",
                "auth.session_check_url",
            ),
            (
                "INDABA_AUTH__SESSION_CHECK_URL",
                "/api/v1/auth/me/",
                "auth.session_check_url",
            ),
            (
                "INDABA_AUTH__SESSION_CHECK_TIMEOUT",
                "0s",
                "auth.session_check_timeout",
            ),
            (
                "INDABA_HTTP__CORS_ALLOWED_ORIGINS",
                r#"["https://app.example.com/"]"#,
                "http.cors_allowed_origins",
            ),
            (
                "INDABA_HTTP__CORS_ALLOWED_ORIGINS",
                r#"["app.example.com"]"#,
                "http.cors_allowed_origins",
            ),
            (
                "INDABA_HTTP__CORS_ALLOWED_ORIGINS",
                r#"["https://app.example.com/chat"]"#,
                "http.cors_allowed_origins",
            ),
        ] {
            let err = Config::load(None, env(&[(var, value)])).expect_err(value);
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
        assert!(check_origin("*").is_ok());
        assert!(check_origin("http://[::1]:8080").is_ok());
    }

    #[test]
    fn service_secret_sources_exclude_each_other() {
        let err = Config::load(
            None,
            env(&[
                (
                    "INDABA_SERVICE__SHARED_SECRET",
                    "a-long-enough-service-secret",
                ),
                (
                    "INDABA_SERVICE__SHARED_SECRET_FILE",
                    "/etc/indaba/service_secret",
                ),
            ]),
        )
        .expect_err("both");
        assert!(err.to_string().contains("not both"), "{err}");
    }
}

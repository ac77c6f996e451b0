//! `[webhooks]`: where events are posted, which ones, and the checks on its URL and extra
//! header (shared with the webhook sender, which parses the header the same way).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checks::duration_str;
use super::{ConfigError, Secret};

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

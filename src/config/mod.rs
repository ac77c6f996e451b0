//! The daemon's configuration: one typed [`Config`], read from an optional TOML file and
//! overridden by `INDABA_<SECTION>__<KEY>` environment variables.
//!
//! Every field has a default, so the daemon starts with no file at all ("dev mode"). Unknown keys
//! and bad values are errors that name the key; `config.toml.example` is checked against this
//! struct by a test, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `INDABA_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "INDABA_";

/// Shortest HS256 secret accepted, inline (`auth.jwt_secret`) or from a file.
pub const MIN_JWT_SECRET_BYTES: usize = 16;

/// Shortest service API secret accepted, inline (`service.shared_secret`) or from a file.
pub const MIN_SERVICE_SECRET_BYTES: usize = 16;

/// The longest `storage.commit_delay_max`: a hold is meant to last a fraction of a
/// millisecond to a few, and requests nobody waits for ride along ten times as long.
const MAX_COMMIT_DELAY: Duration = Duration::from_millis(100);

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

mod checks;
mod sections;
mod webhooks;

pub use checks::{check_log_filter, parse_listen};
use checks::{check_origin, check_session_url, is_cookie_name, line_and_column, parse_literal};
pub use sections::*;
pub use webhooks::*;

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
        if self.storage.data_key_cache == 0 {
            return invalid("storage.data_key_cache", "must be at least 1");
        }
        if self.storage.checkpoint_interval.is_zero()
            || self.storage.checkpoint_interval > Duration::from_secs(3600)
        {
            return invalid(
                "storage.checkpoint_interval",
                "must be more than zero and at most 1h",
            );
        }
        if self.storage.commit_delay_max > MAX_COMMIT_DELAY {
            return invalid(
                "storage.commit_delay_max",
                "must be at most 100ms (0 turns the delay off)",
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

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
    fn commit_delay_max_is_a_bounded_duration_and_zero_is_off() {
        assert_eq!(
            Config::default().storage.commit_delay_max,
            Duration::from_millis(1)
        );
        for (good, expected) in [("0s", 0), ("500us", 500), ("100ms", 100_000)] {
            let config = Config::load(None, env(&[("INDABA_STORAGE__COMMIT_DELAY_MAX", good)]))
                .expect("a duration");
            assert_eq!(
                config.storage.commit_delay_max,
                Duration::from_micros(expected)
            );
        }
        for bad in ["101ms", "1s", "soon"] {
            let err = Config::load(None, env(&[("INDABA_STORAGE__COMMIT_DELAY_MAX", bad)]))
                .expect_err("refused");
            assert!(err.to_string().contains("commit_delay_max"), "{bad}: {err}");
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

//! Log output with tracing-subscriber: level from config or `RUST_LOG`, text or JSON, and a
//! handle that changes the level at run time (SIGHUP).
//!
//! What is never logged, anywhere: tokens, passwords, message text, query strings and the
//! `Authorization` header. Request logs carry the path only.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Changes the active log filter.
#[derive(Debug, Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it wins over the config file, also on reload.
    from_env: bool,
}

/// Installs the global subscriber, writing to stderr (which systemd sends to the journal).
pub fn init(config: &LogConfig) -> Result<LogHandle, String> {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let filter = if from_env {
        EnvFilter::try_from_default_env().map_err(|e| format!("RUST_LOG is invalid: {e}"))?
    } else {
        parse_filter(&config.level)?
    };
    install(filter, config.format, from_env)
}

/// Installs a subscriber for a daemon that cannot start because its configuration (or
/// `RUST_LOG`) is wrong, so that the error is still written in `format`: a JSON log pipeline
/// must not meet the one line it most needs as plain text. Warnings and errors only.
pub fn init_for_errors(format: LogFormat) -> Result<LogHandle, String> {
    install(EnvFilter::new("warn"), format, false)
}

fn install(filter: EnvFilter, format: LogFormat, from_env: bool) -> Result<LogHandle, String> {
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|e| format!("cannot install logger: {e}"))?;
    Ok(LogHandle {
        filter: handle,
        from_env,
    })
}

impl LogHandle {
    /// Applies a new level from the config file; `RUST_LOG`, when set, keeps winning.
    pub fn set_level(&self, level: &str) -> Result<ReloadOutcome, String> {
        if self.from_env {
            return Ok(ReloadOutcome::KeptRustLog);
        }
        let filter = parse_filter(level)?;
        self.filter
            .reload(filter)
            .map_err(|e| format!("cannot change log level: {e}"))?;
        Ok(ReloadOutcome::Applied)
    }
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied,
    KeptRustLog,
}

/// The filter for a `log.level`, refused unless [`crate::config::check_log_filter`] passes it
/// (a reload reaches here with a value no `validate` has seen).
fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    crate::config::check_log_filter(level)?;
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("log level `{level}` is invalid: {e}"))
}

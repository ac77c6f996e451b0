//! The `indaba` command: parse the command line, load the config, start logging, run.
//!
//! Exit codes: 0 done; 1 a failure while starting or running (a port in use, an unusable data
//! dir or file, a store writer that failed, a stop past `server.shutdown_timeout`); 2 the
//! configuration is wrong (a bad key or value, a missing or unreadable secret, keys that do not
//! open the data file) or the command line is (clap's usage errors): restarting will not help
//! until someone fixes it, so the systemd unit does not restart on 2; 130 a second stop signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indaba::auth::jwt::{TokenMinter, TokenType};
use indaba::config::{Config, LogFormat};
use indaba::crypto::Key;
use indaba::secrets::Source;
use indaba::store::DamagedJournal;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the C library's malloc: the static musl build's malloc serialises
/// threads on one lock, and the daemon allocates on every core (see the `fast-alloc` feature).
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "indaba",
    version,
    about = "Self-hosted real-time messaging daemon"
)]
struct Cli {
    /// TOML config file; without one, Indaba runs in dev mode with generated secrets.
    #[arg(long, global = true, env = "INDABA_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address (IP:PORT or localhost:PORT), overriding `server.listen`.
    #[arg(long, global = true, value_parser = indaba::config::parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory, overriding `storage.data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve {
        /// Start even though the journal (`indaba.journal`) is damaged, which the daemon
        /// otherwise refuses: what can be replayed is, the damaged file is moved aside
        /// (`indaba.journal.damaged-<time>`, never deleted) and what it loses is logged at
        /// ERROR. For once, after reading the refusal; see docs/OPERATIONS.md.
        #[arg(long)]
        accept_journal_loss: bool,
    },
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
    /// Print a new 256-bit encryption key (hex) for `storage.encryption_key_file`.
    Keygen,
    /// Write a consistent backup of the data to DEST: through the running daemon's admin socket
    /// (`<data_dir>/admin.sock`), or straight from the data file when no daemon runs.
    Backup {
        /// The backup file to write (replaced atomically if it exists); DEST.partial until done.
        dest: PathBuf,
    },
    /// Operators' commands (contract section 9), answered by the running daemon over its admin
    /// socket (`<data_dir>/admin.sock`; run as the daemon's user or root). Each prints the
    /// admin API's JSON answer.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Mint an access token signed with the configured secret, for testing.
    Token {
        /// The user the token is for.
        #[arg(long)]
        user_id: u64,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Optional `username` claim.
        #[arg(long)]
        username: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users: list, show, disable, enable, erase.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Messages: delete (moderation).
    Messages {
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// The `/api/stats` figures.
    Stats,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// One page of users, by id.
    List {
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: u64,
        /// Users per page (at most 100).
        #[arg(long)]
        page_size: Option<u64>,
        /// Only users whose id is this, or whose name contains it (any case).
        #[arg(long)]
        q: Option<String>,
    },
    /// One user.
    Show { id: u64 },
    /// Refuse the user's tokens and close their sockets (4403), until `enable`.
    Disable { id: u64 },
    /// Accept the user's tokens again.
    Enable { id: u64 },
    /// Erase the user on request (GDPR art. 17), irreversibly: account, queue, read state and
    /// the text of every message they sent (see docs/OPERATIONS.md).
    Erase {
        id: u64,
        /// Confirms the erasure: nothing can bring the data back.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MessagesCommand {
    /// Replace a message by a tombstone (moderation).
    Delete { id: u64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Keygen) => keygen(),
        Some(Command::CheckConfig) => {
            load(&cli).and_then(|config| check_config(config, cli.config.as_deref()))
        }
        Some(Command::Backup { ref dest }) => load(&cli).and_then(|config| backup(&config, dest)),
        Some(Command::Admin { ref command }) => {
            load(&cli).and_then(|config| admin(&config, command))
        }
        Some(Command::Token {
            user_id,
            ttl,
            ref username,
        }) => load(&cli).and_then(|config| {
            token(
                config,
                cli.config.is_none(),
                user_id,
                ttl,
                username.as_deref(),
            )
        }),
        Some(Command::Serve {
            accept_journal_loss,
        }) => {
            let damaged = if accept_journal_loss {
                DamagedJournal::MoveAside
            } else {
                DamagedJournal::Refuse
            };
            return serve(&cli, damaged);
        }
        None => return serve(&cli, DamagedJournal::Refuse),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("indaba: error: {}", failure.message);
            failure.exit_code()
        }
    }
}

/// Why the command failed, and so which exit code it ends with (see the top of this file).
#[derive(Debug)]
struct Failure {
    /// True when the configuration (or the command line) is at fault: exit 2, else 1.
    config_error: bool,
    message: String,
}

impl Failure {
    fn config(message: impl ToString) -> Self {
        Self {
            config_error: true,
            message: message.to_string(),
        }
    }

    fn run(message: impl ToString) -> Self {
        Self {
            config_error: false,
            message: message.to_string(),
        }
    }

    fn code(&self) -> u8 {
        if self.config_error { 2 } else { 1 }
    }

    fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl From<indaba::secrets::SecretsError> for Failure {
    fn from(e: indaba::secrets::SecretsError) -> Self {
        Self {
            config_error: e.is_config(),
            message: e.to_string(),
        }
    }
}

impl From<indaba::app::AppError> for Failure {
    fn from(e: indaba::app::AppError) -> Self {
        use indaba::app::AppError;
        use indaba::store::StoreError;
        // The keys are the config's: the same mistake check-config reports with exit 2.
        let config_error = matches!(&e, AppError::Store(StoreError::WrongKey { .. }));
        Self {
            config_error,
            message: e.to_string(),
        }
    }
}

/// Loads the config named on the command line, with the command line's overrides.
fn load(cli: &Cli) -> Result<Config, Failure> {
    let mut config =
        Config::load(cli.config.as_deref(), std::env::vars()).map_err(Failure::config)?;
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.storage.data_dir = dir.clone();
    }
    config.validate().map_err(Failure::config)?;
    Ok(config)
}

fn keygen() -> Result<(), Failure> {
    let key = Key::generate().map_err(Failure::run)?;
    println!("{}", key.to_hex());
    Ok(())
}

fn check_config(config: Config, path: Option<&Path>) -> Result<(), Failure> {
    if path.is_none() {
        println!("# dev mode (no --config): missing secrets are generated in the data dir");
    } else {
        // Reads every key file, so permissions and formats are checked too; creates nothing.
        let secrets = indaba::secrets::resolve(&config, Source::Config)?;
        check_keys_open_data(&config, &secrets.keyring)?;
    }
    print!("{}", config.to_redacted_toml());
    eprintln!("indaba: configuration is valid");
    Ok(())
}

/// After a key rotation the config can be valid and still not open the data: tries the key
/// ring on the data file, read-only, and names the key ids it lacks.
fn check_keys_open_data(config: &Config, keyring: &indaba::crypto::Keyring) -> Result<(), Failure> {
    use indaba::store::keys::{KeyCheck, check_data_file, format_ids};
    match check_data_file(&config.storage.data_dir, keyring).map_err(Failure::run)? {
        KeyCheck::NoDataFile => eprintln!(
            "indaba: no data file in {} yet: the first start creates it",
            config.storage.data_dir.display()
        ),
        KeyCheck::Opens { stored } if stored.is_empty() => {}
        KeyCheck::Opens { stored } => eprintln!(
            "indaba: the configured keys open the data file (key ids {})",
            format_ids(stored)
        ),
        KeyCheck::Missing {
            path,
            stored,
            missing,
        } => {
            return Err(Failure::config(format!(
                "the configured keys cannot open data file {}: it holds data sealed with key id(s) {} that no configured key opens (configured: {}; the file's: {}); list the retired key files in storage.old_encryption_key_files",
                path.display(),
                format_ids(missing),
                format_ids(keyring.key_ids()),
                format_ids(stored),
            )));
        }
        KeyCheck::InUse { path } => eprintln!(
            "indaba: note: keys not checked against {}: a running daemon holds it (stop it to check them)",
            path.display()
        ),
        KeyCheck::NeedsRepair { path } => eprintln!(
            "indaba: note: keys not checked against {}: a crash left it to be repaired by the daemon's next start",
            path.display()
        ),
    }
    Ok(())
}

fn backup(config: &Config, dest: &Path) -> Result<(), Failure> {
    let report = indaba::admin::backup(&config.storage.data_dir, dest).map_err(Failure::run)?;
    let source = match &report.source {
        indaba::admin::Source::Daemon { socket } => {
            format!("running daemon (admin socket {})", socket.display())
        }
        indaba::admin::Source::DataFile { path } => format!("data file {}", path.display()),
    };
    println!("backup: {}", report.dest.display());
    println!("source: {source}");
    println!("bytes: {}", report.bytes);
    println!("tables: {}", report.summary.tables.len());
    println!("rows: {}", report.summary.rows());
    for table in &report.summary.tables {
        println!("  {} {}", table.name, table.rows);
    }
    Ok(())
}

/// `indaba admin ...`: one admin API request over the admin socket; prints the JSON answer
/// (stdout), or the error it holds (stderr, exit 1).
fn admin(config: &Config, command: &AdminCommand) -> Result<(), Failure> {
    let (method, target) = match command {
        AdminCommand::Users { command } => match command {
            UsersCommand::List { page, page_size, q } => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("page", &page.to_string());
                if let Some(size) = page_size {
                    query.append_pair("page_size", &size.to_string());
                }
                if let Some(q) = q {
                    query.append_pair("q", q);
                }
                ("GET", format!("/api/admin/users/?{}", query.finish()))
            }
            UsersCommand::Show { id } => ("GET", format!("/api/admin/users/{id}")),
            UsersCommand::Disable { id } => ("POST", format!("/api/admin/users/{id}/disable")),
            UsersCommand::Enable { id } => ("POST", format!("/api/admin/users/{id}/enable")),
            UsersCommand::Erase { id, yes } => {
                if !yes {
                    return Err(Failure::config(format!(
                        "erasing user {id} cannot be undone: add --yes to confirm"
                    )));
                }
                ("DELETE", format!("/api/admin/users/{id}"))
            }
        },
        AdminCommand::Messages {
            command: MessagesCommand::Delete { id },
        } => ("DELETE", format!("/api/admin/messages/{id}")),
        AdminCommand::Stats => ("GET", "/api/stats".to_owned()),
    };
    let (status, body) =
        indaba::admin::api(&config.storage.data_dir, method, &target).map_err(Failure::run)?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Failure::run(format!("the daemon answered {status} with no JSON: {e}")))?;
    if (200..300).contains(&status) {
        let pretty = serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string());
        println!("{pretty}");
        return Ok(());
    }
    let detail = json["detail"].as_str().unwrap_or("");
    let code = json["error"].as_str().unwrap_or("");
    Err(Failure::run(format!(
        "{detail} ({status} {}, {code})",
        indaba::http::local::reason(status)
    )))
}

fn token(
    config: Config,
    dev_mode: bool,
    user_id: u64,
    ttl: Duration,
    username: Option<&str>,
) -> Result<(), Failure> {
    if !(1..indaba::MAX_ID).contains(&user_id) {
        return Err(Failure::config("--user-id must be between 1 and 2^53-1"));
    }
    // The daemon's secret or none: a new one would sign tokens the daemon refuses.
    let source = if dev_mode {
        Source::DevExisting
    } else {
        Source::Config
    };
    let secrets = indaba::secrets::resolve(&config, source)?;
    let secret = secrets.signing_secret.ok_or_else(|| {
        Failure::config(
            "auth.jwt_public_key_file is set: tokens come from your issuer, Indaba cannot sign them",
        )
    })?;
    let minter = TokenMinter::new(&secret, &config.auth.user_id_claim).with_claims(
        config.auth.issuer.as_deref(),
        config.auth.audience.as_deref(),
    );
    let token = minter
        .mint(user_id, username, TokenType::Access, ttl)
        .map_err(Failure::run)?;
    println!("{token}");
    Ok(())
}

/// `indaba serve`: every failure goes to the log, in `log.format`, not only to plain stderr.
fn serve(cli: &Cli, damaged_journal: DamagedJournal) -> ExitCode {
    let started = load(cli).and_then(|config| {
        let log = indaba::logging::init(&config.log).map_err(Failure::config)?;
        Ok((config, log))
    });
    let result = match started {
        Ok((config, log)) => run_daemon(config, log, cli.config.as_deref(), damaged_journal),
        Err(failure) => {
            // No logger yet (the config that sets it up is what failed): one for the error,
            // in the format the config asks for, however broken the rest of it is.
            let format = LogFormat::requested(cli.config.as_deref(), std::env::vars());
            if let Err(e) = indaba::logging::init_for_errors(format) {
                eprintln!("indaba: error: {}", failure.message);
                eprintln!("indaba: error: {e}");
                return failure.exit_code();
            }
            Err(failure)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            tracing::error!(error = %failure.message, exit_code = failure.code(), "indaba exits on an error");
            failure.exit_code()
        }
    }
}

fn run_daemon(
    config: Config,
    log: indaba::logging::LogHandle,
    config_path: Option<&Path>,
    damaged_journal: DamagedJournal,
) -> Result<(), Failure> {
    let dev_mode = config_path.is_none();
    let source = if dev_mode {
        Source::DevGenerate
    } else {
        Source::Config
    };
    let secrets = indaba::secrets::resolve(&config, source)?;
    if dev_mode {
        tracing::info!("dev mode: no --config given, running on embedded defaults");
        tracing::info!("get a test token with `indaba token --user-id 1` (same --data-dir)");
    }
    for path in &secrets.generated {
        tracing::info!(path = %path.display(), "generated a dev-mode secret (mode 0600)");
    }

    let shutdown = CancellationToken::new();
    let reload_path = config_path.map(Path::to_owned);
    indaba::shutdown::install(shutdown.clone(), move || {
        reload_log_level(&log, reload_path.as_deref())
    })
    .map_err(|e| Failure::run(format!("cannot install signal handlers: {e}")))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("indaba-rt")
        .build()
        .map_err(|e| Failure::run(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let listen = config.server.listen;
        let listener =
            bind(listen).map_err(|e| Failure::run(format!("cannot listen on {listen}: {e}")))?;
        indaba::app::run(config, secrets, listener, shutdown, damaged_journal)
            .await
            .map_err(Failure::from)
    })
}

/// Connections the kernel queues before they are accepted. tokio's default (128) drops the
/// excess of a reconnect storm, and each dropped client waits a 1 s SYN retry.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// SIGHUP: re-read `log.level` from the config file and apply it.
fn reload_log_level(log: &indaba::logging::LogHandle, path: Option<&Path>) {
    let loaded = Config::load(path, std::env::vars());
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded");
            return;
        }
    };
    match log.set_level(&config.log.level) {
        Ok(indaba::logging::ReloadOutcome::Applied) => {
            // Not `level`: JSON lines already have the event's own `level` key.
            tracing::info!(log_level = %config.log.level, "SIGHUP: log level reloaded from config");
        }
        Ok(indaba::logging::ReloadOutcome::KeptRustLog) => {
            tracing::info!("SIGHUP: RUST_LOG is set and keeps precedence over log.level");
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: log level not changed"),
    }
}

//! The `indaba` command: parse the command line, load the config, start logging, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indaba::auth::jwt::{TokenMinter, TokenType};
use indaba::config::Config;
use indaba::crypto::Key;
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
    /// Listen address, overriding `server.listen`.
    #[arg(long, global = true)]
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen) => keygen(),
        Some(Command::CheckConfig) => with_config(&cli, check_config),
        Some(Command::Backup { ref dest }) => with_config(&cli, |config, _| backup(&config, dest)),
        Some(Command::Token {
            user_id,
            ttl,
            ref username,
        }) => with_config(&cli, |config, path| {
            token(config, path.is_none(), user_id, ttl, username.as_deref())
        }),
        Some(Command::Serve {
            accept_journal_loss,
        }) => with_config(&cli, |config, path| {
            let damaged = if accept_journal_loss {
                DamagedJournal::MoveAside
            } else {
                DamagedJournal::Refuse
            };
            serve(config, path, damaged)
        }),
        None => with_config(&cli, |config, path| {
            serve(config, path, DamagedJournal::Refuse)
        }),
    }
}

/// Loads the config named on the command line and hands it to `f`, reporting errors.
/// The config file path goes to `f` too: `None` means dev mode.
fn with_config(cli: &Cli, f: impl FnOnce(Config, Option<&Path>) -> Result<(), String>) -> ExitCode {
    let loaded = Config::load(cli.config.as_deref(), std::env::vars()).and_then(|mut config| {
        if let Some(listen) = cli.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &cli.data_dir {
            config.storage.data_dir = dir.clone();
        }
        config.validate().map(|()| config)
    });
    let result = loaded
        .map_err(|e| e.to_string())
        .and_then(|config| f(config, cli.config.as_deref()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("indaba: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn keygen() -> ExitCode {
    match Key::generate() {
        Ok(key) => {
            println!("{}", key.to_hex());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("indaba: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(config: Config, path: Option<&Path>) -> Result<(), String> {
    if path.is_none() {
        println!("# dev mode (no --config): missing secrets are generated in the data dir");
    } else {
        // Reads every key file, so permissions and formats are checked too; creates nothing.
        indaba::secrets::resolve(&config, false).map_err(|e| e.to_string())?;
    }
    print!("{}", config.to_redacted_toml());
    eprintln!("indaba: configuration is valid");
    Ok(())
}

fn backup(config: &Config, dest: &Path) -> Result<(), String> {
    let report =
        indaba::admin::backup(&config.storage.data_dir, dest).map_err(|e| e.to_string())?;
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

fn token(
    config: Config,
    dev_mode: bool,
    user_id: u64,
    ttl: Duration,
    username: Option<&str>,
) -> Result<(), String> {
    if !(1..indaba::MAX_ID).contains(&user_id) {
        return Err("--user-id must be between 1 and 2^53-1".to_owned());
    }
    let secrets = indaba::secrets::resolve(&config, dev_mode).map_err(|e| e.to_string())?;
    let secret = secrets.signing_secret.ok_or(
        "auth.jwt_public_key_file is set: tokens come from your issuer, Indaba cannot sign them",
    )?;
    let minter = TokenMinter::new(&secret, &config.auth.user_id_claim).with_claims(
        config.auth.issuer.as_deref(),
        config.auth.audience.as_deref(),
    );
    let token = minter.mint(user_id, username, TokenType::Access, ttl)?;
    println!("{token}");
    Ok(())
}

fn serve(
    config: Config,
    config_path: Option<&Path>,
    damaged_journal: DamagedJournal,
) -> Result<(), String> {
    let dev_mode = config_path.is_none();
    let log = indaba::logging::init(&config.log)?;
    let secrets = indaba::secrets::resolve(&config, dev_mode).map_err(|e| e.to_string())?;
    if dev_mode {
        tracing::info!("dev mode: no --config given, running on embedded defaults");
    }
    for path in &secrets.generated {
        tracing::info!(path = %path.display(), "generated a dev-mode secret (mode 0600)");
    }

    let shutdown = CancellationToken::new();
    let reload_path = config_path.map(Path::to_owned);
    indaba::shutdown::install(shutdown.clone(), move || {
        reload_log_level(&log, reload_path.as_deref())
    })
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("indaba-rt")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listen = config.server.listen;
        let listener = bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        indaba::app::run(config, secrets, listener, shutdown, damaged_journal)
            .await
            .map_err(|e| e.to_string())
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
            tracing::info!(level = %config.log.level, "SIGHUP: log level reloaded from config");
        }
        Ok(indaba::logging::ReloadOutcome::KeptRustLog) => {
            tracing::info!("SIGHUP: RUST_LOG is set and keeps precedence over log.level");
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: log level not changed"),
    }
}

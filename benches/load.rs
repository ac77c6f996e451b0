//! Load generator for the daemon (issue 6): drives a real `indaba` process over loopback
//! sockets and prints plain-text numbers meant to be pasted into docs.
//!
//! * `--mode pairs` (the default): `--pairs` sender/receiver pairs, each pair two fresh users
//!   and their own 2-person conversation (created over REST). Every sender sends `--messages`
//!   `chat_message`s of `--size` bytes over `/ws/chat/`, either closed-loop (at most
//!   `--window` without a `message_sent`) or open-loop at a fixed total `--rate` (sent on a
//!   schedule whatever the acknowledgements do). Reports delivered messages/s, end-to-end
//!   latency (send → `new_message` at the receiver), acknowledgement latency (send →
//!   `message_sent`), lost / duplicated / out-of-order messages, the server's CPU time and peak
//!   RSS, the CPU time per delivered message, and the machine's steal and iowait time over the
//!   run (a VM stall shows there).
//! * `--mode idle`: opens `--sockets` authenticated `/ws/chat/` sockets, holds them `--hold`
//!   seconds, and reports the connect rate and the server's resident memory per socket.
//! * `--mode group` (issue 20): one conversation of `--members` users, each on one socket,
//!   sending `--messages` each at a total `--rate` (default 100/s: ~10,000 deliveries/s with 100
//!   members); every message goes to the 99 others. Reports delivery latency (scheduled send
//!   → `new_message` at each member) and the server's CPU per delivery.
//! * `--mode broadcast` (issue 20): `--sockets` connected users, then `--broadcasts` service
//!   broadcasts (`POST /api/messages/broadcast` to all of them, after `--warmup` unmeasured
//!   ones); reports, per broadcast, how long until the last user had it, and the server's CPU
//!   per delivery. `--notify` gives each user a `/ws/notifications/` socket too, and reports
//!   the `conversation_updated` announcements of the conversations the first broadcast made.
//!
//! `--servers daemon,ceiling --rounds N` runs every workload against the daemon and against
//! the *ceiling* (`benches/load/ceiling.rs`: the same transport, frame handling and JSON with
//! no auth, storage or encryption, a separate process), alternating daemon, ceiling, daemon,
//! ceiling… for N rounds, a fresh server each time, and ends with a table of each figure per
//! round, the medians and the daemon/ceiling ratios: on a noisy VM the ratio of neighbours
//! holds where absolute figures do not.
//!
//! By default it starts the binary cargo built next to this bench (`target/release/indaba`,
//! which `cargo bench` keeps up to date; `--bin` picks another) in dev mode on 127.0.0.1 with
//! a fresh temp data dir and the send limits lifted, and stops it at the end. `--url` targets
//! a daemon that is already running on loopback instead (tokens are minted with `--secret` or
//! the `jwt_secret` in `--data-dir`; its limits must already allow the load; `--pid` enables
//! the server CPU and memory numbers; each round uses fresh user ids above `--user-base`).
//!
//! ```sh
//! cargo bench --bench load -- --pairs 50 --messages 2000 --window 10
//! cargo bench --bench load -- --pairs 50 --messages 2000 --rate 5000
//! cargo bench --bench load -- --mode idle --sockets 19900 --hold 5
//! cargo bench --bench load -- --servers daemon,ceiling --rounds 3 --pairs 50 --window 10
//! cargo bench --bench load -- --servers daemon,ceiling --rounds 3 --mode group
//! cargo bench --bench load -- --servers daemon,ceiling --rounds 3 --mode broadcast
//! cargo bench --bench load -- --help
//! ```
//!
//! Everything is bounded: the send phase by `--timeout`, delivery after it by `--drain`, and
//! the number of sockets by the open-files limit (whose soft value this process raises to the
//! hard one when it needs more; the servers it starts inherit it). The generator shares the
//! machine with the server, so it reports its own CPU time too; per
//! message it only stamps digits into a pre-serialized frame and reads back the few fields it
//! needs. In open-loop runs latencies start at the *scheduled* send time, so a generator that
//! falls behind shows up in the numbers instead of hiding it; the report also gives each
//! send's lag behind its schedule ("send lag": one pacing thread sleeps until each send is due
//! and wakes its sender, which then waits for the CPU like the daemon does) and the end-to-end
//! latency with that lag taken off ("e2e from send": the daemon, loopback and the generator's
//! receiving side).
//! The exit status is non-zero when a run saw loss, duplicates, reordering, errors, closed
//! sockets or failed connects, or when a server died or did not stop cleanly.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use indaba::auth::jwt::{TokenMinter, TokenType};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

#[path = "load/broadcast.rs"]
mod broadcast;
#[path = "load/ceiling.rs"]
mod ceiling;
#[path = "load/compare.rs"]
mod compare;
#[path = "load/group.rs"]
mod group;

use compare::{Figure, machine_figures};

/// The daemon's allocator (see `src/main.rs`): the ceiling runs in this binary and must not
/// lose to the daemon on malloc alone. The generator uses it too.
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Ws = WebSocketStream<TcpStream>;

/// How long the daemon may take to print its listen address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one socket may take to connect and receive `connection_established`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before the final server sample, so trailing work (queue removals) is counted.
const SETTLE: Duration = Duration::from_millis(500);
/// Pause before the idle-mode memory baseline, so start-up allocations are done.
const BASELINE_SETTLE: Duration = Duration::from_secs(1);
/// File descriptors the generator and the daemon need besides the sockets.
const SPARE_FDS: u64 = 64;
/// How far ahead of spawning them the senders' common start is set, µs.
const START_DELAY_US: u64 = 50_000;
/// Lifetime of the minted access tokens.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Load generator for the indaba daemon, and its no-storage ceiling",
    after_help = "Run with `cargo bench --bench load -- <args>`. Idle and broadcast modes need \
                  one file descriptor per socket in this process and in the server: the soft \
                  open-files limit is raised to the hard one when needed."
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Pairs)]
    mode: Mode,
    /// The servers each round runs against, in this order: `daemon`, `ceiling` (the same
    /// transport with no auth, storage or encryption), or both (`daemon,ceiling`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "daemon")]
    servers: Vec<Server>,
    /// Rounds: each runs the workload once against each of `--servers`, a fresh server each
    /// time. With more than one run, a table of every figure per round, medians and ratios
    /// ends the report.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The daemon binary to start.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_indaba"))]
    bin: PathBuf,
    /// Target a daemon already running on loopback (`ws://127.0.0.1:8765`) instead.
    #[arg(long)]
    url: Option<String>,
    /// With `--url`: the HS256 secret the daemon verifies tokens with.
    #[arg(long, requires = "url")]
    secret: Option<String>,
    /// With `--url`: the daemon's dev-mode data dir, whose `jwt_secret` signs the tokens.
    #[arg(long, requires = "url", conflicts_with = "secret")]
    data_dir: Option<PathBuf>,
    /// With `--url`: the daemon's process id, for its CPU and memory numbers.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// With `--url`, broadcast mode: the daemon's `service.shared_secret`.
    #[arg(long, requires = "url")]
    service_secret: Option<String>,
    /// Extra environment for the started daemon (`INDABA_LIMITS__OUTBOUND_BUFFER=64`); wins
    /// over the lifted limits. Repeatable.
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    server_env: Vec<String>,
    /// First user id; each run uses ids from here up (round r from base + r × the users a run
    /// needs). Use a fresh base per invocation against `--url`.
    #[arg(long, default_value_t = 1)]
    user_base: u64,

    /// pairs: sender/receiver pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// pairs: messages per sender (default 2000); group: per member (default 20).
    #[arg(long)]
    messages: Option<u64>,
    /// pairs, group, broadcast: message text size in bytes (at least 31: the stamp is that
    /// long).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// pairs, closed loop: most unacknowledged messages per sender.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// pairs, open loop: total messages/s across all senders, sent on a schedule; group: the
    /// same across all members (default 100).
    #[arg(long)]
    rate: Option<f64>,
    /// pairs, group: seconds the send phase may take at most.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// pairs, group: seconds to wait for the last deliveries once every sender is done;
    /// broadcast: for the last user to have each broadcast.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,

    /// group: members of the conversation, each on one socket (the contract allows 100).
    #[arg(long, default_value_t = 100)]
    members: usize,

    /// idle: sockets to open (default 20,000); broadcast: users connected, one socket each,
    /// who receive every broadcast (default 10,000).
    #[arg(long)]
    sockets: Option<u64>,
    /// idle: distinct users owning them (round-robin); default one user per socket.
    #[arg(long)]
    users: Option<u64>,
    /// idle: seconds to hold the sockets open.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// idle, broadcast: connects in flight at once. Above the daemon's listen backlog a burst
    /// overflows the accept queue and the dropped SYNs are retried after 1 s.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// idle, broadcast: source addresses 127.0.0.1, 127.0.0.2, … the sockets are spread over
    /// (each has its own ephemeral port range).
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,

    /// broadcast: measured broadcasts per run.
    #[arg(long, default_value_t = 5)]
    broadcasts: u64,
    /// broadcast: unmeasured broadcasts first. The daemon creates each user's one-to-one
    /// conversation with the sender on the first one; a service broadcasting daily has them.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// broadcast: each user also holds a `/ws/notifications/` socket, where the first
    /// broadcast announces their new conversation (`conversation_updated`) and every broadcast
    /// brings a `notification` and an `unread_count`. Use `--warmup 0` to measure the first.
    #[arg(long)]
    notify: bool,

    /// Internal: run as the ceiling server (the generator starts itself this way).
    #[arg(long, hide = true)]
    serve_ceiling: bool,
    /// Internal: the ceiling's listen address.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// `cargo bench` passes `--bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Sender/receiver pairs exchanging messages.
    Pairs,
    /// Many idle authenticated sockets.
    Idle,
    /// One large group conversation, every member sending.
    Group,
    /// Service broadcasts to many connected users.
    Broadcast,
}

/// What a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Server {
    /// The indaba daemon (`--bin`, or `--url`).
    Daemon,
    /// The no-storage ceiling (`benches/load/ceiling.rs`), in a process of its own.
    Ceiling,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Daemon => "daemon",
            Server::Ceiling => "ceiling",
        }
    }
}

impl Args {
    fn check(&self) -> Result<(), String> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} must be a positive number of seconds"))
            }
        };
        positive("timeout", self.timeout)?;
        positive("drain", self.drain)?;
        positive("hold", self.hold)?;
        if self.pairs == 0 || self.messages() == 0 || self.window == 0 {
            return Err("--pairs, --messages and --window must be at least 1".into());
        }
        if self.messages() >= 100_000_000 {
            return Err("--messages must be below 100000000 (8-digit sequence numbers)".into());
        }
        if self.size < Stamp::TEXT_LEN {
            return Err(format!("--size must be at least {}", Stamp::TEXT_LEN));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("--rate must be a positive number of messages/s".into());
        }
        if self.sockets() == 0 || self.users == Some(0) || self.concurrency == 0 {
            return Err("--sockets, --users and --concurrency must be at least 1".into());
        }
        if self.source_addrs == 0 || self.source_addrs > 254 {
            return Err("--source-addrs must be between 1 and 254".into());
        }
        if !(2..=100).contains(&self.members) {
            return Err("--members must be 2 to 100 (the contract's largest conversation)".into());
        }
        if self.broadcasts == 0 || self.broadcasts + self.warmup >= 100_000_000 {
            return Err("--broadcasts must be 1 to 99999999 with --warmup".into());
        }
        if self.rounds == 0 || self.servers.is_empty() {
            return Err("--rounds and --servers need at least one".into());
        }
        Ok(())
    }

    /// `--messages`, or the mode's default.
    fn messages(&self) -> u64 {
        self.messages.unwrap_or(match self.mode {
            Mode::Group => 20,
            _ => 2000,
        })
    }

    /// `--sockets`, or the mode's default.
    fn sockets(&self) -> u64 {
        self.sockets.unwrap_or(match self.mode {
            Mode::Broadcast => 10_000,
            _ => 20_000,
        })
    }

    /// `--rate`, or the mode's default (pairs: none, the closed loop).
    fn rate(&self) -> Option<f64> {
        match self.mode {
            Mode::Group => Some(self.rate.unwrap_or(100.0)),
            _ => self.rate,
        }
    }

    /// Sockets this process holds at once.
    fn sockets_needed(&self) -> u64 {
        match self.mode {
            Mode::Pairs => 2 * self.pairs as u64,
            Mode::Idle => self.sockets(),
            // `--notify`: a notification socket per user besides the chat socket.
            Mode::Broadcast => self.sockets() * if self.notify { 2 } else { 1 },
            Mode::Group => self.members as u64,
        }
    }

    /// Distinct user ids one run uses.
    fn users_per_run(&self) -> u64 {
        match self.mode {
            Mode::Pairs => 2 * self.pairs as u64,
            Mode::Idle => self.users.unwrap_or(self.sockets()).min(self.sockets()),
            Mode::Group => self.members as u64,
            // The recipients and the sender.
            Mode::Broadcast => self.sockets() + 1,
        }
    }
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value)
}

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if args.serve_ceiling {
        ceiling::serve(args.listen).map(|()| true)
    } else {
        run(&args)
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("load: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen mode `--rounds` times against each of `--servers`, alternating; `Ok(false)`
/// when a run completed but found problems.
fn run(args: &Args) -> Result<bool, String> {
    args.check()?;
    raise_fd_limit(args.sockets_needed())?;
    let mut comparison = compare::Comparison::new(args);
    let mut clean = true;
    for round in 0..args.rounds {
        for &server in &args.servers {
            if comparison.runs() > 0 {
                println!();
            }
            if args.rounds > 1 || args.servers.len() > 1 {
                println!(
                    "#### round {} of {}: {}",
                    round + 1,
                    args.rounds,
                    server.name()
                );
            }
            let (figures, run_clean) = run_once(args, server, round)?;
            clean &= run_clean;
            comparison.add(server, round, figures);
        }
    }
    comparison.print();
    Ok(clean)
}

/// One run of the mode against a fresh `server`: its report printed, its figures returned.
fn run_once(args: &Args, server: Server, round: usize) -> Result<(Vec<Figure>, bool), String> {
    let user_base = args.user_base + round as u64 * args.users_per_run();
    let mut target = Target::open(args, server, user_base)?;
    // A runtime per run: when it is dropped every socket of the run is closed, before the
    // next server starts.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let outcome = match args.mode {
        Mode::Pairs => create_pairs(&target, args.pairs).and_then(|pairs| {
            let report = runtime.block_on(pairs::run(&target, args, &pairs))?;
            report.print(args, &target);
            Ok((report.figures(), report.clean()))
        }),
        Mode::Idle => runtime.block_on(idle::run(&target, args)).map(|report| {
            report.print(args, &target);
            (report.figures(), report.clean())
        }),
        Mode::Group => create_group(&target, args.members).and_then(|group| {
            let report = runtime.block_on(group::run(&target, args, &group))?;
            report.print(args, &target);
            Ok((report.figures(), report.clean()))
        }),
        Mode::Broadcast => runtime
            .block_on(broadcast::run(&target, args))
            .map(|report| {
                report.print(args, &target);
                (report.figures(), report.clean())
            }),
    };
    drop(runtime);
    // Stopped whatever the outcome, before the next run or the error.
    let server_ok = target.finish();
    let (figures, clean) = outcome?;
    Ok((figures, clean && server_ok))
}

/// Raises this process's soft open-files limit to the hard one when it is below what the run
/// needs (the servers it starts inherit it); refuses to start when even the hard limit is too
/// low.
fn raise_fd_limit(sockets: u64) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let need = sockets + SPARE_FDS;
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current.is_none_or(|soft| soft >= need) {
        return Ok(());
    }
    if maximum.is_some_and(|hard| hard < need) {
        return Err(format!(
            "the open-files limit is {} (hard), this run needs at least {need} (one per \
             socket, in this process and in the server it starts): open fewer sockets",
            maximum.unwrap_or_default()
        ));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: maximum,
            maximum,
        },
    )
    .map_err(|e| format!("raising the open-files limit to {need}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// Where the load goes, and how to sign tokens for it.
struct Target {
    server: Server,
    addr: SocketAddr,
    minter: TokenMinter,
    /// The service API's shared secret, for broadcasts.
    service_secret: Option<String>,
    /// The server process, when its numbers can be read from /proc.
    pid: Option<u32>,
    /// Set when this run started the server.
    process: Option<ServerProcess>,
    /// This run's first user id.
    user_base: u64,
}

impl Target {
    fn open(args: &Args, server: Server, user_base: u64) -> Result<Self, String> {
        if server == Server::Ceiling {
            let process = ServerProcess::start_ceiling()?;
            return Ok(Target {
                server,
                addr: process.addr,
                // The ceiling reads the claims without checking the signature.
                minter: TokenMinter::new(b"the ceiling checks no signature", "user_id"),
                service_secret: Some("the ceiling checks no secret".into()),
                pid: Some(process.child.id()),
                process: Some(process),
                user_base,
            });
        }
        let Some(url) = &args.url else {
            let service_secret = random_secret()?;
            let mut env = server_env(args)?;
            env.insert(
                0,
                (
                    "INDABA_SERVICE__SHARED_SECRET".into(),
                    service_secret.clone(),
                ),
            );
            let process = ServerProcess::start_daemon(&args.bin, &env)?;
            let secret = read_secret(process.data_dir.as_ref().map(|d| d.path()))?;
            return Ok(Target {
                server,
                addr: process.addr,
                minter: TokenMinter::new(secret.as_bytes(), "user_id"),
                service_secret: Some(service_secret),
                pid: Some(process.child.id()),
                process: Some(process),
                user_base,
            });
        };
        let secret = match (&args.secret, &args.data_dir) {
            (Some(secret), _) => secret.clone(),
            (None, Some(dir)) => read_secret(Some(dir))?,
            (None, None) => return Err("--url needs --secret or --data-dir to mint tokens".into()),
        };
        Ok(Target {
            server,
            addr: loopback_addr(url)?,
            minter: TokenMinter::new(secret.as_bytes(), "user_id"),
            service_secret: args.service_secret.clone(),
            pid: args.pid,
            process: None,
            user_base,
        })
    }

    fn token(&self, user: u64) -> Result<String, String> {
        self.minter
            .mint(user, None, TokenType::Access, TOKEN_TTL)
            .map_err(|e| format!("minting a token: {e}"))
    }

    fn chat_url(&self, token: &str) -> String {
        self.ws_url(Socket::Chat, token)
    }

    fn ws_url(&self, socket: Socket, token: &str) -> String {
        let path = match socket {
            Socket::Chat => "/ws/chat/",
            Socket::Notifications => "/ws/notifications/",
        };
        format!("ws://{}{path}?token={token}", self.addr)
    }

    fn sample(&self) -> Option<ProcSample> {
        self.pid.and_then(|pid| ProcSample::read(&pid.to_string()))
    }

    /// Stops the server this run started; false if it had died or would not stop.
    fn finish(&mut self) -> bool {
        match self.process.take() {
            Some(process) => process.stop(),
            None => true,
        }
    }

    fn describe(&self) -> String {
        match &self.process {
            Some(p) => format!("{}, listening on {}", p.describe(), self.addr),
            None => format!("running daemon at {}", self.addr),
        }
    }
}

/// A service secret for the daemon this run starts (the daemon wants 16 characters or more).
fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("random service secret: {e}"))?;
    Ok(format!("load-{}", hex::encode(bytes)))
}

/// `ws://127.0.0.1:8765[/...]` → its socket address; anything but loopback is refused.
fn loopback_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("--url `{url}` must start with ws://"))?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = host_port
        .parse()
        .map_err(|_| format!("--url `{url}`: expected ws://IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("--url `{url}` is not a loopback address: refused"));
    }
    Ok(addr)
}

fn read_secret(dir: Option<&Path>) -> Result<String, String> {
    let path = dir.ok_or("the daemon has no data dir")?.join("jwt_secret");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Limits lifted so the daemon measures throughput, not its abuse protection; then the
/// `--server-env` overrides.
fn server_env(args: &Args) -> Result<Vec<(String, String)>, String> {
    let connections = (2 * args.sockets_needed()).max(100_000);
    let mut env = vec![
        (
            "INDABA_LIMITS__MESSAGES_PER_SECOND".into(),
            "1000000".into(),
        ),
        ("INDABA_LIMITS__MESSAGES_BURST".into(), "1000000".into()),
        (
            "INDABA_LIMITS__MAX_CONNECTIONS".into(),
            connections.to_string(),
        ),
        ("INDABA_LIMITS__OUTBOUND_BUFFER".into(), "65536".into()),
    ];
    for pair in &args.server_env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--server-env `{pair}`: expected KEY=VALUE"))?;
        env.push((key.to_owned(), value.to_owned()));
    }
    Ok(env)
}

/// A server started by this run (the daemon, or the ceiling); killed on drop if still running.
struct ServerProcess {
    server: Server,
    bin: PathBuf,
    child: Child,
    addr: SocketAddr,
    /// The daemon's fresh data dir, removed when the run ends.
    data_dir: Option<tempfile::TempDir>,
    log: Arc<Mutex<ServerLog>>,
}

/// What the server wrote to stderr: the last lines, and its warnings and errors.
#[derive(Default)]
struct ServerLog {
    tail: VecDeque<String>,
    notable: Vec<String>,
    notable_count: usize,
}

impl ServerLog {
    const TAIL: usize = 30;
    const NOTABLE: usize = 20;

    fn push(&mut self, line: String) {
        if line.contains(" WARN ")
            || line.contains(" ERROR ")
            || line.contains("panicked")
            || line.starts_with("ceiling: ")
        {
            self.notable_count += 1;
            if self.notable.len() < Self::NOTABLE {
                self.notable.push(line.clone());
            }
        }
        if self.tail.len() == Self::TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

impl ServerProcess {
    /// Starts `bin` in dev mode on an ephemeral loopback port and waits until it listens.
    fn start_daemon(bin: &Path, env: &[(String, String)]) -> Result<ServerProcess, String> {
        if !bin.exists() {
            return Err(format!(
                "{} does not exist: run `cargo build --release` or pass --bin",
                bin.display()
            ));
        }
        let data_dir = tempfile::Builder::new()
            .prefix("indaba-load-")
            .tempdir()
            .map_err(|e| format!("temp data dir: {e}"))?;
        let mut command = Command::new(bin);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .env_remove("RUST_LOG")
            .env_remove("INDABA_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(Server::Daemon, bin, command, Some(data_dir))
    }

    /// Starts this very binary as the ceiling on an ephemeral loopback port.
    /// It inherits the open-files limit this process raised.
    fn start_ceiling() -> Result<ServerProcess, String> {
        let bin =
            std::env::current_exe().map_err(|e| format!("this generator's own binary: {e}"))?;
        let mut command = Command::new(&bin);
        command
            .arg("--serve-ceiling")
            .arg("--listen")
            .arg("127.0.0.1:0");
        Self::spawn(Server::Ceiling, &bin, command, None)
    }

    fn spawn(
        server: Server,
        bin: &Path,
        mut command: Command,
        data_dir: Option<tempfile::TempDir>,
    ) -> Result<ServerProcess, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("stderr was piped above");
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let listening = follow_log(stderr, log.clone());
        let mut process = ServerProcess {
            server,
            bin: bin.to_owned(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            log,
        };
        match listening.recv_timeout(START_TIMEOUT) {
            Ok(addr) => process.addr = addr,
            Err(_) => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                return Err(format!(
                    "the {} did not report a listen address within {START_TIMEOUT:?}:\n{}",
                    server.name(),
                    process.log_tail()
                ));
            }
        }
        Ok(process)
    }

    fn describe(&self) -> String {
        match &self.data_dir {
            Some(dir) => format!(
                "{} (pid {}, fresh data dir {})",
                self.bin.display(),
                self.child.id(),
                dir.path().display()
            ),
            None => format!(
                "ceiling: {} --serve-ceiling (pid {})",
                self.bin.display(),
                self.child.id()
            ),
        }
    }

    fn log_tail(&self) -> String {
        let log = self
            .log
            .lock()
            .expect("log lock poisoned by a panicking reader");
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM and wait (SIGKILL after 20 s); true if it exited successfully.
    fn terminate(&mut self) -> bool {
        let name = self.server.name();
        let started = Instant::now();
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        match wait_exit(&mut self.child, Duration::from_secs(20)) {
            Some(status) if signalled => {
                let took = started.elapsed().as_secs_f64();
                println!(
                    "{:<16} {status}, {took:.2} s after SIGTERM",
                    format!("{name} stop")
                );
                status.success()
            }
            _ => {
                println!(
                    "{:<16} did not exit after SIGTERM: killed",
                    format!("{name} stop")
                );
                false
            }
        }
    }

    /// Stops the server. Prints how it went; false if the server
    /// had already died, or did not exit cleanly.
    fn stop(mut self) -> bool {
        let name = self.server.name();
        let healthy = match self.child.try_wait() {
            Ok(Some(status)) => {
                println!("{name:<16} DIED DURING THE RUN: {status}");
                false
            }
            _ => self.terminate(),
        };
        let log = self
            .log
            .lock()
            .expect("log lock poisoned by a panicking reader");
        if log.notable_count > 0 {
            println!(
                "{:<16} {} WARN/ERROR lines, first ones:",
                format!("{name} log"),
                log.notable_count
            );
            for line in &log.notable {
                println!("  {line}");
            }
        }
        if !healthy {
            println!("{name} log tail:");
            for line in &log.tail {
                println!("  {line}");
            }
        }
        healthy
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Reads the server's stderr for its whole life (a full pipe would stall it), keeping the log
/// and announcing the address of the "listening on http://ADDR" line.
fn follow_log(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<ServerLog>>,
) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let addr = line
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok());
            log.lock()
                .expect("log lock poisoned by a panicking reader")
                .push(line);
            if let Some(addr) = addr {
                let _ = tx.send(addr);
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------------
// /proc numbers
// ---------------------------------------------------------------------------------------------

/// A process's CPU time and memory, from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// VmRSS, KiB.
    rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    hwm_kib: u64,
}

impl ProcSample {
    /// `pid` is a number or `self`.
    fn read(pid: &str) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields are counted after the last
        // `)`, where field 3 (state) starts; utime and stime are fields 14 and 15.
        let mut fields = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(ProcSample {
            cpu_ticks: utime + stime,
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }

    /// CPU seconds used between `self` and the later sample `after`.
    fn cpu_secs_until(&self, after: &ProcSample) -> f64 {
        after.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / clock_ticks_per_sec()
    }
}

/// The whole machine's CPU time lost to others, from the `cpu` line of /proc/stat: time the
/// hypervisor gave to other guests (steal) and idle time with I/O outstanding (iowait). A run
/// whose latencies jump while these do met the VM, not the daemon.
#[derive(Debug, Clone, Copy)]
struct MachineSample {
    iowait_ticks: u64,
    steal_ticks: u64,
}

impl MachineSample {
    fn read() -> Option<MachineSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(MachineSample {
            iowait_ticks: *fields.get(4)?,
            steal_ticks: *fields.get(7)?,
        })
    }

    /// Seconds of steal and of iowait between `self` and the later `after`.
    fn secs_until(&self, after: &MachineSample) -> (f64, f64) {
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / clock_ticks_per_sec();
        (
            secs(self.steal_ticks, after.steal_ticks),
            secs(self.iowait_ticks, after.iowait_ticks),
        )
    }

    /// "steal S s, iowait W s" between `self` and the later `after`.
    fn describe_until(&self, after: &MachineSample) -> String {
        let (steal, iowait) = self.secs_until(after);
        format!("steal {steal:.2} s, iowait {iowait:.2} s (CPU time of all cores)")
    }
}

/// `getconf CLK_TCK`, 100 if that fails (the value on every Linux port that matters).
fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `n` over `secs`, when there was time to divide by.
fn per_sec(n: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| n as f64 / secs)
}

/// The server's, the generator's and the machine's figures at the start of a measured window.
struct Window {
    server: Option<ProcSample>,
    generator: Option<ProcSample>,
    machine: Option<MachineSample>,
}

impl Window {
    fn open(target: &Target) -> Window {
        Window {
            server: target.sample(),
            generator: ProcSample::read("self"),
            machine: MachineSample::read(),
        }
    }

    fn close(self, target: &Target) -> Samples {
        Samples {
            server: self.server.zip(target.sample()),
            generator: self.generator.zip(ProcSample::read("self")),
            machine: self.machine.zip(MachineSample::read()),
        }
    }
}

/// Before-and-after figures of the server, the generator and the machine over a window.
struct Samples {
    server: Option<(ProcSample, ProcSample)>,
    generator: Option<(ProcSample, ProcSample)>,
    machine: Option<(MachineSample, MachineSample)>,
}

impl Samples {
    /// The server's CPU time per item (message, delivery, socket), in µs.
    fn server_cpu_per_item_us(&self, items: u64) -> Option<f64> {
        let (before, after) = self.server?;
        (items > 0).then(|| before.cpu_secs_until(&after) * 1e6 / items as f64)
    }

    fn generator_cpu_secs(&self) -> Option<f64> {
        self.generator
            .map(|(before, after)| before.cpu_secs_until(&after))
    }

    /// The lines every report ends with: the server's CPU per `item` and peak memory, the
    /// generator's CPU, the machine's steal and iowait.
    fn print(&self, items: u64, item: &str) {
        match (self.server, self.server_cpu_per_item_us(items)) {
            (Some((before, after)), per_item) => {
                println!(
                    "server CPU       {:.2} s = {:.2} µs per {item} ({items})",
                    before.cpu_secs_until(&after),
                    per_item.unwrap_or_default()
                );
                println!("server peak RSS  {:.1} MiB (VmHWM)", mib(after.hwm_kib));
            }
            (None, _) => println!("server CPU/RSS   unknown (pass --pid with --url)"),
        }
        if let Some(cpu) = self.generator_cpu_secs() {
            println!("generator CPU    {cpu:.2} s (this process, same machine)");
        }
        if let Some((before, after)) = self.machine {
            println!("machine          {}", before.describe_until(&after));
        }
    }
}

/// The message ids one socket received, checked for repeats and order.
#[derive(Debug, Default)]
struct Arrivals {
    ids: HashSet<u64>,
    highest: u64,
    duplicates: u64,
    /// Ids below one received before: the server numbers and delivers a conversation's
    /// messages in one order.
    out_of_order: u64,
}

impl Arrivals {
    /// Whether `id` is new here; a repeat counts as a duplicate.
    fn first(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            self.duplicates += 1;
            return false;
        }
        if id < self.highest {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(id);
        true
    }
}

/// What a messaging run checks besides its numbers: every acknowledged message delivered
/// once, in order, and nothing else gone wrong.
#[derive(Debug, Default)]
struct Checks {
    /// Acknowledged, not received (by a recipient that should have) within --drain.
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    /// `new_message`s not sent by this run (an earlier run's queue, against `--url`).
    foreign: u64,
    errors: Tally,
    closes: Tally,
    timed_out: bool,
}

impl Checks {
    fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.errors.total() == 0
            && self.closes.total() == 0
            && !self.timed_out
    }

    /// Its report lines; `extra` are the mode's own counts, shown after reordering when not 0.
    fn print(&self, args: &Args, extra: &[(&str, u64)]) {
        println!(
            "lost             {} (acked, not received within --drain {} s)",
            self.lost, args.drain
        );
        println!("duplicated       {}", self.duplicates);
        println!("out of order     {}", self.out_of_order);
        for (label, n) in extra.iter().filter(|(_, n)| *n > 0) {
            println!("{label:<16} {n}");
        }
        if self.foreign > 0 {
            println!(
                "foreign          {} (messages of earlier runs)",
                self.foreign
            );
        }
        println!("errors           {}", self.errors.describe());
        println!("closed sockets   {}", self.closes.describe());
        if self.timed_out {
            println!(
                "TIMED OUT        the send phase hit --timeout {} s",
                args.timeout
            );
        }
    }
}

/// The next text frame of a socket, skipping other frames; `None` once `stop` fires or the
/// socket ends (then `closed` says why).
async fn next_text<S>(
    stream: &mut S,
    stop: &CancellationToken,
    closed: &mut Option<String>,
) -> Option<tokio_tungstenite::tungstenite::Utf8Bytes>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return None,
            frame = stream.next() => frame,
        };
        match frame_text(frame) {
            Ok(Some(text)) => return Some(text),
            Ok(None) => {}
            Err(reason) => {
                *closed = Some(reason);
                return None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets and events
// ---------------------------------------------------------------------------------------------

/// Which endpoint a socket of [`connect_spread`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    /// `/ws/chat/`: connected once `connection_established` arrives.
    Chat,
    /// `/ws/notifications/`, which greets with nothing: connected once it answers a ping.
    Notifications,
}

/// A WebSocket handshake over a fresh TCP connection from `source` (if given).
async fn open_ws(
    url: &str,
    server: SocketAddr,
    source: Option<IpAddr>,
    config: WebSocketConfig,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Connects a `/ws/chat/` socket (from `source` if given) and waits for
/// `connection_established`.
async fn connect_chat(
    url: &str,
    server: SocketAddr,
    source: Option<IpAddr>,
    config: WebSocketConfig,
) -> Result<Ws, String> {
    connect_socket(Socket::Chat, url, server, source, config).await
}

/// Connects a socket on `endpoint` (from `source` if given) and returns it once the daemon has
/// registered it: `/ws/chat/` greets with `connection_established`; `/ws/notifications/`
/// greets with nothing, so it is asked for a `pong`.
async fn connect_socket(
    endpoint: Socket,
    url: &str,
    server: SocketAddr,
    source: Option<IpAddr>,
    config: WebSocketConfig,
) -> Result<Ws, String> {
    let greeting = match endpoint {
        Socket::Chat => "\"connection_established\"",
        Socket::Notifications => "\"pong\"",
    };
    let attempt = async {
        let mut ws = open_ws(url, server, source, config).await?;
        if endpoint == Socket::Notifications {
            ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
                .await
                .map_err(|e| format!("ping: {e}"))?;
        }
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains(greeting) => Ok(ws),
            Some(Ok(Message::Close(frame))) => Err(format!("closed: {}", close_reason(frame))),
            Some(Ok(other)) => Err(format!("unexpected first frame: {other}")),
            Some(Err(e)) => Err(format!("read: {e}")),
            None => Err(format!("closed before {greeting}")),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no {greeting} within {CONNECT_TIMEOUT:?}")))
}

/// Opens a busy socket for each of `users`, in order; fails on the first that does not connect.
async fn connect_users(target: &Target, users: &[u64]) -> Result<Vec<Ws>, String> {
    // tungstenite zero-fills `read_buffer_size` bytes before every read (128 KiB by
    // default): that memset alone was 30% of the generator's CPU. Events are ~300 B.
    let config = WebSocketConfig::default().read_buffer_size(8192);
    let mut tasks = Vec::with_capacity(users.len());
    for &user in users {
        let url = target.chat_url(&target.token(user)?);
        let server = target.addr;
        tasks.push(tokio::spawn(async move {
            connect_chat(&url, server, None, config)
                .await
                .map_err(|e| format!("user {user}: {e}"))
        }));
    }
    let mut sockets = Vec::with_capacity(users.len());
    for task in tasks {
        sockets.push(task.await.map_err(|e| format!("connect task: {e}"))??);
    }
    Ok(sockets)
}

/// How opening many sockets went.
struct Connects {
    requested: u64,
    established: u64,
    failures: Tally,
    connect_s: f64,
}

impl Connects {
    fn all(&self) -> bool {
        self.established == self.requested
    }

    fn per_sec(&self) -> Option<f64> {
        per_sec(self.established, self.connect_s)
    }

    fn print(&self) {
        println!(
            "connected        {} in {:.2} s = {:.0} sockets/s",
            self.established,
            self.connect_s,
            self.per_sec().unwrap_or_default()
        );
        println!("failed           {}", self.failures.describe());
    }
}

/// What opening many sockets gave, and the task each socket went on to.
struct Spread<T> {
    connects: Connects,
    /// One per socket asked for: `None` for one that did not connect.
    tasks: Vec<tokio::task::JoinHandle<Option<T>>>,
}

/// Opens `sockets` quiet sockets on `endpoint` (socket i for user `users[i % users.len()]`),
/// `--concurrency` at a time, spread over `--source-addrs` source addresses; each connected
/// socket is handed to `then`, in a task of its own, which the answer holds. Returns once
/// every connect has succeeded or failed (each is bounded by [`CONNECT_TIMEOUT`]).
async fn connect_spread<T, F, Fut>(
    target: &Target,
    args: &Args,
    endpoint: Socket,
    users: &[u64],
    sockets: u64,
    then: F,
) -> Result<Spread<T>, String>
where
    T: Send + 'static,
    F: Fn(u64, Ws) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let urls: Vec<Arc<str>> = users
        .iter()
        .map(|user| Ok(target.ws_url(endpoint, &target.token(*user)?).into()))
        .collect::<Result<_, String>>()?;
    let sources: Vec<IpAddr> = (1..=args.source_addrs)
        .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .collect();
    // Small buffers: these sockets carry a frame now and then.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let in_flight = Arc::new(Semaphore::new(args.concurrency));
    let (results, mut connected) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sockets as usize);
    for i in 0..sockets {
        let url = urls[(i % urls.len() as u64) as usize].clone();
        let source = sources[(i % sources.len() as u64) as usize];
        let (server, then) = (target.addr, then.clone());
        let (in_flight, results) = (in_flight.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            let permit = in_flight.acquire_owned().await;
            let outcome = connect_socket(endpoint, &url, server, Some(source), config).await;
            drop(permit);
            match outcome {
                Ok(ws) => {
                    let _ = results.send(Ok(()));
                    Some(then(i, ws).await)
                }
                Err(e) => {
                    let _ = results.send(Err(e));
                    None
                }
            }
        }));
    }
    drop(results);
    // One result per socket; the senders live on in the tasks, so the channel stays open.
    let mut failures = Tally::default();
    let mut established = 0;
    for _ in 0..sockets {
        match connected.recv().await {
            Some(Ok(())) => established += 1,
            Some(Err(e)) => failures.add(e),
            None => break,
        }
    }
    Ok(Spread {
        connects: Connects {
            requested: sockets,
            established,
            failures,
            connect_s: started.elapsed().as_secs_f64(),
        },
        tasks,
    })
}

/// A text frame's payload; `Ok(None)` for frames to skip (pings, binary); `Err` with a
/// reason once the socket has ended.
fn frame_text(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>, String> {
    match frame {
        Some(Ok(Message::Text(text))) => Ok(Some(text)),
        Some(Ok(Message::Close(frame))) => Err(close_reason(frame)),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(format!("read: {e}")),
        None => Err("connection ended".into()),
    }
}

fn close_reason(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
        None => "close without code".into(),
    }
}

/// The few fields of a server event this generator reads; everything else is skipped.
/// Borrowed strings: the fields read here never need JSON escapes.
#[derive(Debug, Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message_id: Option<u64>,
    sender_id: Option<u64>,
    client_id: Option<&'a str>,
    text: Option<&'a str>,
    code: Option<&'a str>,
}

/// Counts occurrences of short labels (error codes, close reasons).
#[derive(Debug, Default, Clone)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, label: impl Into<String>) {
        *self.0.entry(label.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (label, n) in other.0 {
            *self.0.entry(label).or_default() += n;
        }
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            return "0".into();
        }
        let parts: Vec<String> = self.0.iter().map(|(l, n)| format!("{n} × {l}")).collect();
        format!("{} ({})", self.total(), parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps in messages
// ---------------------------------------------------------------------------------------------

/// Microseconds since the start of the run, shared by every task of this process.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }

    fn at_us(&self, us: u64) -> Instant {
        self.0 + Duration::from_micros(us)
    }
}

/// The stamp every message carries, in its text and its `client_id`:
/// text `"{tag} {seq:08} {sent_us:012} xxxx…"`, client_id `"{tag}-{seq:08}-{sent_us:012}"`.
/// The 8-character tag is random per run, so messages of earlier runs are recognised.
struct Stamp;

impl Stamp {
    const TAG_LEN: usize = 8;
    const SEQ_LEN: usize = 8;
    const TIME_LEN: usize = 12;
    /// `tag seq time ` in the text.
    const TEXT_LEN: usize = Self::TAG_LEN + Self::SEQ_LEN + Self::TIME_LEN + 3;
    const SEQ_AT: usize = Self::TAG_LEN + 1;
    const TIME_AT: usize = Self::SEQ_AT + Self::SEQ_LEN + 1;

    fn new_tag() -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{:08x}", (nanos ^ (nanos >> 32)) as u32)
    }

    /// A message text of `len` bytes stamped with `seq` and `sent_us`.
    fn text(tag: &str, seq: u64, sent_us: u64, len: usize) -> String {
        let mut text = format!("{tag} {seq:08} {sent_us:012} ");
        text.extend(std::iter::repeat_n('x', len.saturating_sub(text.len())));
        text
    }

    /// `(seq, sent_us)` from a text or client_id of this run (tag `tag`), else `None`.
    fn parse(stamped: &str, tag: &str) -> Option<(u64, u64)> {
        if stamped.get(..Self::TAG_LEN)? != tag {
            return None;
        }
        let number = |at: usize, len: usize| stamped.get(at..at + len)?.parse().ok();
        Some((
            number(Self::SEQ_AT, Self::SEQ_LEN)?,
            number(Self::TIME_AT, Self::TIME_LEN)?,
        ))
    }
}

/// A `chat_message` serialized once; each send copies it and writes the stamp digits in place.
struct Template {
    bytes: Vec<u8>,
    /// Where the sequence number and the timestamp go, in the client_id and in the text.
    seq_at: [usize; 2],
    time_at: [usize; 2],
}

impl Template {
    /// A message in `conversation` (a group's when `receiver` is `None`).
    fn new(tag: &str, conversation: u64, receiver: Option<u64>, text_len: usize) -> Template {
        let seq = "0".repeat(Stamp::SEQ_LEN);
        let time = "0".repeat(Stamp::TIME_LEN);
        let receiver = receiver.map_or_else(String::new, |r| format!(r#""receiver_id":{r},"#));
        let mut bytes = format!(
            r#"{{"type":"chat_message","conversation_id":{conversation},{receiver}"client_id":"{tag}-"#
        )
        .into_bytes();
        let cid_seq = bytes.len();
        let cid_time = cid_seq + Stamp::SEQ_LEN + 1;
        bytes.extend_from_slice(format!(r#"{seq}-{time}","text":""#).as_bytes());
        let text_start = bytes.len();
        bytes.extend_from_slice(Stamp::text(tag, 0, 0, text_len).as_bytes());
        bytes.extend_from_slice(br#""}"#);
        Template {
            bytes,
            seq_at: [cid_seq, text_start + Stamp::SEQ_AT],
            time_at: [cid_time, text_start + Stamp::TIME_AT],
        }
    }

    fn render(&self, seq: u64, sent_us: u64) -> Message {
        let mut bytes = self.bytes.clone();
        for at in self.seq_at {
            put_digits(&mut bytes[at..at + Stamp::SEQ_LEN], seq);
        }
        for at in self.time_at {
            put_digits(&mut bytes[at..at + Stamp::TIME_LEN], sent_us);
        }
        let text = String::from_utf8(bytes).expect("the template and its digits are ASCII");
        Message::Text(text.into())
    }
}

/// Writes `value` zero-padded into `out` (which is wide enough: callers bound the values).
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

// ---------------------------------------------------------------------------------------------
// Latency statistics
// ---------------------------------------------------------------------------------------------

/// Sorted latency samples, in microseconds.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut samples: Vec<u64>) -> Latencies {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// Nearest-rank percentile, `q` in 0..=1.
    fn at(&self, q: f64) -> Option<u64> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.0[rank - 1])
    }

    /// Percentile `q` in milliseconds.
    fn ms(&self, q: f64) -> Option<f64> {
        self.at(q).map(|us| us as f64 / 1000.0)
    }

    fn describe(&self, quantiles: &[(&str, f64)]) -> String {
        if self.0.is_empty() {
            return "no samples".into();
        }
        let parts: Vec<String> = quantiles
            .iter()
            .filter_map(|(label, q)| Some(format!("{label} {}", ms(self.at(*q)?))))
            .collect();
        parts.join("  ")
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Mode `pairs`
// ---------------------------------------------------------------------------------------------

/// One sender, one receiver and their conversation.
#[derive(Debug, Clone, Copy)]
struct Pair {
    sender: u64,
    receiver: u64,
    conversation: u64,
}

/// Creates each pair's conversation over REST (blocking, before the load starts).
fn create_pairs(target: &Target, n: usize) -> Result<Vec<Pair>, String> {
    let http = rest_client()?;
    let base = target.user_base;
    (0..n as u64)
        .map(|i| {
            let (sender, receiver) = (base + 2 * i, base + 2 * i + 1);
            Ok(Pair {
                sender,
                receiver,
                conversation: create_conversation(&http, target, sender, &[receiver])?,
            })
        })
        .collect()
}

/// The members of one group conversation and its id.
#[derive(Debug, Clone)]
struct Group {
    members: Vec<u64>,
    conversation: u64,
}

/// Creates the group conversation over REST, its first member the creator.
fn create_group(target: &Target, members: usize) -> Result<Group, String> {
    let members: Vec<u64> = (0..members as u64).map(|i| target.user_base + i).collect();
    let conversation = create_conversation(&rest_client()?, target, members[0], &members[1..])?;
    Ok(Group {
        members,
        conversation,
    })
}

fn rest_client() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// `POST /api/v1/messaging/conversations/` as `creator` with `others`; answers the id.
fn create_conversation(
    http: &reqwest::blocking::Client,
    target: &Target,
    creator: u64,
    others: &[u64],
) -> Result<u64, String> {
    let url = format!("http://{}/api/v1/messaging/conversations/", target.addr);
    let response = http
        .post(&url)
        .bearer_auth(target.token(creator)?)
        .json(&serde_json::json!({ "participants": others }))
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .map_err(|e| format!("POST {url}: {status}, unreadable body: {e}"))?;
    body["id"]
        .as_u64()
        .filter(|_| status.is_success())
        .ok_or_else(|| format!("POST {url}: {status} {body}"))
}

mod pairs {
    use super::*;

    /// State shared by the tasks of one run.
    pub(super) struct Shared {
        pub(super) clock: Clock,
        pub(super) tag: String,
        /// Distinct messages of this run received so far, over all receivers.
        pub(super) delivered: AtomicU64,
        /// Ends the senders' ack readers (send phase over or timed out).
        pub(super) stop_senders: CancellationToken,
        /// Ends the receivers (everything arrived or the drain timed out).
        pub(super) stop_receivers: CancellationToken,
    }

    impl Shared {
        pub(super) fn new() -> Arc<Shared> {
            Arc::new(Shared {
                clock: Clock(Instant::now()),
                tag: Stamp::new_tag(),
                delivered: AtomicU64::new(0),
                stop_senders: CancellationToken::new(),
                stop_receivers: CancellationToken::new(),
            })
        }
    }

    /// When each sender sends.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Pace {
        /// At most this many unacknowledged.
        Window(usize),
        /// One message every `interval_us`, the first at `offset_us` (on the run's clock).
        Schedule { interval_us: f64, offset_us: f64 },
    }

    #[derive(Debug, Default)]
    struct SenderOutcome {
        sent: u64,
        /// When the last message was queued, µs on the run's clock.
        last_send_us: u64,
        /// Each message's delay behind its schedule, µs, indexed by sequence number (open
        /// loop only): what the generator itself added to the latencies.
        lag_us: Vec<u64>,
        acked_ids: Vec<u64>,
        ack_us: Vec<u64>,
        errors: Tally,
        closed: Option<String>,
    }

    #[derive(Debug, Default)]
    struct ReceiverOutcome {
        arrivals: Arrivals,
        e2e_us: Vec<u64>,
        /// The sequence number of each `e2e_us` sample, to take the sender's lag off it.
        seqs: Vec<u64>,
        /// `new_message`s not sent by this run (an earlier run's queue, against `--url`).
        foreign: u64,
        last_receive_us: u64,
        closed: Option<String>,
    }

    /// Everything a pairs run measured.
    pub(super) struct Report {
        pace: Pace,
        elapsed_send_s: f64,
        sent: u64,
        acked: u64,
        delivered: u64,
        delivered_s: f64,
        e2e: Latencies,
        ack: Latencies,
        /// Open loop: each send's delay behind schedule, and the end-to-end latency counted
        /// from the actual send rather than the schedule (that is, without the generator's lag).
        send_lag: Latencies,
        e2e_from_send: Latencies,
        checks: Checks,
        /// Received without an acknowledgement to the sender.
        delivered_unacked: u64,
        samples: Samples,
    }

    pub(super) async fn run(
        target: &Target,
        args: &Args,
        pairs: &[Pair],
    ) -> Result<Report, String> {
        let shared = Shared::new();
        let (senders, receivers) = connect_all(target, pairs).await?;
        let window = Window::open(target);
        // Every sender starts at this moment (open-loop schedules count from it too), a little
        // ahead so that all of them are spawned by then.
        let started_us = shared.clock.now_us() + START_DELAY_US;

        let mut receiver_tasks = Vec::with_capacity(pairs.len());
        for ws in receivers {
            receiver_tasks.push(tokio::spawn(receive(ws, shared.clone())));
        }
        let mut sender_tasks = Vec::with_capacity(pairs.len());
        let mut ticks = Vec::with_capacity(pairs.len());
        for (i, (ws, pair)) in senders.into_iter().zip(pairs).enumerate() {
            let template = Template::new(
                &shared.tag,
                pair.conversation,
                Some(pair.receiver),
                args.size,
            );
            let pace = pace(args.rate(), args.window, started_us, i, pairs.len());
            let (shared, messages) = (shared.clone(), args.messages());
            let (tick, due) = tokio::sync::mpsc::unbounded_channel();
            ticks.push(tick);
            sender_tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(shared.clock.at_us(started_us).into()).await;
                send(ws, template, messages, pace, due, shared).await
            }));
        }
        if args.rate().is_some() {
            let paces: Vec<Pace> = (0..pairs.len())
                .map(|i| pace(args.rate(), args.window, started_us, i, pairs.len()))
                .collect();
            start_pacer(paces, ticks, args.messages(), &shared)?;
        }

        // Send phase, bounded by --timeout: past it, a watchdog stops every sender.
        let watchdog = tokio::spawn({
            let stop = shared.stop_senders.clone();
            let deadline = tokio::time::Instant::now() + secs(args.timeout);
            async move {
                tokio::time::sleep_until(deadline).await;
                stop.cancel();
            }
        });
        let mut sender_outcomes = Vec::with_capacity(pairs.len());
        for task in sender_tasks {
            sender_outcomes.push(task.await.map_err(|e| format!("sender task: {e}"))?);
        }
        let timed_out = shared.stop_senders.is_cancelled();
        watchdog.abort();
        shared.stop_senders.cancel();
        let acked: u64 = sender_outcomes
            .iter()
            .map(|s| s.acked_ids.len() as u64)
            .sum();

        // Drain: wait until every acknowledged message arrived, bounded by --drain.
        let drain_deadline = Instant::now() + secs(args.drain);
        while shared.delivered.load(Ordering::Relaxed) < acked && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(SETTLE).await;
        let samples = window.close(target);
        shared.stop_receivers.cancel();
        let mut receiver_outcomes = Vec::with_capacity(pairs.len());
        for task in receiver_tasks {
            receiver_outcomes.push(task.await.map_err(|e| format!("receiver task: {e}"))?);
        }
        Ok(Report::new(
            pace(args.rate(), args.window, started_us, 0, pairs.len()),
            started_us,
            sender_outcomes,
            receiver_outcomes,
            timed_out,
            samples,
        ))
    }

    /// Starts the open loop's pacing thread for senders `paces`, each told on its `ticks`.
    pub(super) fn start_pacer(
        paces: Vec<Pace>,
        ticks: Vec<tokio::sync::mpsc::UnboundedSender<u64>>,
        messages: u64,
        shared: &Arc<Shared>,
    ) -> Result<(), String> {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("load-pacer".into())
            .spawn(move || pace_senders(&paces, &ticks, messages, &shared))
            .map(drop)
            .map_err(|e| format!("pacer thread: {e}"))
    }

    /// The open loop's clock: sleeps until each message is due, every sender's in turn, and
    /// tells its sender. One thread sleeping in the OS keeps the schedule to tens of µs,
    /// where each sender's own tokio timer fired on the next whole millisecond (a send lag of
    /// 0.9 ms at the median, and bursts of the senders due within the same millisecond).
    fn pace_senders(
        paces: &[Pace],
        ticks: &[tokio::sync::mpsc::UnboundedSender<u64>],
        messages: u64,
        shared: &Shared,
    ) {
        // Offsets are spread within one interval, so going through the senders in order
        // within each sequence number goes through the due times in order.
        for seq in 0..messages {
            for (pace, tick) in paces.iter().zip(ticks) {
                let Pace::Schedule {
                    interval_us,
                    offset_us,
                } = *pace
                else {
                    return;
                };
                if shared.stop_senders.is_cancelled() {
                    return;
                }
                let due_us = (offset_us + seq as f64 * interval_us) as u64;
                let now_us = shared.clock.now_us();
                if due_us > now_us {
                    std::thread::sleep(Duration::from_micros(due_us - now_us));
                }
                // A sender that stopped early has dropped its end.
                let _ = tick.send(seq);
            }
        }
    }

    /// The pace of sender `index` of `senders`: closed loop with `window`, or open loop at
    /// `rate` in total, its schedule starting at `start_us`.
    pub(super) fn pace(
        rate: Option<f64>,
        window: usize,
        start_us: u64,
        index: usize,
        senders: usize,
    ) -> Pace {
        match rate {
            None => Pace::Window(window),
            Some(rate) => {
                let interval_us = 1e6 * senders as f64 / rate;
                // Spread the senders over one interval rather than all firing together.
                let offset_us = start_us as f64 + interval_us * index as f64 / senders as f64;
                Pace::Schedule {
                    interval_us,
                    offset_us,
                }
            }
        }
    }

    /// Opens every sender and receiver socket; fails on the first that does not connect.
    async fn connect_all(target: &Target, pairs: &[Pair]) -> Result<(Vec<Ws>, Vec<Ws>), String> {
        let users: Vec<u64> = pairs.iter().flat_map(|p| [p.sender, p.receiver]).collect();
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for (i, ws) in connect_users(target, &users).await?.into_iter().enumerate() {
            if i % 2 == 0 {
                senders.push(ws);
            } else {
                receivers.push(ws);
            }
        }
        Ok((senders, receivers))
    }

    /// A sender's writing half: stamps and sends messages, counting them.
    pub(super) struct Writer<'a> {
        pub(super) sink: SplitSink<Ws, Message>,
        template: &'a Template,
        clock: Clock,
        pub(super) sent: u64,
        /// When the last message was queued, µs on the run's clock.
        pub(super) last_send_us: u64,
        /// Every send's delay behind its schedule (open loop), µs, by sequence number: from
        /// the scheduled time until the flush that handed the frame to the socket returned.
        pub(super) lag_us: Vec<u64>,
        /// Scheduled times of the open-loop messages fed since the last flush, in order.
        unflushed_due_us: Vec<u64>,
    }

    impl<'a> Writer<'a> {
        pub(super) fn new(
            sink: SplitSink<Ws, Message>,
            template: &'a Template,
            clock: Clock,
        ) -> Writer<'a> {
            Writer {
                sink,
                template,
                clock,
                sent: 0,
                last_send_us: 0,
                lag_us: Vec::new(),
                unflushed_due_us: Vec::new(),
            }
        }

        /// Queues message `seq` stamped `stamp_us`; it goes out at the next flush at the latest.
        async fn feed(&mut self, seq: u64, stamp_us: u64) -> Result<(), String> {
            let message = self.template.render(seq, stamp_us);
            self.sink.feed(message).await.map_err(write_error)?;
            self.sent += 1;
            self.last_send_us = self.clock.now_us();
            Ok(())
        }

        /// Writes out everything fed so far; the open loop's lags are taken here, when the
        /// frames have actually been written.
        async fn flush(&mut self) -> Result<(), String> {
            self.sink.flush().await.map_err(write_error)?;
            let now_us = self.clock.now_us();
            for due_us in self.unflushed_due_us.drain(..) {
                self.lag_us.push(now_us.saturating_sub(due_us));
            }
            Ok(())
        }

        /// Sends `messages` at `pace` (open loop: when `due` says), then flushes.
        pub(super) async fn run(
            &mut self,
            messages: u64,
            pace: Pace,
            window: &Semaphore,
            due: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
        ) -> Result<(), String> {
            match pace {
                Pace::Window(_) => self.closed_loop(messages, window).await?,
                Pace::Schedule {
                    interval_us,
                    offset_us,
                } => {
                    self.open_loop(messages, interval_us, offset_us, due)
                        .await?
                }
            }
            self.flush().await
        }

        /// A message goes out once one of the `window` permits is free; the ack reader returns
        /// permits (and closes the window when it stops). Flushes when the window is full.
        async fn closed_loop(&mut self, messages: u64, window: &Semaphore) -> Result<(), String> {
            for seq in 0..messages {
                let permit = match window.try_acquire() {
                    Ok(permit) => permit,
                    Err(TryAcquireError::NoPermits) => {
                        self.flush().await?;
                        match window.acquire().await {
                            Ok(permit) => permit,
                            Err(_) => return Ok(()),
                        }
                    }
                    Err(TryAcquireError::Closed) => return Ok(()),
                };
                permit.forget();
                self.feed(seq, self.clock.now_us()).await?;
            }
            Ok(())
        }

        /// Message `seq` is due at `offset + seq × interval` and stamped with that time,
        /// whenever it actually goes out: once the pacer said so on `due`. Flushes before
        /// waiting for the next one.
        async fn open_loop(
            &mut self,
            messages: u64,
            interval_us: f64,
            offset_us: f64,
            due: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
        ) -> Result<(), String> {
            for seq in 0..messages {
                let due_us = (offset_us + seq as f64 * interval_us) as u64;
                let ready = match due.try_recv() {
                    Ok(ready) => Some(ready),
                    Err(_) => {
                        self.flush().await?;
                        due.recv().await
                    }
                };
                match ready {
                    Some(ready) if ready == seq => {}
                    Some(ready) => return Err(format!("pacer sent {ready}, expected {seq}")),
                    // The pacer stopped: the run is over.
                    None => return Ok(()),
                }
                self.unflushed_due_us.push(due_us);
                self.feed(seq, due_us).await?;
            }
            Ok(())
        }
    }

    fn write_error(e: tokio_tungstenite::tungstenite::Error) -> String {
        format!("write: {e}")
    }

    /// One sender: writes its messages at `pace` and reads the acknowledgements, until both
    /// are done or the run stops the senders.
    async fn send(
        ws: Ws,
        template: Template,
        messages: u64,
        pace: Pace,
        mut due: tokio::sync::mpsc::UnboundedReceiver<u64>,
        shared: Arc<Shared>,
    ) -> SenderOutcome {
        let (sink, mut stream) = ws.split();
        // The ack reader returns a permit per answer; only the closed loop waits for them.
        let window = Semaphore::new(match pace {
            Pace::Window(n) => n,
            Pace::Schedule { .. } => 0,
        });
        let mut writer = Writer::new(sink, &template, shared.clock);
        let writing = async {
            tokio::select! {
                _ = shared.stop_senders.cancelled() => Ok(()),
                written = writer.run(messages, pace, &window, &mut due) => written,
            }
        };
        let reading = read_acks(&mut stream, messages, &window, &shared);
        let (written, mut outcome) = tokio::join!(writing, reading);
        outcome.sent = writer.sent;
        outcome.lag_us = std::mem::take(&mut writer.lag_us);
        outcome.last_send_us = writer.last_send_us;
        if let Err(e) = written {
            outcome.closed.get_or_insert(e);
        }
        let mut ws = writer
            .sink
            .reunite(stream)
            .expect("both halves of the same socket");
        let _ = ws.close(None).await;
        outcome
    }

    /// Reads `message_sent` (and errors) until every message is answered, the socket ends, or
    /// the run stops the senders. Each answer frees a window permit.
    async fn read_acks(
        stream: &mut SplitStream<Ws>,
        messages: u64,
        window: &Semaphore,
        shared: &Shared,
    ) -> SenderOutcome {
        let mut outcome = SenderOutcome {
            acked_ids: Vec::with_capacity(messages as usize),
            ack_us: Vec::with_capacity(messages as usize),
            ..SenderOutcome::default()
        };
        let mut answered = 0;
        while answered < messages {
            let Some(text) = next_text(stream, &shared.stop_senders, &mut outcome.closed).await
            else {
                break;
            };
            let now_us = shared.clock.now_us();
            match serde_json::from_str::<Event>(&text) {
                Ok(Event {
                    kind: "message_sent",
                    message_id: Some(id),
                    client_id,
                    ..
                }) => {
                    answered += 1;
                    window.add_permits(1);
                    outcome.acked_ids.push(id);
                    if let Some((_, sent_us)) = client_id.and_then(|c| Stamp::parse(c, &shared.tag))
                    {
                        outcome.ack_us.push(now_us.saturating_sub(sent_us));
                    }
                }
                Ok(Event {
                    kind: "error",
                    code,
                    ..
                }) => {
                    answered += 1;
                    window.add_permits(1);
                    outcome.errors.add(code.unwrap_or("error without code"));
                }
                Ok(_) => {}
                Err(_) => outcome.errors.add("unreadable event"),
            }
        }
        window.close();
        outcome
    }

    /// One receiver: records every `new_message` of this run until the run stops it.
    async fn receive(mut ws: Ws, shared: Arc<Shared>) -> ReceiverOutcome {
        let mut outcome = ReceiverOutcome::default();
        while let Some(text) = next_text(&mut ws, &shared.stop_receivers, &mut outcome.closed).await
        {
            let now_us = shared.clock.now_us();
            let Ok(Event {
                kind: "new_message",
                message_id: Some(id),
                text: Some(body),
                ..
            }) = serde_json::from_str::<Event>(&text)
            else {
                continue;
            };
            let Some((seq, sent_us)) = Stamp::parse(body, &shared.tag) else {
                outcome.foreign += 1;
                continue;
            };
            if !outcome.arrivals.first(id) {
                continue;
            }
            outcome.e2e_us.push(now_us.saturating_sub(sent_us));
            outcome.seqs.push(seq);
            outcome.last_receive_us = now_us;
            shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
        let _ = ws.close(None).await;
        outcome
    }

    impl Report {
        fn new(
            pace: Pace,
            started_us: u64,
            senders: Vec<SenderOutcome>,
            receivers: Vec<ReceiverOutcome>,
            timed_out: bool,
            samples: Samples,
        ) -> Report {
            let (mut lost, mut delivered_unacked) = (0, 0);
            let (mut errors, mut closes) = (Tally::default(), Tally::default());
            for (s, r) in senders.iter().zip(&receivers) {
                let acked: HashSet<u64> = s.acked_ids.iter().copied().collect();
                lost += acked.difference(&r.arrivals.ids).count() as u64;
                delivered_unacked += r.arrivals.ids.difference(&acked).count() as u64;
                errors.merge(s.errors.clone());
                for closed in [&s.closed, &r.closed].into_iter().flatten() {
                    closes.add(closed.clone());
                }
            }
            let mut e2e_from_send = Vec::new();
            for (s, r) in senders.iter().zip(&receivers) {
                for (seq, e2e) in r.seqs.iter().zip(&r.e2e_us) {
                    if let Some(lag) = s.lag_us.get(*seq as usize) {
                        e2e_from_send.push(e2e.saturating_sub(*lag));
                    }
                }
            }
            let last_send_us = senders.iter().map(|s| s.last_send_us).max().unwrap_or(0);
            let last_receive_us = receivers.iter().map(|r| r.last_receive_us).max();
            let span = |end_us: u64| end_us.saturating_sub(started_us) as f64 / 1e6;
            Report {
                pace,
                elapsed_send_s: span(last_send_us),
                sent: senders.iter().map(|s| s.sent).sum(),
                acked: senders.iter().map(|s| s.acked_ids.len() as u64).sum(),
                delivered: receivers.iter().map(|r| r.arrivals.ids.len() as u64).sum(),
                delivered_s: span(last_receive_us.unwrap_or(started_us)),
                checks: Checks {
                    lost,
                    duplicates: receivers.iter().map(|r| r.arrivals.duplicates).sum(),
                    out_of_order: receivers.iter().map(|r| r.arrivals.out_of_order).sum(),
                    foreign: receivers.iter().map(|r| r.foreign).sum(),
                    errors,
                    closes,
                    timed_out,
                },
                send_lag: Latencies::new(senders.iter().flat_map(|s| s.lag_us.clone()).collect()),
                e2e_from_send: Latencies::new(e2e_from_send),
                e2e: Latencies::new(receivers.into_iter().flat_map(|r| r.e2e_us).collect()),
                ack: Latencies::new(senders.into_iter().flat_map(|s| s.ack_us).collect()),
                delivered_unacked,
                samples,
            }
        }

        /// The figures the comparison table sets side by side.
        pub(super) fn figures(&self) -> Vec<Figure> {
            let open = matches!(self.pace, Pace::Schedule { .. });
            let mut figures = vec![
                Figure::measured(
                    "delivered, msg/s",
                    per_sec(self.delivered, self.delivered_s),
                    0,
                ),
                Figure::measured("e2e p50, ms", self.e2e.ms(0.5), 2),
                Figure::measured("e2e p99, ms", self.e2e.ms(0.99), 2),
            ];
            if open {
                figures.push(Figure::measured(
                    "e2e from send p99, ms",
                    self.e2e_from_send.ms(0.99),
                    2,
                ));
            }
            figures.extend([
                Figure::measured("ack p50, ms", self.ack.ms(0.5), 2),
                Figure::measured("ack p99, ms", self.ack.ms(0.99), 2),
                Figure::measured(
                    "server CPU per msg, µs",
                    self.samples.server_cpu_per_item_us(self.delivered),
                    1,
                ),
                Figure::context("generator CPU, s", self.samples.generator_cpu_secs(), 2),
            ]);
            figures.extend(machine_figures(self.samples.machine));
            figures
        }

        /// No loss, duplicates, reordering, errors or unexpected closes.
        pub(super) fn clean(&self) -> bool {
            self.checks.clean() && self.sent == self.acked
        }

        pub(super) fn print(&self, args: &Args, target: &Target) {
            let pace = match self.pace {
                Pace::Window(n) => format!("closed loop, window {n}"),
                Pace::Schedule { .. } => format!(
                    "open loop at {} msg/s total (latency from the scheduled send time)",
                    args.rate().unwrap_or_default()
                ),
            };
            let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
            println!("== indaba load: pairs ==");
            println!("{:<16} {}", target.server.name(), target.describe());
            println!(
                "workload         {} pairs × {} messages of {} B text, {pace}",
                args.pairs,
                args.messages(),
                args.size
            );
            println!(
                "sent             {} in {:.2} s = {:.0} msg/s",
                self.sent,
                self.elapsed_send_s,
                per_s(self.sent, self.elapsed_send_s)
            );
            if matches!(self.pace, Pace::Schedule { .. }) {
                println!(
                    "send lag         {} behind schedule",
                    self.send_lag
                        .describe(&[("p50", 0.5), ("p99", 0.99), ("max", 1.0)])
                );
            }
            println!("acked            {}", self.acked);
            println!(
                "delivered        {} in {:.2} s = {:.0} msg/s",
                self.delivered,
                self.delivered_s,
                per_s(self.delivered, self.delivered_s)
            );
            println!(
                "e2e latency      {}",
                self.e2e
                    .describe(&[("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)])
            );
            if matches!(self.pace, Pace::Schedule { .. }) {
                println!(
                    "e2e from send    {} (the send lag taken off)",
                    self.e2e_from_send.describe(&[
                        ("p50", 0.5),
                        ("p99", 0.99),
                        ("p999", 0.999),
                        ("max", 1.0)
                    ])
                );
            }
            println!(
                "ack latency      {}",
                self.ack.describe(&[("p50", 0.5), ("p99", 0.99)])
            );
            self.checks
                .print(args, &[("received unacked", self.delivered_unacked)]);
            self.samples.print(self.delivered, "delivered message");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mode `idle`
// ---------------------------------------------------------------------------------------------

mod idle {
    use super::*;

    /// Everything an idle run measured.
    pub(super) struct Report {
        connects: Connects,
        dropped: Tally,
        samples: Samples,
    }

    pub(super) async fn run(target: &Target, args: &Args) -> Result<Report, String> {
        let sockets = args.sockets();
        let users: Vec<u64> = (0..args.users_per_run())
            .map(|i| target.user_base + i)
            .collect();
        // A freshly started daemon is still warming up (its dummy password hash alone takes
        // megabytes): let it settle so the baseline holds only the sockets' memory.
        tokio::time::sleep(BASELINE_SETTLE).await;
        let window = Window::open(target);
        let hold = CancellationToken::new();
        let dropped = Arc::new(Mutex::new(Tally::default()));
        let spread = connect_spread(target, args, Socket::Chat, &users, sockets, {
            let (hold, dropped) = (hold.clone(), dropped.clone());
            move |_, ws| hold_open(ws, hold.clone(), dropped.clone())
        })
        .await?;
        tokio::time::sleep(secs(args.hold)).await;
        let samples = window.close(target);
        hold.cancel();
        Ok(Report {
            connects: spread.connects,
            dropped: dropped.lock().expect("tally lock poisoned").clone(),
            samples,
        })
    }

    /// Keeps a socket open (answering pings) until the hold ends; notes a server close.
    async fn hold_open(mut ws: Ws, hold: CancellationToken, dropped: Arc<Mutex<Tally>>) {
        let mut closed = None;
        while next_text(&mut ws, &hold, &mut closed).await.is_some() {}
        if let Some(reason) = closed {
            dropped.lock().expect("tally lock poisoned").add(reason);
        }
    }

    impl Report {
        pub(super) fn clean(&self) -> bool {
            self.connects.all() && self.dropped.total() == 0
        }

        /// The server's memory per socket, KiB: what its RSS grew by over the connects.
        fn kib_per_socket(&self) -> Option<f64> {
            let (before, after) = self.samples.server?;
            let grown = after.rss_kib.saturating_sub(before.rss_kib);
            Some(grown as f64 / self.connects.established.max(1) as f64)
        }

        /// The figures the comparison table sets side by side.
        pub(super) fn figures(&self) -> Vec<Figure> {
            let mut figures = vec![
                Figure::measured("connects, sockets/s", self.connects.per_sec(), 0),
                Figure::measured("server RSS per socket, KiB", self.kib_per_socket(), 2),
                Figure::measured(
                    "server CPU per socket, µs",
                    self.samples
                        .server_cpu_per_item_us(self.connects.established),
                    1,
                ),
            ];
            figures.extend(machine_figures(self.samples.machine));
            figures
        }

        pub(super) fn print(&self, args: &Args, target: &Target) {
            println!("== indaba load: idle ==");
            println!("{:<16} {}", target.server.name(), target.describe());
            println!(
                "workload         {} /ws/chat/ sockets of {} users from {} source addresses, \
                 {} in flight, held {} s",
                self.connects.requested,
                args.users_per_run(),
                args.source_addrs,
                args.concurrency,
                args.hold
            );
            self.connects.print();
            println!("dropped in hold  {}", self.dropped.describe());
            match (self.samples.server, self.kib_per_socket()) {
                (Some((before, after)), Some(per_socket)) => {
                    println!(
                        "server RSS       {:.1} MiB → {:.1} MiB = {per_socket:.1} KiB per socket \
                         (peak {:.1} MiB)",
                        mib(before.rss_kib),
                        mib(after.rss_kib),
                        mib(after.hwm_kib)
                    );
                    println!(
                        "server CPU       {:.2} s (connect and hold)",
                        before.cpu_secs_until(&after)
                    );
                }
                _ => println!("server CPU/RSS   unknown (pass --pid with --url)"),
            }
            if let Some((before, after)) = self.samples.machine {
                println!("machine          {}", before.describe_until(&after));
            }
        }
    }
}

//! Soak test (issue 16): minutes of mixed load against the real daemon, killed with
//! `kill -9` (sometimes stopped with SIGTERM) at random moments and started again on the same
//! data dir, round after round; then a full audit of everything it acknowledged. Not run by
//! CI: run it by hand, and put its figures in docs/RELIABILITY.md, which states every rule
//! the audit checks.
//!
//! ```sh
//! cargo bench --bench soak -- --minutes 2
//! cargo bench --bench soak -- --minutes 15 --round-secs 12
//! cargo bench --bench soak -- --help
//! ```
//!
//! A black box: it starts the binary cargo built (`target/release/indaba`, `--bin` for
//! another) and talks to it only through its public HTTP and WebSocket API and service API
//! on 127.0.0.1, with tokens signed by the HS256 secret it starts the daemon with, as a host
//! app would. Nothing of the crate's internals is linked, so refactoring them does not touch
//! the soak.
//!
//! Each round starts the workers (REST, WebSocket and service senders, a broadcaster, socket
//! readers, a drainer: `benches/soak/workers.rs`) once the daemon listens, ends the daemon at
//! a moment uniform over `0..--round-secs` — `kill -9`, or SIGTERM for a share
//! `--graceful` of the rounds — waits for every operation in flight to end with an answer or
//! without one, and starts the daemon again (sometimes killing a start first, during its
//! journal replay). After each restart it checks that every message acknowledged in the round
//! is in history; at the end it audits everything (`benches/soak/audit.rs`). Bounded by
//! `--minutes` and `--rounds`; the daemon is killed on every exit path (drop, error, Ctrl-C).
//!
//! Output: one line per round, a final table, the findings if any. The exit status is 0 when
//! the audit passed, 1 when it found anything, 2 when the soak itself could not run. The run
//! dir (`--dir`, default a new one under the temp dir) holds `data/` (the daemon's),
//! `daemon.log` (every start's output, with markers) and `crash-state/` (the data files as the
//! last `kill -9` left them); it is removed after a clean run unless `--keep`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

#[path = "soak/api.rs"]
mod api;
#[path = "soak/audit.rs"]
mod audit;
#[path = "soak/daemon.rs"]
mod daemon;
#[path = "soak/ledger.rs"]
mod ledger;
#[path = "soak/workers.rs"]
mod workers;

use api::{Api, Credentials};
use audit::{End, Figures, Findings, Kind, Tracker};
use daemon::{Daemon, DaemonLog, Launcher};
use ledger::{Cast, Via};
use workers::{Crew, RoundCtx, RoundStats};

/// How long a SIGTERM may take (the daemon's default `shutdown_timeout` is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(25);
/// A start killed during start-up dies within this many times the last start's time to
/// listen after it was spawned: mostly while it opens the data file and replays the journal.
const STARTUP_KILL_WITHIN: f64 = 1.5;
/// Above this many bytes of data files, `crash-state/` keeps only the journal.
const SNAPSHOT_MAX_BYTES: u64 = 2 << 30;

#[derive(Debug, Parser)]
#[command(
    name = "soak",
    about = "Soak test of the indaba daemon: mixed load, random kill -9 and restarts, a full audit",
    after_help = "Run with `cargo bench --bench soak -- <args>`; docs/RELIABILITY.md explains \
                  the rules the audit checks and the figures."
)]
struct Args {
    /// Minutes of load: rounds run until then (restarts and the audit come on top).
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// At most this many rounds.
    #[arg(long)]
    rounds: Option<u32>,
    /// The longest round, s: each ends at a moment uniform over 0..this.
    #[arg(long, default_value_t = 10.0)]
    round_secs: f64,
    /// Share of rounds that end with SIGTERM (a graceful stop) instead of kill -9.
    #[arg(long, default_value_t = 0.2)]
    graceful: f64,
    /// Share of restarts killed during start-up first (at a moment uniform over 1.5 × the
    /// last start's time to listen).
    #[arg(long, default_value_t = 0.1)]
    startup_kills: f64,
    /// Share of starts with `storage.journal = false` (every batch a durable redb commit).
    #[arg(long, default_value_t = 0.2)]
    journal_off: f64,
    /// Mean pause between two operations of one worker, ms.
    #[arg(long, default_value_t = 25)]
    pause_ms: u64,
    /// Seed of the random choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// The daemon binary.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_indaba"))]
    bin: PathBuf,
    /// Run dir (must be empty or absent); default a new dir under the temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Self-check of the audit: after the 3rd `kill -9`, damage the data as a lying disk
    /// would, so that the run MUST fail. Never for figures.
    #[arg(long, value_enum)]
    inject: Option<Inject>,
    /// Go on with the load after a restart check found something (default: stop there,
    /// so the evidence is what the fault left).
    #[arg(long)]
    keep_going: bool,
    /// Keep the run dir after a clean run too.
    #[arg(long)]
    keep: bool,
    /// `cargo bench` passes `--bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A fault the soak can inject to prove its audit catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Inject {
    /// Cut every record off the journal (the header stays): the acknowledged writes since
    /// the last checkpoint are gone, and the restart sees only a torn tail.
    DropJournal,
    /// Put the data files back as the 2nd `kill -9` left them: a round of acknowledged
    /// writes, drains and reads undone.
    Rollback,
}

/// The kill after which `--inject` strikes.
const INJECT_AT_KILL: u32 = 3;

impl Args {
    fn check(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("--{name} must be between 0 and 1"))
            }
        };
        share("graceful", self.graceful)?;
        share("startup-kills", self.startup_kills)?;
        share("journal-off", self.journal_off)?;
        if !(self.minutes.is_finite() && self.minutes > 0.0) {
            return Err("--minutes must be a positive number".into());
        }
        if !(self.round_secs.is_finite() && self.round_secs > 0.0) {
            return Err("--round-secs must be a positive number".into());
        }
        if self.rounds == Some(0) {
            return Err("--rounds must be at least 1".into());
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.check() {
        eprintln!("soak: {e}");
        return ExitCode::from(2);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(signal, interrupted.clone()) {
            eprintln!("soak: cannot handle signal {signal}: {e}");
            return ExitCode::from(2);
        }
    }
    let dir = match RunDir::create(args.dir.clone()) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = soak(&args, &dir, &interrupted, &runtime);
    // Sockets and requests of the run end here, before the run dir may go.
    drop(runtime);
    match outcome {
        Ok(true) => {
            if args.keep {
                println!("run dir kept: {}", dir.root.display());
            } else {
                let _ = std::fs::remove_dir_all(&dir.root);
            }
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("evidence kept in {}", dir.root.display());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("soak: {e}");
            eprintln!("soak: run dir kept: {}", dir.root.display());
            ExitCode::from(2)
        }
    }
}

/// The run's files.
#[derive(Debug)]
struct RunDir {
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    crash_state: PathBuf,
}

impl RunDir {
    fn create(dir: Option<PathBuf>) -> Result<RunDir, String> {
        let root = match dir {
            Some(dir) => {
                let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
                if !empty {
                    return Err(format!("--dir {} is not empty", dir.display()));
                }
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                dir
            }
            None => tempfile::Builder::new()
                .prefix("indaba-soak-")
                .tempdir()
                .map_err(|e| format!("run dir: {e}"))?
                .keep(),
        };
        let data = root.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        Ok(RunDir {
            log: root.join("daemon.log"),
            crash_state: root.join("crash-state"),
            data,
            root,
        })
    }

    /// Damages the data dir as `inject` says (the daemon is stopped); what it did.
    fn inject(&self, inject: Inject) -> Result<String, String> {
        match inject {
            Inject::DropJournal => {
                let journal = self.data.join("indaba.journal");
                let len = std::fs::metadata(&journal)
                    .map_err(|e| format!("journal: {e}"))?
                    .len();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&journal)
                    .map_err(|e| format!("journal: {e}"))?;
                // The 4 KiB header page stays: the journal reads as valid and empty.
                file.set_len(len.min(4096))
                    .map_err(|e| format!("journal: {e}"))?;
                Ok(format!("journal cut from {len} to {} bytes", len.min(4096)))
            }
            Inject::Rollback => {
                for entry in
                    std::fs::read_dir(&self.crash_state).map_err(|e| format!("crash state: {e}"))?
                {
                    let entry = entry.map_err(|e| format!("crash state: {e}"))?;
                    std::fs::copy(entry.path(), self.data.join(entry.file_name()))
                        .map_err(|e| format!("rollback: {e}"))?;
                }
                Ok("data files put back as the previous kill -9 left them".into())
            }
        }
    }

    /// Copies the data files as a `kill -9` left them to `crash-state/` (replacing the last
    /// copy): a finding after the restart can be reproduced from them.
    fn snapshot(&self) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(&self.crash_state);
        std::fs::create_dir_all(&self.crash_state)
            .map_err(|e| format!("{}: {e}", self.crash_state.display()))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.data).map_err(|e| format!("read data dir: {e}"))? {
            let entry = entry.map_err(|e| format!("read data dir: {e}"))?;
            let meta = entry.metadata().map_err(|e| format!("stat: {e}"))?;
            if meta.is_file() {
                files.push((entry.path(), meta.len()));
            }
        }
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        for (path, _) in files {
            let name = path.file_name().unwrap_or_default();
            let journal = name.to_string_lossy().starts_with("indaba.journal");
            if total <= SNAPSHOT_MAX_BYTES || journal {
                std::fs::copy(&path, self.crash_state.join(name))
                    .map_err(|e| format!("copy {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Now, as RFC 3339 UTC.
fn wall_clock() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The commit the soak (and so the daemon cargo built next to it) was built from.
fn build_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => format!("{commit} + uncommitted changes"),
        _ => commit,
    }
}

/// Counts over the whole run.
#[derive(Debug, Default)]
struct Totals {
    rounds: u32,
    kills: u32,
    graceful: u32,
    startup_kills: u32,
    starts_without_journal: u32,
    stats: RoundStats,
}

/// Sleeps `wait`, or less if the soak is interrupted; false when it was.
fn sleep_unless(wait: Duration, interrupted: &AtomicBool) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if interrupted.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    !interrupted.load(Ordering::Relaxed)
}

/// The whole run; `Ok(true)` when the audit passed.
fn soak(
    args: &Args,
    dir: &RunDir,
    interrupted: &AtomicBool,
    rt: &tokio::runtime::Runtime,
) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let tag = format!("{:08x}", rng.u32(..));
    let mut credentials = Credentials::random()?;
    credentials.mint(Cast::USERS)?;
    let log = Arc::new(DaemonLog::create(&dir.log)?);
    let env = vec![
        ("INDABA_AUTH__JWT_SECRET", credentials.jwt_secret.as_str()),
        (
            "INDABA_SERVICE__SHARED_SECRET",
            credentials.service_secret.as_str(),
        ),
        // The soak's own pace is the limit; the per-user send rate is abuse protection.
        ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1000000"),
        ("INDABA_LIMITS__MESSAGES_BURST", "1000000"),
    ];
    let env = env
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut launcher = Launcher::new(args.bin.clone(), dir.data.clone(), env, log.clone());

    let started_at = wall_clock();
    println!("== indaba soak ==");
    println!(
        "build            {}, {}",
        build_commit(),
        args.bin.display()
    );
    println!(
        "run              {started_at}, {} min of load, rounds up to {} s, seed {seed}, tag {tag}",
        args.minutes, args.round_secs
    );
    println!("run dir          {}", dir.root.display());
    if let Some(inject) = args.inject {
        println!(
            "INJECTING        {inject:?} after kill -9 number {INJECT_AT_KILL}: this run must FAIL"
        );
    }

    let credentials = Arc::new(credentials);
    let daemon = launcher.start(&journal(true))?;
    let api = Api::new(daemon.addr, credentials.clone())?;
    let cast = unless_interrupted(rt, interrupted, Cast::create(&api))?;
    let crew = Crew::new(&cast, seed);
    let mut run = Run {
        args,
        dir,
        rt,
        interrupted,
        rng,
        tag,
        credentials,
        launcher,
        last_start: daemon.listened_after,
        daemon,
        api,
        cast,
        crew,
        tracker: Tracker::default(),
        findings: Findings::default(),
        ends: BTreeMap::new(),
        totals: Totals::default(),
    };
    unless_interrupted(
        run.rt,
        run.interrupted,
        run.tracker
            .after_restart(&run.api, &run.cast, &run.crew, 1, &mut run.findings),
    )?;

    let load_started = Instant::now();
    let deadline = load_started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut restarted = true;
    for round in 1.. {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || args.rounds.is_some_and(|max| round > max) {
            break;
        }
        let before = run.findings.total();
        restarted = run.round(round, left)?;
        if !restarted || (run.findings.total() > before && !args.keep_going) {
            if restarted {
                println!("findings after round {round}: stopping the load, auditing what there is");
            }
            break;
        }
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    run.crew.give_up();

    let mut figures = Figures::default();
    if restarted {
        println!("audit            on a fresh start, no load ...");
        let audit_started = Instant::now();
        figures = unless_interrupted(
            rt,
            interrupted,
            audit::audit(
                &run.api,
                &run.cast,
                &run.crew,
                &run.tracker,
                &run.ends,
                run.totals.rounds + 1,
                &mut run.findings,
            ),
        )?;
        println!(
            "audit took       {:.1} s",
            audit_started.elapsed().as_secs_f64()
        );
        if let Err(e) = run.stop("the final stop") {
            run.findings.add(Kind::Daemon, e);
        }
    }
    let errors = log
        .error_lines
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    for line in errors {
        run.findings.add(Kind::Daemon, format!("log: {line}"));
    }
    let summary = Summary {
        args,
        started_at,
        ended_at: wall_clock(),
        load_secs,
        totals: &run.totals,
        figures: &figures,
        findings: &run.findings,
        log: &log,
        audited: restarted,
    };
    summary.print();
    let clean = run.findings.total() == 0 && restarted;
    if !clean {
        run.crew.write_ledger(&dir.root)?;
        println!(
            "ledger           sends.tsv, deliveries.tsv, drains.tsv in {}",
            dir.root.display()
        );
    }
    Ok(clean)
}

/// Runs `work` to its end, or until the soak is interrupted (Ctrl-C, SIGTERM): the checks and
/// the audit can take minutes.
fn unless_interrupted<T>(
    rt: &tokio::runtime::Runtime,
    interrupted: &AtomicBool,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    rt.block_on(async {
        tokio::select! {
            done = work => done,
            _ = async {
                while !interrupted.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            } => Err("interrupted".into()),
        }
    })
}

/// `storage.journal` for one start.
fn journal(on: bool) -> [(&'static str, &'static str); 1] {
    [("INDABA_STORAGE__JOURNAL", if on { "true" } else { "false" })]
}

/// A run between its set-up and its audit.
struct Run<'a> {
    args: &'a Args,
    dir: &'a RunDir,
    rt: &'a tokio::runtime::Runtime,
    interrupted: &'a AtomicBool,
    rng: fastrand::Rng,
    tag: String,
    credentials: Arc<Credentials>,
    launcher: Launcher,
    /// How long the last start took to listen: the window of a start-up kill.
    last_start: Duration,
    /// The daemon of the current round (killed when dropped).
    daemon: Daemon,
    api: Api,
    cast: Cast,
    crew: Crew,
    tracker: Tracker,
    findings: Findings,
    ends: BTreeMap<u32, End>,
    totals: Totals,
}

impl Run<'_> {
    /// One round: the load until a moment uniform over `0..--round-secs` (at most `left`),
    /// the end (kill -9 or SIGTERM), a restart, the check of what the round acknowledged.
    /// `Ok(false)` when the daemon would not start again.
    fn round(&mut self, round: u32, left: Duration) -> Result<bool, String> {
        let ctx = RoundCtx {
            round,
            api: self.api.clone(),
            stop: CancellationToken::new(),
            pause: Duration::from_millis(self.args.pause_ms),
            tag: self.tag.clone(),
        };
        let handles = {
            let _runtime = self.rt.enter();
            self.crew.launch(&ctx)
        };
        let end_at = Duration::from_secs_f64(self.rng.f64() * self.args.round_secs).min(left);
        let went_on = sleep_unless(end_at, self.interrupted);
        if let Some(status) = self.daemon.exited() {
            self.findings.add(
                Kind::Daemon,
                format!("round {round}: the daemon exited on its own ({status}); see daemon.log"),
            );
        }
        let end = if self.rng.f64() < self.args.graceful {
            End::Graceful
        } else {
            End::Kill
        };
        let mut notes = Vec::new();
        match end {
            End::Kill => {
                self.daemon.kill();
                self.totals.kills += 1;
            }
            End::Graceful => {
                self.totals.graceful += 1;
                match self.stop(&format!("round {round}")) {
                    Ok(took) => notes.push(format!("stopped in {:.2} s", took.as_secs_f64())),
                    Err(e) => {
                        notes.push("STOP FAILED".into());
                        self.findings.add(Kind::Daemon, e);
                    }
                }
            }
        }
        ctx.stop.cancel();
        let stats = self.rt.block_on(self.crew.land(handles))?;
        self.ends.insert(round, end);
        self.totals.rounds = round;
        if end == End::Kill {
            match self.args.inject {
                Some(inject) if self.totals.kills == INJECT_AT_KILL => {
                    notes.push(format!("INJECTED: {}", self.dir.inject(inject)?));
                }
                _ => self.dir.snapshot()?,
            }
        }
        if !went_on {
            return Err("interrupted".into());
        }
        for (what, n) in &stats.odd {
            self.findings
                .add(Kind::Protocol, format!("round {round}: {n} × {what}"));
        }
        self.totals.stats.merge(&stats);
        let line = RoundLine {
            round,
            end,
            end_at,
            stats: &stats,
        };

        // Start again; sometimes a start killed while it replays the journal comes first.
        let restart_started = Instant::now();
        let journal_on = self.rng.f64() >= self.args.journal_off;
        self.totals.starts_without_journal += u32::from(!journal_on);

        if self.rng.f64() < self.args.startup_kills {
            let after = self
                .last_start
                .mul_f64(STARTUP_KILL_WITHIN * self.rng.f64());
            let listened = self.launcher.start_and_kill(&journal(journal_on), after)?;
            self.totals.startup_kills += 1;
            notes.push(format!(
                "a start killed after {:.1} ms ({})",
                after.as_secs_f64() * 1000.0,
                if listened { "listening" } else { "starting" }
            ));
        }
        self.daemon = match self.launcher.start(&journal(journal_on)) {
            Ok(daemon) => daemon,
            Err(e) => {
                self.findings
                    .add(Kind::Daemon, format!("after round {round}: {e}"));
                notes.push("RESTART FAILED".into());
                line.print(&notes);
                return Ok(false);
            }
        };
        let restart = restart_started.elapsed();
        self.last_start = self.daemon.listened_after;
        self.api = Api::new(self.daemon.addr, self.credentials.clone())?;
        let before = self.findings.total();
        let checked = unless_interrupted(
            self.rt,
            self.interrupted,
            self.tracker.after_restart(
                &self.api,
                &self.cast,
                &self.crew,
                round + 1,
                &mut self.findings,
            ),
        )?;
        let found = self.findings.total() - before;
        notes.push(format!(
            "restart {:.2} s (journal {}), checked {checked}: {}",
            restart.as_secs_f64(),
            if journal_on { "on" } else { "off" },
            if found == 0 {
                "ok".to_owned()
            } else {
                format!("{found} FINDINGS")
            }
        ));
        line.print(&notes);
        Ok(true)
    }

    /// SIGTERM: `Ok` with how long the stop took when the daemon exited 0 in time, else a
    /// finding's text.
    fn stop(&mut self, when: &str) -> Result<Duration, String> {
        let (status, took) = self.daemon.terminate(STOP_TIMEOUT);
        match status {
            Some(s) if s.success() => Ok(took),
            Some(s) => Err(format!(
                "{when}: SIGTERM → {s} after {:.2} s",
                took.as_secs_f64()
            )),
            None => Err(format!(
                "{when}: no exit within {STOP_TIMEOUT:?} of SIGTERM: killed"
            )),
        }
    }
}

/// One line per round.
struct RoundLine<'a> {
    round: u32,
    end: End,
    end_at: Duration,
    stats: &'a RoundStats,
}

impl RoundLine<'_> {
    fn print(&self, notes: &[String]) {
        let how = match self.end {
            End::Kill => "kill -9",
            End::Graceful => "SIGTERM",
        };
        let stats = self.stats;
        let by_via: Vec<String> = Via::ALL
            .iter()
            .map(|v| format!("{} {}", v.name(), stats.acked.get(v).copied().unwrap_or(0)))
            .collect();
        println!(
            "round {:>4}  {how} at {:>5.2} s  acked {} ({})  in doubt {}, retried {}  drains {} ({} msgs, {} lost)  delivered {}  | {}",
            self.round,
            self.end_at.as_secs_f64(),
            stats.acked_total(),
            by_via.join(", "),
            stats.in_doubt,
            stats.retries,
            stats.drains,
            stats.drained,
            stats.lost_drains,
            stats.delivered,
            notes.join(", "),
        );
    }
}

/// The final table.
struct Summary<'a> {
    args: &'a Args,
    started_at: String,
    ended_at: String,
    load_secs: f64,
    totals: &'a Totals,
    figures: &'a Figures,
    findings: &'a Findings,
    log: &'a DaemonLog,
    audited: bool,
}

impl Summary<'_> {
    fn print(&self) {
        let (t, fig, f) = (self.totals, self.figures, self.findings);
        let acked: u64 = fig.acked.values().sum();
        let by_via: Vec<String> = Via::ALL
            .iter()
            .map(|v| format!("{} {}", v.name(), fig.acked.get(v).copied().unwrap_or(0)))
            .collect();
        let other =
            f.total() - f.count(Kind::Lost) - f.count(Kind::Duplicated) - f.count(Kind::Ids);
        println!();
        println!("== indaba soak: summary ==");
        println!(
            "command          cargo bench --bench soak -- {}",
            self.command_line()
        );
        println!(
            "time             {} → {} ({:.1} min of load)",
            self.started_at,
            self.ended_at,
            self.load_secs / 60.0
        );
        println!(
            "rounds           {} (kill -9: {}, SIGTERM: {}); starts killed during start-up: {}; starts without journal: {}",
            t.rounds, t.kills, t.graceful, t.startup_kills, t.starts_without_journal
        );
        println!("acknowledged     {acked} ({})", by_via.join(", "));
        println!(
            "in doubt         {} answers lost to a stop (a retry can lose its answer again); {} sends retried with their client_id and acknowledged ({} stored before the crash, {} by the retry); {} never acknowledged (stored {}, not stored {})",
            t.stats.in_doubt,
            fig.retried_stored_before + fig.retried_stored_by_retry,
            fig.retried_stored_before,
            fig.retried_stored_by_retry,
            fig.doubt_present + fig.doubt_absent,
            fig.doubt_present,
            fig.doubt_absent
        );
        println!("history          {} messages", fig.history);
        println!(
            "queue drains     {} answered ({} messages) + final {}; {} lost to kill -9 ({} messages left with them), {} lost during SIGTERM",
            fig.drains,
            fig.drained,
            fig.final_drained,
            fig.lost_drains_kill,
            fig.vanished_with_lost_drain,
            fig.lost_drains_graceful
        );
        println!(
            "socket delivery  {} during the load + {} replayed at the audit; {} redelivered after a kill -9; {} missed to a kill -9 (in sync); {} sockets closed 4008 (slow consumer)",
            fig.deliveries,
            fig.replayed_at_audit,
            fig.redelivered_after_kill,
            fig.missed_after_kill,
            t.stats.slow_consumer_closes
        );
        println!(
            "sync             {} users, {} messages",
            fig.sync_users, fig.sync_messages
        );
        println!(
            "read state       {} unread counts checked, {} acknowledged read markers, {} read receipts sent",
            fig.unread_views, fig.markers, t.stats.receipts
        );
        println!(
            "crash recovery   {} starts replayed the journal ({} messages), {} found a torn last write",
            self.log.replays.load(Ordering::Relaxed),
            self.log.replayed_messages.load(Ordering::Relaxed),
            self.log.torn_tails.load(Ordering::Relaxed)
        );
        println!(
            "daemon log       {} WARN, {} ERROR lines ({})",
            self.log.warnings.load(Ordering::Relaxed),
            self.log.errors.load(Ordering::Relaxed),
            self.log.path.display()
        );
        println!("lost             {}", f.count(Kind::Lost));
        println!("duplicated       {}", f.count(Kind::Duplicated));
        println!("id violations    {}", f.count(Kind::Ids));
        println!("other findings   {other}");
        let verdict = match (self.audited, f.total()) {
            (true, 0) => "PASSED".to_owned(),
            (false, _) => "NOT DONE (the daemon did not start again)".to_owned(),
            (true, n) => format!("FAILED ({n} findings)"),
        };
        println!("audit            {verdict}");
        if f.total() > 0 {
            println!("findings:");
            f.print();
        }
    }

    fn command_line(&self) -> String {
        let a = self.args;
        let mut line = format!("--minutes {} --round-secs {}", a.minutes, a.round_secs);
        if let Some(rounds) = a.rounds {
            line.push_str(&format!(" --rounds {rounds}"));
        }
        line.push_str(&format!(
            " --graceful {} --startup-kills {} --journal-off {} --pause-ms {}",
            a.graceful, a.startup_kills, a.journal_off, a.pause_ms
        ));
        if let Some(inject) = a.inject {
            let name = inject.to_possible_value().map(|v| v.get_name().to_owned());
            line.push_str(&format!(" --inject {}", name.unwrap_or_default()));
        }
        if a.keep_going {
            line.push_str(" --keep-going");
        }
        line
    }
}

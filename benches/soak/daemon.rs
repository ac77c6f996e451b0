//! The daemon under test, as a child process on the run's one data dir: started (dev mode, an
//! ephemeral loopback port), killed with SIGKILL or stopped with SIGTERM, started again. Its
//! stderr goes, start after start, into the run's `daemon.log`: the evidence a finding needs.
//! A [`Daemon`] that is dropped while its process runs kills it, so no exit path of the soak
//! leaves one behind.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a start may take to print its listen address (journal replay included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// ERROR lines kept word for word for the report.
const KEPT_ERRORS: usize = 20;

/// How to start the daemon; the same for every start of a run.
#[derive(Debug)]
pub(crate) struct Launcher {
    pub(crate) bin: PathBuf,
    pub(crate) data_dir: PathBuf,
    /// `INDABA_*` settings of every start.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log: Arc<DaemonLog>,
    starts: u64,
}

/// `daemon.log`, and what the soak counts in it.
#[derive(Debug)]
pub(crate) struct DaemonLog {
    pub(crate) path: PathBuf,
    file: Mutex<File>,
    pub(crate) warnings: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// The first ERROR lines (and panics), as written.
    pub(crate) error_lines: Mutex<Vec<String>>,
    /// Starts that replayed journal records into the data file, and the messages they
    /// brought back: proof that the kills hit the path under test.
    pub(crate) replays: AtomicU64,
    pub(crate) replayed_messages: AtomicU64,
    /// Starts that found the journal ending in a write the crash cut short.
    pub(crate) torn_tails: AtomicU64,
}

impl DaemonLog {
    pub(crate) fn create(path: &Path) -> Result<DaemonLog, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(DaemonLog {
            path: path.to_owned(),
            file: Mutex::new(file),
            warnings: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_lines: Mutex::new(Vec::new()),
            replays: AtomicU64::new(0),
            replayed_messages: AtomicU64::new(0),
            torn_tails: AtomicU64::new(0),
        })
    }

    /// Appends a line of the soak's own (start markers), so the log reads as a timeline.
    pub(crate) fn note(&self, line: &str) {
        let mut file = self.file.lock().expect("log file lock");
        let _ = writeln!(file, "==== soak: {line}");
    }

    fn daemon_line(&self, line: &str) {
        // The daemon's own wording (src/store/mod.rs), text or JSON format.
        if line.contains("journal replayed into the data file") {
            self.replays.fetch_add(1, Ordering::Relaxed);
            let messages = line
                .split("messages")
                .nth(1)
                .map(|rest| rest.trim_start_matches(['=', '"', ':']))
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok());
            self.replayed_messages
                .fetch_add(messages.unwrap_or(0), Ordering::Relaxed);
        }
        if line.contains("the journal ends in a write the crash cut short") {
            self.torn_tails.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains(" WARN ") || line.contains("\"level\":\"WARN\"") {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains(" ERROR ")
            || line.contains("\"level\":\"ERROR\"")
            || line.contains("panicked")
        {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut kept = self.error_lines.lock().expect("error lines lock");
            if kept.len() < KEPT_ERRORS {
                kept.push(line.to_owned());
            }
        }
        let mut file = self.file.lock().expect("log file lock");
        let _ = writeln!(file, "{line}");
    }
}

impl Launcher {
    pub(crate) fn new(
        bin: PathBuf,
        data_dir: PathBuf,
        env: Vec<(String, String)>,
        log: Arc<DaemonLog>,
    ) -> Launcher {
        Launcher {
            bin,
            data_dir,
            env,
            log,
            starts: 0,
        }
    }

    /// Spawns the daemon; its listen address comes on the receiver once it listens.
    fn spawn(
        &mut self,
        extra_env: &[(&str, &str)],
    ) -> Result<(Daemon, mpsc::Receiver<SocketAddr>), String> {
        self.starts += 1;
        let settings: Vec<String> = extra_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.log.note(&format!(
            "start #{} at {} {}",
            self.starts,
            super::wall_clock(),
            settings.join(" ")
        ));
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("RUST_LOG")
            .env_remove("INDABA_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or("the daemon's stderr was not piped")?;
        let reader = Reader::follow(stderr, self.log.clone());
        let daemon = Daemon {
            pid: child.id(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            reader: Some(reader.thread),
            listened_after: Duration::ZERO,
        };
        Ok((daemon, reader.listening))
    }

    /// Starts the daemon and waits until it listens. `Err` when it exits first or stays
    /// silent (then it is killed): after a crash, a daemon that will not start again is a
    /// finding, and the log says why.
    pub(crate) fn start(&mut self, extra_env: &[(&str, &str)]) -> Result<Daemon, String> {
        let started = Instant::now();
        let (mut daemon, listening) = self.spawn(extra_env)?;
        match listening.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                daemon.addr = addr;
                daemon.listened_after = started.elapsed();
                Ok(daemon)
            }
            Err(_) => {
                let status = daemon.kill();
                Err(format!(
                    "the daemon did not start within {:.1} s ({status}); see {}",
                    started.elapsed().as_secs_f64(),
                    self.log.path.display()
                ))
            }
        }
    }

    /// Starts the daemon and kills it `after` into its start-up, listening or not: a crash
    /// during journal replay. Answers whether it had reported its listen address by then.
    pub(crate) fn start_and_kill(
        &mut self,
        extra_env: &[(&str, &str)],
        after: Duration,
    ) -> Result<bool, String> {
        let (mut daemon, listening) = self.spawn(extra_env)?;
        std::thread::sleep(after);
        daemon.kill();
        Ok(listening.try_recv().is_ok())
    }
}

/// The thread copying a daemon's stderr into the log, and the address it announced.
struct Reader {
    thread: JoinHandle<()>,
    listening: mpsc::Receiver<SocketAddr>,
}

impl Reader {
    fn follow(stderr: std::process::ChildStderr, log: Arc<DaemonLog>) -> Reader {
        let (tx, listening) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let addr = line
                    .split("listening on http://")
                    .nth(1)
                    // Text lines end the address at a space, JSON lines at the closing quote.
                    .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
                    .and_then(|addr| addr.parse().ok());
                log.daemon_line(&line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        Reader { thread, listening }
    }
}

/// A running daemon process.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// Joined once the process has ended, so the log holds its last lines.
    reader: Option<JoinHandle<()>>,
    pub(crate) pid: u32,
    /// From the spawn to the "listening" line.
    pub(crate) listened_after: Duration,
}

impl Daemon {
    /// The exit status, if the process has ended (by itself: a crash is a finding).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9`, and the exit status.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait();
        self.join_reader();
        status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9))
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after it). The exit status
    /// (`None` when it had to be killed) and how long the stop took.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        use rustix::process::{Pid, Signal, kill_process};
        let started = Instant::now();
        let pid = Pid::from_raw(self.pid as i32);
        if let Some(pid) = pid {
            let _ = kill_process(pid, Signal::TERM);
        }
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_reader();
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        (None, started.elapsed())
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

//! The admin socket, `<data_dir>/admin.sock`, and its clients: `indaba backup` and
//! `indaba admin ...` (the operators' commands, contract section 9).
//!
//! A live redb file cannot be copied safely, so a running daemon makes the backup itself: it
//! takes one read transaction (a snapshot), copies every table into a fresh file
//! ([`crate::store::backup`]) and streams that file back. When no daemon answers, `indaba backup`
//! copies the data file directly; redb's file lock keeps a daemon from opening it meanwhile.
//!
//! # Protocol
//!
//! Plain bytes over a unix stream socket, one request per connection:
//!
//! ```text
//! client → daemon   backup\n
//! daemon → client   ok <length>\n  followed by <length> bytes: a complete redb file
//!              or   error <code> <message>\n
//! ```
//!
//! ```text
//! client → daemon   api <METHOD> <PATH?QUERY>\n       (an `/api/admin/…` route or `/api/stats`)
//! daemon → client   reply <status> <length>\n  followed by <length> bytes: the JSON body
//!              or   error <code> <message>\n
//! ```
//!
//! An `api` request is answered by the admin API's own routes, as if it had come over HTTP
//! with the service secret (the daemon hands it to an [`ApiCall`], `crate::http::local`): the
//! CLI shows what the API answers, 4xx included.
//!
//! `<code>` is one of [`ErrorCode`]: `unknown_request`, `forbidden`, `busy` (a backup is already
//! running: one at a time, each needs disk space for its copy), `shutting_down`, `failed`. The
//! daemon closes the connection after its answer. A stop that begins while a backup is copied or
//! streamed cuts it short; the client notices the missing bytes and removes its partial file.
//!
//! # Who may connect
//!
//! The socket is created mode 0600 in the data dir, and each connection's peer credentials are
//! checked as well: only the daemon's own user and root get an answer. A stale socket left by a
//! crash is replaced at start (the store's lock, taken first, proves no other daemon uses this
//! data dir); a clean stop removes it.
//!
//! # Size
//!
//! Over the ~600-line guide (issue 17) and the next to split, along the seam the file already
//! has: the daemon's side (the socket, its connections, the backup snapshot and stream) and the
//! clients' side ([`backup`], [`api`] and their exchange over the socket) share little more than
//! the protocol's words ([`ErrorCode`], [`socket_path`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;
use crate::store::backup::{self, BackupError, Summary};

/// File name of the socket inside the data dir.
pub const SOCKET_FILE: &str = "admin.sock";

/// The request line that asks for a backup (without its `\n`).
pub const BACKUP_REQUEST: &str = "backup";

/// The first word of a request line that asks the admin API (`api <METHOD> <TARGET>`).
pub const API_REQUEST: &str = "api";

/// Longest request line read; anything longer is not a request of this protocol.
const REQUEST_MAX: u64 = 8192;
/// Longest API answer the client reads.
const REPLY_MAX: u64 = 64 << 20;

/// Answers an operator's API request: method and target (path and query) → status and JSON
/// body. The daemon's wiring gives the socket one that runs the HTTP routes.
pub type ApiCall = Arc<
    dyn Fn(
            String,
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = (u16, bytes::Bytes)> + Send>>
        + Send
        + Sync,
>;
/// Longest status line the client accepts.
const STATUS_MAX: u64 = 1024;
/// Input still read, and for how long, after an `error` answer before closing (see [`refuse`]).
const DRAIN_MAX: u64 = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one blocking write waits before the stream checks for a stop again.
const WRITE_POLL: Duration = Duration::from_secs(1);
/// How long a client may read nothing before the stream gives up on it.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per read and write while streaming the backup file.
const CHUNK: usize = 256 * 1024;
/// The daemon's scratch file for a backup in progress, unlinked as soon as it is open.
const SCRATCH_FILE: &str = ".backup-in-progress.redb";
/// Why a backup is refused or cut short once the daemon stops.
const STOPPING: &str = "the daemon is stopping";

/// Path of the admin socket for `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// The `<code>` of an `error` status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request line is not one this daemon knows.
    UnknownRequest,
    /// The peer is neither the daemon's user nor root.
    Forbidden,
    /// Another backup is running.
    Busy,
    /// The daemon is stopping.
    ShuttingDown,
    /// The daemon could not make the copy (see its log).
    Failed,
}

impl ErrorCode {
    const ALL: [ErrorCode; 5] = [
        ErrorCode::UnknownRequest,
        ErrorCode::Forbidden,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::Failed,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the admin socket could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket path {path} exists and is not a socket: move it out of the data dir")]
    NotASocket { path: PathBuf },
    #[error("cannot create admin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bound admin socket, ready to [`serve`](AdminSocket::serve).
#[derive(Debug)]
pub struct AdminSocket {
    /// Accepts admin connections.
    listener: UnixListener,
    /// The socket file, removed when serving ends.
    path: PathBuf,
    /// The data dir it lives in, where backups put their scratch file.
    data_dir: PathBuf,
    /// The daemon's user id (the socket file's owner): the peer every connection must be.
    owner: u32,
}

impl AdminSocket {
    /// Binds `<data_dir>/admin.sock`, replacing a stale socket file, mode 0600.
    ///
    /// Call only with the store open: its lock is what makes an existing socket stale. Needs a
    /// tokio runtime (the listener registers with it).
    pub fn bind(data_dir: &Path) -> Result<AdminSocket, AdminError> {
        let path = socket_path(data_dir);
        let bind_error = |source| AdminError::Bind {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(&path).map_err(bind_error)?;
                tracing::info!(path = %path.display(), "replaced a stale admin socket");
            }
            Ok(_) => return Err(AdminError::NotASocket { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_error(e)),
        }
        let listener = UnixListener::bind(&path).map_err(bind_error)?;
        // The data dir is 0700 already; the mode (and the peer check) hold without it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        let owner = std::fs::metadata(&path).map_err(bind_error)?.uid();
        Ok(AdminSocket {
            listener,
            path,
            data_dir: data_dir.to_owned(),
            owner,
        })
    }

    /// Answers admin connections until `shutdown` fires, then removes the socket file.
    /// Connections run on `tasks`, so the daemon's drain waits for them.
    pub async fn serve(
        self,
        store: Store,
        api: ApiCall,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        let shared = Arc::new(Shared {
            store,
            api,
            data_dir: self.data_dir,
            owner: self.owner,
            busy: AtomicBool::new(false),
            shutdown: shutdown.clone(),
        });
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    tasks.spawn(connection(stream, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the admin socket");
        }
    }
}

/// What every admin connection needs.
struct Shared {
    /// The store to snapshot.
    store: Store,
    /// Answers `api` requests.
    api: ApiCall,
    /// Where the scratch copy goes: same disk as the data, writable by the daemon.
    data_dir: PathBuf,
    /// The only non-root user answered.
    owner: u32,
    /// Set while a backup runs: one at a time.
    busy: AtomicBool,
    /// Cuts a backup short when the daemon stops.
    shutdown: CancellationToken,
}

/// Clears [`Shared::busy`] when the backup holding it ends, however it ends.
struct BusyGuard<'a>(&'a AtomicBool);

impl<'a> BusyGuard<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BusyGuard(flag))
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let peer = stream.peer_cred().map(|c| c.uid());
    if !matches!(peer, Ok(uid) if uid == shared.owner || uid == 0) {
        tracing::debug!(peer = ?peer.ok(), "admin connection from another user refused");
        refuse(
            &mut stream,
            ErrorCode::Forbidden,
            "only the daemon's user or root may use the admin socket",
        )
        .await;
        return;
    }
    let request = tokio::select! {
        request = read_request(&mut stream) => request,
        // A silent client must not hold up the drain.
        _ = shared.shutdown.cancelled() => return,
    };
    let request = match request {
        Ok(request) => request,
        Err(reason) => {
            tracing::debug!(reason, "bad admin request");
            refuse(&mut stream, ErrorCode::UnknownRequest, reason).await;
            return;
        }
    };
    if request == BACKUP_REQUEST {
        send_backup(stream, &shared).await;
        return;
    }
    let mut words = request.splitn(3, ' ');
    if let (Some(API_REQUEST), Some(method), Some(target)) =
        (words.next(), words.next(), words.next())
    {
        let answer = tokio::select! {
            answer = (shared.api)(method.to_owned(), target.to_owned()) => answer,
            _ = shared.shutdown.cancelled() => {
                refuse(&mut stream, ErrorCode::ShuttingDown, STOPPING).await;
                return;
            }
        };
        let (status, body) = answer;
        tracing::info!(method, status, "admin request over the admin socket");
        let head = format!("reply {status} {}\n", body.len());
        if stream.write_all(head.as_bytes()).await.is_ok() {
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        }
        return;
    }
    tracing::debug!("unknown admin request");
    refuse(
        &mut stream,
        ErrorCode::UnknownRequest,
        "the requests are `backup` and `api <METHOD> <PATH>`",
    )
    .await;
}

/// Reads the request line, without its `\n`.
async fn read_request(stream: &mut UnixStream) -> Result<String, &'static str> {
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(stream.take(REQUEST_MAX));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => return Err("no request line in time"),
        Ok(Err(_)) => return Err("connection failed before the request line"),
        Ok(Ok(_)) => {}
    }
    let Some(line) = line.strip_suffix(b"\n") else {
        return Err("the request line is missing or too long");
    };
    String::from_utf8(line.to_vec()).map_err(|_| "the request line is not UTF-8")
}

/// Writes an `error` status line; the connection closes when `stream` is dropped.
async fn refuse(stream: &mut UnixStream, code: ErrorCode, message: &str) {
    let message = message.replace(['\r', '\n'], " ");
    let _ = stream
        .write_all(format!("error {code} {message}\n").as_bytes())
        .await;
    let _ = stream.shutdown().await;
    // Closing with unread input resets the connection, and the peer may lose the answer with
    // it: read (a bounded amount of) what it still sends first.
    let mut rest = stream.take(DRAIN_MAX);
    let _ = tokio::time::timeout(
        DRAIN_TIMEOUT,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}

async fn send_backup(mut stream: UnixStream, shared: &Shared) {
    let Some(_busy) = BusyGuard::take(&shared.busy) else {
        refuse(&mut stream, ErrorCode::Busy, "a backup is already running").await;
        return;
    };
    let started = Instant::now();
    let (scratch, summary) = match snapshot(shared).await {
        Ok(done) => done,
        Err((code, message)) => {
            refuse(&mut stream, code, &message).await;
            return;
        }
    };
    // Streaming blocks on the file and the socket: a blocking thread, never the runtime.
    let stream = match blocking_stream(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "backup: admin connection lost");
            return;
        }
    };
    let shutdown = shared.shutdown.clone();
    let sent = tokio::task::spawn_blocking(move || {
        stream_file(stream, &scratch, &|| shutdown.is_cancelled())
    })
    .await;
    match sent {
        Ok(Ok(len)) => tracing::info!(
            bytes = len,
            tables = summary.tables.len(),
            rows = summary.rows(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "backup sent"
        ),
        Ok(Err(e)) => tracing::info!(error = %e, "backup not fully sent"),
        Err(e) => tracing::error!(error = %e, "backup stream task failed"),
    }
}

/// Snapshots the store into a scratch file in the data dir; answers a handle to read it back
/// and what went in, or the refusal to send. File operations run on the blocking pool.
async fn snapshot(shared: &Shared) -> Result<(File, Summary), (ErrorCode, String)> {
    let stopping = || (ErrorCode::ShuttingDown, STOPPING.to_owned());
    if shared.shutdown.is_cancelled() {
        return Err(stopping());
    }
    let dir = shared.data_dir.clone();
    let (for_redb, for_stream) = tokio::task::spawn_blocking(move || scratch_file(&dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| {
            tracing::error!(error = %e, "backup: cannot create the scratch file");
            let message = format!("cannot create a scratch file in the data dir: {e}");
            (ErrorCode::Failed, message)
        })?;
    match shared.store.backup(for_redb, shared.shutdown.clone()).await {
        Ok(summary) => Ok((for_stream, summary)),
        Err(BackupError::Cancelled) => {
            tracing::info!("backup cancelled: {STOPPING}");
            Err(stopping())
        }
        Err(e) => {
            tracing::error!(error = %e, "backup failed");
            Err((ErrorCode::Failed, e.to_string()))
        }
    }
}

/// Opens the daemon's scratch file twice (redb writes through one handle, the stream reads the
/// other) and unlinks it at once, so nothing is left behind whatever happens next.
fn scratch_file(data_dir: &Path) -> std::io::Result<(File, File)> {
    let path = data_dir.join(SCRATCH_FILE);
    let file = create_private(&path)?;
    let reader = File::open(&path);
    std::fs::remove_file(&path)?;
    Ok((file, reader?))
}

/// Creates (or empties) `path` for reading and writing, readable only by its owner: a backup
/// holds everything the daemon stores.
fn create_private(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn blocking_stream(stream: UnixStream) -> std::io::Result<std::os::unix::net::UnixStream> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_POLL))?;
    Ok(stream)
}

/// Writes `ok <len>\n` and then the file's `len` bytes, checking `cancelled` between chunks;
/// answers `len`.
fn stream_file(
    mut stream: std::os::unix::net::UnixStream,
    file: &File,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    write_all(&mut stream, format!("ok {len}\n").as_bytes(), cancelled)?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).map_or(CHUNK, |left| left.min(CHUNK));
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "the scratch file is shorter than its size",
            ));
        }
        write_all(&mut stream, &buf[..n], cancelled)?;
        offset += n as u64;
    }
    Ok(len)
}

/// `write_all` that notices a stop within [`WRITE_POLL`] even while the client is slow, and
/// gives up on a client that read nothing for [`STALL_TIMEOUT`]: the drain never waits on it.
fn write_all(
    stream: &mut std::os::unix::net::UnixStream,
    mut data: &[u8],
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    use std::io::ErrorKind;
    let mut progress = Instant::now();
    while !data.is_empty() {
        if cancelled() {
            return Err(std::io::Error::other(STOPPING));
        }
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                progress = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if progress.elapsed() > STALL_TIMEOUT {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "the client stopped reading",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where a backup's data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The running daemon, through its admin socket.
    Daemon { socket: PathBuf },
    /// The data file of a stopped daemon, read directly.
    DataFile { path: PathBuf },
}

/// A finished backup, as `indaba backup` reports it.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The backup file written.
    pub dest: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Where the snapshot came from.
    pub source: Source,
    /// Tables and rows, counted in the written file after its integrity check.
    pub summary: Summary,
}

/// Why `indaba backup` failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("backup destination {path}: {message}")]
    Destination {
        path: PathBuf,
        message: &'static str,
    },
    #[error("cannot write the backup to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot connect to the admin socket {path}: {source} (run indaba as the daemon's user, or as root)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no daemon answers on the admin socket {path}: is indaba running with this data dir (--data-dir, storage.data_dir)?"
    )]
    NoDaemon { path: PathBuf },
    #[error("the daemon refused ({code}): {message}")]
    Daemon { code: ErrorCode, message: String },
    #[error("the admin socket {path} does not speak the admin protocol: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("the connection to the daemon failed during the backup: {0}")]
    Receive(std::io::Error),
    #[error("the daemon sent {got} of {expected} bytes and hung up (did it stop?)")]
    Truncated { expected: u64, got: u64 },
    #[error(transparent)]
    Copy(#[from] BackupError),
}

/// `indaba backup DEST`: a consistent copy of the data in `data_dir`, written to `dest`.
///
/// Written to `DEST.partial` (mode 0600: it holds everything the data file does), fsynced,
/// verified, then renamed over `DEST`, so `DEST` is only ever a complete, checked backup. On
/// failure the partial file is removed.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<BackupReport, ClientError> {
    let partial = partial_path(dest)?;
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ClientError::Write { path, source }
    };
    let file = create_private(&partial).map_err(write_error(&partial))?;
    let cleanup = RemoveOnDrop(Some(partial.clone()));

    let socket = socket_path(data_dir);
    let source = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => {
            receive(stream, &socket, file, &partial)?;
            Source::Daemon { socket }
        }
        // No socket, or one a crashed daemon left: nobody is serving this data dir.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let path = data_dir.join(crate::store::DATABASE_FILE);
            backup::copy_data_file(&path, file)?;
            Source::DataFile { path }
        }
        Err(source) => {
            return Err(ClientError::Connect {
                path: socket,
                source,
            });
        }
    };

    let summary = backup::verify(&partial)?;
    // After the check, which opens the file and may rewrite its header: flush it all.
    let file = File::open(&partial).map_err(write_error(&partial))?;
    file.sync_all().map_err(write_error(&partial))?;
    let bytes = file.metadata().map_err(write_error(&partial))?.len();
    drop(file);
    std::fs::rename(&partial, dest).map_err(write_error(dest))?;
    cleanup.disarm();
    // The rename is durable once the directory is.
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(write_error(parent))?;
    }
    Ok(BackupReport {
        dest: dest.to_owned(),
        bytes,
        source,
        summary,
    })
}

/// `indaba admin ...`: asks the daemon serving `data_dir` for `method target` of the admin API;
/// answers the status and the JSON body. Fails when no daemon serves the data dir (the
/// commands need a running daemon: it alone may write the data file).
pub fn api(data_dir: &Path, method: &str, target: &str) -> Result<(u16, Vec<u8>), ClientError> {
    let socket = socket_path(data_dir);
    let stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NoDaemon { path: socket });
        }
        Err(source) => {
            return Err(ClientError::Connect {
                path: socket,
                source,
            });
        }
    };
    if target.contains(['\n', '\r', ' ']) {
        return Err(ClientError::Protocol {
            path: socket,
            message: "the request holds a space or a line break".to_owned(),
        });
    }
    let (mut reader, line) =
        exchange(stream, &socket, &format!("{API_REQUEST} {method} {target}"))?;
    let bad = |what: &str| ClientError::Protocol {
        path: socket.clone(),
        message: format!("bad {what} in `{line}`"),
    };
    let Some(("reply", rest)) = line.split_once(' ') else {
        return Err(bad("status line"));
    };
    let (status, len) = rest.split_once(' ').ok_or_else(|| bad("status line"))?;
    let status = status.parse::<u16>().map_err(|_| bad("status"))?;
    let len = len
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= REPLY_MAX)
        .ok_or_else(|| bad("length"))?;
    let mut body = Vec::new();
    (&mut reader)
        .take(len)
        .read_to_end(&mut body)
        .map_err(ClientError::Receive)?;
    if (body.len() as u64) < len {
        return Err(ClientError::Truncated {
            expected: len,
            got: body.len() as u64,
        });
    }
    Ok((status, body))
}

/// Sends `request` (one line) and reads the daemon's status line (without its `\n`); an
/// `error` status line is the daemon's refusal. Answers the stream, to read what follows.
fn exchange(
    mut stream: std::os::unix::net::UnixStream,
    socket: &Path,
    request: &str,
) -> Result<(BufReader<std::os::unix::net::UnixStream>, String), ClientError> {
    let protocol = |message: String| ClientError::Protocol {
        path: socket.to_owned(),
        message,
    };
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(ClientError::Receive)?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    // No timeout here: a backup is answered once its copy is complete, which takes as long as
    // the data is large. Ctrl-C is safe (DEST is only written by the final rename).
    (&mut reader)
        .take(STATUS_MAX)
        .read_until(b'\n', &mut line)
        .map_err(ClientError::Receive)?;
    let line = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.strip_suffix('\n'))
        .ok_or_else(|| protocol("no status line".to_owned()))?;
    if let Some(("error", rest)) = line.split_once(' ') {
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = ErrorCode::parse(code)
            .ok_or_else(|| protocol(format!("unknown error code in `{line}`")))?;
        return Err(ClientError::Daemon {
            code,
            message: message.to_owned(),
        });
    }
    Ok((reader, line.to_owned()))
}

/// `DEST.partial`, beside `DEST`, so the final rename stays on one file system.
fn partial_path(dest: &Path) -> Result<PathBuf, ClientError> {
    let Some(name) = dest.file_name() else {
        return Err(ClientError::Destination {
            path: dest.to_owned(),
            message: "not a file name",
        });
    };
    if dest.is_dir() {
        return Err(ClientError::Destination {
            path: dest.to_owned(),
            message: "is a directory: name the backup file",
        });
    }
    let mut partial = name.to_owned();
    partial.push(".partial");
    Ok(dest.with_file_name(partial))
}

/// Asks the daemon for a backup and writes what it streams into `file`.
fn receive(
    stream: std::os::unix::net::UnixStream,
    socket: &Path,
    mut file: File,
    partial: &Path,
) -> Result<(), ClientError> {
    let (mut reader, line) = exchange(stream, socket, BACKUP_REQUEST)?;
    let protocol = |message: String| ClientError::Protocol {
        path: socket.to_owned(),
        message,
    };
    let expected = match line.split_once(' ') {
        Some(("ok", len)) => len
            .parse::<u64>()
            .map_err(|_| protocol(format!("bad length in `{line}`")))?,
        _ => return Err(protocol(format!("unexpected status line `{line}`"))),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < expected {
        let want = usize::try_from(expected - got).map_or(CHUNK, |left| left.min(CHUNK));
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ClientError::Receive(e)),
        };
        file.write_all(&buf[..n])
            .map_err(|source| ClientError::Write {
                path: partial.to_owned(),
                source,
            })?;
        got += n as u64;
    }
    if got < expected {
        return Err(ClientError::Truncated { expected, got });
    }
    Ok(())
}

/// Removes the partial file unless the backup got as far as renaming it.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

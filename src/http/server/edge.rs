//! A connection's bytes, checked one request head at a time before hyper sees them.
//!
//! hyper answers a head it cannot parse (400, 414, 431) with a response of its own that has no
//! body, and drops a head that never finishes without a word. The contract wants every error
//! as JSON (PROTOCOL.md, conventions and section 7), and hyper offers no hook for its own
//! answers. So [`EdgeIo`] reads each request head ahead of hyper, with hyper's parser
//! (httparse) and the checks hyper adds, and hands it over only once it is complete and valid.
//! A head that is not complete in time, too large or malformed never reaches hyper: hyper gets
//! a stand-in request instead, marked with a token only this process knows, which the service
//! answers with the JSON error ([`Verdict::take_refusal`]), in order after any request
//! pipelined before it, and the connection closes.
//!
//! To find where the next head starts, the reader follows each request's framing
//! (`Content-Length`, chunked, or an upgrade, after which it only passes bytes through). That
//! also tells a stop what a connection is doing: a half-sent head is answered 503 and closed
//! at once (hyper waited out its header timeout for one, holding the stop). A connection
//! closed while its client may still be sending (a refused head, a body left unread) is
//! closed gently: our side first, then its bytes are read and dropped for up to [`LINGER`],
//! so the client reads our answer instead of a reset.
//!
//! Over the ~600-line guide (issue 17). The next to split: the pure scanning of a head and of a
//! chunked body (`check_head`, `ChunkScan` and their helpers) holds no state of the connection and
//! can be its own file; [`EdgeIo`]'s state machine and its `AsyncRead`/`AsyncWrite` are one piece.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::Request;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, Code};

/// Largest request head (request line and headers). hyper's own bound is about 400 KiB; ours
/// is lower, so that every head hyper could refuse for its size is refused here first.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest request target; hyper's own is 65,534 bytes.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most header fields in one head, hyper's own bound.
pub const MAX_HEADERS: usize = 100;
/// How long a closing connection reads and drops what its client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes read and dropped at a time while lingering.
const LINGER_READ: usize = 4096;
/// The header that marks a stand-in request.
const STAND_IN_HEADER: &str = "x-indaba-refused";

/// Why a request head was refused before hyper saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not HTTP/1.x as hyper reads it; the detail says what is wrong.
    Malformed(String),
    /// The request line is longer than [`MAX_URI_BYTES`] allows.
    UriTooLong,
    /// The head is over [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// The head did not arrive within `limits.body_timeout`.
    Timeout,
    /// The daemon began to stop while the head was arriving.
    ShuttingDown,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Malformed(detail) => ApiError::refused(Code::MalformedRequest, detail),
            Refusal::UriTooLong => ApiError::UriTooLong {
                limit: MAX_URI_BYTES,
            },
            Refusal::HeadTooLarge => ApiError::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
                fields: MAX_HEADERS,
            },
            Refusal::Timeout => ApiError::RequestTimeout { part: "head" },
            Refusal::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

/// What a connection's reader tells its service, and the other way round.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The refusal a stand-in request is to be answered with.
    refusal: Mutex<Option<Refusal>>,
    /// Responses the service has produced, so the reader times the next head from the last
    /// answer rather than from the end of the last request.
    answers: AtomicU64,
}

impl Verdict {
    /// The refusal to answer if `req` is this connection's stand-in request.
    pub fn take_refusal<B>(&self, req: &Request<B>) -> Option<Refusal> {
        let marked = req
            .headers()
            .get(STAND_IN_HEADER)
            .is_some_and(|v| v.as_bytes() == stand_in_token().as_bytes());
        if !marked {
            return None;
        }
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The service produced a response.
    pub fn answered(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
    }
}

/// The secret that marks stand-in requests: random per process, never sent to a client.
fn stand_in_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut random = [0u8; 16];
        // Without randomness the marker is still unguessable enough to be unique: a client
        // that forged it could only have its own request refused.
        let _ = getrandom::fill(&mut random);
        hex::encode(random)
    })
}

/// What the bytes after the checked ones are.
#[derive(Debug)]
enum Phase {
    /// A request head, not yet complete.
    Head,
    /// This many body bytes of a request with `Content-Length`.
    Body(u64),
    /// A chunked body.
    Chunked(ChunkScan),
    /// Anything: after an upgrade request, or a chunked body we could not follow (hyper
    /// refuses that body and closes).
    Raw,
    /// A head was refused: the stand-in request is all hyper gets from now on.
    Refused,
}

/// How the connection is being closed ([`AsyncWrite::poll_shutdown`]).
#[derive(Debug)]
enum Closing {
    Open,
    /// Writing our own last answer (503 to a head cut short by a stop).
    Farewell(Bytes),
    /// Ending our side; then lingering if the client may still be sending.
    Fin {
        linger: bool,
    },
    Lingering,
    Closed,
}

/// The socket of one HTTP connection, as hyper reads it.
///
/// Bytes are read straight into hyper's buffer; only what cannot be handed over yet (an
/// incomplete head) is moved into [`EdgeIo::buf`]. A request whose head arrives in one read,
/// the common case, is not copied, and no timer is touched for it.
#[derive(Debug)]
pub struct EdgeIo {
    io: TcpStream,
    /// Read from the socket and not yet handed to hyper: a head still incomplete, or the
    /// stand-in request for a refused one (and checked bytes before it).
    buf: BytesMut,
    /// How many of `buf`'s first bytes are checked and may be handed over.
    checked: usize,
    /// What the next unchecked byte belongs to.
    phase: Phase,
    /// How far the incomplete head in `buf` has been searched for its end.
    searched: usize,
    /// When the head being waited for is late: `head_timeout` after the end of the request
    /// before it, or after the answer to it, whichever came later.
    head_due: Instant,
    /// Wakes the connection at `head_due` while an incomplete head is held; later, when a
    /// closing connection stops lingering.
    timer: Pin<Box<Sleep>>,
    /// `limits.body_timeout`: how long a client may take to send a head.
    head_timeout: Duration,
    /// [`Verdict::answers`] when `head_due` was last set.
    answers_seen: u64,
    verdict: Arc<Verdict>,
    /// Fires when the daemon starts to stop.
    shutdown: CancellationToken,
    closing: Closing,
}

/// How many of some unchecked bytes may go to hyper.
#[derive(Debug, PartialEq, Eq)]
enum Passed {
    All,
    /// The first this many; the rest begins a head that is not complete yet.
    Upto(usize),
    /// The first this many; the head after them is refused.
    Refused(usize, Refusal),
}

impl EdgeIo {
    pub fn new(
        io: TcpStream,
        head_timeout: Duration,
        verdict: Arc<Verdict>,
        shutdown: CancellationToken,
    ) -> Self {
        let head_due = Instant::now() + head_timeout;
        Self {
            io,
            buf: BytesMut::new(),
            checked: 0,
            phase: Phase::Head,
            searched: 0,
            head_due,
            timer: Box::pin(tokio::time::sleep_until(head_due)),
            head_timeout,
            answers_seen: 0,
            verdict,
            shutdown,
            closing: Closing::Open,
        }
    }

    /// The socket and the bytes read from it that hyper has not taken (after an upgrade).
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.io, self.buf.freeze())
    }

    /// The next bytes are a request head.
    fn await_head(&mut self) {
        self.phase = Phase::Head;
        self.searched = 0;
        self.head_due = Instant::now() + self.head_timeout;
    }

    /// Follows `bytes`, all unchecked, from the current phase, and says how many of them may
    /// go to hyper.
    fn pass(&mut self, bytes: &[u8]) -> Passed {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match &mut self.phase {
                Phase::Refused => return Passed::Upto(at),
                Phase::Raw => return Passed::All,
                Phase::Body(left) => {
                    let n = (*left).min(rest.len() as u64);
                    at += n as usize;
                    *left -= n;
                    if *left == 0 {
                        self.await_head();
                    }
                }
                Phase::Chunked(scan) => match scan.feed(rest) {
                    Scanned::More => return Passed::All,
                    Scanned::End(n) => {
                        at += n;
                        self.await_head();
                    }
                    Scanned::Lost => self.phase = Phase::Raw,
                },
                Phase::Head => {
                    let first_look = self.searched == 0;
                    let ended = head_ended(rest, self.searched);
                    self.searched = rest.len();
                    let checked = if first_look || ended {
                        check_head(rest)
                    } else {
                        Ok(None)
                    };
                    match checked {
                        Ok(Some((len, next))) => {
                            at += len;
                            match next {
                                Next::Head => self.await_head(),
                                Next::Body(n) => self.phase = Phase::Body(n),
                                Next::Chunked => self.phase = Phase::Chunked(ChunkScan::new()),
                                Next::Raw => self.phase = Phase::Raw,
                            }
                        }
                        Ok(None) => {
                            return match oversized(rest) {
                                Some(refusal) => Passed::Refused(at, refusal),
                                None => Passed::Upto(at),
                            };
                        }
                        Err(refusal) => return Passed::Refused(at, refusal),
                    }
                }
            }
        }
        Passed::All
    }

    /// Checks what it can of the unchecked bytes in `buf`.
    fn check(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let from = self.checked;
        let passed = self.pass(&buf[from..]);
        self.buf = buf;
        match passed {
            Passed::All => self.checked = self.buf.len(),
            Passed::Upto(n) => self.checked = from + n,
            Passed::Refused(n, refusal) => {
                self.buf.truncate(from + n);
                self.checked = from + n;
                self.refuse(refusal);
            }
        }
    }

    /// Queues the stand-in request for `refusal` after the checked bytes: all hyper gets from
    /// now on.
    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(?refusal, "request head refused");
        *self
            .verdict
            .refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(refusal);
        self.buf.truncate(self.checked);
        self.buf.extend_from_slice(
            format!(
                "GET / HTTP/1.1\r\nhost: indaba\r\n{STAND_IN_HEADER}: {}\r\nconnection: close\r\n\r\n",
                stand_in_token()
            )
            .as_bytes(),
        );
        self.checked = self.buf.len();
        self.phase = Phase::Refused;
    }

    /// Whether an incomplete head is held back from hyper.
    fn holds_partial_head(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.buf.len() > self.checked
    }

    /// A held head that is late is refused (408); otherwise the timer is set to wake the
    /// connection when it will be. Only for a held head: an idle connection is hyper's (its
    /// keep-alive timeout).
    fn late_head(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer.deadline() != self.head_due {
            self.timer.as_mut().reset(self.head_due);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for EdgeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.checked > 0 {
                let n = this.checked.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.checked -= n;
                if this.buf.is_empty() {
                    // Idle connections keep no buffer.
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.phase, Phase::Refused) {
                // hyper answers the stand-in, then closes.
                return Poll::Pending;
            }
            // An answer since the head wait began restarts it: the client waited for it.
            let answers = this.verdict.answers.load(Ordering::Relaxed);
            if answers != this.answers_seen {
                this.answers_seen = answers;
                if matches!(this.phase, Phase::Head) {
                    this.head_due = Instant::now() + this.head_timeout;
                }
            }
            let held = this.holds_partial_head();
            if held && this.shutdown.is_cancelled() {
                this.refuse(Refusal::ShuttingDown);
                continue;
            }
            let start = out.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, out) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if held && this.late_head(cx) {
                        this.refuse(Refusal::Timeout);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
            if out.filled().len() == start {
                // The client closed its side; an incomplete head goes with it.
                return Poll::Ready(Ok(()));
            }
            if held {
                // The rest of a held head: it joins the head, and is checked there.
                this.buf.extend_from_slice(&out.filled()[start..]);
                out.set_filled(start);
                this.check();
                continue;
            }
            // Read straight into hyper's buffer: keep back what may not go yet.
            match this.pass(&out.filled()[start..]) {
                Passed::All => {}
                Passed::Upto(n) => {
                    this.buf.extend_from_slice(&out.filled()[start + n..]);
                    out.set_filled(start + n);
                }
                Passed::Refused(n, refusal) => {
                    out.set_filled(start + n);
                    this.refuse(refusal);
                }
            }
            if out.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for EdgeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// hyper is done with the connection. A head cut short by a stop is answered 503 here
    /// (hyper closes such a connection without reading it again); then our side is closed, and
    /// if the client may still be sending, what it sends is read and dropped for [`LINGER`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.closing {
                Closing::Open => {
                    let unread = match this.phase {
                        Phase::Head => this.holds_partial_head(),
                        Phase::Body(_) | Phase::Chunked(_) | Phase::Refused => true,
                        Phase::Raw => false,
                    };
                    this.closing = if this.shutdown.is_cancelled() && this.holds_partial_head() {
                        Closing::Farewell(ApiError::ShuttingDown.into_http1_bytes())
                    } else {
                        Closing::Fin { linger: unread }
                    };
                }
                Closing::Farewell(answer) => {
                    while !answer.is_empty() {
                        match ready!(Pin::new(&mut this.io).poll_write(cx, answer)) {
                            Ok(n) if n > 0 => answer.advance(n),
                            // The client is gone: nothing left to do gently.
                            _ => {
                                this.closing = Closing::Closed;
                                return Poll::Ready(Ok(()));
                            }
                        }
                    }
                    this.closing = Closing::Fin { linger: true };
                }
                Closing::Fin { linger } => {
                    let linger = *linger;
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    this.closing = if linger {
                        this.timer.as_mut().reset(Instant::now() + LINGER);
                        Closing::Lingering
                    } else {
                        Closing::Closed
                    };
                }
                Closing::Lingering => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        this.closing = Closing::Closed;
                        continue;
                    }
                    let mut sink = [0u8; LINGER_READ];
                    let mut read = ReadBuf::new(&mut sink);
                    match ready!(Pin::new(&mut this.io).poll_read(cx, &mut read)) {
                        Ok(()) if !read.filled().is_empty() => {}
                        _ => this.closing = Closing::Closed,
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// What follows a valid head.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Nothing: the next request's head.
    Head,
    Body(u64),
    Chunked,
    /// An upgrade (WebSocket) or CONNECT: whatever the client sends next.
    Raw,
}

/// Whether `head` has its end (an empty line) past `searched` (hyper's own quick test, so a
/// head trickling in a byte at a time is not parsed again at every byte).
fn head_ended(head: &[u8], searched: usize) -> bool {
    let from = searched.saturating_sub(3);
    let tail = &head[from..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Refusal for an incomplete head that is already too long.
fn oversized(head: &[u8]) -> Option<Refusal> {
    let request_line = head.iter().position(|&b| b == b'\n');
    match request_line {
        // The request line alone is over the limit (method and version take a few bytes).
        None if head.len() > MAX_URI_BYTES + 32 => Some(Refusal::UriTooLong),
        _ if head.len() > MAX_HEAD_BYTES => Some(Refusal::HeadTooLarge),
        _ => None,
    }
}

/// Parses a request head as hyper will: `Ok(None)` while incomplete, its length and what
/// follows it once complete, or why hyper would refuse it.
fn check_head(bytes: &[u8]) -> Result<Option<(usize, Next)>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(e) => return Err(Refusal::Malformed(format!("malformed request head: {e}"))),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Refusal::HeadTooLarge);
    }
    let malformed = |what: &str| {
        Err(Refusal::Malformed(format!(
            "malformed request head: {what}"
        )))
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return malformed("incomplete request line");
    };
    if path.len() > MAX_URI_BYTES {
        return Err(Refusal::UriTooLong);
    }
    let Ok(method) = hyper::Method::from_bytes(method.as_bytes()) else {
        return malformed("invalid method");
    };
    if hyper::Uri::try_from(path).is_err() {
        return malformed("invalid request target");
    }
    let http11 = version == 1;
    // Framing as hyper decides it (RFC 9112 section 6.3): Transfer-Encoding wins over
    // Content-Length, and must end in `chunked`; several Content-Lengths must agree.
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut upgrade = method == hyper::Method::CONNECT;
    for field in req.headers.iter() {
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return malformed("Transfer-Encoding in an HTTP/1.0 request");
            }
            transfer_encoding = true;
            length = None;
            chunked = std::str::from_utf8(field.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
        } else if field.name.eq_ignore_ascii_case("content-length") {
            if transfer_encoding {
                continue;
            }
            let Some(n) = decimal(field.value) else {
                return malformed("invalid Content-Length");
            };
            if length.is_some_and(|before| before != n) {
                return malformed("conflicting Content-Length headers");
            }
            length = Some(n);
        } else if field.name.eq_ignore_ascii_case("upgrade") {
            upgrade = http11;
        }
    }
    if transfer_encoding && !chunked {
        return malformed("Transfer-Encoding must end in chunked");
    }
    let next = if upgrade {
        Next::Raw
    } else if chunked {
        Next::Chunked
    } else {
        match length {
            Some(n) if n > 0 => Next::Body(n),
            _ => Next::Head,
        }
    };
    Ok(Some((len, next)))
}

/// A Content-Length value: ASCII digits only, within hyper's bound.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|n| *n < u64::MAX - 2)
}

/// Follows a chunked body (RFC 9112 section 7.1) to find where it ends.
#[derive(Debug)]
struct ChunkScan {
    state: Chunk,
    /// The chunk size being read, or the data left of the current chunk.
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size; `true` once there was one.
    Size(bool),
    /// Extensions after the size, up to the end of the line.
    Extension,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    DataEndLf,
    /// The start of a trailer line, or the empty line that ends the body.
    TrailerStart,
    Trailer,
    LastLf,
}

/// How far [`ChunkScan::feed`] got.
#[derive(Debug, PartialEq, Eq)]
enum Scanned {
    /// All of it is body; more is to come.
    More,
    /// The body ends after this many of the bytes fed.
    End(usize),
    /// Not chunked framing: hyper will refuse the body, the reader gives up following it.
    Lost,
}

impl ChunkScan {
    fn new() -> Self {
        Self {
            state: Chunk::Size(false),
            size: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Scanned {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                Chunk::Size(any) => match (b as char).to_digit(16) {
                    Some(d) => match self.size.checked_mul(16) {
                        Some(size) => {
                            self.size = size + u64::from(d);
                            Chunk::Size(true)
                        }
                        None => return Scanned::Lost,
                    },
                    None if !any => return Scanned::Lost,
                    None if b == b'\n' => self.size_done(),
                    None => Chunk::Extension,
                },
                Chunk::Extension if b == b'\n' => self.size_done(),
                Chunk::Extension => Chunk::Extension,
                Chunk::Data => {
                    let n = self.size.min((bytes.len() - i) as u64);
                    self.size -= n;
                    i += n as usize;
                    if self.size == 0 {
                        self.state = Chunk::DataEnd;
                    }
                    continue;
                }
                Chunk::DataEnd if b == b'\r' => Chunk::DataEndLf,
                Chunk::DataEnd | Chunk::DataEndLf if b == b'\n' => Chunk::Size(false),
                Chunk::DataEnd | Chunk::DataEndLf => return Scanned::Lost,
                Chunk::TrailerStart if b == b'\r' => Chunk::LastLf,
                Chunk::TrailerStart | Chunk::LastLf if b == b'\n' => return Scanned::End(i + 1),
                Chunk::LastLf => return Scanned::Lost,
                Chunk::TrailerStart | Chunk::Trailer if b == b'\n' => Chunk::TrailerStart,
                Chunk::TrailerStart | Chunk::Trailer => Chunk::Trailer,
            };
            i += 1;
        }
        Scanned::More
    }

    /// The end of a chunk-size line: data follows, or the trailers if the size was 0.
    fn size_done(&mut self) -> Chunk {
        if self.size == 0 {
            Chunk::TrailerStart
        } else {
            Chunk::Data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let next = |head: &str| check_head(head.as_bytes()).map(|h| h.map(|(_, n)| n));
        assert_eq!(next("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(next("GET / HTTP/1.1\r\n\r\n"), Ok(Some(Next::Head)));
        assert_eq!(
            next("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(Next::Body(5)))
        );
        assert_eq!(
            next(
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            ),
            Ok(Some(Next::Chunked))
        );
        assert_eq!(
            next("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n"),
            Ok(Some(Next::Chunked))
        );
        assert_eq!(
            next("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
            Ok(Some(Next::Raw))
        );
        assert_eq!(
            next("POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n"),
            Ok(Some(Next::Body(1)))
        );
        for bad in [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(next(bad), Err(Refusal::Malformed(_))),
                "{bad:?}: {:?}",
                next(bad)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            next(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(Refusal::HeadTooLarge)
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES));
        assert_eq!(next(&long), Err(Refusal::UriTooLong));
        assert_eq!(
            oversized(format!("GET /{}", "a".repeat(MAX_URI_BYTES + 40)).as_bytes()),
            Some(Refusal::UriTooLong)
        );
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let end = body.len() - "GET /next".len();
        // Fed whole, and fed a byte at a time.
        assert_eq!(ChunkScan::new().feed(body), Scanned::End(end));
        let mut scan = ChunkScan::new();
        for (i, b) in body.iter().enumerate() {
            match scan.feed(std::slice::from_ref(b)) {
                Scanned::More => assert!(i < end - 1, "ended late at {i}"),
                Scanned::End(1) => {
                    assert_eq!(i, end - 1);
                    break;
                }
                other => panic!("{other:?} at {i}"),
            }
        }
        assert_eq!(ChunkScan::new().feed(b"0\r\n\r\n"), Scanned::End(5));
        assert_eq!(ChunkScan::new().feed(b"zz\r\n"), Scanned::Lost);
        assert_eq!(ChunkScan::new().feed(b"2\r\nabX"), Scanned::Lost);
    }
}

//! The accept loop and per-connection tasks.
//!
//! Every connection runs in a task tracked by a [`TaskTracker`], so shutdown can wait for them.
//! When the shutdown token fires the loop stops accepting (the listener is dropped) and every
//! connection is told to finish its in-flight request and close; one that is idle or holds
//! only part of a request closes at once (see [`edge`]).
//!
//! hyper reads each connection through [`edge::EdgeIo`], which checks every request head
//! before hyper parses it, so that the errors of the HTTP layer (400, 408, 414, 431) are JSON
//! like every other error, rather than hyper's empty responses.

mod edge;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{ApiError, HttpResponse};
use crate::http::request::StopSignal;
use crate::metrics::Metrics;
use crate::state::AppState;
use edge::{EdgeIo, Verdict};

pub use edge::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_URI_BYTES};

/// hyper's own header timeout, past ours (`limits.body_timeout`, kept by [`EdgeIo`]) so ours
/// answers a late head with 408 first; hyper's still closes idle keep-alive connections.
const HYPER_HEADER_MARGIN: Duration = Duration::from_secs(1);

/// Connections over `limits.max_connections` whose request is still read, so that `/health`
/// and `/ready` are answered on a full node; beyond these, a connection gets its 503 without
/// being read, as each one read holds a task for up to [`OVER_LIMIT_HEADER_TIMEOUT`].
const OVER_LIMIT_SERVED: usize = 64;
/// How long a connection over the limit may take to send its request's headers.
const OVER_LIMIT_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until `shutdown` fires. Returns once the listener is closed; the
/// connections live on in `tracker` until they finish.
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let open = state.open_connections.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        state.metrics.connections_opened.inc();
        let guard = ConnectionGuard::new(open.clone(), state.metrics.clone());
        let max = state.config.limits.max_connections;
        if guard.count > max.saturating_add(OVER_LIMIT_SERVED) {
            tracker.spawn(refuse_over_limit(stream, guard));
            continue;
        }
        if guard.count > max {
            tracker.spawn(serve_over_limit(
                stream,
                state.clone(),
                shutdown.clone(),
                guard,
            ));
            continue;
        }
        tracker.spawn(serve_connection(
            stream,
            peer,
            state.clone(),
            shutdown.clone(),
            guard,
        ));
    }
    tracing::info!("listener closed: no new connections");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    guard: ConnectionGuard,
) {
    // Shared with a WebSocket session, so an upgraded connection stays counted.
    let guard: Arc<dyn std::any::Any + Send + Sync> = Arc::new(guard);
    let head_timeout = state.config.limits.body_timeout;
    let verdict = Arc::new(Verdict::default());
    let io = EdgeIo::new(stream, head_timeout, verdict.clone(), shutdown.clone());
    let stop = StopSignal(shutdown.clone());
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        let state = state.clone();
        req.extensions_mut().insert(guard.clone());
        req.extensions_mut().insert(stop.clone());
        answer(verdict.clone(), req, move |req| {
            super::router::dispatch(state, peer, req)
        })
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout + HYPER_HEADER_MARGIN)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Answers `req` with `handler`, or with its refusal if it is the stand-in for a head the
/// reader refused ([`edge`]); either way the reader hears that an answer was made.
async fn answer<F, Fut>(
    verdict: Arc<Verdict>,
    req: hyper::Request<Incoming>,
    handler: F,
) -> Result<HttpResponse, Infallible>
where
    F: FnOnce(hyper::Request<Incoming>) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let upgrade = req.method() == Method::CONNECT || req.headers().contains_key(UPGRADE);
    let mut response = match verdict.take_refusal(&req) {
        Some(refusal) => closing(ApiError::from(refusal).into_response()),
        None => handler(req).await,
    };
    // After a refused upgrade the reader passes bytes through unchecked: no more requests on
    // this connection.
    if upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response = closing(response);
    }
    verdict.answered();
    Ok(response)
}

/// `response` with `Connection: close`.
fn closing(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The TCP stream under an upgraded connection, and the bytes already read from it past the
/// upgrade request (usually none); `None` if it was not one of ours.
pub fn upgraded_stream(upgraded: hyper::upgrade::Upgraded) -> Option<(TcpStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<EdgeIo>>().ok()?;
    let (stream, unread) = parts.io.into_inner().into_parts();
    // hyper read its bytes before those still in the reader.
    let early = if unread.is_empty() {
        parts.read_buf
    } else {
        [parts.read_buf, unread].concat().into()
    };
    Some((stream, early))
}

/// A connection over `limits.max_connections`: one request, answered by
/// [`super::health::over_limit`] (the health checks, else 503), then closed. Its head is
/// checked like any other, within [`OVER_LIMIT_HEADER_TIMEOUT`].
async fn serve_over_limit(
    stream: TcpStream,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    _guard: ConnectionGuard,
) {
    let verdict = Arc::new(Verdict::default());
    let io = EdgeIo::new(
        stream,
        OVER_LIMIT_HEADER_TIMEOUT,
        verdict.clone(),
        shutdown.clone(),
    );
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let state = state.clone();
        answer(verdict.clone(), req, move |req| async move {
            super::health::over_limit(&state, req.method(), req.uri().path())
        })
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(OVER_LIMIT_HEADER_TIMEOUT + HYPER_HEADER_MARGIN)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection over the limit ended with an error");
            }
        }
        // Nothing in flight worth waiting for: a stop closes it at once.
        _ = shutdown.cancelled() => {}
    }
}

/// Answers a connection far over `limits.max_connections` with 503, unread, and closes it.
async fn refuse_over_limit(mut stream: TcpStream, _guard: ConnectionGuard) {
    tracing::debug!("connection refused: at max_connections");
    let _ = stream
        .write_all(&ApiError::TooManyConnections.into_http1_bytes())
        .await;
    let _ = stream.shutdown().await;
}

/// Counts a connection while it is open (moved into a WebSocket session after an upgrade).
struct ConnectionGuard {
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    /// Open connections including this one, when it was accepted.
    count: usize,
}

impl ConnectionGuard {
    fn new(open: Arc<AtomicUsize>, metrics: Arc<Metrics>) -> Self {
        let count = open.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            open,
            metrics,
            count,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections_closed.inc();
    }
}

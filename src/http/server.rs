//! The accept loop and per-connection tasks.
//!
//! Every connection runs in a task tracked by a [`TaskTracker`], so shutdown can wait for them.
//! When the shutdown token fires the loop stops accepting (the listener is dropped) and every
//! connection is told to finish its in-flight request and close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;
use crate::metrics::Metrics;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        let state = state.clone();
        req.extensions_mut().insert(guard.clone());
        async move { Ok::<_, Infallible>(super::router::dispatch(state, peer, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
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

/// A connection over `limits.max_connections`: one request, answered by
/// [`super::health::over_limit`] (the health checks, else 503), then closed.
async fn serve_over_limit(
    stream: TcpStream,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    _guard: ConnectionGuard,
) {
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let response = super::health::over_limit(&state, req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(OVER_LIMIT_HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
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
    const BODY: &str = super::health::TOO_MANY_CONNECTIONS;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    tracing::debug!("connection refused: at max_connections");
    let _ = stream.write_all(response.as_bytes()).await;
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

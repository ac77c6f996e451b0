//! Wiring: open the store, build the shared state, serve, and stop in order.
//!
//! Stop order, when the shutdown token fires: stop accepting (HTTP and the admin socket, whose
//! file is removed; a backup in progress is cut short) → `/health` answers 503 → each
//! connection finishes its in-flight request and closes → the writer commits what is queued
//! and stops. The whole drain is bounded by `server.shutdown_timeout`. The service manager hears
//! `READY=1` just before the first accept and `STOPPING=1` as soon as accepting stops.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::secrets::Secrets;
use crate::state::{AppState, StateError};
use crate::store::{DamagedJournal, Store, StoreError, WriterOptions};
use crate::users::Directory;

/// Why the daemon could not run or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::client::ClientError),
    #[error("graceful stop exceeded server.shutdown_timeout ({0:?})")]
    ShutdownTimeout(std::time::Duration),
    #[error(
        "the store writer ended on an error (see the log above): it panicked, or the data file could not be written at the stop; everything acknowledged is durable and is back at the next start"
    )]
    WriterFailed,
}

/// How often queue entries past `queues.message_retention_days` are dead-lettered.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Dead-letters expired queue entries at start and then every [`EXPIRY_INTERVAL`].
async fn expire_queues(state: Arc<AppState>) {
    let shutdown = state.shutdown_token();
    let retention = u64::from(state.config.queues.message_retention_days) * 86_400_000;
    loop {
        let cutoff = crate::time::now_ms().saturating_sub(retention);
        // In bounded steps, so other writes interleave.
        loop {
            match state.store.writer().expire(cutoff).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(expired = n, "queue entries past retention dead-lettered");
                    if n < crate::store::EXPIRE_BATCH || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queue expiry failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Runs the daemon on `listener` until `shutdown` fires, then stops in order. A damaged
/// journal stops the start unless `damaged_journal` accepts its loss (`serve
/// --accept-journal-loss`).
pub async fn run(
    config: Config,
    secrets: Secrets,
    listener: TcpListener,
    shutdown: CancellationToken,
    damaged_journal: DamagedJournal,
) -> Result<(), AppError> {
    let started = Instant::now();
    // Before the store opens: a client that cannot be built stops the start at once.
    let webhook_sink = match &config.webhooks.url {
        Some(_) => Some(crate::webhooks::client::Sink::new(&config.webhooks)?),
        None => None,
    };
    let data_dir = config.storage.data_dir.clone();
    let batch_max = config.storage.commit_batch_max;
    let keyring = Arc::new(secrets.keyring);
    // The writer reports committed messages here, in commit order, for fan-out.
    let (commit_sink, committed) = tokio::sync::mpsc::unbounded_channel();
    // Opening may run a crash repair over the whole file: keep it off the async threads.
    let metrics = Arc::new(Metrics::new());
    let options = WriterOptions {
        batch_max,
        queue_max: config.queues.message_queue_max_size,
        journal: config.storage.journal,
        checkpoint_interval: config.storage.checkpoint_interval,
        commit_delay_max: config.storage.commit_delay_max,
        sink: commit_sink,
        metrics: metrics.clone(),
        damaged_journal,
    };
    let store_dir = data_dir.clone();
    let (store, writer_thread) =
        tokio::task::spawn_blocking(move || Store::open(&store_dir, keyring, options))
            .await
            .map_err(|e| StoreError::Storage(format!("open task failed: {e}")))??;
    let store = store.with_data_key_cache(config.storage.data_key_cache);
    // After the store: its lock proves an existing socket file is a crashed daemon's.
    let admin = crate::admin::AdminSocket::bind(&data_dir)?;
    let shutdown_timeout = config.server.shutdown_timeout;
    let writer = store.writer().clone();
    let mut hub = Hub::new(store.clone(), config.limits.presence_grace);
    let policy = crate::webhooks::EventPolicy::new(&config.webhooks);
    let mut presence_log = None;
    if policy.is_some_and(|p| {
        p.wants(crate::config::WebhookEvent::UserOnline)
            || p.wants(crate::config::WebhookEvent::UserOffline)
    }) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        hub = hub.with_presence_log(tx);
        presence_log = Some(rx);
    }
    let hub = Arc::new(hub);
    // Requests never read the users table: the directory holds it (see `users`).
    let loading = Instant::now();
    let users = Directory::load(&store).await?;
    tracing::info!(
        users = users.len(),
        ms = loading.elapsed().as_millis(),
        "user directory loaded"
    );
    let mut state = AppState::new(
        config,
        store,
        users,
        hub.clone(),
        metrics,
        &secrets.verify_key,
        secrets.signing_secret.as_deref(),
        secrets.service_secret,
        shutdown.clone(),
    )?;
    state.started = started;
    let state = Arc::new(state);
    let fanout = tokio::spawn(crate::hub::run_fanout(hub.clone(), committed));
    let presence_done = CancellationToken::new();
    // Webhooks: presence events written in order, and the delivery in a task of its own.
    let presence = match (policy, presence_log) {
        (Some(policy), Some(rx)) => Some(tokio::spawn(crate::webhooks::record_presence(
            writer.clone(),
            policy,
            rx,
            presence_done.clone(),
        ))),
        _ => None,
    };
    if let (Some(sink), Some(secret)) = (webhook_sink, secrets.webhook_secret) {
        let delivery = crate::webhooks::Delivery::new(
            &state.config.webhooks,
            sink,
            secret,
            state.store.clone(),
            state.metrics.clone(),
        );
        tracing::info!(
            events = ?state.config.webhooks.events,
            "webhooks on: events are delivered to webhooks.url"
        );
        tokio::spawn(delivery.run(shutdown.clone()));
    }

    let addr = listener
        .local_addr()
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    if state.config.web.demo {
        tracing::info!("demo chat: open http://{addr}/ in a browser (web.demo)");
    }
    if state.config.web.admin {
        if state.service_secret.is_some() {
            tracing::info!("operator console: open http://{addr}/admin/ (web.admin)");
        } else {
            // The console signs in with the service secret; without one every call it makes
            // answers 404, so say why now rather than leave the operator guessing.
            tracing::warn!(
                "operator console at http://{addr}/admin/ cannot sign in: \
                 no service.shared_secret is set (web.admin)"
            );
        }
    }
    // Last of the start-up lines: whoever waits for it has seen the others.
    tracing::info!(
        listen = %addr,
        data_dir = %state.config.storage.data_dir.display(),
        version = crate::VERSION,
        "indaba listening on http://{addr}"
    );

    // Build the dummy password hash now, so the first unknown-user login is not the slow one.
    tokio::task::spawn_blocking(crate::auth::password::warm_up);
    let tasks = state.tasks.clone();
    tasks.spawn(expire_queues(state.clone()));
    // A writer that ended on its own (a panic) takes no writes again: stop, so the service
    // manager restarts the daemon from the durable state. A full or failing disk does not end
    // it: writes are refused until the data file can be written again (`store::engine::outage`).
    tokio::spawn({
        let (writer, shutdown) = (writer.clone(), shutdown.clone());
        async move {
            writer.ended().await;
            if writer.failed() && !shutdown.is_cancelled() {
                tracing::error!("the store writer failed: stopping");
                shutdown.cancel();
            }
        }
    });
    let api_state = state.clone();
    let api: crate::admin::ApiCall = Arc::new(move |method, target| {
        let state = api_state.clone();
        Box::pin(async move { crate::http::local::call(state, &method, &target).await })
    });
    tasks.spawn(admin.serve(state.store.clone(), api, shutdown.clone(), tasks.clone()));
    // The listener is bound (by the caller) and the store open: what systemd waits for.
    crate::shutdown::notify(crate::shutdown::ServiceState::Ready);
    crate::http::server::accept_loop(listener, state.clone(), tasks.clone(), shutdown).await;
    crate::shutdown::notify(crate::shutdown::ServiceState::Stopping);

    // Stop order: listener closed (above) → sockets closed with 1001 and connections finish
    // their requests → delivered-queue removals flushed → writer commits what is queued.
    let deadline = Instant::now() + shutdown_timeout;
    hub.close_all(crate::ws::frames::close::GOING_AWAY, "server shutting down");
    tasks.close();
    drop(state);
    let drained = tokio::time::timeout_at(deadline.into(), tasks.wait()).await;
    if drained.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "connections still open at shutdown_timeout"
        );
    }
    presence_done.cancel();
    if let Some(presence) = presence {
        let _ = tokio::time::timeout_at(deadline.into(), presence).await;
    }
    // Commit whatever is still queued; anything acknowledged is already durable.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let finished = tokio::time::timeout(
        remaining.max(std::time::Duration::from_secs(1)),
        writer_thread.finish(&writer),
    )
    .await;
    // The writer is gone, so fan-out has seen its last batch.
    fanout.abort();
    if writer.failed() {
        return Err(AppError::WriterFailed);
    }
    if finished.is_err() || drained.is_err() {
        return Err(AppError::ShutdownTimeout(shutdown_timeout));
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::VerifyKey;
    use crate::crypto::{Key, Keyring};
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn health_turns_503_once_draining() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = Arc::new(Keyring::new(&Key::generate().expect("key"), &[]).expect("ring"));
        let options = WriterOptions::standalone(16);
        let (store, writer) = Store::open(dir.path(), keyring, options).expect("open");
        let shutdown = CancellationToken::new();
        let hub = Arc::new(Hub::new(store.clone(), std::time::Duration::from_secs(5)));
        let state = AppState::new(
            Config::default(),
            store.clone(),
            Directory::default(),
            hub,
            Arc::new(Metrics::new()),
            &VerifyKey::Secret(b"0123456789abcdef".to_vec()),
            None,
            None,
            shutdown.clone(),
        )
        .expect("state");
        let ok = crate::http::health::alive(&state);
        assert_eq!(ok.status(), 200);

        shutdown.cancel();
        let draining = crate::http::health::alive(&state);
        assert_eq!(draining.status(), 503);
        let body = draining
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json, serde_json::json!({"status": "shutting_down"}));
        writer.finish(store.writer()).await;
    }
}

//! The delivery task: batches from the outbox to the host app, at least once, in id order.
//!
//! One batch is in flight at a time, so the host sees events in commit order. A batch goes out
//! once `webhooks.batch_max` events wait, or `webhooks.batch_interval` after the first of them
//! was seen. A 2xx acknowledges the whole batch: it is removed from the outbox
//! ([`crate::store::WriterHandle::ack_events`]). Anything else (another status, no answer within
//! `webhooks.timeout`, no connection) is retried: the same body, the same
//! `X-Indaba-Delivery`, after [`super::backoff`]. The host de-duplicates by event id, as a
//! batch whose acknowledgement was lost (a crash just after the 2xx) is delivered again after
//! the restart.
//!
//! Only durable events are read: the writer publishes the outbox's progress after a batch is
//! durable, and every read waits for the batches it sees to settle
//! ([`crate::store::Store::read`]).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Sink;
use super::payload::{Batch, read_batch};
use crate::config::WebhooksConfig;
use crate::metrics::Metrics;
use crate::store::Store;

/// How long a failed outbox read waits before the next try.
const READ_RETRY: Duration = Duration::from_secs(1);

/// The delivery task's settings and handles.
pub struct Delivery {
    store: Store,
    sink: Sink,
    /// The HMAC-SHA256 key (`webhooks.secret_file`).
    secret: Vec<u8>,
    batch_max: usize,
    batch_interval: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Delivery")
            .field("sink", &self.sink)
            .field("batch_max", &self.batch_max)
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`, the `X-Indaba-Signature` header.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Delivery {
    pub fn new(
        config: &WebhooksConfig,
        sink: Sink,
        secret: Vec<u8>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            sink,
            secret,
            batch_max: config.batch_max,
            batch_interval: config.batch_interval,
            metrics,
        }
    }

    /// Delivers until `stop` fires. A batch in flight then is left in the outbox, delivered
    /// again after the next start.
    pub async fn run(self, stop: CancellationToken) {
        tokio::select! {
            _ = self.deliver() => {}
            _ = stop.cancelled() => {}
        }
    }

    async fn deliver(&self) {
        let mut outbox = self.store.writer().outbox();
        // Every event up to this id was acknowledged by the host.
        let mut acked = 0u64;
        loop {
            // Wait for an event after the last acknowledged one.
            loop {
                let now = *outbox.borrow_and_update();
                if now.pending > 0 && now.next_event_id > acked + 1 {
                    break;
                }
                if outbox.changed().await.is_err() {
                    return;
                }
            }
            // Then for a full batch, or the interval.
            let deadline = Instant::now() + self.batch_interval;
            loop {
                let waiting = outbox
                    .borrow_and_update()
                    .next_event_id
                    .saturating_sub(acked + 1);
                if waiting >= self.batch_max as u64 {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    changed = outbox.changed() => if changed.is_err() { return },
                }
            }
            let (after, max) = (acked, self.batch_max);
            // The snapshot read next holds at least every event this says is durable.
            let seen = outbox.borrow().next_event_id;
            let batch = match self.store.read(move |r| read_batch(r, after, max)).await {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    // Every event before `seen` was dropped by the bound: wait for the next.
                    acked = acked.max(seen.saturating_sub(1));
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the webhook outbox; trying again");
                    tokio::time::sleep(READ_RETRY).await;
                    continue;
                }
            };
            if self.send(&batch).await {
                acked = batch.last;
                self.metrics.webhook_delivered.inc_by(batch.count);
                if let Err(e) = self.store.writer().ack_events(batch.last).await {
                    // Delivered all the same: they go again only after a restart.
                    tracing::warn!(error = %e, through = batch.last, "delivered webhook events not removed from the outbox");
                }
            }
        }
    }

    /// Sends `batch` until the host acknowledges it (true), or until every event of it was
    /// dropped by the backlog bound while it failed (false).
    async fn send(&self, batch: &Batch) -> bool {
        let signature = signature(&self.secret, &batch.body);
        let mut attempt = 0u32;
        loop {
            let outcome = self
                .sink
                .post(batch.body.clone(), &signature, batch.first)
                .await;
            let error = match outcome {
                Ok(status) if status.is_success() => {
                    tracing::debug!(first = batch.first, last = batch.last, %status, "webhook batch delivered");
                    return true;
                }
                Ok(status) => format!("answered {status}"),
                Err(e) => e.to_string(),
            };
            attempt = attempt.saturating_add(1);
            self.metrics.webhook_failures.inc();
            let delay = super::backoff(attempt, random());
            tracing::warn!(
                first = batch.first,
                last = batch.last,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %error,
                "webhook batch not delivered; it will be sent again"
            );
            tokio::time::sleep(delay).await;
            if self.dropped_meanwhile(batch).await {
                tracing::warn!(
                    first = batch.first,
                    last = batch.last,
                    "every event of the failing webhook batch was dropped by webhooks.max_pending; going on with the oldest left"
                );
                return false;
            }
        }
    }

    /// Whether the outbox holds no event of `batch` any more.
    async fn dropped_meanwhile(&self, batch: &Batch) -> bool {
        let after = batch.first - 1;
        match self.store.read(move |r| r.events_after(after, 1)).await {
            Ok(first) => first.first().is_none_or(|(id, _)| *id > batch.last),
            Err(_) => false,
        }
    }
}

/// A random number for the backoff's jitter (0 if the system cannot give one: no jitter).
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! Counters, gauges and histograms for `/api/stats` and `/metrics` (Prometheus text format,
//! encoded by the official `prometheus-client` crate).
//!
//! Counters are bumped where things happen; gauges are read from live state just before
//! each scrape ([`Metrics::refresh`]), so nothing is counted twice.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a message was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// Every metric the daemon exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages taken on to store: each was stored or failed in its commit, so this is
    /// `messages_persisted + persistence_failures` once commits in flight are answered. Sends
    /// refused (by validation, the rate limit or the writer's checks) are not in it but in
    /// `messages_rejected`; an idempotent repeat of a `client_id` is in neither. `/api/stats`
    /// calls it `messages_processed`.
    pub messages_accepted: Counter,
    /// Messages committed durably.
    pub messages_persisted: Counter,
    /// Messages in batches whose commit failed (their senders got an error).
    pub persistence_failures: Counter,
    /// `new_message` frames written to a recipient's socket.
    pub messages_delivered: Counter,
    /// Queue entries dropped by overflow or expiry (the messages stay in history).
    pub dead_letters: Counter,
    /// Messages refused, by reason (`invalid`, `rate_limited`, `not_found`, ...).
    pub messages_rejected: Family<Reason, Counter>,
    /// Service API calls with a missing or wrong secret.
    pub service_auth_failures: Counter,
    /// Stored records found damaged (they no longer decode or open), each counted once since
    /// the start: every view leaves them out (`store::damage`).
    pub damaged_records: Counter,
    pub connections_opened: Counter,
    pub connections_closed: Counter,
    /// Open connections (HTTP and WebSocket).
    pub connections: Gauge,
    /// WebSocket sockets open.
    pub websockets: Gauge,
    /// Users with at least one socket.
    pub users_online: Gauge,
    /// Entries waiting in all users' queues.
    pub queue_pending: Gauge,
    /// Resident memory of the process.
    pub rss_bytes: Gauge,
    /// The writer's time per batch: applying it and committing it to redb (without a sync,
    /// or durably for a checkpoint). Durability comes after, from the journal.
    pub commit_seconds: Histogram,
    /// One journal write and `fdatasync`, making one committed batch durable: when
    /// acknowledgements are slow, this tells a slow disk apart from a busy writer.
    pub journal_sync_seconds: Histogram,
    /// redb's `commit()` of a checkpoint (writing the pages dirtied since the last one,
    /// `fdatasync`), part of `commit_seconds`; with `storage.journal = false`, of every batch.
    pub checkpoint_seconds: Histogram,
    /// Requests folded into one commit.
    pub commit_batch_size: Histogram,
    /// Messages one batch moved from the history tail into the history and client-id indexes
    /// (`store::history`): a chunk under small batches, so no batch stalls the writer for the
    /// whole tail; more after a batch that alone added more, so the tail stays bounded.
    pub history_fold_size: Histogram,
    /// From a message's commit to its frame being written to a recipient's socket.
    pub delivery_seconds: Histogram,
    /// Webhook events waiting in the outbox (refreshed before each scrape).
    pub webhook_pending: Gauge,
    /// Webhook events the host app acknowledged (a 2xx to their batch).
    pub webhook_delivered: Counter,
    /// Webhook POSTs that failed (not 2xx, no answer in time, no connection).
    pub webhook_failures: Counter,
    /// Webhook events dropped by `webhooks.max_pending`, since the data file was created.
    pub webhook_dropped: Counter,
    /// Age of the oldest waiting webhook event, 0 when none waits (refreshed before each
    /// scrape).
    pub webhook_oldest_pending_seconds: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("indaba");
        let m = Self {
            messages_accepted: Counter::default(),
            messages_persisted: Counter::default(),
            persistence_failures: Counter::default(),
            messages_delivered: Counter::default(),
            dead_letters: Counter::default(),
            messages_rejected: Family::default(),
            service_auth_failures: Counter::default(),
            damaged_records: Counter::default(),
            connections_opened: Counter::default(),
            connections_closed: Counter::default(),
            connections: Gauge::default(),
            websockets: Gauge::default(),
            users_online: Gauge::default(),
            queue_pending: Gauge::default(),
            rss_bytes: Gauge::default(),
            // 50 µs .. ~1.6 s
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            journal_sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 .. 4096
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 16 .. 4096
            history_fold_size: Histogram::new(exponential_buckets(16.0, 2.0, 9)),
            // 50 µs .. ~1.6 s
            delivery_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            webhook_pending: Gauge::default(),
            webhook_delivered: Counter::default(),
            webhook_failures: Counter::default(),
            webhook_dropped: Counter::default(),
            webhook_oldest_pending_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "messages_accepted",
            "Messages taken on to store: persisted, or failed in their commit",
            m.messages_accepted.clone(),
        );
        r.register(
            "messages_persisted",
            "Messages committed durably",
            m.messages_persisted.clone(),
        );
        r.register(
            "persistence_failures",
            "Messages whose commit failed",
            m.persistence_failures.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages written to a recipient's socket",
            m.messages_delivered.clone(),
        );
        r.register(
            "dead_letters",
            "Queue entries dropped by overflow or expiry",
            m.dead_letters.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages refused, by reason",
            m.messages_rejected.clone(),
        );
        r.register(
            "service_auth_failures",
            "Service API calls with a missing or wrong secret",
            m.service_auth_failures.clone(),
        );
        r.register(
            "damaged_records",
            "Stored records found damaged and left out of every view",
            m.damaged_records.clone(),
        );
        r.register(
            "connections_opened",
            "Connections accepted",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "Connections closed",
            m.connections_closed.clone(),
        );
        r.register("connections", "Open connections", m.connections.clone());
        r.register("websockets", "Open WebSockets", m.websockets.clone());
        r.register(
            "users_online",
            "Users with a socket open",
            m.users_online.clone(),
        );
        r.register(
            "queue_pending",
            "Entries waiting in users' queues",
            m.queue_pending.clone(),
        );
        r.register(
            "resident_memory_bytes",
            "Resident memory",
            m.rss_bytes.clone(),
        );
        r.register(
            "commit_seconds",
            "Applying a batch and committing it to redb (durable only for checkpoints)",
            m.commit_seconds.clone(),
        );
        r.register(
            "journal_sync_seconds",
            "One journal write and fdatasync, making committed batches durable",
            m.journal_sync_seconds.clone(),
        );
        r.register(
            "checkpoint_seconds",
            "Durable redb commit of a checkpoint (page writes, fdatasync), part of commit_seconds",
            m.checkpoint_seconds.clone(),
        );
        r.register(
            "commit_batch_size",
            "Requests folded into one commit",
            m.commit_batch_size.clone(),
        );
        r.register(
            "history_fold_size",
            "Messages one batch folded from the history tail into its indexes",
            m.history_fold_size.clone(),
        );
        r.register(
            "delivery_seconds",
            "From commit to the frame written to a recipient's socket",
            m.delivery_seconds.clone(),
        );
        r.register(
            "webhook_pending",
            "Webhook events waiting in the outbox",
            m.webhook_pending.clone(),
        );
        r.register(
            "webhook_delivered",
            "Webhook events the host app acknowledged",
            m.webhook_delivered.clone(),
        );
        r.register(
            "webhook_failures",
            "Webhook POSTs that failed",
            m.webhook_failures.clone(),
        );
        r.register(
            "webhook_dropped",
            "Webhook events dropped by webhooks.max_pending",
            m.webhook_dropped.clone(),
        );
        r.register(
            "webhook_oldest_pending_seconds",
            "Age of the oldest waiting webhook event",
            m.webhook_oldest_pending_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts a refused message.
    pub fn reject(&self, reason: &'static str) {
        self.messages_rejected
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// Updates the gauges from live state.
    pub fn refresh(
        &self,
        connections: u64,
        websockets: u64,
        users_online: u64,
        queue_pending: u64,
    ) {
        self.connections.set(connections as i64);
        self.websockets.set(websockets as i64);
        self.users_online.set(users_online as i64);
        self.queue_pending.set(queue_pending as i64);
        self.rss_bytes.set(rss_bytes() as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Resident set size of this process, from `/proc/self/status` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.messages_persisted.inc_by(3);
        m.reject("rate_limited");
        m.commit_batch_size.observe(12.0);
        m.refresh(5, 2, 1, 9);
        let text = m.encode();
        assert!(text.contains("indaba_messages_persisted_total 3"), "{text}");
        assert!(
            text.contains("indaba_messages_rejected_total{reason=\"rate_limited\"} 1"),
            "{text}"
        );
        assert!(text.contains("indaba_queue_pending 9"), "{text}");
        assert!(text.contains("indaba_commit_batch_size_bucket"), "{text}");
        assert!(rss_bytes() > 0);
    }
}

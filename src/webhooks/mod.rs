//! Webhooks: events posted to the host app (PROTOCOL.md section 8.2), so the Django backend
//! learns of messages, reads, new conversations and presence without polling.
//!
//! The path of an event:
//!
//! * **Written with its cause.** A write that should tell the host goes to the store wrapped
//!   with an [`Emit`] (built by [`EventPolicy`]): the store writes the event in the same commit
//!   ([`crate::store::ops::outbox`]). A crash keeps both or neither; an event never exists for
//!   a write that was not acknowledged.
//! * **Delivered from the outbox.** [`delivery`] runs as its own task: it waits until durable
//!   events are there, reads a batch ([`payload`] builds its JSON), signs it, POSTs it through
//!   [`client`] and, on a 2xx, removes it from the outbox. Anything else retries the same batch
//!   with capped exponential backoff. The message path never waits for any of it: the only
//!   cost a send pays is the event row in its own commit.
//! * **Presence** is not stored, so the hub reports its changes on a channel and
//!   [`record_presence`] writes their events in order.

pub mod client;
pub mod delivery;
pub mod payload;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{WebhookEvent, WebhooksConfig};
use crate::store::{Emit, EventKinds, PresenceChange, WriterHandle};

pub use delivery::Delivery;

/// Which events the daemon writes, and the backlog bound: what the domain needs to wrap a
/// write ([`crate::store::Op::emitting`]). `None` in the state while webhooks are off.
#[derive(Debug, Clone, Copy)]
pub struct EventPolicy {
    kinds: EventKinds,
    max_pending: u64,
}

impl EventPolicy {
    /// The policy `config` asks for; `None` while webhooks are off.
    pub fn new(config: &WebhooksConfig) -> Option<Self> {
        config.enabled().then(|| Self {
            kinds: config.events.iter().collect(),
            max_pending: config.max_pending,
        })
    }

    /// Whether events of `kind` are written.
    pub fn wants(&self, kind: WebhookEvent) -> bool {
        self.kinds.contains(kind)
    }

    /// The [`Emit`] for a write that may cause any of `kinds`; `None` if none is wanted (the
    /// write then goes to the store alone). `online`: which of its recipients have a socket
    /// open, for `message.created`.
    pub fn emit(&self, kinds: &[WebhookEvent], mut online: Vec<u64>) -> Option<Emit> {
        if !kinds.iter().any(|k| self.wants(*k)) {
            return None;
        }
        online.sort_unstable();
        online.dedup();
        Some(Emit {
            kinds: self.kinds,
            max_pending: self.max_pending,
            online,
        })
    }
}

/// A presence change the hub reports: (user, online, when in Unix ms).
pub type PresenceNote = (u64, bool, u64);

/// Writes the webhook events of presence changes, in the order the hub reported them, until
/// the channel closes or `done` fires (then what is already reported is written first).
pub async fn record_presence(
    writer: WriterHandle,
    policy: EventPolicy,
    mut changes: mpsc::UnboundedReceiver<PresenceNote>,
    done: CancellationToken,
) {
    loop {
        let note = tokio::select! {
            note = changes.recv() => note,
            _ = done.cancelled() => changes.try_recv().ok(),
        };
        let Some((user, online, at_ms)) = note else {
            return;
        };
        let kind = if online {
            WebhookEvent::UserOnline
        } else {
            WebhookEvent::UserOffline
        };
        if !policy.wants(kind) {
            continue;
        }
        let change = PresenceChange {
            user,
            online,
            at_ms,
            max_pending: policy.max_pending,
        };
        if let Err(e) = writer.record_presence(change).await {
            tracing::error!(error = %e, user, online, "presence webhook event not written: the writer has stopped");
            return;
        }
    }
}

/// The backoff before retry `attempt` (1, 2, …) of a failed batch: 1 s doubling up to 5 min,
/// then a random part of it taken off (up to half), so that daemons that failed together do
/// not all retry at once.
pub fn backoff(attempt: u32, random: u64) -> Duration {
    const FIRST_MS: u64 = 1_000;
    const CAP_MS: u64 = 300_000;
    let full = FIRST_MS
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(CAP_MS);
    let jitter = random % (full / 2 + 1);
    Duration::from_millis(full - jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes_with_jitter() {
        assert_eq!(backoff(1, 0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0), Duration::from_secs(2));
        assert_eq!(backoff(4, 0), Duration::from_secs(8));
        assert_eq!(backoff(9, 0), Duration::from_secs(256));
        assert_eq!(backoff(10, 0), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX, 0), Duration::from_secs(300));
        // Jitter takes up to half off, never more.
        assert_eq!(backoff(1, 500), Duration::from_millis(500));
        assert_eq!(backoff(1, 501), Duration::from_millis(1000));
        assert!(backoff(10, u64::MAX) >= Duration::from_secs(150));
    }

    #[test]
    fn a_policy_wraps_only_writes_that_cause_a_wanted_event() {
        let config = WebhooksConfig {
            url: Some("http://127.0.0.1:1/".into()),
            events: vec![WebhookEvent::MessageRead],
            ..WebhooksConfig::default()
        };
        let policy = EventPolicy::new(&config).expect("on");
        assert!(
            policy
                .emit(&[WebhookEvent::MessageCreated], vec![])
                .is_none()
        );
        let emit = policy
            .emit(&[WebhookEvent::MessageRead], vec![3, 1, 3])
            .expect("wanted");
        assert_eq!(emit.online, vec![1, 3]);
        assert!(EventPolicy::new(&WebhooksConfig::default()).is_none());
    }
}

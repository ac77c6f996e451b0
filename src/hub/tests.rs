//! Fan-out of the hub's own events, over a real store.

use std::sync::Arc;
use std::time::Duration;

use super::{Endpoint, Hub, Outbound, Outbox};
use crate::store::testing::TempStore;

fn payloads(frames: &[Outbound]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Outbound::Text { payload, .. } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect()
}

/// Waits until the hub has sent every unread count asked for (bounded: a hung task fails).
async fn counts_sent(hub: &Hub) {
    for _ in 0..1000 {
        {
            let unread = hub.unread.lock().expect("lock");
            if !unread.sending && unread.waiting.is_empty() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("unread counts still being sent after 5 s");
}

/// Regression: each request for a user's unread total was sent as an event of its own, so a
/// burst of messages to a group told every member the same total once per message.
#[tokio::test]
async fn a_users_unread_total_goes_out_once_however_many_requests_name_them() {
    let temp = TempStore::new();
    let (store, _writer) = temp.open();
    let (acks, _) = tokio::sync::mpsc::unbounded_channel();
    let hub = Arc::new(Hub::new(store, acks, Duration::from_secs(5)));
    let notifications = Arc::new(Outbox::new(64));
    let chat = Arc::new(Outbox::new(64));
    hub.register(1, 7, Endpoint::Notifications, notifications.clone());
    hub.register(2, 7, Endpoint::Chat, chat.clone());

    // Three messages' worth of requests for user 7, the first from socket 2 itself.
    hub.push_unread_counts([(7, Some(2)), (7, None), (7, None)]);
    counts_sent(&hub).await;
    let mut frames = Vec::new();
    notifications.next_batch(64, &mut frames).await;
    assert_eq!(
        payloads(&frames),
        [r#"{"type":"unread_count","unread_count":0}"#],
        "one event on the notification socket"
    );
    frames.clear();
    chat.next_batch(64, &mut frames).await;
    assert_eq!(
        payloads(&frames).len(),
        1,
        "one on the chat socket, which only the first request left out"
    );

    // Every request leaving socket 2 out: it hears nothing, the notification socket once.
    hub.push_unread_counts([(7, Some(2)), (7, Some(2))]);
    counts_sent(&hub).await;
    assert_eq!(chat.len(), 0, "the socket every request left out");
    assert_eq!(notifications.len(), 1);
}

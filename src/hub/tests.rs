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

/// Regression: each request for a user's unread total was encoded on its own, so a burst of
/// messages to a group encoded every member's same total once per message. Each request still
/// gets its frame (one `unread_count` per message, tests/websocket.rs), all of one encoding.
#[tokio::test]
async fn a_users_unread_total_is_encoded_once_however_many_requests_name_them() {
    let temp = TempStore::new();
    let (store, _writer) = temp.open();
    let hub = Arc::new(Hub::new(store, Duration::from_secs(5)));
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
        [r#"{"type":"unread_count","unread_count":0}"#; 3],
        "one frame per request on the notification socket"
    );
    let mut on_chat = Vec::new();
    chat.next_batch(64, &mut on_chat).await;
    assert_eq!(on_chat.len(), 2, "the chat socket, left out by the first");
    let shared = frames.iter().chain(&on_chat).map(|f| match f {
        Outbound::Text { payload, .. } => payload.as_ptr(),
        _ => std::ptr::null(),
    });
    let shared: std::collections::HashSet<_> = shared.collect();
    assert_eq!(shared.len(), 1, "one encoding for all of them");
}

//! Online/offline state per user, counted over their live sockets.

use std::collections::HashMap;
use std::sync::Mutex;

/// Live sockets and last activity per user.
#[derive(Debug, Default)]
pub struct Presence {
    users: Mutex<HashMap<u64, Entry>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Open sockets of the user (all devices and tabs).
    sockets: usize,
    /// When the user was last seen connected (Unix ms).
    last_seen_ms: u64,
}

/// What the presence endpoint and events report for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub online: bool,
    pub last_seen_ms: Option<u64>,
}

impl Presence {
    /// A socket of `user` opened; true if the user just came online.
    pub fn connect(&self, user: u64, now_ms: u64) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let entry = users.entry(user).or_default();
        entry.sockets += 1;
        entry.last_seen_ms = now_ms;
        entry.sockets == 1
    }

    /// A socket of `user` closed; true if it was the last one.
    pub fn disconnect(&self, user: u64, now_ms: u64) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let entry = users.entry(user).or_default();
        entry.sockets = entry.sockets.saturating_sub(1);
        entry.last_seen_ms = now_ms;
        entry.sockets == 0
    }

    pub fn status(&self, user: u64) -> Status {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        match users.get(&user) {
            Some(entry) => Status {
                online: entry.sockets > 0,
                last_seen_ms: Some(entry.last_seen_ms),
            },
            None => Status {
                online: false,
                last_seen_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_while_any_socket_is_open() {
        let p = Presence::default();
        assert!(!p.status(1).online);
        assert!(p.connect(1, 10));
        assert!(!p.connect(1, 20), "second device: already online");
        assert!(!p.disconnect(1, 30));
        assert!(p.status(1).online);
        assert!(p.disconnect(1, 40));
        assert_eq!(
            p.status(1),
            Status {
                online: false,
                last_seen_ms: Some(40)
            }
        );
    }
}

//! Online/offline state per user, counted over their live sockets.
//!
//! Online is announced at once; offline only after a grace period with no socket, so a page
//! reload (close, then reconnect a moment later) does not flap.

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
    /// Whether "online" was announced and not yet taken back.
    announced: bool,
}

/// What the presence endpoint and events report for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub online: bool,
    pub last_seen_ms: Option<u64>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A socket of `user` opened; true if "online" should be announced now.
    pub fn connect(&self, user: u64, now_ms: u64) -> bool {
        let mut users = self.lock();
        let entry = users.entry(user).or_default();
        entry.sockets += 1;
        entry.last_seen_ms = now_ms;
        let announce = !entry.announced;
        entry.announced = true;
        announce
    }

    /// A socket of `user` closed; true if it was the last (start the grace period).
    pub fn disconnect(&self, user: u64, now_ms: u64) -> bool {
        let mut users = self.lock();
        let entry = users.entry(user).or_default();
        entry.sockets = entry.sockets.saturating_sub(1);
        entry.last_seen_ms = now_ms;
        entry.sockets == 0
    }

    /// After the grace period: true if the user is still without sockets and "offline"
    /// should be announced now.
    pub fn settle_offline(&self, user: u64) -> bool {
        let mut users = self.lock();
        match users.get_mut(&user) {
            Some(entry) if entry.sockets == 0 && entry.announced => {
                entry.announced = false;
                true
            }
            _ => false,
        }
    }

    /// Users with at least one socket open.
    pub fn online_count(&self) -> usize {
        self.lock().values().filter(|e| e.sockets > 0).count()
    }

    pub fn status(&self, user: u64) -> Status {
        match self.lock().get(&user) {
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
    fn online_at_once_offline_after_grace_without_flapping() {
        let p = Presence::default();
        assert!(!p.status(1).online);
        assert!(p.connect(1, 10), "first socket announces online");
        assert!(!p.connect(1, 20), "second device: already announced");
        assert!(!p.disconnect(1, 30));
        assert!(p.status(1).online);
        assert!(p.disconnect(1, 40), "last socket closed: grace starts");
        // A reload: back before the grace ran out. Nothing is announced either way.
        assert!(!p.connect(1, 45));
        assert!(!p.settle_offline(1));
        assert!(p.disconnect(1, 50));
        assert!(p.settle_offline(1), "gone for good: offline announced once");
        assert!(!p.settle_offline(1));
        assert_eq!(
            p.status(1),
            Status {
                online: false,
                last_seen_ms: Some(50)
            }
        );
    }
}

//! Senders' data keys on the writing side: the key a message is sealed with before it goes to
//! the writer. One random key per sender, created on their first message and stored sealed by
//! the at-rest key (`userid_datakey`); erasure destroys it (crypto-shredding, docs/STORAGE.md).
//!
//! The opened keys are cached here, for sealing only; readers open keys from their own
//! snapshot ([`super::reader`]), so a key erased after a snapshot was taken is never put back.
//!
//! The cache is bounded (`storage.data_key_cache` senders): a daemon that has seen millions of
//! senders keeps only the recent ones opened. A sender whose key was evicted gets the same key
//! again on their next message, opened from the table; only that one send pays for a read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Store, StoreError, WriteError};
use crate::crypto::{Key, Keyring};

/// Opened data keys of recent senders, at most `capacity` of them.
#[derive(Debug)]
pub struct DataKeys {
    opened: Mutex<Clock>,
}

impl Default for DataKeys {
    fn default() -> Self {
        Self::new(crate::config::StorageConfig::default().data_key_cache)
    }
}

impl DataKeys {
    /// An empty cache that keeps at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            opened: Mutex::new(Clock::new(capacity)),
        }
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        // The clock is consistent after every call: a panic elsewhere cannot leave it torn.
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, user: u64) -> Option<Arc<Keyring>> {
        self.clock().get(user)
    }

    fn put(&self, user: u64, ring: Arc<Keyring>) {
        self.clock().put(user, ring);
    }

    fn forget(&self, user: u64) {
        self.clock().remove(user);
    }

    /// Keys held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.clock().slots.len()
    }
}

/// A second-chance ("clock") cache: a lookup only marks its entry as used; a new entry in a
/// full cache replaces the first one the hand finds unmarked, clearing the marks it passes.
/// So a sender who keeps sending keeps their key, and one who stopped loses it within two turns
/// of the hand. Chosen over an LRU list (the `lru` crate) because the send path's lookup then
/// sets a flag instead of relinking a list, and it needs no dependency.
#[derive(Debug)]
struct Clock {
    capacity: usize,
    /// The entries, in no order; never more than `capacity`.
    slots: Vec<Slot>,
    /// Where each user's entry is in `slots`.
    index: HashMap<u64, usize>,
    /// The next slot eviction looks at.
    hand: usize,
}

#[derive(Debug)]
struct Slot {
    user: u64,
    ring: Arc<Keyring>,
    /// Looked up since the hand last passed.
    used: bool,
}

impl Clock {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: Vec::new(),
            index: HashMap::new(),
            hand: 0,
        }
    }

    fn get(&mut self, user: u64) -> Option<Arc<Keyring>> {
        let slot = &mut self.slots[*self.index.get(&user)?];
        slot.used = true;
        Some(slot.ring.clone())
    }

    fn put(&mut self, user: u64, ring: Arc<Keyring>) {
        let slot = Slot {
            user,
            ring,
            used: false,
        };
        if let Some(&at) = self.index.get(&user) {
            self.slots[at] = slot;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(user, self.slots.len());
            self.slots.push(slot);
            return;
        }
        // Every pass clears a mark, so this ends within two turns.
        while std::mem::replace(&mut self.slots[self.hand].used, false) {
            self.hand = (self.hand + 1) % self.slots.len();
        }
        let evicted = std::mem::replace(&mut self.slots[self.hand], slot);
        self.index.remove(&evicted.user);
        self.index.insert(user, self.hand);
        self.hand = (self.hand + 1) % self.slots.len();
    }

    fn remove(&mut self, user: u64) {
        let Some(at) = self.index.remove(&user) else {
            return;
        };
        self.slots.swap_remove(at);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.user, at);
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }
}

impl Store {
    /// This store, keeping at most `capacity` senders' data keys opened
    /// (`storage.data_key_cache`). Call before the store is shared: the keys opened so far are
    /// dropped.
    pub fn with_data_key_cache(mut self, capacity: usize) -> Self {
        self.data_keys = Arc::new(DataKeys::new(capacity));
        self
    }

    /// `plaintext` sealed under `sender`'s data key (created on first use).
    pub async fn seal_for(&self, sender: u64, plaintext: &[u8]) -> Result<Vec<u8>, WriteError> {
        Ok(self.data_key(sender).await?.seal(plaintext))
    }

    async fn data_key(&self, user: u64) -> Result<Arc<Keyring>, WriteError> {
        if let Some(ring) = self.data_keys.get(user) {
            return Ok(ring);
        }
        let wrapped = match self.read(move |r| r.wrapped_data_key(user)).await? {
            Some(wrapped) => wrapped,
            None => {
                let key = Key::generate().map_err(|e| StoreError::Storage(e.to_string()))?;
                // Two first messages at once: the writer keeps the first key and answers it
                // to both.
                self.writer
                    .ensure_data_key(user, key.wrap(&self.keyring))
                    .await?
            }
        };
        let key = Key::unwrap(&self.keyring, &wrapped).map_err(StoreError::from)?;
        let ring =
            Arc::new(Keyring::new(&key, &[]).map_err(|e| StoreError::Storage(e.to_string()))?);
        self.data_keys.put(user, ring.clone());
        Ok(ring)
    }

    /// Drops `user`'s opened data key from memory (after an erasure, or before a user is
    /// enabled again: an erased user's next message gets a new key).
    pub fn forget_data_key(&self, user: u64) {
        self.data_keys.forget(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TempStore;

    fn ring() -> Arc<Keyring> {
        let key = Key::generate().expect("key");
        Arc::new(Keyring::new(&key, &[]).expect("ring"))
    }

    /// Every entry is where the index says, and no user twice.
    fn assert_consistent(clock: &Clock) {
        assert!(clock.slots.len() <= clock.capacity);
        assert_eq!(clock.index.len(), clock.slots.len());
        for (at, slot) in clock.slots.iter().enumerate() {
            assert_eq!(clock.index.get(&slot.user), Some(&at));
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let mut clock = Clock::new(8);
        for user in 1..=10_000 {
            clock.put(user, ring());
            // A few lookups in between, as sends do.
            clock.get(user / 2);
            assert!(clock.slots.len() <= 8);
        }
        assert_eq!(clock.slots.len(), 8);
        assert_consistent(&clock);
        assert!(clock.get(10_000).is_some(), "the newest entry is kept");
        assert!(clock.get(1).is_none(), "an old one is gone");
    }

    #[test]
    fn a_key_in_use_survives_and_an_idle_one_goes() {
        let mut clock = Clock::new(3);
        let kept = ring();
        clock.put(1, kept.clone());
        clock.put(2, ring());
        clock.put(3, ring());
        for newcomer in 4..100 {
            // User 1 sends between every newcomer: the hand always finds it used.
            assert!(Arc::ptr_eq(&clock.get(1).expect("kept"), &kept));
            clock.put(newcomer, ring());
            assert_consistent(&clock);
        }
        assert!(clock.get(2).is_none() && clock.get(3).is_none());
        assert!(clock.get(99).is_some());
    }

    #[test]
    fn forgetting_keeps_the_rest_findable() {
        let mut clock = Clock::new(4);
        for user in 1..=4 {
            clock.put(user, ring());
        }
        clock.remove(1);
        clock.remove(4);
        clock.remove(9);
        assert_consistent(&clock);
        assert!(clock.get(1).is_none() && clock.get(4).is_none());
        assert!(clock.get(2).is_some() && clock.get(3).is_some());
        for user in 5..=9 {
            clock.put(user, ring());
            assert_consistent(&clock);
        }
        assert_eq!(clock.slots.len(), 4);
    }

    /// A sender whose key was evicted seals with the same key again: what they sent before
    /// and after opens with the one key the table holds for them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_evicted_key_is_opened_again_from_the_table() {
        let temp = TempStore::new();
        let (store, thread) = temp.open();
        let store = store.with_data_key_cache(2);
        let before = store.seal_for(1, b"before").await.expect("seal");
        for other in 2..=6 {
            store.seal_for(other, b"someone else").await.expect("seal");
            assert!(store.data_keys.len() <= 2);
        }
        assert!(store.data_keys.get(1).is_none(), "user 1's key was evicted");
        let after = store.seal_for(1, b"after").await.expect("seal");
        assert!(store.data_keys.get(1).is_some());
        let wrapped = store
            .read(|r| r.wrapped_data_key(1))
            .await
            .expect("read")
            .expect("user 1 has a data key");
        let stored = Keyring::new(
            &Key::unwrap(&temp.keyring(), &wrapped).expect("unwrap"),
            &[],
        )
        .expect("ring");
        assert_eq!(stored.open(&before).expect("open"), b"before");
        assert_eq!(stored.open(&after).expect("open"), b"after");
        thread.finish(store.writer()).await;
    }
}

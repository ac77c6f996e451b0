//! Senders' data keys on the writing side: the key a message is sealed with before it goes to
//! the writer. One random key per sender, created on their first message and stored sealed by
//! the at-rest key (`userid_datakey`); erasure destroys it (crypto-shredding, docs/STORAGE.md).
//!
//! The opened keys are cached here, for sealing only; readers open keys from their own
//! snapshot ([`super::reader`]), so a key erased after a snapshot was taken is never put back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Store, StoreError, WriteError};
use crate::crypto::{Key, Keyring};

/// Opened data keys of recent senders.
#[derive(Debug, Default)]
pub struct DataKeys {
    opened: Mutex<HashMap<u64, Arc<Keyring>>>,
}

impl DataKeys {
    fn get(&self, user: u64) -> Option<Arc<Keyring>> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .cloned()
    }

    fn put(&self, user: u64, ring: Arc<Keyring>) {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user, ring);
    }

    fn forget(&self, user: u64) {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user);
    }
}

impl Store {
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

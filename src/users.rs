//! Users the daemon has seen: provisioned on first sight, names remembered for events.
//!
//! The host app owns its users; Indaba learns about them from tokens. The first request of a
//! user (per process) queues their record for the next commit without waiting for it (see
//! [`crate::store::WriterHandle::submit_ensure_user`]); later requests cost a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Identity;
use crate::store::{Store, WriteError};

/// In-memory directory over the `userid_user` table.
#[derive(Debug, Default)]
pub struct Directory {
    /// User id → username (the token's claim or the account's name), for users seen since start.
    /// Shared with the tasks that forget a user whose record failed to commit.
    known: Arc<Mutex<HashMap<u64, Option<String>>>>,
}

impl Directory {
    /// Makes sure the caller is recorded; returns the name events should carry.
    pub async fn ensure(
        &self,
        store: &Store,
        who: &Identity,
    ) -> Result<Option<String>, WriteError> {
        if let Some(name) = self.lookup(who.user_id)
            && (who.username.is_none() || name == who.username)
        {
            return Ok(name);
        }
        let id = who.user_id;
        let stored = store.read(move |r| r.user(id)).await?;
        let (name, committed) = match stored {
            // A local account's own name wins over any claim.
            Some(record) if record.password_hash.is_some() => (record.username, None),
            Some(record) if who.username.is_none() || record.username == who.username => {
                (record.username, None)
            }
            _ => {
                let committed = store
                    .writer()
                    .submit_ensure_user(id, who.username.clone())
                    .await?;
                (who.username.clone(), Some(committed))
            }
        };
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, name.clone());
        if let Some(committed) = committed {
            // Not awaited: if the record fails to commit, forget the user, so that their next
            // request records them again.
            let known = self.known.clone();
            tokio::spawn(async move {
                if !matches!(committed.await, Ok(Ok(()))) {
                    known.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                }
            });
        }
        Ok(name)
    }

    /// The remembered name of `user_id`, if seen since start.
    pub fn lookup(&self, user_id: u64) -> Option<Option<String>> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user_id)
            .cloned()
    }
}

//! Users the daemon has seen: provisioned on first sight, names remembered for events.
//!
//! The host app owns its users; Indaba learns about them from tokens. The first request of a
//! user (per process) queues their record for the next commit without waiting for it (see
//! [`crate::store::WriterHandle::submit_ensure_user`]); later requests cost a map lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::Identity;
use crate::store::{Store, WriteError};

/// In-memory directory over the `userid_user` table.
#[derive(Debug)]
pub struct Directory {
    /// User id → username (the token's claim or the account's name), for users seen since start.
    known: Mutex<HashMap<u64, Option<String>>>,
    /// `auth.local_id_base`: ids from here up are local accounts, whose stored name wins.
    local_id_base: u64,
}

impl Directory {
    pub fn new(local_id_base: u64) -> Self {
        Self {
            known: Mutex::default(),
            local_id_base,
        }
    }

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
        if who.username.is_some() && id < self.local_id_base {
            // An external user with a name claim: the claim is the name, and the writer
            // records or renames them (it leaves a local account's record alone), so there is
            // nothing to read first. This is the first sight of every user of a host app.
            store
                .writer()
                .submit_ensure_user(id, who.username.clone())
                .await?;
            return Ok(self.remember(id, who.username.clone()));
        }
        let stored = store.read_now(|r| r.user(id))?;
        let name = match stored {
            // A local account's own name wins over any claim.
            Some(record) if record.password_hash.is_some() => record.username,
            Some(record) if who.username.is_none() || record.username == who.username => {
                record.username
            }
            _ => {
                store
                    .writer()
                    .submit_ensure_user(id, who.username.clone())
                    .await?;
                who.username.clone()
            }
        };
        Ok(self.remember(id, name))
    }

    fn remember(&self, id: u64, name: Option<String>) -> Option<String> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, name.clone());
        name
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

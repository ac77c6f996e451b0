//! Users the daemon knows: every recorded user, loaded at start; new ones provisioned on sight.
//!
//! The host app owns its users; Indaba learns about them from tokens. The directory holds the
//! whole `userid_user` table in memory (an id, a name and a flag per user), so a request never
//! reads the table: a user missing from the map is a user the file does not have. Their first
//! request queues their record for the next commit without waiting for it (see
//! [`crate::store::WriterHandle::submit_ensure_user`]); every later request costs a map lookup.
//! Local accounts enter the map when they are registered.
//!
//! It also holds the users an operator disabled (`userid_disabledms`), so that every request
//! and upgrade checks them with a set lookup.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::auth::Identity;
use crate::store::{Store, StoreError, WriteError};

/// In-memory copy of the `userid_user` table's names.
#[derive(Debug, Default)]
pub struct Directory {
    /// User id → what events need of them. Shared with the tasks that forget a user whose
    /// record failed to commit.
    known: Arc<Mutex<HashMap<u64, Known>>>,
    /// Users an operator disabled or erased: their tokens are refused (403 `user_disabled`).
    disabled: Mutex<HashSet<u64>>,
}

/// What the directory keeps of one user.
#[derive(Debug, Clone)]
struct Known {
    /// The account name, or the latest `username` claim of an external user.
    name: Option<String>,
    /// A local account: its own name wins over any token's claim.
    local: bool,
}

impl Directory {
    /// Reads every user record once, on the blocking pool (called before the daemon serves).
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        let (users, disabled) = store
            .read(|r| Ok((r.user_names()?, r.disabled_users()?)))
            .await?;
        let known = users
            .into_iter()
            .map(|(id, name, local)| (id, Known { name, local }))
            .collect();
        Ok(Self {
            known: Arc::new(Mutex::new(known)),
            disabled: Mutex::new(disabled.into_iter().collect()),
        })
    }

    /// Whether an operator disabled (or erased) `user`.
    pub fn is_disabled(&self, user: u64) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&user)
    }

    /// Records that `user` was disabled or enabled, once that is durable.
    pub fn set_disabled(&self, user: u64, disabled: bool) {
        let mut set = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        if disabled {
            set.insert(user);
        } else {
            set.remove(&user);
        }
    }

    /// Forgets an erased user's name (they stay disabled).
    pub fn erase(&self, user: u64) {
        self.lock().remove(&user);
        self.set_disabled(user, true);
    }

    /// Number of users held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no user is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes sure the caller is recorded; returns the name events should carry.
    ///
    /// Only a user the file does not have, or an external user whose token now claims another
    /// name, queues a write; nothing here reads the store.
    pub async fn ensure(
        &self,
        store: &Store,
        who: &Identity,
    ) -> Result<Option<String>, WriteError> {
        let id = who.user_id;
        if let Some(known) = self.lock().get(&id)
            && (known.local || who.username.is_none() || known.name == who.username)
        {
            return Ok(known.name.clone());
        }
        let committed = store
            .writer()
            .submit_ensure_user(id, who.username.clone())
            .await?;
        self.lock().insert(
            id,
            Known {
                name: who.username.clone(),
                local: false,
            },
        );
        // Not awaited: if the record fails to commit, forget the user, so that their next
        // request records them again.
        let known = self.known.clone();
        tokio::spawn(async move {
            if committed.done().await.is_err() {
                known.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            }
        });
        Ok(who.username.clone())
    }

    /// Remembers a local account once its registration has committed.
    pub fn add_account(&self, id: u64, username: String) {
        self.lock().insert(
            id,
            Known {
                name: Some(username),
                local: true,
            },
        );
    }

    /// The name of `user_id` if the directory has them (the inner `None`: no name known).
    pub fn lookup(&self, user_id: u64) -> Option<Option<String>> {
        self.lock().get(&user_id).map(|k| k.name.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewAccount;
    use crate::store::testing::TempStore;

    fn who(user_id: u64, username: &str) -> Identity {
        Identity {
            user_id,
            username: Some(username.to_owned()),
        }
    }

    /// Requests never read the users table, so what a restart loads must answer exactly as
    /// the table would: local names win over claims, external users follow their claim, and
    /// a user first seen after the load is recorded.
    #[tokio::test]
    async fn a_loaded_directory_answers_as_the_users_table_would() {
        let temp = TempStore::new();
        let (store, thread) = temp.open();
        let local = store
            .writer()
            .register_account(NewAccount {
                username: "amara".into(),
                display_name: None,
                password_hash: "$argon2id$placeholder".into(),
                id_base: 1_000_000,
            })
            .await
            .expect("register");
        let first = Directory::default();
        first
            .ensure(&store, &who(7, "tendai"))
            .await
            .expect("ensure");
        thread.finish(store.writer()).await;
        drop(store);

        let (store, thread) = temp.open();
        let users = Directory::load(&store).await.expect("load");
        assert_eq!(users.len(), 2);
        assert_eq!(users.lookup(7), Some(Some("tendai".to_owned())));
        let claimed = users.ensure(&store, &who(local, "mallory")).await;
        assert_eq!(claimed.expect("local"), Some("amara".to_owned()));
        let renamed = users.ensure(&store, &who(7, "tendai2")).await;
        assert_eq!(renamed.expect("rename"), Some("tendai2".to_owned()));
        let new = users.ensure(&store, &who(8, "chipo")).await;
        assert_eq!(new.expect("new"), Some("chipo".to_owned()));
        thread.finish(store.writer()).await;
        drop(store);

        // What the table holds now: the rename and the new user landed, the account kept its name.
        let (store, thread) = temp.open();
        let users = Directory::load(&store).await.expect("load");
        assert_eq!(users.len(), 3);
        assert_eq!(users.lookup(local), Some(Some("amara".to_owned())));
        assert_eq!(users.lookup(7), Some(Some("tendai2".to_owned())));
        assert_eq!(users.lookup(8), Some(Some("chipo".to_owned())));
        thread.finish(store.writer()).await;
        drop(store);

        // A damaged record does not stop the load (the daemon's start); it is left out.
        temp.write_raw(|txn| {
            txn.open_table(crate::store::tables::USERS)
                .expect("users")
                .insert(9, [0xffu8].as_slice())
                .expect("insert");
        });
        let (store, thread) = temp.open();
        let users = Directory::load(&store)
            .await
            .expect("load despite the bad record");
        assert_eq!((users.len(), users.lookup(9)), (3, None));
        thread.finish(store.writer()).await;
    }
}

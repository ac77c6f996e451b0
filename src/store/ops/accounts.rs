//! Users: those seen in tokens (recorded with their `username` claim), and local accounts.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{OpError, Tables, WriteError, rd, wr};
use crate::model::UserRecord;
use crate::store::records::{decode, encode};

/// A local account to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAccount {
    pub username: String,
    pub display_name: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// `auth.local_id_base`: where local ids start.
    pub id_base: u64,
}

/// A user's name as the host app sets it (`PUT /api/users/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub id: u64,
    pub username: String,
    /// `None` keeps the one recorded.
    pub display_name: Option<String>,
}

/// Records the host app's name for a user (creating their record if new); a local account is
/// refused: its name is its login.
pub(super) fn set_profile(
    t: &mut Tables<'_>,
    profile: Profile,
    now_ms: u64,
) -> Result<(), OpError> {
    let existing: Option<UserRecord> = match t.users.get(profile.id).map_err(rd)? {
        Some(bytes) => Some(decode(bytes.value())?),
        None => None,
    };
    let record = match existing {
        Some(r) if r.password_hash.is_some() => {
            return Err(WriteError::LocalAccount(profile.id).into());
        }
        Some(r) => UserRecord {
            username: Some(profile.username),
            display_name: profile.display_name.or(r.display_name),
            ..r
        },
        None => UserRecord {
            username: Some(profile.username),
            display_name: profile.display_name,
            created_at_ms: now_ms,
            ..UserRecord::default()
        },
    };
    let bytes = encode(&record)?;
    t.users.insert(profile.id, bytes.as_slice()).map_err(wr)?;
    Ok(())
}

/// Records user `id`, seen in a token with `username`, if new or renamed.
pub(super) fn ensure_user(
    t: &mut Tables<'_>,
    id: u64,
    username: Option<String>,
    now_ms: u64,
) -> Result<(), OpError> {
    let existing: Option<UserRecord> = match t.users.get(id).map_err(rd)? {
        Some(bytes) => Some(decode(bytes.value())?),
        None => None,
    };
    let record = match existing {
        // Local accounts keep their own name; external users follow their token's claim.
        Some(r) if r.password_hash.is_some() || username.is_none() || r.username == username => {
            return Ok(());
        }
        Some(r) => UserRecord { username, ..r },
        None => UserRecord {
            username,
            created_at_ms: now_ms,
            ..UserRecord::default()
        },
    };
    let bytes = encode(&record)?;
    t.users.insert(id, bytes.as_slice()).map_err(wr)?;
    Ok(())
}

/// Creates a local account; answers its id.
pub(super) fn register(t: &mut Tables<'_>, new: NewAccount, now_ms: u64) -> Result<u64, OpError> {
    if t.usernames
        .get(new.username.as_str())
        .map_err(rd)?
        .is_some()
    {
        return Err(WriteError::UsernameTaken.into());
    }
    let id = t.next_local_user_id.unwrap_or(new.id_base).max(new.id_base);
    let record = UserRecord {
        username: Some(new.username.clone()),
        display_name: new.display_name,
        password_hash: Some(new.password_hash),
        created_at_ms: now_ms,
    };
    let bytes = encode(&record)?;
    t.next_local_user_id = Some(id + 1);
    t.users.insert(id, bytes.as_slice()).map_err(wr)?;
    t.usernames.insert(new.username.as_str(), id).map_err(wr)?;
    Ok(id)
}

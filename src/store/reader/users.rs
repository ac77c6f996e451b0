//! Users: the directory, accounts, the admin API's summaries, wrapped data keys.

use super::*;

impl Reader<'_> {
    /// Every user's id, name and whether they are a local account, for the directory. A
    /// record that cannot be read is left out (and reported): the daemon still starts, and
    /// that user's requests go on as for a user not recorded yet.
    pub fn user_names(&self) -> Result<Vec<(u64, Option<String>, bool)>, StoreError> {
        let table = self.table(USERS)?;
        let mut users = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
        for row in table.iter()? {
            let (id, bytes) = row?;
            let id = id.value();
            if let Some(record) = self.decoded::<UserRecord>(&USERS, id, bytes.value())? {
                users.push((id, record.username, record.password_hash.is_some()));
            }
        }
        Ok(users)
    }

    pub fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match self.table(USERS)?.get(id)? {
            Some(bytes) => self.decoded(&USERS, id, bytes.value()),
            None => Ok(None),
        }
    }

    /// The local account called `username`.
    pub fn account(&self, username: &str) -> Result<Option<(u64, UserRecord)>, StoreError> {
        let Some(id) = self.table(USERNAMES)?.get(username)?.map(|v| v.value()) else {
            return Ok(None);
        };
        Ok(self.user(id)?.map(|u| (id, u)))
    }

    /// Every disabled (or erased) user.
    pub fn disabled_users(&self) -> Result<Vec<u64>, StoreError> {
        let mut users = Vec::new();
        for row in self.table(DISABLED_USERS)?.iter()? {
            users.push(row?.0.value());
        }
        Ok(users)
    }

    /// Users for operators, by id, whose id or name (username or display name, any case)
    /// matches `q`: the total, and `limit` of them after the first `skip`.
    pub fn user_summaries(
        &self,
        q: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> Result<(u64, Vec<UserSummary>), StoreError> {
        let q = q.map(str::to_lowercase).filter(|q| !q.is_empty());
        let matches = |id: u64, record: &UserRecord| {
            let Some(q) = &q else { return true };
            id.to_string() == *q
                || [&record.username, &record.display_name]
                    .into_iter()
                    .flatten()
                    .any(|name| name.to_lowercase().contains(q.as_str()))
        };
        let mut count = 0u64;
        let mut page = Vec::new();
        for row in self.table(USERS)?.iter()? {
            let (id, bytes) = row?;
            let id = id.value();
            let Some(record) = self.decoded::<UserRecord>(&USERS, id, bytes.value())? else {
                continue;
            };
            if !matches(id, &record) {
                continue;
            }
            count += 1;
            if count as usize > skip && page.len() < limit {
                page.push((id, record));
            }
        }
        let mut results = Vec::with_capacity(page.len());
        for (id, record) in page {
            results.push(self.summarize(id, record)?);
        }
        Ok((count, results))
    }

    /// One user for operators; `None` if the daemon has no record of them.
    pub fn user_summary(&self, id: u64) -> Result<Option<UserSummary>, StoreError> {
        match self.user(id)? {
            Some(record) => Ok(Some(self.summarize(id, record)?)),
            None => Ok(None),
        }
    }

    fn summarize(&self, id: u64, record: UserRecord) -> Result<UserSummary, StoreError> {
        Ok(UserSummary {
            id,
            record,
            disabled_since_ms: self.table(DISABLED_USERS)?.get(id)?.map(|v| v.value()),
            queue_length: self.table(QUEUE_LENGTHS)?.get(id)?.map_or(0, |v| v.value()),
            conversations: self
                .table(MEMBERSHIPS)?
                .range((id, 0)..=(id, u64::MAX))?
                .count() as u64,
        })
    }

    /// `user`'s data key as stored (sealed by the at-rest key).
    pub fn wrapped_data_key(&self, user: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .table(DATA_KEYS)?
            .get(user)?
            .map(|v| v.value().to_vec()))
    }
}

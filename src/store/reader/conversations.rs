//! Conversations and memberships: a user's conversations, contacts, a conversation's view
//! and its subject, unread counts.

use super::*;

impl Reader<'_> {
    /// Ids of the user's conversations.
    pub fn conversation_ids(&self, user: u64) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            ids.push(entry?.0.value().1);
        }
        Ok(ids)
    }

    /// Everyone who shares at least one conversation with `user` (not `user` themself).
    pub fn contacts(&self, user: u64) -> Result<std::collections::HashSet<u64>, StoreError> {
        let mut contacts = std::collections::HashSet::new();
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            let conv = entry?.0.value().1;
            if let Some(record) = self.conversation(conv)? {
                contacts.extend(record.participants.into_iter().filter(|p| *p != user));
            }
        }
        Ok(contacts)
    }

    /// The user's memberships, by conversation id, as they see each conversation (damaged
    /// ones, and those whose conversation record is damaged, left out).
    pub(super) fn memberships(&self, user: u64) -> Result<Vec<(u64, Membership)>, StoreError> {
        let conversations = self.table(CONVERSATIONS)?;
        let mut out = Vec::new();
        for entry in self
            .table(MEMBERSHIPS)?
            .range((user, 0)..=(user, u64::MAX))?
        {
            let (key, value) = entry?;
            let conv = key.value().1;
            let key = format_args!("({user}, {conv})");
            let Some(membership) =
                self.decoded::<MembershipRecord>(&MEMBERSHIPS, key, value.value())?
            else {
                continue;
            };
            let counters = match conversations.get(conv)? {
                Some(bytes) => self.damaged.skip(
                    CONVERSATIONS.name(),
                    conv,
                    conversation_counters(bytes.value()),
                )?,
                None => None,
            };
            if let Some(counters) = counters {
                out.push((conv, membership.view(&counters)));
            }
        }
        Ok(out)
    }

    /// A conversation record; `None` if there is none or it is damaged.
    pub fn conversation(&self, id: u64) -> Result<Option<ConversationRecord>, StoreError> {
        match self.table(CONVERSATIONS)?.get(id)? {
            Some(bytes) => self.decoded(&CONVERSATIONS, id, bytes.value()),
            None => Ok(None),
        }
    }

    /// A membership record; `None` if the user is not in the conversation or it is damaged.
    pub fn membership(&self, user: u64, conv: u64) -> Result<Option<MembershipRecord>, StoreError> {
        match self.table(MEMBERSHIPS)?.get((user, conv))? {
            Some(bytes) => self.decoded(
                &MEMBERSHIPS,
                format_args!("({user}, {conv})"),
                bytes.value(),
            ),
            None => Ok(None),
        }
    }

    /// Opens a conversation's sealed subject; `None` if it has none or it is damaged.
    fn open_subject(&self, conv: u64, sealed: Option<&[u8]>) -> Result<Option<String>, StoreError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened = self
            .keyring
            .open(sealed)
            .map_err(StoreError::from)
            .and_then(|plain| {
                String::from_utf8(plain).map_err(|e| StoreError::Encoding(e.to_string()))
            });
        self.damaged.skip(CONVERSATIONS.name(), conv, opened)
    }

    /// The conversation as `user` sees it, or `None` if it does not exist or `user` is not in it.
    pub fn conversation_view(
        &self,
        user: u64,
        conv: u64,
    ) -> Result<Option<ConversationView>, StoreError> {
        let Some(membership) = self.membership(user, conv)? else {
            return Ok(None);
        };
        let Some(record) = self.conversation(conv)? else {
            return Ok(None);
        };
        let membership = membership.view(&(&record).into());
        let subject = self.open_subject(conv, record.subject.as_deref())?;
        // A damaged newest message leaves the conversation without a preview.
        let last_message = match record.last_message_id {
            Some(id) => match self.readable_message(id)? {
                Some((msg, body)) => Some(self.message_view(user, id, msg, body, &record)?),
                None => None,
            },
            None => None,
        };
        let host_id = self
            .table(CONVERSATION_HOST_IDS)?
            .get(conv)?
            .map(|v| v.value());
        Ok(Some(ConversationView {
            id: conv,
            record,
            subject,
            membership,
            last_message,
            host_id,
        }))
    }

    /// The user's conversations (archived or not), most recently active first.
    pub fn user_conversations(
        &self,
        user: u64,
        archived: bool,
    ) -> Result<Vec<(u64, Membership)>, StoreError> {
        let mut out = self.memberships(user)?;
        out.retain(|(_, membership)| membership.archived == archived);
        // Most recently active first (created, or last message); ties by newest id.
        out.sort_by(|(a_id, a), (b_id, b)| {
            (b.last_activity_ms, b_id).cmp(&(a.last_activity_ms, a_id))
        });
        Ok(out)
    }

    /// Unread messages over all of the user's conversations.
    pub fn unread_total(&self, user: u64) -> Result<u64, StoreError> {
        Ok(self.memberships(user)?.iter().map(|(_, m)| m.unread).sum())
    }
}

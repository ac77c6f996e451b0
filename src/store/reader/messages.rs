//! Messages: one message opened with its sender's data key, what a user missed, a history
//! page, the view of one message.

use super::*;

impl Reader<'_> {
    /// Messages of all the user's conversations with ids above `since`, in id order, at most
    /// `limit` ids (damaged ones left out); and whether more follow.
    pub fn messages_since(
        &self,
        user: u64,
        since: u64,
        limit: usize,
    ) -> Result<SyncPage, StoreError> {
        let snapshot = self.history()?;
        let history = snapshot.view();
        let mut ids = Vec::new();
        for conv in self.conversation_ids(user)? {
            // Each conversation contributes at most `limit + 1`: enough to know if more follow.
            for id in history
                .ids(conv, since.saturating_add(1)..=u64::MAX)?
                .take(limit + 1)
            {
                ids.push(id?);
            }
        }
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut messages = Vec::with_capacity(ids.len());
        for &id in &ids {
            if let Some((record, body)) = self.readable_message(id)? {
                messages.push(QueuedMessage {
                    rank: record.priority.rank(),
                    id,
                    record,
                    body,
                });
            }
        }
        Ok(SyncPage {
            messages,
            more,
            last_id: ids.last().copied(),
        })
    }

    /// The user's unread messages, oldest first, at most `limit`; and how many there are in all.
    /// Reads only the unread tail of each conversation that has one.
    pub fn unread_messages(
        &self,
        user: u64,
        limit: usize,
    ) -> Result<(u64, Vec<MessageView>), StoreError> {
        let snapshot = self.history()?;
        let history = snapshot.view();
        let mut total = 0;
        let mut found = Vec::new();
        for (conv, membership) in self.memberships(user)? {
            if membership.unread == 0 {
                continue;
            }
            total += membership.unread;
            // Only the oldest `limit` of this conversation can make the answer.
            let mut taken = 0;
            for item in history.ids(conv, membership.read_marker.saturating_add(1)..=u64::MAX)? {
                let id = item?;
                if let Some(record) = self.message(id)?
                    && record.sender != user
                {
                    found.push((id, record, conv));
                    taken += 1;
                    if taken == limit {
                        break;
                    }
                }
            }
            // Keep memory bounded: only the oldest `limit` can be returned.
            if found.len() > limit * 2 {
                found.sort_by_key(|(id, ..)| *id);
                found.truncate(limit);
            }
        }
        found.sort_by_key(|(id, ..)| *id);
        found.truncate(limit);
        let mut views = Vec::with_capacity(found.len());
        // Only the answer's bodies are opened (a damaged one leaves the answer one short).
        for (id, record, conv) in found {
            if let Some(body) = self.opened(id, &record)?
                && let Some(conversation) = self.conversation(conv)?
            {
                views.push(self.message_view(user, id, record, body, &conversation)?);
            }
        }
        Ok((total, views))
    }

    /// A message record (its body still sealed); `None` if there is none or it is damaged.
    pub fn message(&self, id: u64) -> Result<Option<MessageRecord>, StoreError> {
        match self.table(MESSAGES)?.get(id)? {
            Some(bytes) => self.decoded(&MESSAGES, id, bytes.value()),
            None => Ok(None),
        }
    }

    /// A message with its body opened; `None` if there is none or it is damaged.
    pub fn readable_message(
        &self,
        id: u64,
    ) -> Result<Option<(MessageRecord, MessageBody)>, StoreError> {
        let Some(record) = self.message(id)? else {
            return Ok(None);
        };
        Ok(self.opened(id, &record)?.map(|body| (record, body)))
    }

    /// Message `id`'s sealed text and metadata, opened; `None` if they are damaged. A
    /// tombstone opens as an empty body.
    fn opened(&self, id: u64, record: &MessageRecord) -> Result<Option<MessageBody>, StoreError> {
        if record.is_deleted() {
            return Ok(Some(MessageBody::default()));
        }
        let opened = match self.keyring.open(&record.body) {
            Ok(plain) => Ok(plain),
            // Sealed by the sender's data key (a data key's id may collide with an at-rest
            // key's, which then fails to authenticate it).
            Err(e @ (OpenError::UnknownKey(_) | OpenError::Tampered)) => {
                match self.data_key(record.sender)? {
                    Some(ring) => ring.open(&record.body),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
        .map_err(StoreError::from)
        .and_then(|plain| decode(&plain));
        self.damaged.skip(MESSAGES.name(), id, opened)
    }

    /// `user`'s data key from this snapshot, opened; `None` if they have none (never sent
    /// since data keys exist, or erased).
    fn data_key(&self, user: u64) -> Result<Option<Arc<Keyring>>, StoreError> {
        if let Some(known) = self.data_keys.borrow().get(&user) {
            return Ok(known.clone());
        }
        let ring = match self.wrapped_data_key(user)? {
            Some(wrapped) => {
                let key = Key::unwrap(self.keyring, &wrapped)?;
                let ring =
                    Keyring::new(&key, &[]).map_err(|e| StoreError::Storage(e.to_string()))?;
                Some(Arc::new(ring))
            }
            None => None,
        };
        self.data_keys.borrow_mut().insert(user, ring.clone());
        Ok(ring)
    }

    /// A message as `viewer` sees it, with its read state worked out.
    pub fn message_view(
        &self,
        viewer: u64,
        id: u64,
        record: MessageRecord,
        body: MessageBody,
        conversation: &ConversationRecord,
    ) -> Result<MessageView, StoreError> {
        let conv = record.conversation;
        let is_read = if viewer == record.sender {
            let mut all = true;
            for other in conversation.participants.iter().filter(|p| **p != viewer) {
                let marker = self.membership(*other, conv)?.map(|m| m.read_marker);
                all &= marker.is_some_and(|m| m >= id);
            }
            all
        } else {
            self.membership(viewer, conv)?
                .is_some_and(|m| m.read_marker >= id)
        };
        let read_at_ms = match record.receiver {
            Some(receiver) => self.first_read(conv, receiver, id)?,
            None => {
                let mut last = None;
                for other in conversation
                    .participants
                    .iter()
                    .filter(|p| **p != record.sender)
                {
                    match self.first_read(conv, *other, id)? {
                        Some(at) => last = last.max(Some(at)),
                        None => {
                            last = None;
                            break;
                        }
                    }
                }
                last
            }
        };
        Ok(MessageView {
            id,
            record,
            body,
            is_read,
            read_at_ms,
        })
    }

    /// When `user`'s read marker in `conv` first covered message `id` (Unix ms): the first
    /// recorded move to a marker at or above it.
    fn first_read(&self, conv: u64, user: u64, id: u64) -> Result<Option<u64>, StoreError> {
        let steps = self.table(READ_STEPS)?;
        let first = steps
            .range((conv, user, id)..=(conv, user, u64::MAX))?
            .next();
        Ok(match first {
            Some(entry) => Some(entry?.1.value()),
            None => None,
        })
    }

    /// Message `id` as `viewer` sees it, or `None` if it does not exist or `viewer` is not in
    /// its conversation; [`StoreError::Damaged`] if it cannot be read back.
    pub fn visible_message(&self, viewer: u64, id: u64) -> Result<Option<MessageView>, StoreError> {
        let damaged = || StoreError::Damaged {
            table: MESSAGES.name().to_owned(),
            key: id.to_string(),
        };
        let Some(bytes) = self.table(MESSAGES)?.get(id)? else {
            return Ok(None);
        };
        // Undecodable, it names no conversation to check the viewer against; all it tells
        // anyone is that the id was given, which later ids tell as well.
        let record = self
            .decoded::<MessageRecord>(&MESSAGES, id, bytes.value())?
            .ok_or_else(damaged)?;
        if self.membership(viewer, record.conversation)?.is_none() {
            return Ok(None);
        }
        let Some(conversation) = self.conversation(record.conversation)? else {
            return Ok(None);
        };
        let body = self.opened(id, &record)?.ok_or_else(damaged)?;
        self.message_view(viewer, id, record, body, &conversation)
            .map(Some)
    }

    /// One page of history of `conv` as `viewer` sees it.
    pub fn message_page(
        &self,
        viewer: u64,
        conv: u64,
        conversation: &ConversationRecord,
        cursor: Cursor,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let snapshot = self.history()?;
        let history = snapshot.view();
        let mut ids: Vec<u64> = Vec::with_capacity(limit);
        match cursor {
            Cursor::Latest | Cursor::Before(_) => {
                let below = match cursor {
                    Cursor::Before(0) => None,
                    Cursor::Before(b) => Some(0..=b - 1),
                    _ => Some(0..=u64::MAX),
                };
                if let Some(below) = below {
                    for id in history.ids(conv, below)?.rev().take(limit) {
                        ids.push(id?);
                    }
                }
                ids.reverse();
            }
            Cursor::After(a) => {
                for id in history
                    .ids(conv, a.saturating_add(1)..=u64::MAX)?
                    .take(limit)
                {
                    ids.push(id?);
                }
            }
        }
        let (has_older, has_newer) = match (ids.first(), ids.last()) {
            (Some(&first), Some(&last)) => (
                first > 0 && history.any(conv, 0..=first - 1)?,
                history.any(conv, last.saturating_add(1)..=u64::MAX)?,
            ),
            // An empty page: whatever lies on the far side of the cursor.
            _ => match cursor {
                Cursor::Latest => (false, false),
                Cursor::Before(b) => (false, history.any(conv, b..=u64::MAX)?),
                Cursor::After(a) => (history.any(conv, 0..=a)?, false),
            },
        };
        let mut messages = Vec::with_capacity(ids.len());
        for &id in &ids {
            if let Some((record, body)) = self.readable_message(id)? {
                messages.push(self.message_view(viewer, id, record, body, conversation)?);
            }
        }
        Ok(MessagePage {
            messages,
            covers: ids.first().zip(ids.last()).map(|(f, l)| (*f, *l)),
            total: conversation.message_count,
            has_older,
            has_newer,
        })
    }
}

//! The writer's copy of the history tail ([`crate::store::history`]): the messages the history
//! and client-id indexes do not have yet.

use std::collections::HashMap;

use crate::store::history::Tail;

/// The messages the history and client-id indexes do not have yet, as committed (see
/// [`crate::store::history`]): their conversations, and the client ids they were sent with.
/// Both indexes are keyed by something other than the message id (conversation, sender), so
/// writing them at every append dirtied a leaf per busy conversation and per sender in every
/// commit; the writer adds them at each fold instead, and answers from here until then.
#[derive(Debug, Default)]
pub(in crate::store) struct WriterTail {
    /// (conversation, message id), in id order.
    pub(super) history: Tail,
    /// Sender → client id → message id, for the tail's messages sent with a client id.
    pub(super) client_ids: HashMap<u64, HashMap<String, u64>>,
}

impl WriterTail {
    pub(in crate::store) fn len(&self) -> usize {
        self.history.len()
    }

    pub(in crate::store) fn push(
        &mut self,
        conversation: u64,
        id: u64,
        client: Option<(u64, String)>,
    ) {
        self.history.push((conversation, id));
        if let Some((sender, client_id)) = client {
            self.client_ids
                .entry(sender)
                .or_default()
                .insert(client_id, id);
        }
    }

    /// The message `sender` sent with `client_id`, if it is in the tail.
    pub(super) fn client_id(&self, sender: u64, client_id: &str) -> Option<u64> {
        self.client_ids.get(&sender)?.get(client_id).copied()
    }

    /// Takes back the messages from position `len` on (a batch that failed).
    pub(in crate::store) fn truncate(&mut self, len: usize) {
        let Some(&(_, first)) = self.history.get(len) else {
            return;
        };
        self.history.truncate(len);
        for ids in self.client_ids.values_mut() {
            ids.retain(|_, id| *id < first);
        }
        self.client_ids.retain(|_, ids| !ids.is_empty());
    }

    /// The client ids of the tail's messages up to `through`, as (sender, client id, id).
    pub(super) fn client_ids_through(&self, through: u64) -> Vec<(u64, &str, u64)> {
        self.client_ids
            .iter()
            .flat_map(|(sender, ids)| ids.iter().map(|(c, id)| (*sender, c.as_str(), *id)))
            .filter(|(_, _, id)| *id <= through)
            .collect()
    }

    /// Forgets the messages up to `through`: a fold of them was committed.
    pub(in crate::store) fn folded(&mut self, through: u64) {
        let folded = self.history.partition_point(|(_, id)| *id <= through);
        self.history.drain(..folded);
        for ids in self.client_ids.values_mut() {
            ids.retain(|_, id| *id > through);
        }
        self.client_ids.retain(|_, ids| !ids.is_empty());
    }
}

//! A batch's cache of the records it has read from one table, written back once at the end of
//! the batch however often the batch changed them.

use std::collections::BTreeMap;

use super::OpError;

/// The records of one table that a batch has read, and which of them it changed: reads after
/// the first come from memory, and changed records are written back once, by
/// [`super::Tables::flush`], however often the batch changed them.
#[derive(Debug)]
pub(super) struct WriteBack<K, V> {
    /// `None`: known to be absent from the table.
    entries: BTreeMap<K, Cached<V>>,
}

#[derive(Debug)]
struct Cached<V> {
    value: Option<V>,
    dirty: bool,
}

impl<K, V> Default for WriteBack<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, V> WriteBack<K, V> {
    /// The record under `key`, loaded from the table by `load` on first use.
    pub(super) fn get(
        &mut self,
        key: K,
        load: impl FnOnce() -> Result<Option<V>, OpError>,
    ) -> Result<Option<&V>, OpError> {
        let cached = match self.entries.entry(key) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Cached {
                value: load()?,
                dirty: false,
            }),
        };
        Ok(cached.value.as_ref())
    }

    /// A record already read by [`WriteBack::get`], to change in place.
    pub(super) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let cached = self.entries.get_mut(&key)?;
        cached.dirty = true;
        cached.value.as_mut()
    }

    /// Sets the record under `key`.
    pub(super) fn put(&mut self, key: K, value: V) {
        self.entries.insert(
            key,
            Cached {
                value: Some(value),
                dirty: true,
            },
        );
    }

    /// Drops what the batch knows of `key`, for an op that removed its row from the table
    /// itself: the next read loads it again (and finds it gone).
    pub(super) fn forget(&mut self, key: K) {
        self.entries.remove(&key);
    }

    /// The changed records, in key order (sorted inserts are the cheapest for the B-tree);
    /// they count as clean afterwards.
    pub(super) fn take_dirty(&mut self) -> impl Iterator<Item = (K, &mut V)> {
        self.entries.iter_mut().filter_map(|(key, cached)| {
            let dirty = std::mem::replace(&mut cached.dirty, false);
            match (&mut cached.value, dirty) {
                (Some(value), true) => Some((*key, value)),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! Conversation records, memberships and queue lengths are cached per batch and written
    //! back at its end: a batch must leave exactly the tables that the same requests leave when
    //! each is committed on its own.

    use redb::{Database, ReadableDatabase, ReadableTable};

    use crate::model::{ConversationRecord, MembershipRecord, Priority};
    use crate::store::engine::batch::Plan;
    use crate::store::engine::batch::commit_batch;
    use crate::store::engine::batch::testing::{test_state, unanswered};
    use crate::store::engine::handle::Request;
    use crate::store::ops::{NewConversation, NewMessage, Op};
    use crate::store::records::decode;
    use crate::store::tables::{CONVERSATIONS, MEMBERSHIPS, META, QUEUE_LENGTHS, meta};
    use crate::store::testing::test_message;

    fn message(conversation: u64, sender: u64) -> NewMessage {
        test_message(conversation, sender, Priority::Normal)
    }

    /// The requests, in order. Conversation 2 is read (and refused) before it exists, then
    /// created in the same batch: a cache that remembered "absent" would lose its members.
    fn script() -> Vec<Request> {
        let conversation = |creator, other| NewConversation {
            creator,
            participants: vec![other],
            property: None,
            booking: None,
            subject: None,
        };
        let mut ops = Vec::new();
        ops.push(Op::CreateConversation(conversation(1, 2)));
        for sender in [1, 2, 1] {
            ops.push(Op::AppendMessage(message(1, sender)));
        }
        ops.push(Op::MarkRead {
            user: 2,
            conversation: 1,
            up_to: Some(1),
        });
        ops.push(Op::SetArchived {
            user: 1,
            conversation: 1,
            archived: true,
        });
        ops.push(Op::AppendMessage(message(1, 2)));
        ops.push(Op::Dequeue(vec![(2, Priority::Normal.rank(), 1)]));
        ops.push(Op::MarkRead {
            user: 3,
            conversation: 2,
            up_to: None,
        });
        ops.push(Op::AppendMessage(message(2, 3)));
        ops.push(Op::CreateConversation(conversation(3, 1)));
        for sender in [3, 1, 3] {
            ops.push(Op::AppendMessage(message(2, sender)));
        }
        ops.push(Op::MarkRead {
            user: 1,
            conversation: 2,
            up_to: None,
        });
        ops.into_iter().map(unanswered).collect()
    }

    /// Every row of the cached tables, timestamps zeroed (the two runs commit at other times).
    fn dump(db: &Database) -> Vec<String> {
        let read = db.begin_read().expect("read");
        let mut rows = Vec::new();
        for entry in read
            .open_table(CONVERSATIONS)
            .expect("t")
            .iter()
            .expect("iter")
        {
            let (id, bytes) = entry.expect("row");
            let mut record: ConversationRecord = decode(bytes.value()).expect("decode");
            (record.created_at_ms, record.updated_at_ms) = (0, 0);
            rows.push(format!("conversation {} {record:?}", id.value()));
        }
        for entry in read
            .open_table(MEMBERSHIPS)
            .expect("t")
            .iter()
            .expect("iter")
        {
            let (key, bytes) = entry.expect("row");
            let mut record: MembershipRecord = decode(bytes.value()).expect("decode");
            record.read_at_ms = 0;
            rows.push(format!("membership {:?} {record:?}", key.value()));
        }
        for entry in read
            .open_table(QUEUE_LENGTHS)
            .expect("t")
            .iter()
            .expect("iter")
        {
            let (user, length) = entry.expect("row");
            rows.push(format!("queue length {} {}", user.value(), length.value()));
        }
        let meta = read.open_table(META).expect("meta");
        let pending = meta
            .get(meta::QUEUE_PENDING)
            .expect("get")
            .map(|v| v.value());
        rows.push(format!("pending {pending:?}"));
        rows
    }

    #[test]
    fn one_batch_leaves_the_same_tables_as_one_commit_per_request() {
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let together = Database::create(dir_a.path().join("a.redb")).expect("db");
        let apart = Database::create(dir_b.path().join("b.redb")).expect("db");
        let mut batch = script();
        let (_, _, outcome) = commit_batch(
            &together,
            &mut batch,
            &mut test_state(&together),
            u64::MAX,
            Plan::checkpoint_now(),
        );
        outcome.expect("batch commits");
        let mut state = test_state(&apart);
        for request in script() {
            let mut batch = vec![request];
            let (_, _, outcome) = commit_batch(
                &apart,
                &mut batch,
                &mut state,
                u64::MAX,
                Plan::checkpoint_now(),
            );
            outcome.expect("commit");
        }
        let rows = dump(&together);
        assert_eq!(rows, dump(&apart));
        // And the script did what it says: conversation 2 exists with its members.
        assert!(
            rows.iter().any(|r| r.starts_with("membership (3, 2)")),
            "{rows:#?}"
        );
        assert!(rows.iter().any(|r| r == "queue length 2 1"), "{rows:#?}");
    }
}

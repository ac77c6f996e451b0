//! Id reservations: no id is handed out twice, whatever a crash or a lost journal takes back.
//!
//! The writer gives message, conversation and local account ids from counters in
//! `name_value`, inside each batch's transaction. Most batches are made durable by the journal,
//! not by a durable redb commit, so after a crash the data file's counters are those of its
//! last checkpoint, and only the journal's replay brings them up to the ids clients were
//! given. A journal that cannot be replayed whole (damaged and moved aside with
//! `--accept-journal-loss`, or deleted) would hand those ids out again, and clients that
//! de-duplicate by id would drop the new messages. So each counter has a *reservation*, durable
//! in the data file before any id at or above it is handed out: the batch whose ids pass it
//! raises it to the next multiple of [`BLOCK`] and is committed durably itself (a checkpoint).
//! A start that could not replay its journal whole moves each counter up to its reservation
//! ([`skip_reserved`]), above every id a client may have seen.
//!
//! Blocks are aligned so that the reservation depends only on the counter, not on how batches
//! happened to fall: a replay, or a batch split differently, leaves the same rows.

use redb::{Database, ReadableDatabase, Table};

use crate::store::StoreError;
use crate::store::tables::{META, meta};

/// Ids reserved at a time. A reservation costs one durable commit (a checkpoint, which the
/// writer makes every `storage.checkpoint_interval` anyway) per block; a lost journal costs at
/// most a block of ids that are never used.
pub const BLOCK: u64 = 1 << 16;

/// A counter and its reservation, by their keys in [`META`].
#[derive(Debug, Clone, Copy)]
struct Counter {
    /// What the ids are, for the log.
    name: &'static str,
    next: &'static str,
    reserved: &'static str,
}

const COUNTERS: [Counter; 4] = [
    Counter {
        name: "message",
        next: meta::NEXT_MESSAGE_ID,
        reserved: meta::MESSAGE_IDS_RESERVED,
    },
    Counter {
        name: "conversation",
        next: meta::NEXT_CONVERSATION_ID,
        reserved: meta::CONVERSATION_IDS_RESERVED,
    },
    Counter {
        name: "local account",
        next: meta::NEXT_LOCAL_USER_ID,
        reserved: meta::LOCAL_USER_IDS_RESERVED,
    },
    // The host de-duplicates webhook events by id: one given twice would be dropped there.
    Counter {
        name: "webhook event",
        next: meta::NEXT_EVENT_ID,
        reserved: meta::EVENT_IDS_RESERVED,
    },
];

/// The reservation that covers every id below `next`: the next multiple of [`BLOCK`] at or
/// above it, never past [`crate::MAX_ID`] (ids stay exact in a JSON number).
fn covering(next: u64) -> u64 {
    next.div_ceil(BLOCK)
        .saturating_mul(BLOCK)
        .min(crate::MAX_ID)
}

/// Raises the reservation of each counter the batch has carried past its own; true if it
/// raised any, and the batch's commit must then be durable. Called with the batch's counters
/// saved in `table`.
pub(in crate::store) fn reserve(table: &mut Table<&'static str, u64>) -> Result<bool, StoreError> {
    let mut raised = false;
    for counter in COUNTERS {
        let Some(next) = meta::get(table, counter.next)? else {
            continue;
        };
        let reserved = meta::get(table, counter.reserved)?.unwrap_or(0);
        if next > reserved {
            table.insert(counter.reserved, covering(next))?;
            raised = true;
        }
    }
    Ok(raised)
}

/// A counter [`skip_reserved`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Skipped {
    pub name: &'static str,
    /// The id it would have handed out next.
    pub from: u64,
    /// The id it hands out next now.
    pub to: u64,
}

/// Moves every counter up to its reservation, in one durable commit: for a start whose journal
/// could not be replayed whole, which may have lost batches whose ids clients were given.
/// Returns the counters it moved.
pub(super) fn skip_reserved(db: &Database) -> Result<Vec<Skipped>, StoreError> {
    let pending: Vec<Skipped> = {
        let txn = db.begin_read()?;
        let table = txn.open_table(META)?;
        let mut pending = Vec::new();
        for counter in COUNTERS {
            let next = meta::get(&table, counter.next)?;
            let reserved = meta::get(&table, counter.reserved)?;
            if let (Some(from), Some(to)) = (next, reserved)
                && from < to
            {
                pending.push(Skipped {
                    name: counter.name,
                    from,
                    to,
                });
            }
        }
        pending
    };
    if pending.is_empty() {
        return Ok(pending);
    }
    // Durable by default: the skip must outlive the next crash.
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(META)?;
        for skipped in &pending {
            let counter = COUNTERS
                .iter()
                .find(|c| c.name == skipped.name)
                .expect("a counter of the list");
            table.insert(counter.next, skipped.to)?;
        }
        // The ids from the reservation on are not reserved yet: the next batch that gives one
        // reserves its block first.
    }
    txn.commit()?;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_covers_every_id_below_the_counter_and_stays_below_max_id() {
        assert_eq!(covering(1), BLOCK);
        assert_eq!(covering(2), BLOCK);
        assert_eq!(covering(BLOCK), BLOCK);
        assert_eq!(covering(BLOCK + 1), 2 * BLOCK);
        assert_eq!(covering(crate::MAX_ID - 1), crate::MAX_ID);
        assert_eq!(covering(u64::MAX), crate::MAX_ID);
    }

    #[test]
    fn counters_skip_to_their_reservations_durably_and_only_past_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("ids.redb")).expect("db");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(META).expect("meta");
            table.insert(meta::NEXT_MESSAGE_ID, 42).expect("insert");
            table.insert(meta::NEXT_CONVERSATION_ID, 3).expect("insert");
            assert!(reserve(&mut table).expect("reserve"));
            // Reserved already: nothing more to make durable.
            assert!(!reserve(&mut table).expect("reserve"));
            // Carried past: the next block.
            table
                .insert(meta::NEXT_MESSAGE_ID, BLOCK + 1)
                .expect("insert");
            assert!(reserve(&mut table).expect("reserve"));
            // A crash takes the counter back to an older checkpoint.
            table.insert(meta::NEXT_MESSAGE_ID, 42).expect("insert");
        }
        txn.commit().expect("commit");
        let skipped = skip_reserved(&db).expect("skip");
        assert_eq!(
            skipped,
            [
                Skipped {
                    name: "message",
                    from: 42,
                    to: 2 * BLOCK
                },
                Skipped {
                    name: "conversation",
                    from: 3,
                    to: BLOCK
                }
            ]
        );
        drop(db);
        let db = Database::open(dir.path().join("ids.redb")).expect("db");
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(META).expect("meta");
        let next = meta::get(&table, meta::NEXT_MESSAGE_ID).expect("get");
        assert_eq!(next, Some(2 * BLOCK));
        assert_eq!(
            meta::get(&table, meta::NEXT_LOCAL_USER_ID).expect("get"),
            None
        );
        drop((table, txn));
        assert!(skip_reserved(&db).expect("skip").is_empty());
    }
}

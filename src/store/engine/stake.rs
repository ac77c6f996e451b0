//! What a damaged journal puts at stake, in the words an operator reads in the refusal and in
//! the log of a start that accepted the loss.

use redb::{Database, ReadableDatabase};

use super::journal::{Damage, RECORDS_START, Record};
use super::record;
use crate::store::StoreError;
use crate::store::tables::{META, meta};

/// What a damaged journal puts at stake, in the words of the messages that report it: how
/// many records a start can still replay, and what the damage costs (records, batches and the
/// message ids they gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stake {
    /// Records before the damage, which a start that accepts the loss replays.
    replayable: usize,
    /// Whole records the damage cuts off (with a damaged header, every record).
    lost: usize,
    /// Their seqs, first and last.
    batches: Option<(u64, u64)>,
    /// The message ids lost, first and last: from the first the replay does not reach (the
    /// damaged record's, when a record is damaged) to the last a lost record gave.
    message_ids: Option<(u64, u64)>,
    /// The damage is in the header.
    header: bool,
    /// The lost records were checked; if not, they are what they say of themselves.
    checked: bool,
}

impl Stake {
    /// The stake of `damage`, given the `records` the journal can still replay and the data
    /// file in `db`.
    pub(super) fn new(
        db: &Database,
        records: &[Record],
        damage: &Damage,
    ) -> Result<Stake, StoreError> {
        let next_in_file = {
            let txn = db.begin_read()?;
            meta::get(&txn.open_table(META)?, meta::NEXT_MESSAGE_ID)?.unwrap_or(1)
        };
        let first = records
            .last()
            .and_then(|r| record::message_ids(&r.payload))
            .map_or(next_in_file, |(_, next)| next);
        let last = damage
            .lost
            .iter()
            .filter_map(|r| record::message_ids(&r.payload))
            .map(|(_, next)| next)
            .max()
            .and_then(|next| next.checked_sub(1))
            .filter(|last| *last >= first);
        let seqs = damage.lost.iter().map(|r| r.seq);
        Ok(Stake {
            replayable: records.len(),
            lost: damage.lost.len(),
            batches: seqs.clone().min().zip(seqs.max()),
            message_ids: last.map(|last| (first, last)),
            header: damage.offset < RECORDS_START,
            checked: damage.checked,
        })
    }

    /// Whole records the damage cuts off.
    pub(super) fn lost(&self) -> usize {
        self.lost
    }

    /// The message ids lost, first and last.
    pub(super) fn message_ids(&self) -> Option<(u64, u64)> {
        self.message_ids
    }
}

impl std::fmt::Display for Stake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = |f: &mut std::fmt::Formatter<'_>| {
            let mut parts = Vec::new();
            if let Some((first, last)) = self.batches {
                parts.push(format!("batches {first}..={last}"));
            }
            if let Some((first, last)) = self.message_ids {
                parts.push(format!("message ids {first}..={last}"));
            }
            if !self.checked {
                parts.push("as the records say of themselves: nothing can check them".into());
            }
            if parts.is_empty() {
                return Ok(());
            }
            write!(f, " ({})", parts.join(", "))
        };
        match (self.header, self.lost) {
            (true, 0) => write!(
                f,
                "its {} records can still be replayed; nothing lies past the damage",
                self.replayable
            ),
            (true, lost) => {
                write!(f, "the {lost} records behind it")?;
                what(f)?;
                write!(f, " cannot be replayed")
            }
            (false, lost) => {
                write!(f, "the damaged record and the {lost} records past it")?;
                what(f)?;
                write!(
                    f,
                    " cannot be replayed; the {} records before it can",
                    self.replayable
                )
            }
        }
    }
}

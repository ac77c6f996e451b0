//! What a start does with the journal it finds: replays what the data file lacks, refuses a
//! journal damaged beyond a torn last write (or moves it aside, when the operator accepts the
//! loss), keeps ids above every one that may have been handed out, and leaves the journal
//! empty for the writer.

use std::path::Path;

use redb::Database;

use super::ids;
use super::journal::{self, Journal};
use super::redo;
use super::stake::Stake;
use crate::store::{DamagedJournal, StoreError};

/// Opens the journal of `data_dir` (for the data file whose journal id is `journal_id`) and
/// brings `db` up to every batch that was acknowledged, durably. Returns the journal, emptied,
/// and the seq the writer continues from. A journal damaged beyond a torn last write is
/// refused, or moved aside, as `damaged` says.
pub(in crate::store) fn recover(
    db: &Database,
    data_dir: &Path,
    journal_id: u64,
    damaged: DamagedJournal,
) -> Result<(Journal, u64), StoreError> {
    let (journal, opened) = Journal::open(data_dir, journal_id)?;
    if opened == journal::Opened::Replaced {
        tracing::warn!(
            path = %journal.path().display(),
            "the journal belonged to another data file (a restored backup?); started a new one"
        );
    }
    let scan = journal.scan(redo::applied_seq(db)?)?;
    if let Some(offset) = scan.torn_at {
        tracing::info!(
            path = %journal.path().display(),
            offset,
            "the journal ends in a write the crash cut short (never acknowledged); replaying what precedes it"
        );
    }
    let damage = match scan.damage {
        Some(damage) => {
            let stake = Stake::new(db, &scan.records, &damage)?;
            if damaged == DamagedJournal::Refuse {
                let error = StoreError::JournalDamaged {
                    path: journal.path().to_owned(),
                    offset: damage.offset,
                    what: damage.what,
                    stake: stake.to_string(),
                };
                tracing::error!(
                    path = %journal.path().display(),
                    offset = damage.offset,
                    records_lost = stake.lost(),
                    "{error}"
                );
                return Err(error);
            }
            Some((damage, stake))
        }
        None => None,
    };
    let replayed = redo::replay(db, &journal, &scan.records)?;
    if replayed.batches > 0 {
        tracing::info!(
            batches = replayed.batches,
            messages = replayed.messages,
            "journal replayed into the data file"
        );
    }
    let mut journal = journal;
    if let Some((damage, stake)) = &damage {
        // What could be replayed is in the data file, durably: only what the damage hides
        // goes, and its file stays on the disk.
        let damaged = journal.path().to_owned();
        let (fresh, aside) = journal.move_aside()?;
        journal = fresh;
        let (first_id, last_id) = stake.message_ids().unzip();
        tracing::error!(
            path = %damaged.display(),
            moved_to = %aside.display(),
            offset = damage.offset,
            records_lost = stake.lost(),
            first_message_id_lost = first_id,
            last_message_id_lost = last_id,
            "journal {} was damaged at offset {}: {}; {}. Started without it (--accept-journal-loss): moved it to {}",
            damaged.display(),
            damage.offset,
            damage.what,
            stake,
            aside.display()
        );
    }
    // Batches may be lost whose ids clients were given: a journal damaged, missing (a new one
    // was created beside a file that had batches), or another data file's.
    if damage.is_some() || opened != journal::Opened::Existing {
        for skipped in ids::skip_reserved(db)? {
            tracing::warn!(
                ids = skipped.name,
                from = skipped.from,
                to = skipped.to,
                "the journal could not be replayed whole: ids continue above every one that may have been handed out"
            );
        }
    }
    // Everything it held is in the data file now, durably: empty it, with a new key.
    journal.clear()?;
    Ok((journal, replayed.seq))
}

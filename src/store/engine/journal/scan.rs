//! Reading the records back after a crash, and telling a torn last write from damage.
//!
//! Seqs only grow while the daemon runs (the writer numbers every batch it attempts), and the
//! data file records the seq of the newest batch it holds, so recovery reads from the first
//! record while each is whole, carries a good tag and has a seq above the one before it (the
//! *run*), and replays those above the data file's.
//!
//! The run ends where a crash cut the last write short, or at the records an earlier round
//! left further into the file (their seqs are lower), or at damage. Only damage can leave,
//! past the end, a checked record with a seq above the run's: a write that was synced, so
//! acknowledged, after the one the run ends at. So the scan goes on past the end of the run
//! and looks for one at every offset, by the marker in front of every record (a damaged length
//! hides where the next record starts): finding one, it reports damage with what lies beyond
//! it; finding none, the end was a torn write (or nothing), the normal aftermath of a crash.
//! Damage to the very last record looks exactly like a torn write and is read as one.

use super::RECORDS_START;
use super::check::{Check, Record};

/// What [`super::Journal::scan`] found in the file.
#[derive(Debug, Default)]
pub struct Scan {
    /// The records to replay: those above the data file's seq in the run of valid records
    /// from the start of the file, in order.
    pub records: Vec<Record>,
    /// The run ended in the front of a newer record that does not check, and nothing newer
    /// lies past it: a write the crash cut short, never acknowledged. Its offset.
    pub torn_at: Option<u64>,
    /// Damage that a torn write does not explain: the file cannot be replayed whole.
    pub damage: Option<Damage>,
}

/// Where a journal is damaged, and what lies beyond the damage.
#[derive(Debug)]
pub struct Damage {
    /// Offset in the file of the first byte known to be wrong (0 for a header that fails its
    /// check as a whole).
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
    /// The records above the data file's seq that a replay cannot reach: past a damaged
    /// record, or every one behind a header that cannot be trusted.
    pub lost: Vec<Record>,
    /// False when `lost` was found by marker, lengths and seqs alone, the header's key being
    /// untrusted: they are what the records say of themselves.
    pub checked: bool,
}

/// [`super::Journal::scan`] on the bytes after the header. `header` is the header's damage, if
/// any.
pub(super) fn scan(bytes: &[u8], after: u64, check: Check, header: Option<(u64, String)>) -> Scan {
    // The run: whole, checked records from the start, each newer than the one before.
    let mut run = Vec::new();
    let mut last = None;
    let mut end = 0;
    while let Some((record, len)) = check.record(&bytes[end..]) {
        if last.is_some_and(|last| record.seq <= last) {
            break;
        }
        last = Some(record.seq);
        end += len;
        if record.seq > after {
            run.push(record);
        }
    }
    if let Some((offset, what)) = header.clone().filter(|_| !check.verify) {
        // Nothing here can be trusted: the run, found by marker, lengths and seqs, is what the
        // file says it holds.
        return Scan {
            records: Vec::new(),
            torn_at: None,
            damage: Some(Damage {
                offset,
                what,
                lost: run,
                checked: false,
            }),
        };
    }
    let newest = last.map_or(after, |last| last.max(after));
    let lost = stranded(bytes, end, newest, check);
    let damage = match (header, lost.is_empty()) {
        (Some((offset, what)), _) => Some(Damage {
            offset,
            what,
            lost,
            checked: true,
        }),
        (None, false) => {
            let what = match check.front(&bytes[end..]) {
                Some(_) => "the record there does not match its check",
                None => "the front of the record there is damaged",
            };
            Some(Damage {
                offset: RECORDS_START + end as u64,
                what: what.into(),
                lost,
                checked: true,
            })
        }
        (None, true) => None,
    };
    let torn = damage.is_none() && newer_front(&bytes[end..], newest, check);
    Scan {
        records: run,
        torn_at: torn.then_some(RECORDS_START + end as u64),
        damage,
    }
}

/// The checked records from `from` on whose seqs are above `newest`: batches acknowledged
/// after the newest one the run before `from` reached, which only damage can have cut off
/// from it. Every offset is tried, since the damage may have taken a record's length with it;
/// records are found by their marker.
fn stranded(bytes: &[u8], from: usize, newest: u64, check: Check) -> Vec<Record> {
    let mut found = Vec::new();
    let mut at = from;
    while at < bytes.len() {
        if newer_front(&bytes[at..], newest, check)
            && let Some((record, len)) = check.record(&bytes[at..])
        {
            found.push(record);
            at += len;
        } else {
            at += 1;
        }
    }
    found
}

/// Whether `bytes` start with what looks like the front of a record newer than `newest`.
fn newer_front(bytes: &[u8], newest: u64, check: Check) -> bool {
    check.front(bytes).is_some_and(|(_, seq)| seq > newest)
}

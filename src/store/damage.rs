//! Records that cannot be read back: bytes changed on the disk, so a record no longer decodes,
//! or its sealed part no longer opens (the AEAD tag catches one changed byte).
//!
//! redb does not check its pages' checksums on an ordinary read, so damage inside a value
//! reaches us as a decode or decrypt error on that one record. Failing the whole query for it
//! would take down every view that meets the record (a history page, the unread list, a queue
//! replay) for good, so every view leaves such a record out instead, through
//! [`DamagedRecords::skip`]: the first time a record is met it is logged at ERROR with its table
//! and key, and counted (`damaged_records` in `/api/stats`, `indaba_damaged_records_total` in
//! `/metrics`); later meetings are quiet, so a damaged record in a busy view does not flood
//! the log. Nothing is rewritten or removed: the bytes stay as found, for whoever repairs them.

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

use super::StoreError;

/// The damaged records met since the daemon started.
#[derive(Debug, Default)]
pub struct DamagedRecords {
    /// (table, key) of each one met so far.
    seen: Mutex<HashSet<(String, String)>>,
    /// Bumped once per record in `seen`.
    found: Counter,
}

impl DamagedRecords {
    /// Counts into `found` (the daemon's metric).
    pub fn new(found: Counter) -> Self {
        Self {
            seen: Mutex::default(),
            found,
        }
    }

    /// `read`, the record at `key` of `table` decoded (and opened): `Some` if it could be,
    /// `None` if it is damaged (reported), or the error if reading failed for another reason
    /// (the disk, not the record).
    pub fn skip<T>(
        &self,
        table: &str,
        key: impl Display,
        read: Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match read {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_damage() => {
                self.report(table, key, &e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Logs and counts a damaged record the first time it is met.
    pub fn report(&self, table: &str, key: impl Display, error: &StoreError) {
        let key = key.to_string();
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((table.to_owned(), key.clone()));
        if first {
            self.found.inc();
            tracing::error!(
                table,
                key = %key,
                error = %error,
                "stored record is damaged; left out of every view (logged once)"
            );
        } else {
            tracing::debug!(table, key = %key, "damaged record left out again");
        }
    }

    /// Damaged records met so far.
    pub fn count(&self) -> u64 {
        self.found.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_record_is_counted_once_and_other_errors_pass_through() {
        let damaged = DamagedRecords::default();
        let bad = || Err::<u8, _>(StoreError::Encoding("unexpected end".to_owned()));
        assert_eq!(damaged.skip("t", 7, Ok(1)).expect("ok"), Some(1));
        assert_eq!(damaged.skip("t", 7, bad()).expect("skipped"), None);
        assert_eq!(damaged.skip("t", 7, bad()).expect("skipped"), None);
        assert_eq!(damaged.skip("u", 7, bad()).expect("skipped"), None);
        assert_eq!(damaged.count(), 2, "(t, 7) and (u, 7)");
        let io = damaged.skip("t", 8, Err::<u8, _>(StoreError::Storage("EIO".to_owned())));
        assert!(io.is_err(), "not damage: {io:?}");
        assert_eq!(damaged.count(), 2);
    }
}

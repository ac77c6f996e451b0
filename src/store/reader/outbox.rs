//! Reading the webhook outbox ([`crate::store::ops::outbox`]), for its delivery and the stats.

use redb::ReadableTable;

use super::Reader;
use crate::model::EventRecord;
use crate::store::StoreError;
use crate::store::tables::{EVENTS, meta};

impl Reader<'_> {
    /// Up to `limit` events after id `after`, oldest first. One that cannot be decoded is left
    /// out (and reported) like any damaged record: its id is skipped, and acknowledging a later
    /// batch removes it.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventRecord)>, StoreError> {
        let table = self.table(EVENTS)?;
        let mut events = Vec::with_capacity(limit.min(1024));
        for row in table.range(after.saturating_add(1)..)? {
            if events.len() >= limit {
                break;
            }
            let (id, bytes) = row?;
            let id = id.value();
            if let Some(record) = self.decoded::<EventRecord>(&EVENTS, id, bytes.value())? {
                events.push((id, record));
            }
        }
        Ok(events)
    }

    /// Events waiting in the outbox, and when the oldest was written (Unix ms).
    pub fn outbox_summary(&self) -> Result<(u64, Option<u64>), StoreError> {
        let pending = self.meta(meta::EVENTS_PENDING)?;
        let table = self.table(EVENTS)?;
        let oldest = match table.first()? {
            Some((id, bytes)) => self
                .decoded::<EventRecord>(&EVENTS, id.value(), bytes.value())?
                .map(|r| r.created_at_ms),
            None => None,
        };
        Ok((pending, oldest))
    }
}

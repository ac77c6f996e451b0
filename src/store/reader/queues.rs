//! Offline queues: what waits for a user, and the longest queue (for the stats).

use super::*;

impl Reader<'_> {
    /// Up to `limit` entries of `user`'s queue after `after` (a previous entry's rank and id),
    /// in delivery order (high priority first, then oldest first), with their messages opened;
    /// and the last entry looked at, to continue from. An entry whose message is gone or
    /// damaged is skipped, so one bad record never stalls a queue. It stays queued: nothing
    /// here writes, and the damage stays where it can be repaired.
    pub fn queued(
        &self,
        user: u64,
        after: Option<(u8, u64)>,
        limit: usize,
    ) -> Result<(Vec<QueuedMessage>, Option<QueuePosition>), StoreError> {
        let mut out = Vec::new();
        let mut last = None;
        let start = match after {
            Some((rank, id)) if id == u64::MAX => (user, rank.saturating_add(1), 0),
            Some((rank, id)) => (user, rank, id + 1),
            None => (user, 0, 0),
        };
        for entry in self
            .table(QUEUE)?
            .range(start..=(user, u8::MAX, u64::MAX))?
            .take(limit)
        {
            let (_, rank, id) = entry?.0.value();
            last = Some((rank, id));
            if let Some((record, body)) = self.readable_message(id)? {
                out.push(QueuedMessage {
                    rank,
                    id,
                    record,
                    body,
                });
            }
        }
        Ok((out, last))
    }

    /// The longest user queue.
    pub fn max_queue_length(&self) -> Result<u64, StoreError> {
        let mut max = 0;
        for entry in self.table(QUEUE_LENGTHS)?.iter()? {
            max = max.max(entry?.1.value());
        }
        Ok(max)
    }
}

//! Delivered queue entries waiting for the writer's next commit.
//!
//! Once a message's frame is written to a recipient's socket, its queue entry should go. Nobody
//! waits for that removal (a lost one only means a redelivery, which clients drop by id), so it
//! is not worth a commit and a journal sync of its own: the entries of one fan-out come back
//! from its sockets over a millisecond or more, and a removal alone would cost what a message
//! does. So the sockets' writers add them here, under a lock, without a request or a wake-up
//! each, and the writer ([`super::writer`]) takes all of them into the next batch it commits,
//! as one op in front of the batch's requests (journaled with them, like every op). The first
//! entry added to an empty set sends the writer one [`super::handle::Command::Removals`], so
//! that an idle writer knows to commit them once their wait is over:
//! [`super::group_commit::GroupCommit::ride_along`] after that first one was added, if no
//! request someone waits for has come to commit them with by then. That is the one bound on
//! how long a delivered entry stays in the queue after its frame was written (docs/API.md,
//! docs/STORAGE.md).

use std::sync::Mutex;
use std::time::Instant;

use crate::store::ops::QueueKey;

/// The delivered entries not yet in a batch.
#[derive(Debug, Default)]
pub(super) struct Removals {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    keys: Vec<QueueKey>,
    /// When the oldest of `keys` was added.
    since: Option<Instant>,
}

impl Removals {
    /// Adds `keys`; true if the set was empty, so the writer must hear that some wait.
    pub(super) fn add(&self, keys: Vec<QueueKey>) -> bool {
        let mut pending = self.lock();
        let first = pending.since.is_none();
        if first {
            pending.since = Some(Instant::now());
        }
        if pending.keys.is_empty() {
            pending.keys = keys;
        } else {
            pending.keys.extend(keys);
        }
        first
    }

    /// When the oldest waiting entry was added; `None` if none waits.
    pub(super) fn since(&self) -> Option<Instant> {
        self.lock().since
    }

    /// Every waiting entry, for the batch being committed (`None` if none waits).
    pub(super) fn take(&self) -> Option<Vec<QueueKey>> {
        let mut pending = self.lock();
        pending.since.take()?;
        Some(std::mem::take(&mut pending.keys))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Nothing here can panic while holding it; a poisoned lock still holds whole keys.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_set_wakes_the_writer_and_a_take_empties_it() {
        let removals = Removals::default();
        assert_eq!(removals.take(), None);
        assert!(removals.add(vec![(1, 1, 1)]));
        let since = removals.since().expect("waiting");
        assert!(!removals.add(vec![(2, 1, 2), (3, 1, 2)]));
        assert_eq!(removals.since(), Some(since), "the oldest entry's time");
        assert_eq!(removals.take(), Some(vec![(1, 1, 1), (2, 1, 2), (3, 1, 2)]));
        assert_eq!(removals.since(), None);
        assert_eq!(removals.take(), None);
        assert!(removals.add(vec![(4, 1, 5)]), "empty again: wakes again");
    }
}

//! The engine: how writes become durable, and come back after a crash.
//!
//! * [`handle`]: the queue the daemon sends writes down ([`WriterHandle`]: one [`Op`] and its
//!   reply slot per request).
//! * [`writer`]: the one thread that writes. It folds every request waiting into one batch,
//!   applies their ops in one write transaction ([`batch`]), and makes the batch durable: by a
//!   journal record ([`journal`], [`record`]) synced in one contiguous write, or by a durable
//!   redb commit (a checkpoint) every `storage.checkpoint_interval`.
//! * [`group_commit`]: when the writer commits: a small batch under a steady stream is held
//!   briefly (`storage.commit_delay_max`), and requests nobody waits for ride along with the
//!   next that someone does.
//! * [`removals`]: delivered queue entries wait there for the writer's next commit (at most
//!   the ride-along bound), not in its queue.
//! * [`durability`]: a batch is answered, fanned out and shown to readers only once durable.
//! * [`ids`]: ids are reserved durably ahead of use, so none is handed out twice after a crash.
//! * [`redo`]: at start, the journal's batches the data file lacks are applied again, through
//!   the same [`batch`] code; [`recovery`] decides what a start does with a damaged journal,
//!   and [`stake`] says what such a journal costs.
//! * [`outage`]: what the writer does while the data file cannot be written.
//! * [`compact`]: after a batch that removed user content, the journal is emptied and (for an
//!   erasure) the data file rewritten, so no old copy stays in either.
//! * [`health`]: what `/health` and the sockets learn about the writer without asking it.
//!
//! [`Op`]: crate::store::Op

pub mod batch;
pub mod compact;
pub mod durability;
pub mod group_commit;
pub mod handle;
pub mod health;
pub mod ids;
pub mod journal;
pub mod outage;
pub mod record;
pub mod recovery;
pub mod redo;
pub mod removals;
pub mod stake;
pub mod writer;

#[cfg(test)]
mod fault_tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::mpsc;

use self::batch::WriterState;
use self::durability::{Durable, Progress};
use self::group_commit::GroupCommit;
pub use self::handle::{PendingAppend, WriterHandle, WriterThread};
pub use self::health::OutboxProgress;
use self::health::{QueuedUsers, RunningGuard, WriterHealth};
use self::journal::Journal;
use self::journal::cursor::JournalCursor;
use self::removals::Removals;
use self::writer::Writer;
use super::damage::DamagedRecords;
use super::ops::StoredMessage;
use super::tables::{META, QUEUE_LENGTHS, meta};
use super::{DamagedJournal, StoreError};
use crate::metrics::Metrics;

/// Requests waiting for the writer beyond this many make senders wait (back-pressure).
const QUEUE_CAPACITY: usize = 65_536;

/// Where the writer reports each committed batch's messages, in commit order.
pub type CommitSink = mpsc::UnboundedSender<Vec<StoredMessage>>;

/// How the writer is set up.
#[derive(Debug)]
pub struct WriterOptions {
    /// Most requests folded into one commit.
    pub batch_max: usize,
    /// Entries a user's queue keeps before the oldest lowest-priority one is dead-lettered.
    pub queue_max: u64,
    /// `storage.journal`: batches become durable in the journal; off, every batch is a
    /// durable redb commit.
    pub journal: bool,
    /// `storage.checkpoint_interval`: the longest a batch stays in the journal alone before
    /// a checkpoint commits it durably to the redb file.
    pub checkpoint_interval: Duration,
    /// `storage.commit_delay_max`: the longest the writer holds a small batch for more
    /// requests ([`group_commit`]); zero: every batch is committed once taken.
    pub commit_delay_max: Duration,
    /// Where committed messages go for fan-out.
    pub sink: CommitSink,
    pub metrics: Arc<Metrics>,
    /// What opening the store does with a damaged journal (`serve --accept-journal-loss`).
    pub damaged_journal: DamagedJournal,
}

impl WriterOptions {
    /// Options for a store nobody listens to (tools, tests, benches), durable the way the
    /// daemon's defaults are.
    pub fn standalone(batch_max: usize) -> Self {
        let (sink, _) = mpsc::unbounded_channel();
        let defaults = crate::config::StorageConfig::default();
        Self {
            batch_max,
            queue_max: u64::MAX,
            journal: defaults.journal,
            checkpoint_interval: defaults.checkpoint_interval,
            commit_delay_max: defaults.commit_delay_max,
            sink,
            metrics: Arc::new(Metrics::new()),
            damaged_journal: DamagedJournal::Refuse,
        }
    }
}

/// The data file, as the writer opens it again after a failed write (see [`outage`]).
pub(in crate::store) struct DataFile {
    /// Its directory, where the writer checks for room before it tries a checkpoint again.
    pub dir: std::path::PathBuf,
    /// Opens it again.
    pub open: Box<dyn FnMut() -> Result<Database, StoreError> + Send>,
}

/// Starts the writer on `db`, whose batches up to `seq` are durable (replayed and
/// checkpointed at open); `journal` is `None` with `storage.journal = false`. Damaged records
/// it meets go to `damaged`; after a failed write it opens `file` again.
pub(in crate::store) fn spawn(
    db: Arc<Database>,
    options: WriterOptions,
    journal: Option<Journal>,
    seq: u64,
    damaged: Arc<DamagedRecords>,
    file: DataFile,
) -> Result<(WriterHandle, WriterThread), StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    // Everything the writer starts from, out of one snapshot.
    let txn = db.begin_read()?;
    let (pending, dead, outbox, events_dropped) = {
        let table = txn.open_table(META)?;
        let get = |key| Ok::<_, StoreError>(meta::get(&table, key)?.unwrap_or(0));
        let outbox = OutboxProgress {
            next_event_id: meta::get(&table, meta::NEXT_EVENT_ID)?.unwrap_or(1),
            pending: get(meta::EVENTS_PENDING)?,
        };
        (
            get(meta::QUEUE_PENDING)?,
            get(meta::DEAD_LETTERS)?,
            outbox,
            get(meta::EVENTS_DROPPED)?,
        )
    };
    // A user is in the lengths table exactly while their queue holds entries.
    let mut users = HashSet::new();
    for row in txn.open_table(QUEUE_LENGTHS)?.iter()? {
        users.insert(row?.0.value());
    }
    let queued = Arc::new(QueuedUsers::new(users));
    let (progress, committing, publisher) = Progress::new(db.clone(), seq);
    let mut state = WriterState::load_with(&txn, damaged)?;
    state.seq = seq;
    state.committing = committing;
    drop(txn);
    // Counters continue across restarts.
    options.metrics.dead_letters.inc_by(dead);
    options.metrics.webhook_dropped.inc_by(events_dropped);
    let health = Arc::new(WriterHealth::new(pending));
    let removals = Arc::new(Removals::default());
    health.outbox.send_replace(outbox);
    let writer = Writer {
        db: Some(db),
        file,
        journal: journal.map(JournalCursor::new),
        batch_max: options.batch_max,
        queue_max: options.queue_max,
        checkpoint_interval: options.checkpoint_interval,
        durable: Durable {
            publisher,
            sink: options.sink,
            metrics: options.metrics.clone(),
            health: health.clone(),
            queued: queued.clone(),
            drops: Default::default(),
        },
        metrics: options.metrics,
        guard: RunningGuard(health.clone()),
        state,
        outage: None,
        group: GroupCommit::new(options.commit_delay_max),
        removals: removals.clone(),
        last_take: std::time::Instant::now(),
    };
    let join = std::thread::Builder::new()
        .name("indaba-writer".to_owned())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?;
    Ok((
        WriterHandle {
            tx,
            health,
            queued,
            progress,
            removals,
        },
        WriterThread { join },
    ))
}

//! When the writer commits: the adaptive part of its group commit.
//!
//! The writer ([`super::writer`]) takes every request already waiting and commits them as one
//! batch. Alone, that does not follow the load: at 5,000 messages/s each commit-and-sync cycle
//! (~0.17 ms of CPU, then ~0.34 ms waiting on the journal's `fdatasync`) found only the ~3
//! sends and ~3 delivered-queue removals that had arrived during the previous one, so the
//! writer made ~1,750 commits a second and a message cost twice the CPU of a server without
//! storage (docs/PERFORMANCE.md). Each commit has a fixed cost — redb's commit, opening the
//! tables, the history flush, the journal's write and sync, waking the answered tasks — that a
//! larger batch shares. Two rules make batches larger only when that costs no one much:
//!
//! * **Requests nobody waits for ride along.** A batch of only such requests (presence events:
//!   [`super::handle::Request::reply`] is `None`), or only delivered-queue removals (which wait
//!   beside the queue, [`super::removals`]), is not committed on its own at once: the writer
//!   waits up to [`GroupCommit::ride_along`] (for removals, from when the first of them was
//!   handed over) for a request that someone does wait for, and commits them together. That
//!   request ends the wait as soon as it arrives, so it is not held up; a stop ends it too.
//! * **A small batch under a steady stream is held briefly.** After taking what is waiting,
//!   if requests someone waits for are arriving fast enough that the bound
//!   (`storage.commit_delay_max`) would gather at least [`MIN_EXPECTED`] more, and the batch is
//!   smaller than what the bound gathers, the writer sleeps until the batch would reach
//!   [`TARGET`] at the recent rate — never longer than the bound — then takes what came and
//!   commits. At a low rate (fewer than `MIN_EXPECTED` per bound) nothing is held — but the
//!   average has a 25 ms time constant, so a lone message just after a fast stream stops can be
//!   held once, never longer than the bound; under heavy load the batch is already large (the writer's own cycle gathers more
//!   than the bound would), so nothing is held either.
//!
//! A hold that gathers nothing means the arrivals wait on the commits (one client sending and
//! awaiting each answer, at a rate that only looks steady): the writer then passes up the next
//! 2, 4, … 256 chances to hold before it tries again, so such a client loses at most one hold
//! in every few hundred commits.
//!
//! Nothing here answers anything: a held request is answered, as every other, once its batch's
//! journal record is synced or its checkpoint committed.
//!
//! The policy is a pure function of what the writer observed (how many requests it took and
//! when), so its tests need no clock.

use std::time::Duration;

/// A batch of at least this many requests someone waits for is not held: each commit's fixed
/// cost is then a small share of what the batch costs.
pub(super) const TARGET: usize = 16;

/// Hold only if the bound is expected to gather at least this many more requests.
pub(super) const MIN_EXPECTED: f64 = 2.0;

/// Requests nobody waits for wait for a request someone waits for at most this many times
/// `storage.commit_delay_max`. For delivered-queue removals this is the only wait (the sockets
/// hand them over at once, [`super::removals`]), and it must reach the next message of a group
/// conversation at its usual pace: at 100 messages/s, 10 ms apart, a 5 ms wait committed each
/// message's removals alone (`--mode group`: ~14% more CPU per delivery, docs/PERFORMANCE.md).
pub(super) const RIDE_ALONG_FACTOR: u32 = 10;

/// The time constant of the arrival rate's moving average: long enough to smooth the
/// arrivals of a few hundred requests at 5,000/s, short enough to see a burst end within a
/// few commits.
const RATE_WINDOW: f64 = 0.025;

/// After a futile hold, at most `2^MAX_BACKOFF` chances to hold are passed up.
const MAX_BACKOFF: u32 = 8;

/// The writer's group-commit policy and what it has observed.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    /// `storage.commit_delay_max`: the longest a batch is held; zero turns holding and riding
    /// along off.
    max: Duration,
    /// Requests someone waits for, per second: an exponentially decaying count.
    rate: f64,
    /// Holds in a row that gathered nothing.
    futile: u32,
    /// Chances to hold still to pass up after a futile hold.
    skip: u32,
}

impl GroupCommit {
    pub(super) fn new(max: Duration) -> Self {
        Self {
            max,
            rate: 0.0,
            futile: 0,
            skip: 0,
        }
    }

    /// How long a batch of requests nobody waits for waits for one that someone does; `None`
    /// when `storage.commit_delay_max` is zero (it is committed at once).
    pub(super) fn ride_along(&self) -> Option<Duration> {
        (!self.max.is_zero()).then(|| self.max * RIDE_ALONG_FACTOR)
    }

    /// The writer took `count` requests someone waits for, `elapsed` after it last took some
    /// (or found none).
    pub(super) fn arrived(&mut self, elapsed: Duration, count: usize) {
        let decay = (-elapsed.as_secs_f64() / RATE_WINDOW).exp();
        self.rate = self.rate * decay + count as f64 / RATE_WINDOW;
    }

    /// The recent rate of requests someone waits for, per second.
    #[cfg(test)]
    fn rate(&self) -> f64 {
        self.rate
    }

    /// How long to hold a batch holding `answered` requests someone waits for before
    /// committing it; `full`: it cannot take more. Zero: commit now.
    pub(super) fn hold(&mut self, answered: usize, full: bool) -> Duration {
        if self.max.is_zero() || full || answered == 0 || answered >= TARGET {
            return Duration::ZERO;
        }
        let expected = self.rate * self.max.as_secs_f64();
        if expected < MIN_EXPECTED || answered as f64 >= expected {
            return Duration::ZERO;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return Duration::ZERO;
        }
        let until_target = (TARGET - answered) as f64 / self.rate;
        Duration::from_secs_f64(until_target).min(self.max)
    }

    /// A hold gathered `gathered` more requests someone waits for.
    pub(super) fn held(&mut self, gathered: usize) {
        if gathered == 0 {
            self.futile = (self.futile + 1).min(MAX_BACKOFF);
            self.skip = 1 << self.futile;
        } else {
            self.futile = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A policy that has seen requests arrive one by one at `per_second` for a second.
    fn steady(max: Duration, per_second: u32) -> GroupCommit {
        let mut policy = GroupCommit::new(max);
        for _ in 0..per_second {
            policy.arrived(Duration::from_secs(1) / per_second, 1);
        }
        policy
    }

    #[test]
    fn the_rate_follows_the_arrivals_and_decays_when_they_stop() {
        let mut policy = steady(MS, 5_000);
        let rate = policy.rate();
        assert!((4_800.0..5_300.0).contains(&rate), "{rate}");
        // Taken in batches rather than one by one: the same rate.
        let mut batched = GroupCommit::new(MS);
        for _ in 0..1_000 {
            batched.arrived(MS, 5);
        }
        let rate = batched.rate();
        assert!((4_800.0..5_300.0).contains(&rate), "{rate}");
        // Idle for 200 ms: next to nothing.
        policy.arrived(Duration::from_millis(200), 0);
        assert!(policy.rate() < 5.0, "{}", policy.rate());
    }

    #[test]
    fn a_lone_request_after_idle_is_not_held() {
        let mut policy = GroupCommit::new(MS);
        policy.arrived(Duration::from_secs(10), 1);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        // Nor one among a few a second.
        let mut policy = steady(MS, 20);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
    }

    #[test]
    fn a_rate_the_bound_gathers_too_little_of_is_not_held() {
        // 500/s: a bound of 1 ms would gather half a request.
        let mut policy = steady(MS, 500);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        // A longer bound at the same rate does gather some: then it holds.
        let mut policy = steady(10 * MS, 500);
        assert!(policy.hold(1, false) > Duration::ZERO);
    }

    #[test]
    fn a_small_batch_under_a_steady_stream_is_held_up_to_the_bound() {
        // 5,000/s: reaching the target would take 2.6 ms; the bound is 1 ms.
        let mut policy = steady(MS, 5_000);
        assert_eq!(policy.hold(3, false), MS);
        // 50,000/s: the target is 120 µs away.
        let mut policy = steady(MS, 50_000);
        let hold = policy.hold(10, false);
        assert!(
            (Duration::from_micros(100)..Duration::from_micros(140)).contains(&hold),
            "{hold:?}"
        );
    }

    #[test]
    fn a_large_or_full_batch_is_not_held() {
        let mut policy = steady(MS, 50_000);
        assert_eq!(policy.hold(TARGET, false), Duration::ZERO);
        assert_eq!(policy.hold(3, true), Duration::ZERO);
        // At 5,000/s the bound gathers ~5: a batch of 6 is as large as holding would make it.
        let mut policy = steady(MS, 5_000);
        assert_eq!(policy.hold(6, false), Duration::ZERO);
        // Only removals: nobody would wait less for holding them.
        assert_eq!(policy.hold(0, false), Duration::ZERO);
    }

    #[test]
    fn holds_that_gather_nothing_back_off_and_one_that_gathers_resets() {
        let mut policy = steady(MS, 5_000);
        assert!(policy.hold(1, false) > Duration::ZERO);
        policy.held(0);
        // The next 2 chances are passed up, then it tries again.
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        assert!(policy.hold(1, false) > Duration::ZERO);
        policy.held(0);
        for _ in 0..4 {
            assert_eq!(policy.hold(1, false), Duration::ZERO);
        }
        assert!(policy.hold(1, false) > Duration::ZERO);
        // Futile again and again: at most 256 are passed up.
        for _ in 0..20 {
            policy.held(0);
        }
        for _ in 0..256 {
            assert_eq!(policy.hold(1, false), Duration::ZERO);
        }
        assert!(policy.hold(1, false) > Duration::ZERO);
        // One that gathered: the next futile one backs off by 2 again.
        policy.held(4);
        assert!(policy.hold(1, false) > Duration::ZERO);
        policy.held(0);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        assert!(policy.hold(1, false) > Duration::ZERO);
    }

    #[test]
    fn a_zero_bound_turns_it_off() {
        let mut policy = steady(Duration::ZERO, 50_000);
        assert_eq!(policy.hold(1, false), Duration::ZERO);
        assert_eq!(policy.ride_along(), None);
        assert_eq!(steady(MS, 1).ride_along(), Some(10 * MS));
    }
}

/// The rules at work in the real writer thread.
#[cfg(test)]
mod writer_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::metrics::Metrics;
    use crate::model::Priority;
    use crate::store::testing::{TempStore, test_message};
    use crate::store::{MessageAppended, QueueKey, Store, WriterOptions, WriterThread};

    /// Commits the writer has made.
    fn commits(metrics: &Metrics) -> u64 {
        batch_size(metrics, "count")
    }

    /// `indaba_commit_batch_size`'s `_count` (commits) or `_sum` (requests committed).
    fn batch_size(metrics: &Metrics, which: &str) -> u64 {
        let prefix = format!("indaba_commit_batch_size_{which} ");
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("commit batch size") as u64
    }

    /// The store opened with `storage.commit_delay_max = max`, its metrics, its conversation
    /// of users 1 and 2, and the queue entry of a message from 1 that waits for 2.
    async fn with_one_queued(
        temp: &TempStore,
        max: Duration,
    ) -> (Store, WriterThread, Arc<Metrics>, u64, QueueKey) {
        let conversation = temp.with_conversation().await;
        let options = WriterOptions {
            commit_delay_max: max,
            ..WriterOptions::standalone(64)
        };
        let metrics = options.metrics.clone();
        let (store, thread) = temp.open_with(options);
        let entry = append(&store, conversation).await;
        (store, thread, metrics, conversation, entry)
    }

    /// Appends a message of user 1 to `conversation`: user 2's queue entry for it.
    async fn append(store: &Store, conversation: u64) -> QueueKey {
        match store
            .writer()
            .append_message(test_message(conversation, 1, Priority::Normal))
            .await
        {
            Ok(MessageAppended::Stored { id, .. }) => (2, Priority::Normal.rank(), id),
            other => panic!("{other:?}"),
        }
    }

    /// The message id of the last entry in user 2's queue (the tests' messages are sealed by
    /// nobody, so the reader skips them but says how far it looked).
    async fn last_queued_for_2(store: &Store) -> Option<u64> {
        let (_, last) = store.read(|r| r.queued(2, None, 100)).await.expect("read");
        last.map(|(_, id)| id)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removal_rides_along_with_the_next_write_someone_waits_for() {
        let temp = TempStore::new();
        // Removals wait up to 20 s for company.
        let (store, thread, metrics, conversation, delivered) =
            with_one_queued(&temp, Duration::from_secs(2)).await;
        let before = commits(&metrics);
        store.writer().dequeue(vec![delivered]).expect("queued");
        // Time enough for a writer that commits it alone to do so.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = append(&store, conversation).await;
        assert_eq!(
            commits(&metrics),
            before + 1,
            "the removal and the next message share one commit"
        );
        assert_eq!(last_queued_for_2(&store).await, Some(next.2));
        thread.finish(store.writer()).await;
    }

    /// Sockets hand their delivered entries over write by write; they wait for the next commit
    /// together, as one op of it, not as a request each in the writer's queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removals_handed_over_apart_are_one_op_of_the_next_commit() {
        let temp = TempStore::new();
        let (store, thread, metrics, conversation, first) =
            with_one_queued(&temp, Duration::from_secs(2)).await;
        let second = append(&store, conversation).await;
        let third = append(&store, conversation).await;
        let (commits_before, requests_before) = (commits(&metrics), batch_size(&metrics, "sum"));
        for delivered in [first, second, third] {
            store
                .writer()
                .dequeue(vec![delivered])
                .expect("handed over");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = append(&store, conversation).await;
        assert_eq!(commits(&metrics), commits_before + 1, "one commit");
        assert_eq!(
            batch_size(&metrics, "sum"),
            requests_before + 2,
            "the three removals as one op, and the message"
        );
        assert_eq!(last_queued_for_2(&store).await, Some(next.2));
        let (_, first_left) = store.read(|r| r.queued(2, None, 1)).await.expect("read");
        assert_eq!(first_left.map(|(_, id)| id), Some(next.2), "all three gone");
        thread.finish(store.writer()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removal_alone_is_committed_once_its_wait_is_over() {
        let temp = TempStore::new();
        // Removals wait up to 100 ms for company; none comes.
        let (store, thread, _, _, delivered) =
            with_one_queued(&temp, Duration::from_millis(10)).await;
        store.writer().dequeue(vec![delivered]).expect("queued");
        let mut queued = last_queued_for_2(&store).await;
        for _ in 0..500 {
            if queued.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            queued = last_queued_for_2(&store).await;
        }
        assert_eq!(queued, None, "the removal was never committed");
        thread.finish(store.writer()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removal_waiting_for_company_is_committed_at_a_stop() {
        let temp = TempStore::new();
        let (store, thread, _, _, delivered) = with_one_queued(&temp, Duration::from_secs(2)).await;
        store.writer().dequeue(vec![delivered]).expect("queued");
        thread.finish(store.writer()).await;
        drop(store);
        let (store, thread) = temp.open();
        assert_eq!(last_queued_for_2(&store).await, None);
        thread.finish(store.writer()).await;
    }
}

//! A socket's sends waiting for their durable answers, answered in order by one task at a time
//! that exists only while some wait ([`answer_acks`]).
//!
//! A task per send used to wait for each answer: a spawn per message, and a wake-up from the
//! writer thread for every one of them, where one task that finds the rest of a commit's
//! answers already there takes one wake-up per socket and commit, and queues their frames with
//! one push.
//!
//! The task's claim on the queue (`answering`) is given back however the task ends: a send
//! finds it set and starts no task, so a claim left behind by a task that died (a panic while
//! answering, our bug) would leave every later send on the socket stored but never answered —
//! a hung socket. [`Turn`] hands the waiting sends on to a fresh task instead, and answers the
//! one in progress with an error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// What answers a socket's sends: the session ([`super::session`]), or a test's stand-in.
pub(super) trait Answerer: Send + Sync + Sized + 'static {
    /// One send waiting for its answer.
    type Waiting: Send + 'static;

    fn acks(&self) -> &Mutex<Acks<Self::Waiting>>;
    /// Whether its answer is there (answering it takes no wait).
    fn is_answered(waiting: &Self::Waiting) -> bool;
    /// Takes the send's `client_id` out of it, for `ref` in its answer, and so that a send
    /// whose answering never returns can still be refused by it.
    fn take_client_ref(waiting: &mut Self::Waiting) -> Option<String>;
    /// The frame answering one send once its commit is known, if it gets one.
    fn answer(
        &self,
        waiting: Self::Waiting,
        client_ref: Option<&str>,
    ) -> impl Future<Output = Option<Bytes>> + Send;
    /// The frame for a send whose answering failed: its outcome is not known.
    fn unanswered(&self, client_ref: Option<&str>) -> Bytes;
    /// Queues answer frames on the socket, in order, with one wake-up of its writer.
    fn deliver(&self, frames: Vec<Bytes>);
    /// Starts a task running [`answer_acks`] on `this`.
    fn spawn(this: Arc<Self>);
}

/// The sends waiting, in the order they were sent, and whether a task is answering them.
pub(super) struct Acks<T> {
    waiting: VecDeque<T>,
    answering: bool,
}

impl<T> Default for Acks<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            answering: false,
        }
    }
}

/// Queues a send for its answer, starting the answering task if none is running.
pub(super) fn wait_for_answer<A: Answerer>(answerer: &Arc<A>, waiting: A::Waiting) {
    let mut acks = lock(answerer.acks());
    acks.waiting.push_back(waiting);
    if !acks.answering {
        acks.answering = true;
        drop(acks);
        A::spawn(answerer.clone());
    }
}

fn lock<T>(acks: &Mutex<Acks<T>>) -> MutexGuard<'_, Acks<T>> {
    acks.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers the socket's sends in order until none is waiting. The writer answers a commit's
/// requests one after another, so once the first of a burst is answered the others usually
/// are too: those are taken without waiting, and their frames queued together, before the
/// task waits again.
pub(super) async fn answer_acks<A: Answerer>(answerer: Arc<A>) {
    let mut turn = Turn {
        answerer,
        frames: Vec::new(),
        in_progress: None,
        finished: false,
    };
    loop {
        let next = {
            let mut acks = lock(turn.answerer.acks());
            match acks.waiting.front() {
                Some(a) if turn.frames.is_empty() || A::is_answered(a) => acks.waiting.pop_front(),
                // Not answered yet: what is answered goes out before the wait.
                Some(_) => None,
                None if turn.frames.is_empty() => {
                    // Cleared in the same lock a send checks: the next send spawns a task.
                    acks.answering = false;
                    turn.finished = true;
                    return;
                }
                None => None,
            }
        };
        match next {
            Some(mut waiting) => {
                let client_ref = A::take_client_ref(&mut waiting);
                let client_ref = turn.in_progress.insert(client_ref).as_deref();
                let frame = turn.answerer.answer(waiting, client_ref).await;
                turn.in_progress = None;
                turn.frames.extend(frame);
            }
            None => {
                let frames = std::mem::take(&mut turn.frames);
                turn.answerer.deliver(frames);
            }
        }
    }
}

/// The answering task's hold on the queue. Unless the task found nothing left to answer
/// (`finished`), dropping it — the task unwinding from a panic, or dropped at shutdown —
/// queues the frames answered so far, answers the send in progress with an error, and hands
/// the sends still waiting to a fresh task (or gives the claim up if there are none).
struct Turn<A: Answerer> {
    answerer: Arc<A>,
    /// Answers not yet queued on the socket.
    frames: Vec<Bytes>,
    /// The `client_id` of the send being answered, while it is.
    in_progress: Option<Option<String>>,
    finished: bool,
}

impl<A: Answerer> Drop for Turn<A> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(client_ref) = self.in_progress.take() {
            let frame = self.answerer.unanswered(client_ref.as_deref());
            self.frames.push(frame);
        }
        if !self.frames.is_empty() {
            self.answerer.deliver(std::mem::take(&mut self.frames));
        }
        let hand_on = {
            let mut acks = lock(self.answerer.acks());
            // Only a panic hands on: a task dropped without one is the runtime going away,
            // where nothing more can be answered (or spawned).
            let hand_on = !acks.waiting.is_empty() && std::thread::panicking();
            acks.answering = hand_on;
            hand_on
        };
        if hand_on {
            A::spawn(self.answerer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Answers send `n` with the frame `n`, but panics on [`Flaky::PANICS_ON`], as a bug in
    /// answering one send would.
    #[derive(Default)]
    struct Flaky {
        acks: Mutex<Acks<(u32, Option<String>)>>,
        delivered: Mutex<Vec<Bytes>>,
        more: Notify,
    }

    impl Flaky {
        const PANICS_ON: u32 = 2;

        fn delivered(&self) -> Vec<Bytes> {
            self.delivered.lock().expect("not poisoned").clone()
        }

        /// Waits until `n` frames were delivered (bounded: a hang fails the test).
        async fn until_delivered(&self, n: usize) -> Vec<Bytes> {
            let wait = async {
                loop {
                    let more = self.more.notified();
                    if self.delivered().len() >= n {
                        return self.delivered();
                    }
                    more.await;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                Ok(frames) => frames,
                Err(_) => panic!(
                    "sends left unanswered: {} of {n} frames delivered: {:?}",
                    self.delivered().len(),
                    self.delivered()
                ),
            }
        }
    }

    impl Answerer for Flaky {
        type Waiting = (u32, Option<String>);

        fn acks(&self) -> &Mutex<Acks<Self::Waiting>> {
            &self.acks
        }

        fn is_answered(_: &Self::Waiting) -> bool {
            true
        }

        fn take_client_ref(waiting: &mut Self::Waiting) -> Option<String> {
            waiting.1.take()
        }

        async fn answer(&self, waiting: Self::Waiting, _: Option<&str>) -> Option<Bytes> {
            tokio::task::yield_now().await;
            assert_ne!(waiting.0, Self::PANICS_ON, "a bug in answering a send");
            Some(Bytes::from(waiting.0.to_string()))
        }

        fn unanswered(&self, client_ref: Option<&str>) -> Bytes {
            Bytes::from(format!("unanswered {}", client_ref.unwrap_or("-")))
        }

        fn deliver(&self, frames: Vec<Bytes>) {
            self.delivered.lock().expect("not poisoned").extend(frames);
            self.more.notify_one();
        }

        fn spawn(this: Arc<Self>) {
            tokio::spawn(answer_acks(this));
        }
    }

    #[tokio::test]
    async fn a_panic_while_answering_leaves_no_send_unanswered() {
        let flaky = Arc::new(Flaky::default());
        for n in 1..=4 {
            wait_for_answer(&flaky, (n, Some(format!("c{n}"))));
        }
        // The one that panicked is refused by its ref; the others are answered, in order.
        let frames = flaky.until_delivered(4).await;
        assert_eq!(frames, ["1", "unanswered c2", "3", "4"]);
        // And the claim was given back: a later send is answered too.
        wait_for_answer(&flaky, (5, None));
        assert_eq!(flaky.until_delivered(5).await[4], "5");
        assert!(!lock(&flaky.acks).answering);
    }
}

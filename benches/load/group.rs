//! `--mode group` (issue 20): one conversation of `--members` users, each on one `/ws/chat/`
//! socket that both sends and receives. Every member sends `--messages` at an even share of
//! the total `--rate`, paced by the same thread and writer as the pairs' open loop; each
//! message is acknowledged to its sender and delivered to every other member. What counts is
//! the fan-out: delivery latency (scheduled send → `new_message` at each member, and with the
//! sender's own lag taken off) and the server's CPU time per delivery.

use std::collections::HashMap;

use super::pairs::{Pace, Shared, Writer, pace, start_pacer};
use super::*;

/// What one member's socket read.
#[derive(Debug, Default)]
struct MemberOutcome {
    /// Its own messages, acknowledged.
    acked_ids: Vec<u64>,
    ack_us: Vec<u64>,
    errors: Tally,
    /// Ids of the other members' messages of this run it received.
    arrivals: Arrivals,
    /// Each of them: (sender's member index, sequence number, latency from the schedule).
    deliveries: Vec<(usize, u64, u64)>,
    /// Its own messages echoed back to it (a server that does not skip the sending socket).
    echoes: u64,
    /// `new_message`s not sent by this run.
    foreign: u64,
    last_receive_us: u64,
    closed: Option<String>,
}

/// What one member's writer did.
#[derive(Debug, Default)]
struct WriterOutcome {
    sent: u64,
    last_send_us: u64,
    lag_us: Vec<u64>,
    closed: Option<String>,
}

/// Counters the members' readers keep, for the end of the send phase and the drain.
#[derive(Debug, Default)]
struct Answers {
    /// `message_sent` and `error` answers.
    answered: AtomicU64,
    acked: AtomicU64,
}

/// Everything a group run measured.
pub(super) struct Report {
    members: usize,
    rate: f64,
    elapsed_send_s: f64,
    sent: u64,
    acked: u64,
    deliveries: u64,
    expected: u64,
    delivered_s: f64,
    delivery: Latencies,
    from_send: Latencies,
    ack: Latencies,
    send_lag: Latencies,
    checks: Checks,
    /// Own messages echoed back to the sending socket.
    echoes: u64,
    samples: Samples,
}

pub(super) async fn run(target: &Target, args: &Args, group: &Group) -> Result<Report, String> {
    let shared = Shared::new();
    let answers = Arc::new(Answers::default());
    let members = group.members.len();
    let index: Arc<HashMap<u64, usize>> = Arc::new(
        group
            .members
            .iter()
            .enumerate()
            .map(|(i, user)| (*user, i))
            .collect(),
    );
    let sockets = connect_users(target, &group.members).await?;
    let window = Window::open(target);
    let started_us = shared.clock.now_us() + START_DELAY_US;
    let rate = args.rate();
    let messages = args.messages();

    let mut readers = Vec::with_capacity(members);
    let mut writers = Vec::with_capacity(members);
    let mut ticks = Vec::with_capacity(members);
    let mut paces = Vec::with_capacity(members);
    for (i, ws) in sockets.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        readers.push(tokio::spawn(read_member(
            stream,
            i,
            index.clone(),
            shared.clone(),
            answers.clone(),
        )));
        let template = Template::new(&shared.tag, group.conversation, None, args.size);
        let pace = pace(rate, args.window, started_us, i, members);
        paces.push(pace);
        let (tick, due) = tokio::sync::mpsc::unbounded_channel();
        ticks.push(tick);
        writers.push(tokio::spawn(write_member(
            sink,
            template,
            messages,
            pace,
            due,
            shared.clone(),
            started_us,
        )));
    }
    if rate.is_some() {
        start_pacer(paces, ticks, messages, &shared)?;
    }

    // Send phase, bounded by --timeout.
    let watchdog = tokio::spawn({
        let stop = shared.stop_senders.clone();
        let deadline = tokio::time::Instant::now() + secs(args.timeout);
        async move {
            tokio::time::sleep_until(deadline).await;
            stop.cancel();
        }
    });
    let mut written = Vec::with_capacity(members);
    for task in writers {
        written.push(task.await.map_err(|e| format!("writer task: {e}"))?);
    }
    let timed_out = shared.stop_senders.is_cancelled();
    watchdog.abort();
    shared.stop_senders.cancel();
    let sent: u64 = written.iter().map(|(w, _)| w.sent).sum();

    // Drain, bounded by --drain: every message answered, then every acknowledged one
    // delivered to every other member.
    let drain_deadline = Instant::now() + secs(args.drain);
    let others = members as u64 - 1;
    while Instant::now() < drain_deadline {
        let acked = answers.acked.load(Ordering::Relaxed);
        let all_answered = answers.answered.load(Ordering::Relaxed) >= sent;
        if all_answered && shared.delivered.load(Ordering::Relaxed) >= acked * others {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let samples = window.close(target);
    shared.stop_receivers.cancel();
    let mut read = Vec::with_capacity(members);
    for (task, (_, sink)) in readers.into_iter().zip(written.iter_mut()) {
        let (outcome, stream) = task.await.map_err(|e| format!("reader task: {e}"))?;
        if let Some(sink) = sink.take()
            && let Ok(mut ws) = sink.reunite(stream)
        {
            let _ = ws.close(None).await;
        }
        read.push(outcome);
    }
    let written: Vec<WriterOutcome> = written.into_iter().map(|(w, _)| w).collect();
    Ok(Report::new(
        members,
        rate.unwrap_or_default(),
        started_us,
        written,
        read,
        timed_out,
        samples,
    ))
}

/// One member's writing half: its messages at its pace, from `started_us` on. Hands the sink
/// back so the socket can be closed properly once its reader is done too.
async fn write_member(
    sink: SplitSink<Ws, Message>,
    template: Template,
    messages: u64,
    pace: Pace,
    mut due: tokio::sync::mpsc::UnboundedReceiver<u64>,
    shared: Arc<Shared>,
    started_us: u64,
) -> (WriterOutcome, Option<SplitSink<Ws, Message>>) {
    tokio::time::sleep_until(shared.clock.at_us(started_us).into()).await;
    // The open loop takes no permits; a closed loop (no --rate) would wait for answers.
    let window = Semaphore::new(match pace {
        Pace::Window(n) => n,
        Pace::Schedule { .. } => 0,
    });
    let mut writer = Writer::new(sink, &template, shared.clock);
    let written = tokio::select! {
        _ = shared.stop_senders.cancelled() => Ok(()),
        written = writer.run(messages, pace, &window, &mut due) => written,
    };
    let outcome = WriterOutcome {
        sent: writer.sent,
        last_send_us: writer.last_send_us,
        lag_us: std::mem::take(&mut writer.lag_us),
        closed: written.err(),
    };
    (outcome, Some(writer.sink))
}

/// One member's reading half: its acknowledgements and the others' messages, until the run
/// stops the receivers.
async fn read_member(
    mut stream: SplitStream<Ws>,
    me: usize,
    index: Arc<HashMap<u64, usize>>,
    shared: Arc<Shared>,
    answers: Arc<Answers>,
) -> (MemberOutcome, SplitStream<Ws>) {
    let mut outcome = MemberOutcome::default();
    while let Some(text) = next_text(&mut stream, &shared.stop_receivers, &mut outcome.closed).await
    {
        let now_us = shared.clock.now_us();
        let event = match serde_json::from_str::<Event>(&text) {
            Ok(event) => event,
            Err(_) => {
                outcome.errors.add("unreadable event");
                continue;
            }
        };
        match event {
            Event {
                kind: "message_sent",
                message_id: Some(id),
                client_id,
                ..
            } => {
                outcome.acked_ids.push(id);
                if let Some((_, sent_us)) = client_id.and_then(|c| Stamp::parse(c, &shared.tag)) {
                    outcome.ack_us.push(now_us.saturating_sub(sent_us));
                }
                answers.acked.fetch_add(1, Ordering::Relaxed);
                answers.answered.fetch_add(1, Ordering::Relaxed);
            }
            Event {
                kind: "error",
                code,
                ..
            } => {
                outcome.errors.add(code.unwrap_or("error without code"));
                answers.answered.fetch_add(1, Ordering::Relaxed);
            }
            Event {
                kind: "new_message",
                message_id: Some(id),
                sender_id: Some(sender),
                text: Some(body),
                ..
            } => {
                let stamp = Stamp::parse(body, &shared.tag);
                let (Some((seq, sent_us)), Some(&from)) = (stamp, index.get(&sender)) else {
                    outcome.foreign += 1;
                    continue;
                };
                if from == me {
                    outcome.echoes += 1;
                    continue;
                }
                if !outcome.arrivals.first(id) {
                    continue;
                }
                outcome
                    .deliveries
                    .push((from, seq, now_us.saturating_sub(sent_us)));
                outcome.last_receive_us = now_us;
                shared.delivered.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    (outcome, stream)
}

impl Report {
    fn new(
        members: usize,
        rate: f64,
        started_us: u64,
        written: Vec<WriterOutcome>,
        read: Vec<MemberOutcome>,
        timed_out: bool,
        samples: Samples,
    ) -> Report {
        // Every acknowledged message is owed to every member but its sender.
        let owned: Vec<HashSet<u64>> = read
            .iter()
            .map(|r| r.acked_ids.iter().copied().collect())
            .collect();
        let mut lost = 0;
        for (i, member) in read.iter().enumerate() {
            for (j, acked) in owned.iter().enumerate() {
                if i != j {
                    lost += acked.difference(&member.arrivals.ids).count() as u64;
                }
            }
        }
        let (mut errors, mut closes) = (Tally::default(), Tally::default());
        for r in &read {
            errors.merge(r.errors.clone());
        }
        for closed in read
            .iter()
            .map(|r| &r.closed)
            .chain(written.iter().map(|w| &w.closed))
            .flatten()
        {
            closes.add(closed.clone());
        }
        let mut delivery = Vec::new();
        let mut from_send = Vec::new();
        for r in &read {
            for &(from, seq, latency_us) in &r.deliveries {
                delivery.push(latency_us);
                if let Some(lag) = written[from].lag_us.get(seq as usize) {
                    from_send.push(latency_us.saturating_sub(*lag));
                }
            }
        }
        let acked = owned.iter().map(|o| o.len() as u64).sum::<u64>();
        let last_send_us = written.iter().map(|w| w.last_send_us).max().unwrap_or(0);
        let last_receive_us = read.iter().map(|r| r.last_receive_us).max().unwrap_or(0);
        let span = |end_us: u64| end_us.saturating_sub(started_us) as f64 / 1e6;
        Report {
            members,
            rate,
            elapsed_send_s: span(last_send_us),
            sent: written.iter().map(|w| w.sent).sum(),
            acked,
            deliveries: delivery.len() as u64,
            expected: acked * (members as u64 - 1),
            delivered_s: span(last_receive_us),
            delivery: Latencies::new(delivery),
            from_send: Latencies::new(from_send),
            ack: Latencies::new(read.iter().flat_map(|r| r.ack_us.clone()).collect()),
            send_lag: Latencies::new(written.iter().flat_map(|w| w.lag_us.clone()).collect()),
            checks: Checks {
                lost,
                duplicates: read.iter().map(|r| r.arrivals.duplicates).sum(),
                out_of_order: read.iter().map(|r| r.arrivals.out_of_order).sum(),
                foreign: read.iter().map(|r| r.foreign).sum(),
                errors,
                closes,
                timed_out,
            },
            echoes: read.iter().map(|r| r.echoes).sum(),
            samples,
        }
    }

    /// No loss, duplicates, echoes, reordering, errors or unexpected closes.
    pub(super) fn clean(&self) -> bool {
        self.checks.clean()
            && self.echoes == 0
            && self.sent == self.acked
            && self.deliveries == self.expected
    }

    /// The figures the comparison table sets side by side.
    pub(super) fn figures(&self) -> Vec<Figure> {
        let mut figures = vec![
            Figure::measured(
                "deliveries/s",
                per_sec(self.deliveries, self.delivered_s),
                0,
            ),
            Figure::measured("delivery p50, ms", self.delivery.ms(0.5), 2),
            Figure::measured("delivery p99, ms", self.delivery.ms(0.99), 2),
            Figure::measured("delivery from send p99, ms", self.from_send.ms(0.99), 2),
            Figure::measured("ack p99, ms", self.ack.ms(0.99), 2),
            Figure::measured(
                "server CPU per delivery, µs",
                self.samples.server_cpu_per_item_us(self.deliveries),
                2,
            ),
            Figure::context("generator CPU, s", self.samples.generator_cpu_secs(), 2),
        ];
        figures.extend(machine_figures(self.samples.machine));
        figures
    }

    pub(super) fn print(&self, args: &Args, target: &Target) {
        let quantiles = [("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)];
        println!("== indaba load: group ==");
        println!("{:<16} {}", target.server.name(), target.describe());
        println!(
            "workload         1 conversation of {} members, each on one socket sending {} \
             messages of {} B text; {} msg/s in total, each delivered to the {} others \
             (latency from the scheduled send time)",
            self.members,
            args.messages(),
            args.size,
            self.rate,
            self.members - 1
        );
        println!(
            "sent             {} in {:.2} s = {:.0} msg/s",
            self.sent,
            self.elapsed_send_s,
            per_sec(self.sent, self.elapsed_send_s).unwrap_or_default()
        );
        println!(
            "send lag         {} behind schedule",
            self.send_lag
                .describe(&[("p50", 0.5), ("p99", 0.99), ("max", 1.0)])
        );
        println!("acked            {}", self.acked);
        println!(
            "delivered        {} of {} owed in {:.2} s = {:.0} deliveries/s",
            self.deliveries,
            self.expected,
            self.delivered_s,
            per_sec(self.deliveries, self.delivered_s).unwrap_or_default()
        );
        println!("delivery         {}", self.delivery.describe(&quantiles));
        println!(
            "delivery fr send {} (the send lag taken off)",
            self.from_send.describe(&quantiles)
        );
        println!(
            "ack latency      {}",
            self.ack.describe(&[("p50", 0.5), ("p99", 0.99)])
        );
        self.checks
            .print(args, &[("echoed to sender", self.echoes)]);
        self.samples.print(self.deliveries, "delivery");
    }
}

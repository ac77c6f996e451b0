//! `--mode broadcast` (issue 20): `--sockets` users connected (one quiet socket each, spread
//! over source addresses like the idle mode), then service broadcasts one after the other:
//! `POST /api/messages/broadcast` with every user's id, the service secret, and a text stamped
//! with the broadcast's number and the time the request was sent. Each user's socket notes
//! when its copy arrives. Per broadcast: when the HTTP answer came, and when the median, the
//! 99th-percentile and the last user had it; over the measured broadcasts, the server's CPU
//! time per delivery. `--warmup` broadcasts go first, unmeasured: the daemon creates each
//! user's one-to-one conversation with the sender on the first one, which a service that
//! broadcasts regularly has long had. With `--notify` each user also holds a
//! `/ws/notifications/` socket, where the daemon announces each new conversation
//! (`conversation_updated`, whose last message carries the broadcast's stamp): how many arrive
//! per broadcast, and when the last did (`--warmup 0` puts the first broadcast in the measured
//! CPU window).

use super::pairs::Shared;
use super::*;

/// What one user's socket received.
#[derive(Debug, Default)]
struct UserOutcome {
    /// (broadcast number, latency from the request's send time), one per broadcast received.
    received: Vec<(u64, u64)>,
    duplicates: u64,
    foreign: u64,
    closed: Option<String>,
}

/// What one user's notification socket received (`--notify`).
#[derive(Debug, Default)]
struct UpdatesOutcome {
    /// (broadcast number, latency from the request's send time), one per `conversation_updated`
    /// whose last message is one of this run's broadcasts.
    updates: Vec<(u64, u64)>,
    closed: Option<String>,
}

/// What the notification sockets saw (`--notify`).
struct Announcements {
    connects: Connects,
    /// Per broadcast (warm-up ones included), when each `conversation_updated` arrived.
    by_broadcast: Vec<Latencies>,
    closes: Tally,
}

/// One measured broadcast.
struct Broadcast {
    /// From sending the request to the end of the HTTP answer.
    answer_us: u64,
    /// When each user had it, from sending the request.
    delivery: Latencies,
    /// Users with a socket that did not get it within --drain.
    missing: u64,
}

/// Everything a broadcast run measured.
pub(super) struct Report {
    connects: Connects,
    broadcasts: Vec<Broadcast>,
    /// Refused or failed requests, and answers that counted the wrong recipients.
    request_errors: Tally,
    deliveries: u64,
    duplicates: u64,
    foreign: u64,
    closes: Tally,
    /// Over the measured broadcasts.
    samples: Option<Samples>,
    /// With `--notify`.
    announcements: Option<Announcements>,
}

pub(super) async fn run(target: &Target, args: &Args) -> Result<Report, String> {
    let secret = target
        .service_secret
        .clone()
        .ok_or("broadcast mode against --url needs --service-secret")?;
    let sockets = args.sockets();
    let users: Vec<u64> = (0..sockets).map(|i| target.user_base + i).collect();
    let sender = target.user_base + sockets;
    let total = args.warmup + args.broadcasts;
    let shared = Shared::new();
    // How many users have had each broadcast.
    let arrived: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let spread = connect_spread(target, args, Socket::Chat, &users, sockets, {
        let (shared, arrived) = (shared.clone(), arrived.clone());
        move |_, ws| receive(ws, shared.clone(), arrived.clone())
    })
    .await?;
    // How many users have had each broadcast's `conversation_updated` (`--notify`).
    let announced: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let notify = if args.notify {
        let spread = connect_spread(target, args, Socket::Notifications, &users, sockets, {
            let (shared, announced) = (shared.clone(), announced.clone());
            move |_, ws| receive_updates(ws, shared.clone(), announced.clone())
        })
        .await?;
        Some(spread)
    } else {
        None
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let url = format!("http://{}/api/messages/broadcast", target.addr);
    let user_ids = serde_json::to_string(&users).map_err(|e| format!("user ids: {e}"))?;
    let mut answers = Vec::with_capacity(total as usize);
    let mut request_errors = Tally::default();
    let mut window = None;
    for number in 0..total {
        if number == args.warmup {
            window = Some(Window::open(target));
        }
        let sent_us = shared.clock.now_us();
        let text = Stamp::text(&shared.tag, number, sent_us, args.size);
        let body = format!(
            r#"{{"message":{{"sender_id":{sender},"text":"{text}","message_type":"system"}},"user_ids":{user_ids}}}"#
        );
        let answer = http
            .post(&url)
            .header("X-Service-Token", &secret)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await;
        let answered_us = shared.clock.now_us();
        match answer {
            Ok(response) if response.status().is_success() => {
                let counted = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["recipients"].as_u64());
                if counted != Some(sockets) {
                    request_errors.add(format!("answer counted {counted:?} recipients"));
                }
            }
            Ok(response) => request_errors.add(format!("HTTP {}", response.status())),
            Err(e) => request_errors.add(format!("request: {e}")),
        }
        answers.push(answered_us.saturating_sub(sent_us));
        // Until every connected user has it, bounded by --drain; then a pause, so trailing
        // work (the daemon's queue removals) is done before the next one.
        // The first broadcast creates every user's conversation: with `--notify`, also until
        // each notification socket has its announcement.
        let announcements = match &notify {
            Some(notify) if number == 0 => notify.connects.established,
            _ => 0,
        };
        let deadline = Instant::now() + secs(args.drain);
        while (arrived[number as usize].load(Ordering::Relaxed) < spread.connects.established
            || announced[number as usize].load(Ordering::Relaxed) < announcements)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(SETTLE).await;
    }
    let samples = window.map(|w| w.close(target));

    shared.stop_receivers.cancel();
    let announcements = match notify {
        Some(notify) => {
            let mut by_broadcast: Vec<Vec<u64>> = vec![Vec::new(); total as usize];
            let mut closes = Tally::default();
            for task in notify.tasks {
                let outcome = task.await.map_err(|e| format!("notification task: {e}"))?;
                for (number, latency_us) in outcome.iter().flat_map(|o| &o.updates) {
                    by_broadcast[*number as usize].push(*latency_us);
                }
                if let Some(closed) = outcome.and_then(|o| o.closed) {
                    closes.add(closed);
                }
            }
            Some(Announcements {
                connects: notify.connects,
                by_broadcast: by_broadcast.into_iter().map(Latencies::new).collect(),
                closes,
            })
        }
        None => None,
    };
    let mut outcomes = Vec::with_capacity(spread.tasks.len());
    for task in spread.tasks {
        if let Some(outcome) = task.await.map_err(|e| format!("receiver task: {e}"))? {
            outcomes.push(outcome);
        }
    }
    let mut by_broadcast: Vec<Vec<u64>> = vec![Vec::new(); total as usize];
    let mut closes = Tally::default();
    for outcome in &outcomes {
        for &(number, latency_us) in &outcome.received {
            by_broadcast[number as usize].push(latency_us);
        }
        if let Some(closed) = &outcome.closed {
            closes.add(closed.clone());
        }
    }
    let broadcasts: Vec<Broadcast> = by_broadcast
        .into_iter()
        .zip(answers)
        .skip(args.warmup as usize)
        .map(|(latencies, answer_us)| Broadcast {
            answer_us,
            missing: spread
                .connects
                .established
                .saturating_sub(latencies.len() as u64),
            delivery: Latencies::new(latencies),
        })
        .collect();
    Ok(Report {
        connects: spread.connects,
        deliveries: broadcasts.iter().map(|b| b.delivery.0.len() as u64).sum(),
        broadcasts,
        request_errors,
        duplicates: outcomes.iter().map(|o| o.duplicates).sum(),
        foreign: outcomes.iter().map(|o| o.foreign).sum(),
        closes,
        samples,
        announcements,
    })
}

/// One user's notification socket (`--notify`): notes when each `conversation_updated` about
/// one of this run's broadcasts arrives, until the run stops.
async fn receive_updates(
    mut ws: Ws,
    shared: Arc<Shared>,
    announced: Arc<Vec<AtomicU64>>,
) -> UpdatesOutcome {
    let mut outcome = UpdatesOutcome::default();
    while let Some(text) = next_text(&mut ws, &shared.stop_receivers, &mut outcome.closed).await {
        let now_us = shared.clock.now_us();
        // Rare (one per user and new conversation): parsed whole.
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if event["type"] != "conversation_updated" {
            continue;
        }
        let stamp = event["conversation"]["last_message"]["text"]
            .as_str()
            .and_then(|text| Stamp::parse(text, &shared.tag))
            .filter(|(number, _)| (*number as usize) < announced.len());
        if let Some((number, sent_us)) = stamp {
            outcome
                .updates
                .push((number, now_us.saturating_sub(sent_us)));
            announced[number as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ws.close(None).await;
    outcome
}

/// One user's socket: notes when each broadcast of this run arrives, until the run stops.
async fn receive(mut ws: Ws, shared: Arc<Shared>, arrived: Arc<Vec<AtomicU64>>) -> UserOutcome {
    let mut outcome = UserOutcome::default();
    let mut seen = vec![false; arrived.len()];
    while let Some(text) = next_text(&mut ws, &shared.stop_receivers, &mut outcome.closed).await {
        let now_us = shared.clock.now_us();
        let Ok(Event {
            kind: "new_message",
            text: Some(body),
            ..
        }) = serde_json::from_str::<Event>(&text)
        else {
            continue;
        };
        let Some((number, sent_us)) =
            Stamp::parse(body, &shared.tag).filter(|(number, _)| (*number as usize) < seen.len())
        else {
            outcome.foreign += 1;
            continue;
        };
        if std::mem::replace(&mut seen[number as usize], true) {
            outcome.duplicates += 1;
            continue;
        }
        outcome
            .received
            .push((number, now_us.saturating_sub(sent_us)));
        arrived[number as usize].fetch_add(1, Ordering::Relaxed);
    }
    let _ = ws.close(None).await;
    outcome
}

/// Milliseconds, from µs.
fn ms_of(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// Every user connected and had every broadcast once; every request accepted.
    pub(super) fn clean(&self) -> bool {
        self.connects.all()
            && self.broadcasts.iter().all(|b| b.missing == 0)
            && self.request_errors.total() == 0
            && self.duplicates == 0
            && self.closes.total() == 0
            && self
                .announcements
                .as_ref()
                .is_none_or(|a| a.connects.all() && a.closes.total() == 0)
    }

    /// The time until the last user had it, per measured broadcast, ms.
    fn lasts_ms(&self) -> Latencies {
        Latencies::new(
            self.broadcasts
                .iter()
                .filter_map(|b| b.delivery.at(1.0))
                .collect(),
        )
    }

    /// The figures the comparison table sets side by side.
    pub(super) fn figures(&self) -> Vec<Figure> {
        let lasts = self.lasts_ms();
        let answers = Latencies::new(self.broadcasts.iter().map(|b| b.answer_us).collect());
        let all = Latencies::new(
            self.broadcasts
                .iter()
                .flat_map(|b| b.delivery.0.iter().copied())
                .collect(),
        );
        let mut figures = vec![
            Figure::measured("last user, median, ms", lasts.ms(0.5), 1),
            Figure::measured("last user, p99 (max), ms", lasts.ms(0.99), 1),
            Figure::measured("user p50, ms", all.ms(0.5), 1),
            Figure::measured("user p99, ms", all.ms(0.99), 1),
            Figure::measured("HTTP answer, median, ms", answers.ms(0.5), 1),
            Figure::measured(
                "server CPU per delivery, µs",
                self.samples
                    .as_ref()
                    .and_then(|s| s.server_cpu_per_item_us(self.deliveries)),
                2,
            ),
        ];
        figures.extend(machine_figures(
            self.samples.as_ref().and_then(|s| s.machine),
        ));
        figures
    }

    pub(super) fn print(&self, args: &Args, target: &Target) {
        println!("== indaba load: broadcast ==");
        println!("{:<16} {}", target.server.name(), target.describe());
        println!(
            "workload         {} users on one /ws/chat/ socket each, from {} source addresses; \
             {} service broadcasts of {} B to all of them, one at a time, after {} unmeasured \
             (times from sending the request)",
            self.connects.requested, args.source_addrs, args.broadcasts, args.size, args.warmup
        );
        self.connects.print();
        for (i, b) in self.broadcasts.iter().enumerate() {
            println!(
                "broadcast {:<6} answer {:.1} ms; users had it {}{}",
                i + 1,
                ms_of(b.answer_us),
                b.delivery
                    .describe(&[("p50", 0.5), ("p99", 0.99), ("last", 1.0)]),
                if b.missing > 0 {
                    format!(", {} MISSING after --drain {} s", b.missing, args.drain)
                } else {
                    String::new()
                }
            );
        }
        let lasts = self.lasts_ms();
        println!(
            "last user        {} over {} broadcasts",
            lasts.describe(&[("p50", 0.5), ("p99", 0.99)]),
            self.broadcasts.len()
        );
        println!("request errors   {}", self.request_errors.describe());
        println!("duplicated       {}", self.duplicates);
        if self.foreign > 0 {
            println!(
                "foreign          {} (messages of earlier runs)",
                self.foreign
            );
        }
        println!("closed sockets   {}", self.closes.describe());
        if let Some(a) = &self.announcements {
            print!("notify sockets   ");
            a.connects.print();
            for (number, updates) in a.by_broadcast.iter().enumerate() {
                println!(
                    "announced        broadcast #{number}{}: {} conversation_updated{}",
                    if (number as u64) < args.warmup {
                        " (warm-up)"
                    } else {
                        ""
                    },
                    updates.0.len(),
                    if updates.0.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", users had it {}",
                            updates.describe(&[("p50", 0.5), ("last", 1.0)])
                        )
                    }
                );
            }
            println!("closed notify    {}", a.closes.describe());
        }
        if let Some(samples) = &self.samples {
            println!(
                "measured         over the {} broadcasts:",
                self.broadcasts.len()
            );
            samples.print(self.deliveries, "delivery");
        }
    }
}

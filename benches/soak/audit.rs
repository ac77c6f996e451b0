//! The checks: after every restart, that what the last round acknowledged is in history;
//! at the end, everything, from scratch (docs/RELIABILITY.md states each rule).
//!
//! Ground truth is what the daemon itself shows through its API after a restart: history
//! pages as each participant sees them, `sync`, the queue drain, the socket replay. The
//! ledger says what it acknowledged; the rules say what may differ after a `kill -9`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::api::{Api, As, Reply, Ws, event};
use super::ledger::{Cast, Delivery, Drain, Outcome, Seen, SendRecord, Via};
use super::workers::Crew;

/// Examples kept per kind of finding.
const EXAMPLES: usize = 12;
/// A socket with nothing to say for this long has finished its replay.
const QUIET: Duration = Duration::from_millis(600);
/// Longest wait for a replay or a `sync` batch at the audit.
const AUDIT_WAIT: Duration = Duration::from_secs(60);
/// Pause before each `sync` request: 20 a second, the socket's budget for such frames.
const SYNC_SPACING: Duration = Duration::from_millis(50);
/// `rate_limited` answers to `sync` one audit takes before it gives up.
const MAX_SYNC_REFUSALS: u32 = 1000;
/// Largest drain `limit` (the API's cap), for the final drains.
const FINAL_DRAIN: usize = 1000;

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Kill,
    Graceful,
}

/// Kinds of findings; any is a failed soak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// An acknowledged message (or one history had shown) is missing.
    Lost,
    /// A message stored, drained or delivered more often than the rules allow.
    Duplicated,
    /// Ids out of order, reused, or one id naming two contents.
    Ids,
    /// A send refused (the soak only sends valid ones), or stored although refused.
    Refused,
    /// A message nobody sent.
    Phantom,
    /// A queue drained wrongly (order, wrong user, left over).
    Queue,
    /// A socket delivery the rules do not allow (or one missing without a crash).
    Delivery,
    /// Unread counts or read markers inconsistent.
    Unread,
    /// `sync` disagrees with history, or participants' views differ.
    Views,
    /// The daemon itself: a crash, a failed start or stop, ERROR lines, dead letters, damage.
    Daemon,
    /// Answers and events a client does not expect: a request that hangs on a live daemon,
    /// a socket closed with an unexpected code, an acknowledgement for nothing sent.
    Protocol,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Duplicated => "duplicated",
            Kind::Ids => "id violations",
            Kind::Refused => "refused sends",
            Kind::Phantom => "phantom messages",
            Kind::Queue => "queue violations",
            Kind::Delivery => "delivery violations",
            Kind::Unread => "unread/read-marker violations",
            Kind::Views => "view/sync mismatches",
            Kind::Daemon => "daemon failures",
            Kind::Protocol => "unexpected answers or events",
        }
    }
}

/// What is wrong, by kind, with the first examples of each. A finding about one message is
/// counted once per kind however many checks meet it (a lost message is missing from its
/// conversation, from `sync` and from its recipient's queue).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    kinds: BTreeMap<Kind, Found>,
}

#[derive(Debug, Default)]
struct Found {
    n: u64,
    examples: Vec<String>,
    /// The messages already counted.
    keys: HashSet<String>,
}

impl Findings {
    pub(crate) fn add(&mut self, kind: Kind, detail: impl Into<String>) {
        let found = self.kinds.entry(kind).or_default();
        found.n += 1;
        if found.examples.len() < EXAMPLES {
            found.examples.push(detail.into());
        }
    }

    /// A finding about the message `key` (an id, or a broadcast's text and recipient),
    /// counted once per kind.
    pub(crate) fn add_about(
        &mut self,
        kind: Kind,
        key: impl Into<String>,
        detail: impl Into<String>,
    ) {
        let found = self.kinds.entry(kind).or_default();
        if found.keys.insert(key.into()) {
            found.n += 1;
            if found.examples.len() < EXAMPLES {
                found.examples.push(detail.into());
            }
        }
    }

    pub(crate) fn count(&self, kind: Kind) -> u64 {
        self.kinds.get(&kind).map_or(0, |found| found.n)
    }

    pub(crate) fn total(&self) -> u64 {
        self.kinds.values().map(|found| found.n).sum()
    }

    /// Every kind found, with its examples.
    pub(crate) fn print(&self) {
        for (kind, found) in &self.kinds {
            println!("  {}: {}", kind.name(), found.n);
            for example in &found.examples {
                println!("    - {example}");
            }
        }
    }
}

/// Messages as the daemon showed them, by id and by text (texts are unique per send).
#[derive(Debug, Default)]
struct Store {
    messages: BTreeMap<u64, Seen>,
    by_text: HashMap<String, Vec<u64>>,
    participants: BTreeMap<u64, Vec<u64>>,
}

impl Store {
    /// Adds `m`; a different message already under its id is a finding.
    fn insert(&mut self, m: Seen, findings: &mut Findings) {
        match self.messages.get(&m.id) {
            Some(old) if same(old, &m) => {}
            Some(old) => findings.add_about(
                Kind::Ids,
                m.id.to_string(),
                format!("id {} shown as {} and as {}", m.id, brief(old), brief(&m)),
            ),
            None => {
                self.by_text.entry(m.text.clone()).or_default().push(m.id);
                self.messages.insert(m.id, m);
            }
        }
    }

    fn ids_of(&self, text: &str) -> &[u64] {
        self.by_text.get(text).map_or(&[], Vec::as_slice)
    }

    /// The users a message is addressed to: its conversation's participants but the sender.
    fn addressed(&self, m: &Seen) -> impl Iterator<Item = u64> + '_ {
        let sender = m.sender;
        self.participants
            .get(&m.conversation)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |u| *u != sender)
    }

    /// Whether `conversation` is the one-to-one conversation of `a` and `b`.
    fn is_pair(&self, conversation: u64, a: u64, b: u64) -> bool {
        self.participants
            .get(&conversation)
            .is_some_and(|p| p.len() == 2 && p.contains(&a) && p.contains(&b))
    }
}

/// Content equality (the priority is not in every view).
fn same(a: &Seen, b: &Seen) -> bool {
    a.id == b.id && a.conversation == b.conversation && a.sender == b.sender && a.text == b.text
}

fn brief(m: &Seen) -> String {
    let text: String = m.text.chars().take(40).collect();
    format!(
        "(conversation {}, sender {}, \"{text}…\")",
        m.conversation, m.sender
    )
}

fn describe(r: &SendRecord) -> String {
    let text: String = r.text.chars().take(40).collect();
    format!(
        "{} send by {} (first sent in round {}, {} attempt(s), {:?}): \"{text}…\"",
        r.via.name(),
        r.sender,
        r.first_round,
        r.attempts,
        r.outcome
    )
}

/// Reads every conversation of `users` the soak does not know yet, with its participants.
async fn discover(
    api: &Api,
    users: &[u64],
    participants: &mut BTreeMap<u64, Vec<u64>>,
) -> Result<BTreeMap<u64, Vec<Value>>, String> {
    let mut lists = BTreeMap::new();
    for &user in users {
        let list = api.conversations(user).await?;
        for c in &list {
            let (Some(id), Some(members)) = (c["id"].as_u64(), c["participants"].as_array()) else {
                return Err(format!("conversation JSON without id or participants: {c}"));
            };
            participants
                .entry(id)
                .or_insert_with(|| members.iter().filter_map(Value::as_u64).collect());
        }
        lists.insert(user, list);
    }
    Ok(lists)
}

/// Checks one send against the messages the daemon showed. `exact`: the final audit (every
/// rule); otherwise the check after a restart (an acknowledged message is there, as sent).
fn check_record(
    r: &SendRecord,
    store: &Store,
    broadcaster: u64,
    exact: bool,
    findings: &mut Findings,
) {
    let ids = store.ids_of(&r.text);
    if r.via == Via::Broadcast {
        let recipients = r.route.recipients();
        let counts: Vec<usize> = recipients
            .iter()
            .map(|&u| {
                ids.iter()
                    .filter(|id| {
                        store.messages.get(id).is_some_and(|m| {
                            m.sender == broadcaster && store.is_pair(m.conversation, broadcaster, u)
                        })
                    })
                    .count()
            })
            .collect();
        let stray = ids.len() - counts.iter().sum::<usize>();
        if stray > 0 {
            findings.add(
                Kind::Duplicated,
                format!(
                    "{stray} cop(ies) outside the recipients' conversations: {}",
                    describe(r)
                ),
            );
        }
        match &r.outcome {
            Outcome::Acked { .. } => {
                for (u, n) in recipients.iter().zip(&counts) {
                    let key = format!("{} to {u}", r.text);
                    if *n == 0 {
                        findings.add_about(
                            Kind::Lost,
                            key,
                            format!("missing for user {u}: {}", describe(r)),
                        );
                    } else if *n > 1 && exact {
                        findings.add_about(
                            Kind::Duplicated,
                            key,
                            format!("{n}× for user {u}: {}", describe(r)),
                        );
                    }
                }
            }
            Outcome::Refused(why) if exact => refused(r, why, ids, findings),
            _ if exact => {
                // In doubt: one commit holds it for every recipient, or nothing does.
                let all_one = counts.iter().all(|n| *n == 1);
                let all_none = counts.iter().all(|n| *n == 0);
                if !all_one && !all_none {
                    findings.add(
                        Kind::Duplicated,
                        format!(
                            "in-doubt broadcast stored {counts:?} per recipient: {}",
                            describe(r)
                        ),
                    );
                }
            }
            _ => {}
        }
        return;
    }
    match &r.outcome {
        Outcome::Acked { id: Some(id), .. } => {
            match store.messages.get(id) {
                None => findings.add_about(
                    Kind::Lost,
                    id.to_string(),
                    format!("id {id}: {}", describe(r)),
                ),
                Some(m)
                    if m.text != r.text
                        || m.sender != r.sender
                        || r.conversation.is_some_and(|c| c != m.conversation) =>
                {
                    findings.add_about(
                        Kind::Ids,
                        id.to_string(),
                        format!("acknowledged id {id} holds {}: {}", brief(m), describe(r)),
                    );
                }
                Some(_) => {}
            }
            if exact && ids.len() > 1 {
                findings.add_about(
                    Kind::Duplicated,
                    id.to_string(),
                    format!("stored as {ids:?}: {}", describe(r)),
                );
            }
        }
        Outcome::Acked { id: None, .. } => {
            findings.add(
                Kind::Ids,
                format!("acknowledged without an id: {}", describe(r)),
            );
        }
        Outcome::Refused(why) if exact => refused(r, why, ids, findings),
        _ if exact && ids.len() > 1 => {
            findings.add_about(
                Kind::Duplicated,
                r.text.clone(),
                format!("in doubt, stored as {ids:?}: {}", describe(r)),
            );
        }
        _ => {}
    }
}

/// A refused send is a finding (the soak sends only valid messages), and one stored
/// nonetheless (`ids`) another.
fn refused(r: &SendRecord, why: &str, ids: &[u64], findings: &mut Findings) {
    findings.add(Kind::Refused, format!("{why}: {}", describe(r)));
    if !ids.is_empty() {
        findings.add(
            Kind::Refused,
            format!("stored although refused: {}", describe(r)),
        );
    }
}

/// What the soak knows between rounds: every message history has shown so far, and the
/// highest id known before each round.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    store: Store,
    /// Newest id read per conversation.
    high: BTreeMap<u64, u64>,
    /// Id → the round before which a check first saw it in history.
    seen_before: HashMap<u64, u32>,
    /// Round → the highest id acknowledged or shown before it started: every message the
    /// round stores must get a higher one.
    pub(crate) floors: BTreeMap<u32, u64>,
}

impl Tracker {
    /// After the restart that precedes `round`: reads what history gained since the last
    /// check and checks every send acknowledged in the round before. Answers how many sends
    /// it checked.
    pub(crate) async fn after_restart(
        &mut self,
        api: &Api,
        cast: &Cast,
        crew: &Crew,
        round: u32,
        findings: &mut Findings,
    ) -> Result<u64, String> {
        discover(api, &cast.all_users(), &mut self.store.participants).await?;
        let conversations: Vec<(u64, u64)> = self
            .store
            .participants
            .iter()
            .map(|(c, p)| (*c, p[0]))
            .collect();
        for (conversation, reader) in conversations {
            let after = self.high.get(&conversation).copied().unwrap_or(0);
            let page = api.history(reader, conversation, after).await?;
            let mut high = after;
            for json in page {
                let Some(m) = Seen::from_json(&json) else {
                    findings.add(Kind::Views, format!("unreadable message JSON: {json}"));
                    continue;
                };
                if m.id <= high {
                    findings.add(
                        Kind::Ids,
                        format!(
                            "conversation {conversation}: id {} listed after {high}",
                            m.id
                        ),
                    );
                }
                high = high.max(m.id);
                self.seen_before.entry(m.id).or_insert(round);
                self.store.insert(m, findings);
            }
            self.high.insert(conversation, high);
        }
        let mut checked = 0;
        for r in crew.records() {
            if matches!(r.outcome, Outcome::Acked { round: acked, .. } if acked + 1 == round) {
                check_record(r, &self.store, cast.broadcaster, false, findings);
                checked += 1;
            }
        }
        let acked_max = crew.records().filter_map(SendRecord::acked_id).max();
        let shown_max = self.store.messages.keys().next_back().copied();
        self.floors
            .insert(round, acked_max.max(shown_max).unwrap_or(0));
        Ok(checked)
    }
}

/// Figures the final audit reports besides its findings.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) history: usize,
    pub(crate) acked: BTreeMap<Via, u64>,
    pub(crate) retried_stored_before: u64,
    pub(crate) retried_stored_by_retry: u64,
    pub(crate) doubt_present: u64,
    pub(crate) doubt_absent: u64,
    pub(crate) drains: u64,
    pub(crate) drained: u64,
    pub(crate) final_drained: u64,
    pub(crate) lost_drains_kill: u64,
    pub(crate) lost_drains_graceful: u64,
    pub(crate) vanished_with_lost_drain: u64,
    pub(crate) deliveries: u64,
    pub(crate) replayed_at_audit: u64,
    pub(crate) redelivered_after_kill: u64,
    pub(crate) missed_after_kill: u64,
    pub(crate) sync_users: u64,
    pub(crate) sync_messages: u64,
    pub(crate) unread_views: u64,
    pub(crate) markers: u64,
}

/// The final audit, on a daemon started after the last round with no load.
pub(crate) async fn audit(
    api: &Api,
    cast: &Cast,
    crew: &Crew,
    tracker: &Tracker,
    ends: &BTreeMap<u32, End>,
    audit_round: u32,
    f: &mut Findings,
) -> Result<Figures, String> {
    let mut fig = Figures::default();
    let users = cast.all_users();
    let broadcaster = cast.broadcaster;

    // Every conversation, and every participant's view of its history.
    let mut store = Store::default();
    let lists = discover(api, &users, &mut store.participants).await?;
    let mut views: BTreeMap<(u64, u64), Vec<Value>> = BTreeMap::new();
    let participants = store.participants.clone();
    for (&conversation, members) in &participants {
        let mut reference: Option<Vec<(u64, String)>> = None;
        for &user in members {
            let view = api.history(user, conversation, 0).await?;
            let keys: Vec<(u64, String)> = view
                .iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(0),
                        m["text"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            if keys.windows(2).any(|w| w[0].0 >= w[1].0) {
                f.add(Kind::Ids, format!("conversation {conversation}: ids not strictly increasing in {user}'s history"));
            }
            match &reference {
                Some(reference) if *reference != keys => f.add(
                    Kind::Views,
                    format!("conversation {conversation}: user {user} sees {} messages, user {} sees {}", keys.len(), members[0], reference.len()),
                ),
                Some(_) => {}
                None => {
                    for json in &view {
                        match Seen::from_json(json) {
                            Some(m) => store.insert(m, f),
                            None => f.add(Kind::Views, format!("unreadable message JSON: {json}")),
                        }
                    }
                    reference = Some(keys);
                }
            }
            views.insert((conversation, user), view);
        }
    }
    fig.history = store.messages.len();
    for (id, members) in &cast.conversations {
        let mut want = members.clone();
        want.sort_unstable();
        let mut have = store.participants.get(id).cloned().unwrap_or_default();
        have.sort_unstable();
        if have != want {
            f.add(
                Kind::Views,
                format!("conversation {id} created with {want:?}, now {have:?}"),
            );
        }
    }
    // What history showed after a restart is there still.
    for (id, m) in &tracker.store.messages {
        match store.messages.get(id) {
            None => f.add_about(
                Kind::Lost,
                id.to_string(),
                format!("id {id} {} was in history, is gone", brief(m)),
            ),
            Some(now) if !same(now, m) => f.add_about(
                Kind::Ids,
                id.to_string(),
                format!("id {id} was {}, is {}", brief(m), brief(now)),
            ),
            Some(_) => {}
        }
    }

    // Every send.
    let mut texts: HashMap<&str, &SendRecord> = HashMap::new();
    for r in crew.records() {
        texts.insert(r.text.as_str(), r);
        check_record(r, &store, broadcaster, true, f);
        match r.outcome {
            Outcome::Acked { round, retried, id } => {
                *fig.acked.entry(r.via).or_default() += 1;
                if let (true, Some(id)) = (retried, id) {
                    if id <= tracker.floors.get(&round).copied().unwrap_or(0) {
                        fig.retried_stored_before += 1;
                    } else {
                        fig.retried_stored_by_retry += 1;
                    }
                }
            }
            Outcome::InDoubt | Outcome::Pending => {
                if store.ids_of(&r.text).is_empty() {
                    fig.doubt_absent += 1;
                } else {
                    fig.doubt_present += 1;
                }
            }
            Outcome::Refused(_) => {}
        }
    }
    for m in store.messages.values() {
        if !texts.contains_key(m.text.as_str()) {
            f.add(Kind::Phantom, format!("id {} {}", m.id, brief(m)));
        }
    }
    let first_round = |m: &Seen| texts.get(m.text.as_str()).map_or(1, |r| r.first_round);

    check_ids(crew, tracker, f);

    // Queues of the users who never connect: a final drain, then the exactly-once rule.
    let socket_users: BTreeSet<u64> = cast.socket_users().into_iter().collect();
    let never: Vec<u64> = users
        .iter()
        .copied()
        .filter(|u| !socket_users.contains(u) && *u != broadcaster)
        .collect();
    let mut drains: Vec<Drain> = crew.drainer().map(|d| d.drains.clone()).unwrap_or_default();
    fig.drains = drains.len() as u64;
    fig.drained = drains.iter().map(|d| d.messages.len() as u64).sum();
    for &user in &never {
        for _ in 0..100_000 {
            let body = api
                .get(
                    As::Service,
                    &format!("/api/messages/queue/{user}?limit={FINAL_DRAIN}"),
                )
                .await
                .ok()
                .map_err(|e| format!("final drain of {user}: {e}"))?;
            let messages: Vec<Seen> = body["messages"]
                .as_array()
                .map(|all| all.iter().filter_map(Seen::from_json).collect())
                .unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            fig.final_drained += messages.len() as u64;
            drains.push(Drain {
                user,
                round: audit_round,
                messages,
            });
        }
    }
    let lost_drains = crew.drainer().map(|d| d.lost.clone()).unwrap_or_default();
    for lost in &lost_drains {
        match ends.get(&lost.round) {
            Some(End::Kill) => fig.lost_drains_kill += 1,
            _ => fig.lost_drains_graceful += 1,
        }
    }
    check_queues(
        &store,
        &never,
        &drains,
        &lost_drains,
        ends,
        &first_round,
        &mut fig,
        f,
    );

    // Sockets: the replay at the audit, then every delivery against the rules; `sync` for
    // every user (after their queue is empty).
    let connections = crew.connections();
    let mut deliveries: Vec<Delivery> = crew.deliveries().cloned().collect();
    fig.deliveries = deliveries.len() as u64;
    for &user in &users {
        let mut ws = api
            .connect(user)
            .await
            .map_err(|e| format!("audit socket of {user}: {e}"))?;
        let replay = replay(api, &mut ws, user).await?;
        if socket_users.contains(&user) {
            fig.replayed_at_audit += replay.len() as u64;
            let connection = connections.get(&user).copied().unwrap_or(0) + 1;
            deliveries.extend(replay.into_iter().map(|message| Delivery {
                user,
                message,
                round: audit_round,
                connection,
            }));
        } else if !replay.is_empty() {
            f.add(
                Kind::Queue,
                format!(
                    "user {user}: {} message(s) replayed after the final drain emptied the queue",
                    replay.len()
                ),
            );
        }
        let synced = sync(&mut ws)
            .await
            .map_err(|e| format!("sync of {user}: {e}"))?;
        fig.sync_users += 1;
        fig.sync_messages += synced.len() as u64;
        let expected: Vec<&Seen> = store
            .messages
            .values()
            .filter(|m| {
                store
                    .participants
                    .get(&m.conversation)
                    .is_some_and(|p| p.contains(&user))
            })
            .collect();
        let got: Vec<(u64, &str)> = synced.iter().map(|m| (m.id, m.text.as_str())).collect();
        let want: Vec<(u64, &str)> = expected.iter().map(|m| (m.id, m.text.as_str())).collect();
        if got != want {
            let got_ids: HashSet<u64> = got.iter().map(|(id, _)| *id).collect();
            let want_ids: HashSet<u64> = want.iter().map(|(id, _)| *id).collect();
            f.add(
                Kind::Views,
                format!(
                    "user {user}: sync gave {} messages, history {} ({} missing from sync, {} extra)",
                    got.len(),
                    want.len(),
                    want_ids.difference(&got_ids).count(),
                    got_ids.difference(&want_ids).count()
                ),
            );
        }
        let _ = ws.close(None).await;
    }
    check_deliveries(
        &store,
        &socket_users,
        &deliveries,
        ends,
        &first_round,
        &mut fig,
        f,
    );

    // Unread counts against the read markers, as each user sees them.
    for &user in &users {
        let mut sum = 0;
        for c in lists.get(&user).into_iter().flatten() {
            let (Some(id), Some(unread)) = (c["id"].as_u64(), c["unread_count"].as_u64()) else {
                continue;
            };
            sum += unread;
            let counted = views
                .get(&(id, user))
                .into_iter()
                .flatten()
                .filter(|m| m["sender"].as_u64() != Some(user) && m["is_read"] == json!(false))
                .count() as u64;
            fig.unread_views += 1;
            if counted != unread {
                f.add(
                    Kind::Unread,
                    format!("user {user}, conversation {id}: unread_count {unread}, {counted} unread in history"),
                );
            }
        }
        let total = api
            .get(
                As::User(user),
                "/api/v1/messaging/conversations/unread_count/",
            )
            .await
            .ok()
            .map_err(|e| format!("unread count of {user}: {e}"))?;
        if total["unread_count"].as_u64() != Some(sum) {
            f.add(
                Kind::Unread,
                format!(
                    "user {user}: unread_count {} over all, {sum} summed over conversations",
                    total["unread_count"]
                ),
            );
        }
    }
    for marker in crew.drainer().map(|d| d.markers.as_slice()).unwrap_or(&[]) {
        fig.markers += 1;
        let unread = views
            .get(&(marker.conversation, marker.user))
            .into_iter()
            .flatten()
            .filter(|m| {
                m["sender"].as_u64() != Some(marker.user)
                    && m["id"].as_u64().is_some_and(|id| id <= marker.id)
                    && m["is_read"] != json!(true)
            })
            .count();
        if unread > 0 {
            f.add(
                Kind::Unread,
                format!(
                    "user {} read up to {} in conversation {} (acknowledged), {unread} earlier message(s) unread now",
                    marker.user, marker.id, marker.conversation
                ),
            );
        }
    }

    let stats = api
        .get(As::Service, "/api/stats")
        .await
        .ok()
        .map_err(|e| format!("stats: {e}"))?;
    for key in ["dead_letters", "damaged_records"] {
        if stats[key].as_u64() != Some(0) {
            f.add(Kind::Daemon, format!("/api/stats {key} = {}", stats[key]));
        }
    }
    Ok(fig)
}

/// Ids in commit order and never reused: each worker's acknowledged ids increase in the
/// order it sent (its sends are sequential, a socket's kept in order); every id a round
/// acknowledges is above all known before it (so none is reused after a crash), unless it
/// answers a retry with the message the first attempt stored, which history showed before
/// the round.
fn check_ids(crew: &Crew, tracker: &Tracker, f: &mut Findings) {
    let mut by_worker: BTreeMap<usize, Vec<(u64, u64, &SendRecord)>> = BTreeMap::new();
    for r in crew.records() {
        if let Some(id) = r.acked_id() {
            by_worker.entry(r.worker).or_default().push((r.seq, id, r));
        }
        if let Outcome::Acked {
            id: Some(id),
            round,
            retried,
        } = r.outcome
        {
            let floor = tracker.floors.get(&round).copied().unwrap_or(0);
            // A retry may be answered with the message its first attempt stored before the
            // crash: an id below the floor, but then one history showed before the round.
            let stored_before = retried
                && tracker
                    .seen_before
                    .get(&id)
                    .is_some_and(|before| *before <= round);
            if id <= floor && !stored_before {
                f.add_about(
                    Kind::Ids,
                    id.to_string(),
                    format!(
                        "id {id} acknowledged in round {round}, not above {floor} known before the round and not in history before it: {}",
                        describe(r)
                    ),
                );
            }
        }
    }
    for (worker, mut ids) in by_worker {
        ids.sort_unstable_by_key(|(seq, _, _)| *seq);
        for w in ids.windows(2) {
            if w[0].1 >= w[1].1 {
                f.add(
                    Kind::Ids,
                    format!(
                        "worker {worker}: send {} got id {}, the later send {} got id {} ({}; {})",
                        w[0].0,
                        w[0].1,
                        w[1].0,
                        w[1].1,
                        describe(w[0].2),
                        describe(w[1].2)
                    ),
                );
            }
        }
    }
}

/// The queue rule (docs/RELIABILITY.md): every message addressed to a user who never
/// connects is in exactly one answered drain — or in none, when a drain of that user lost
/// its answer to a `kill -9` in a round not before the message was sent, within that drain's
/// `limit`.
#[allow(clippy::too_many_arguments)]
fn check_queues(
    store: &Store,
    never: &[u64],
    drains: &[Drain],
    lost: &[super::ledger::LostDrain],
    ends: &BTreeMap<u32, End>,
    first_round: &dyn Fn(&Seen) -> u32,
    fig: &mut Figures,
    f: &mut Findings,
) {
    let rank = |p: &str| match p {
        "high" => 0,
        "normal" => 1,
        "low" => 2,
        _ => 3,
    };
    let mut handed: HashMap<(u64, u64), u32> = HashMap::new();
    for d in drains {
        let order: Vec<(u8, u64)> = d
            .messages
            .iter()
            .map(|m| (rank(&m.priority), m.id))
            .collect();
        if order.windows(2).any(|w| w[0] >= w[1]) {
            f.add(
                Kind::Queue,
                format!(
                    "user {}: a drain of round {} out of queue order",
                    d.user, d.round
                ),
            );
        }
        for m in &d.messages {
            *handed.entry((d.user, m.id)).or_default() += 1;
            match store.messages.get(&m.id) {
                None => f.add_about(
                    Kind::Lost,
                    m.id.to_string(),
                    format!("id {} drained for {} is not in history", m.id, d.user),
                ),
                Some(stored) if !same(stored, m) => f.add_about(
                    Kind::Ids,
                    m.id.to_string(),
                    format!(
                        "id {} drained as {}, stored as {}",
                        m.id,
                        brief(m),
                        brief(stored)
                    ),
                ),
                Some(stored) if !store.addressed(stored).any(|u| u == d.user) => f.add(
                    Kind::Queue,
                    format!(
                        "id {} drained for user {}, who is not its recipient",
                        m.id, d.user
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    for &user in never {
        // Lost drains that can have taken messages: cut off by a kill, in round order, each
        // with room for its limit.
        let mut room: Vec<(u32, usize)> = lost
            .iter()
            .filter(|l| l.user == user && ends.get(&l.round) == Some(&End::Kill))
            .map(|l| (l.round, l.limit))
            .collect();
        room.sort_unstable();
        let mut vanished: Vec<(u32, u64)> = Vec::new();
        for m in store.messages.values() {
            if !store.addressed(m).any(|u| u == user) {
                continue;
            }
            match handed.get(&(user, m.id)).copied().unwrap_or(0) {
                1 => {}
                0 => vanished.push((first_round(m), m.id)),
                n => f.add_about(
                    Kind::Duplicated,
                    format!("{} to {user}", m.id),
                    format!("id {} handed to user {user} by {n} answered drains", m.id),
                ),
            }
        }
        vanished.sort_unstable();
        for (sent_round, id) in vanished {
            match room
                .iter_mut()
                .find(|(round, left)| *round >= sent_round && *left > 0)
            {
                Some((_, left)) => {
                    *left -= 1;
                    fig.vanished_with_lost_drain += 1;
                }
                None => f.add_about(
                    Kind::Lost,
                    id.to_string(),
                    format!("id {id} (sent in round {sent_round}) left user {user}'s queue without any drain handing it out, and no drain lost to a kill can have taken it"),
                ),
            }
        }
    }
}

/// The socket rules: a socket user gets every message addressed to them at least once; on
/// one connection at most once; again on a later connection only across a `kill -9`; and a
/// message never delivered only when a `kill -9` came after it was sent (the frame can die
/// with the daemon after its queue entry was removed; `sync` still has it).
fn check_deliveries(
    store: &Store,
    socket_users: &BTreeSet<u64>,
    deliveries: &[Delivery],
    ends: &BTreeMap<u32, End>,
    first_round: &dyn Fn(&Seen) -> u32,
    fig: &mut Figures,
    f: &mut Findings,
) {
    let kill_in = |from: u32, to: u32| (from..to).any(|r| ends.get(&r) == Some(&End::Kill));
    let last_round = ends.keys().next_back().copied().unwrap_or(0);
    let mut by_message: HashMap<(u64, u64), Vec<(u32, u32)>> = HashMap::new();
    for d in deliveries {
        by_message
            .entry((d.user, d.message.id))
            .or_default()
            .push((d.connection, d.round));
        match store.messages.get(&d.message.id) {
            None => f.add_about(
                Kind::Lost,
                d.message.id.to_string(),
                format!(
                    "id {} delivered to {} is not in history",
                    d.message.id, d.user
                ),
            ),
            Some(stored) if !same(stored, &d.message) => f.add_about(
                Kind::Ids,
                d.message.id.to_string(),
                format!(
                    "id {} delivered as {}, stored as {}",
                    d.message.id,
                    brief(&d.message),
                    brief(stored)
                ),
            ),
            Some(stored) if !store.addressed(stored).any(|u| u == d.user) => f.add(
                Kind::Delivery,
                format!(
                    "id {} delivered to user {}, who is not its recipient",
                    d.message.id, d.user
                ),
            ),
            Some(_) => {}
        }
    }
    for m in store.messages.values() {
        for user in store.addressed(m).filter(|u| socket_users.contains(u)) {
            let Some(mut got) = by_message.remove(&(user, m.id)) else {
                let sent = first_round(m);
                if kill_in(sent, last_round + 1) {
                    fig.missed_after_kill += 1;
                } else {
                    f.add(
                        Kind::Delivery,
                        format!("id {} (sent in round {sent}) never reached user {user}'s socket, and no kill came after it", m.id),
                    );
                }
                continue;
            };
            got.sort_unstable();
            for w in got.windows(2) {
                let ((c0, r0), (c1, r1)) = (w[0], w[1]);
                if c0 == c1 {
                    f.add_about(
                        Kind::Duplicated,
                        format!("{} to {user}", m.id),
                        format!("id {} twice on user {user}'s connection {c0}", m.id),
                    );
                } else if kill_in(r0, r1) {
                    fig.redelivered_after_kill += 1;
                } else {
                    f.add_about(
                        Kind::Duplicated,
                        format!("{} to {user}", m.id),
                        format!("id {} delivered to user {user} in round {r0} and again in round {r1} with no kill between", m.id),
                    );
                }
            }
        }
    }
}

/// The queue replay of a freshly connected socket: its `new_message`s until the socket has
/// been quiet for a while and the user's queue is empty.
async fn replay(api: &Api, ws: &mut Ws, user: u64) -> Result<Vec<Seen>, String> {
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + AUDIT_WAIT;
    loop {
        match tokio::time::timeout(QUIET, ws.next()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(event) = event(&frame)
                    && event["type"] == "new_message"
                {
                    messages
                        .push(Seen::from_event(&event).ok_or("new_message without its fields")?);
                }
            }
            Ok(_) => return Err(format!("user {user}'s socket ended during the replay")),
            Err(_) => {
                let peek = api
                    .get(
                        As::Service,
                        &format!("/api/messages/queue/{user}?peek=true"),
                    )
                    .await;
                if let Reply::Answer { status: 200, body } = &peek
                    && body["count"] == json!(0)
                {
                    return Ok(messages);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "user {user}'s replay did not end within {AUDIT_WAIT:?}"
            ));
        }
    }
}

/// Everything `sync` returns from id 0, batch after batch. A socket's frames other than chat
/// messages share a budget (docs/WEBSOCKET.md: 20 a second, bursts of 60), `sync` included:
/// the batches are spaced to stay within it, and one answered `rate_limited` is asked again
/// a second later, as a client should.
async fn sync(ws: &mut Ws) -> Result<Vec<Seen>, String> {
    let mut messages = Vec::new();
    let mut since = 0;
    let mut refusals = 0;
    loop {
        tokio::time::sleep(SYNC_SPACING).await;
        let request = json!({"type": "sync", "since_message_id": since});
        ws.send(Message::Text(request.to_string().into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            let frame = tokio::time::timeout(AUDIT_WAIT, ws.next())
                .await
                .map_err(|_| "no sync_complete in time".to_owned())?;
            let Some(Ok(frame)) = frame else {
                return Err("socket ended during sync".into());
            };
            let Some(event) = event(&frame) else { continue };
            match event["type"].as_str() {
                Some("new_message") => {
                    messages.push(Seen::from_event(&event).ok_or("new_message without its fields")?)
                }
                Some("sync_complete") => {
                    if event["has_more"] != json!(true) {
                        return Ok(messages);
                    }
                    since = event["last_message_id"]
                        .as_u64()
                        .ok_or("sync_complete without last_message_id")?;
                    break;
                }
                Some("error")
                    if event["code"] == "rate_limited" && refusals < MAX_SYNC_REFUSALS =>
                {
                    refusals += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                Some("error") => return Err(format!("sync error: {event}")),
                _ => {}
            }
        }
    }
}

//! What the soak did and saw: every send with its fate (acknowledged, in doubt, refused),
//! every message a socket delivered, every queue drain, every acknowledged read marker; and
//! the cast — the users, their roles and conversations.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::api::{Api, As};

/// The API path a message went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Via {
    /// `POST /api/v1/messaging/messages/`.
    Rest,
    /// `chat_message` on `/ws/chat/`, acknowledged by `message_sent`.
    Ws,
    /// `POST /api/messages/send`.
    Service,
    /// `POST /api/messages/broadcast`: one message per recipient, no ids in the answer.
    Broadcast,
}

impl Via {
    pub(crate) const ALL: [Via; 4] = [Via::Rest, Via::Ws, Via::Service, Via::Broadcast];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::Ws => "ws",
            Via::Service => "service",
            Via::Broadcast => "broadcast",
        }
    }
}

/// Where a send goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// An existing conversation and who in it receives.
    Conversation { id: u64, recipients: Vec<u64> },
    /// A service send naming only the receiver: the two users' one-to-one conversation.
    OneToOne { receiver: u64 },
    /// A broadcast to these users, each in their one-to-one conversation with the sender.
    Broadcast { recipients: Vec<u64> },
}

impl Route {
    pub(crate) fn recipients(&self) -> Vec<u64> {
        match self {
            Route::Conversation { recipients, .. } | Route::Broadcast { recipients } => {
                recipients.clone()
            }
            Route::OneToOne { receiver } => vec![*receiver],
        }
    }
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Sent, no answer yet (only while its round runs).
    Pending,
    /// 201/200, `message_sent`, or a broadcast's 200. `id` is none for broadcasts;
    /// `retried` when the acknowledgement came for a retry after a crash.
    Acked {
        id: Option<u64>,
        round: u32,
        retried: bool,
    },
    /// The answer was lost to a crash or a stop and the send was not retried (no
    /// `client_id`): stored once or not at all.
    InDoubt,
    /// A clear refusal (4xx, 500): the soak sends only valid messages, so each is a finding.
    Refused(String),
}

/// One message the soak sent (a broadcast: one per recipient, under one record).
#[derive(Debug, Clone)]
pub(crate) struct SendRecord {
    pub(crate) via: Via,
    /// The worker that sent it: its sends are sequential (a socket's, in order), so their
    /// ids must increase in `seq` order.
    pub(crate) worker: usize,
    pub(crate) seq: u64,
    pub(crate) sender: u64,
    pub(crate) route: Route,
    /// The conversation, when known: from the route, or from the service's answer.
    pub(crate) conversation: Option<u64>,
    pub(crate) text: String,
    pub(crate) client_id: Option<String>,
    pub(crate) priority: &'static str,
    /// The round of the first attempt: the message cannot have been stored before it.
    pub(crate) first_round: u32,
    pub(crate) attempts: u32,
    pub(crate) outcome: Outcome,
}

impl SendRecord {
    pub(crate) fn acked_id(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Acked { id, .. } => id,
            _ => None,
        }
    }
}

/// One worker's sends, and those to try again after the restart.
#[derive(Debug)]
pub(crate) struct Book {
    pub(crate) worker: usize,
    pub(crate) records: Vec<SendRecord>,
    /// Indexes of the sends to retry. Retried in the order they were first sent (index
    /// order), so the daemon meets them in that order again: the audit checks that a
    /// worker's ids increase in the order it sent.
    retry: BTreeSet<usize>,
}

impl Book {
    pub(crate) fn new(worker: usize) -> Book {
        Book {
            worker,
            records: Vec::new(),
            retry: BTreeSet::new(),
        }
    }

    /// Records a new send; its index.
    pub(crate) fn add(&mut self, record: SendRecord) -> usize {
        self.records.push(record);
        self.records.len() - 1
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.records.len() as u64
    }

    /// The oldest send waiting for a retry, marked as attempted again.
    pub(crate) fn take_retry(&mut self) -> Option<usize> {
        let i = self.retry.pop_first()?;
        self.records[i].attempts += 1;
        self.records[i].outcome = Outcome::Pending;
        Some(i)
    }

    pub(crate) fn acked(&mut self, i: usize, id: Option<u64>, round: u32) {
        let record = &mut self.records[i];
        record.outcome = Outcome::Acked {
            id,
            round,
            retried: record.attempts > 1,
        };
    }

    /// No answer: retried after the restart when it has a `client_id` (the daemon then
    /// answers the stored message or stores it now), else left in doubt. Answers whether it
    /// will be retried.
    pub(crate) fn in_doubt(&mut self, i: usize) -> bool {
        if self.records[i].client_id.is_some() {
            self.records[i].outcome = Outcome::Pending;
            self.retry.insert(i);
            true
        } else {
            self.records[i].outcome = Outcome::InDoubt;
            false
        }
    }

    pub(crate) fn refused(&mut self, i: usize, why: String) {
        self.records[i].outcome = Outcome::Refused(why);
    }

    /// Sends still waiting for a retry when the soak ends: in doubt for good.
    pub(crate) fn give_up(&mut self) {
        while let Some(i) = self.retry.pop_first() {
            self.records[i].outcome = Outcome::InDoubt;
        }
    }
}

/// A message as a socket, a drain or a history page showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) id: u64,
    pub(crate) conversation: u64,
    pub(crate) sender: u64,
    pub(crate) text: String,
    pub(crate) priority: String,
}

impl Seen {
    /// From a `new_message` event (`message_id`, `sender_id`, `conversation_id`).
    pub(crate) fn from_event(event: &Value) -> Option<Seen> {
        Some(Seen {
            id: event["message_id"].as_u64()?,
            conversation: event["conversation_id"].as_u64()?,
            sender: event["sender_id"].as_u64()?,
            text: event["text"].as_str()?.to_owned(),
            priority: event["priority"].as_str().unwrap_or("").to_owned(),
        })
    }

    /// From message JSON (`id`, `sender`, `conversation`).
    pub(crate) fn from_json(message: &Value) -> Option<Seen> {
        Some(Seen {
            id: message["id"].as_u64()?,
            conversation: message["conversation"].as_u64()?,
            sender: message["sender"].as_u64()?,
            text: message["text"].as_str()?.to_owned(),
            priority: message["priority"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// A message a `/ws/chat/` socket delivered.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) user: u64,
    pub(crate) message: Seen,
    pub(crate) round: u32,
    /// Which of the user's connections (1, 2, …) it came on.
    pub(crate) connection: u32,
}

/// An answered `GET /api/messages/queue/{user}`.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    pub(crate) user: u64,
    pub(crate) round: u32,
    pub(crate) messages: Vec<Seen>,
}

/// A drain whose answer never came although the request may have reached the daemon.
#[derive(Debug, Clone)]
pub(crate) struct LostDrain {
    pub(crate) user: u64,
    pub(crate) round: u32,
    pub(crate) limit: usize,
}

/// An acknowledged `mark_as_read` (200).
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub(crate) user: u64,
    pub(crate) conversation: u64,
    pub(crate) id: u64,
}

/// The stamp that makes every text unique and tells what sent it: a run tag, the path, the
/// worker and its sequence number, the round; then some filler of mixed scripts, so content
/// is compared beyond ASCII.
pub(crate) fn text(
    tag: &str,
    via: Via,
    worker: usize,
    seq: u64,
    round: u32,
    filler: usize,
) -> String {
    const FILLER: &str = "Sawubona, ngiyabonga. Ünïcödé ✓ 漢字 🙂 ";
    let mut text = format!("{tag} {}{worker}#{seq} r{round} ", via.name());
    text.extend(FILLER.chars().cycle().take(filler));
    text
}

/// Who is in the soak and what they do.
#[derive(Debug, Clone)]
pub(crate) struct Cast {
    pub(crate) broadcaster: u64,
    /// REST senders and their routes.
    pub(crate) rest: Vec<(u64, Vec<Route>)>,
    /// WebSocket senders (each on one `/ws/chat/` socket) and their routes.
    pub(crate) ws: Vec<(u64, Vec<Route>)>,
    /// Service sends, by sender id.
    pub(crate) service: Vec<(u64, Vec<Route>)>,
    /// Users on a `/ws/chat/` socket who only read.
    pub(crate) readers: Vec<u64>,
    /// Users who never connect: their queues are drained by the service API only.
    pub(crate) drained: Vec<u64>,
    /// Every conversation the soak created, with its participants.
    pub(crate) conversations: BTreeMap<u64, Vec<u64>>,
}

impl Cast {
    /// Every user of the soak (tokens are minted for these before the daemon starts).
    pub(crate) const USERS: [u64; 16] = [
        1, 10, 11, 12, 20, 21, 22, 30, 31, 40, 41, 42, 43, 50, 51, 52,
    ];

    /// Every user who ever holds a `/ws/chat/` socket (before the audit).
    pub(crate) fn socket_users(&self) -> Vec<u64> {
        let mut users: Vec<u64> = self.ws.iter().map(|(u, _)| *u).collect();
        users.extend(&self.readers);
        users
    }

    pub(crate) fn all_users(&self) -> Vec<u64> {
        let mut users = vec![self.broadcaster];
        users.extend(self.rest.iter().map(|(u, _)| *u));
        users.extend(self.socket_users());
        users.extend(self.service.iter().map(|(u, _)| *u));
        users.extend(&self.drained);
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Creates the conversations over REST (each as its first participant) and gives every
    /// sender its routes. Users: broadcaster 1, REST senders 10–12, WebSocket senders 20–22,
    /// service senders 30–31, socket readers 40–43, drained-only users 50–52.
    pub(crate) async fn create(api: &Api) -> Result<Cast, String> {
        let mut conversations = BTreeMap::new();
        let mut create = async |members: &[u64]| -> Result<Route, String> {
            let (creator, others) = (members[0], &members[1..]);
            let body = api
                .post(
                    As::User(creator),
                    "/api/v1/messaging/conversations/",
                    &json!({"participants": others, "subject": "soak"}),
                )
                .await
                .ok()
                .map_err(|e| format!("creating conversation {members:?}: {e}"))?;
            let id = body["id"]
                .as_u64()
                .ok_or_else(|| format!("conversation without id: {body}"))?;
            conversations.insert(id, members.to_vec());
            Ok(Route::Conversation {
                id,
                recipients: others.to_vec(),
            })
        };
        let g1 = create(&[10, 20, 40, 41, 50]).await?;
        let g2 = create(&[11, 21, 31, 42, 51, 52]).await?;
        let Route::Conversation { id: g2_id, .. } = g2 else {
            unreachable!("create answers a conversation route")
        };
        let recipients_in = |sender: u64| -> Vec<u64> {
            [11, 21, 31, 42, 51, 52]
                .into_iter()
                .filter(|u| *u != sender)
                .collect()
        };
        let mut rest = Vec::new();
        for (i, user) in [10u64, 11, 12].into_iter().enumerate() {
            let mut routes = vec![
                create(&[user, 40 + i as u64]).await?,
                create(&[user, 50 + i as u64]).await?,
            ];
            match user {
                10 => routes.push(g1.clone()),
                11 => routes.push(Route::Conversation {
                    id: g2_id,
                    recipients: recipients_in(user),
                }),
                _ => {}
            }
            rest.push((user, routes));
        }
        let mut ws = Vec::new();
        for (i, user) in [20u64, 21, 22].into_iter().enumerate() {
            let i = i as u64;
            let mut routes = vec![
                create(&[user, 40 + (i + 1) % 4]).await?,
                create(&[user, 50 + (i + 1) % 3]).await?,
            ];
            match user {
                20 => {
                    let Route::Conversation { id, .. } = &g1 else {
                        unreachable!()
                    };
                    routes.push(Route::Conversation {
                        id: *id,
                        recipients: vec![10, 40, 41, 50],
                    });
                }
                21 => routes.push(Route::Conversation {
                    id: g2_id,
                    recipients: recipients_in(user),
                }),
                _ => {}
            }
            ws.push((user, routes));
        }
        let service = vec![
            (
                30,
                vec![create(&[30, 43]).await?, Route::OneToOne { receiver: 52 }],
            ),
            (
                31,
                vec![Route::Conversation {
                    id: g2_id,
                    recipients: recipients_in(31),
                }],
            ),
        ];
        Ok(Cast {
            broadcaster: 1,
            rest,
            ws,
            service,
            readers: vec![40, 41, 42, 43],
            drained: vec![50, 51, 52],
            conversations,
        })
    }

    /// The broadcast route: every reader and drained-only user.
    pub(crate) fn broadcast_route(&self) -> Route {
        let mut recipients = self.readers.clone();
        recipients.extend(&self.drained);
        Route::Broadcast { recipients }
    }
}

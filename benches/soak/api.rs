//! The daemon's public API as the soak uses it, and nothing else: user calls with HS256
//! tokens minted from the secret the soak gave the daemon (as the host app's issuer does),
//! service calls with the shared secret, `/ws/chat/` sockets. Every answer is kept as it came
//! (status and JSON) or as lost, with whether the request can have reached the daemon: that
//! is what decides whether a write is acknowledged, refused or in doubt.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for one answer. A live daemon answers in milliseconds; a request that takes
/// this long is counted as lost (in doubt) and shows in the report.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a socket's `connection_established`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Lifetime of the minted tokens: longer than any run.
const TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;
/// Page size of history listings (the API's largest).
const HISTORY_PAGE: usize = 200;
/// Pages one listing may take at most: a bound, not an expectation.
const MAX_PAGES: usize = 100_000;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An answer, or why there was none.
#[derive(Debug)]
pub(crate) enum Reply {
    Answer {
        status: u16,
        body: Value,
    },
    /// No complete answer. `reached` is false only when no connection was made, so the
    /// daemon cannot have acted on the request.
    Lost {
        reached: bool,
        why: String,
    },
}

impl Reply {
    /// The body of a 200/201, else a description of what came instead.
    pub(crate) fn ok(self) -> Result<Value, String> {
        match self {
            Reply::Answer { status, body } if (200..300).contains(&status) => Ok(body),
            Reply::Answer { status, body } => Err(format!("{status} {body}")),
            Reply::Lost { why, .. } => Err(format!("no answer: {why}")),
        }
    }
}

/// The secrets of a run: the daemon is started with them, the soak signs and calls with them.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) jwt_secret: String,
    pub(crate) service_secret: String,
    tokens: HashMap<u64, String>,
}

impl Credentials {
    pub(crate) fn random() -> Result<Credentials, String> {
        let secret = |prefix: &str| -> Result<String, String> {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(|e| format!("random secret: {e}"))?;
            Ok(format!("{prefix}-{}", hex::encode(bytes)))
        };
        Ok(Credentials {
            jwt_secret: secret("soak-jwt")?,
            service_secret: secret("soak-service")?,
            tokens: HashMap::new(),
        })
    }

    /// Mints an access token for each of `users`, with the claims the contract names.
    pub(crate) fn mint(&mut self, users: impl IntoIterator<Item = u64>) -> Result<(), String> {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| format!("clock: {e}"))?
            .as_secs()
            + TOKEN_TTL_SECS;
        let key = EncodingKey::from_secret(self.jwt_secret.as_bytes());
        for user in users {
            let claims = json!({"user_id": user, "exp": exp, "token_type": "access"});
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
                .map_err(|e| format!("minting a token: {e}"))?;
            self.tokens.insert(user, token);
        }
        Ok(())
    }
}

/// Calls to one running daemon.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    pub(crate) addr: SocketAddr,
    credentials: Arc<Credentials>,
}

/// Who makes a call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum As {
    User(u64),
    Service,
}

impl Api {
    pub(crate) fn new(addr: SocketAddr, credentials: Arc<Credentials>) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Api {
            http,
            addr,
            credentials,
        })
    }

    pub(crate) async fn get(&self, who: As, path: &str) -> Reply {
        self.call(self.http.get(self.url(path)), who).await
    }

    pub(crate) async fn post(&self, who: As, path: &str, body: &Value) -> Reply {
        self.call(self.http.post(self.url(path)).json(body), who)
            .await
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") {
            path.to_owned()
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder, who: As) -> Reply {
        let request = match who {
            As::User(user) => request.bearer_auth(self.token(user)),
            As::Service => request.header("X-Service-Token", &self.credentials.service_secret),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Reply::Lost {
                    reached: !e.is_connect(),
                    why: describe(&e),
                };
            }
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(bytes) => Reply::Answer {
                status,
                body: serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
            },
            // The status came, the body did not: whatever it said is unknown.
            Err(e) => Reply::Lost {
                reached: true,
                why: format!("{status}, body cut off: {}", describe(&e)),
            },
        }
    }

    fn token(&self, user: u64) -> &str {
        self.credentials
            .tokens
            .get(&user)
            .map_or("no-token-minted-for-this-user", String::as_str)
    }

    /// Every message of `conversation` after id `after`, oldest first, as `user` sees them:
    /// the `?after=` pages, following each page's `previous` link (towards newer messages).
    pub(crate) async fn history(
        &self,
        user: u64,
        conversation: u64,
        after: u64,
    ) -> Result<Vec<Value>, String> {
        let mut link = format!(
            "/api/v1/messaging/messages/?conversation={conversation}&after={after}&limit={HISTORY_PAGE}"
        );
        let mut messages = Vec::new();
        for _ in 0..MAX_PAGES {
            let page =
                self.get(As::User(user), &link).await.ok().map_err(|e| {
                    format!("history of conversation {conversation} as {user}: {e}")
                })?;
            let results = page["results"]
                .as_array()
                .ok_or_else(|| format!("history page without results: {page}"))?;
            messages.extend(results.iter().cloned());
            match page["previous"].as_str() {
                Some(newer) => link = newer.to_owned(),
                None => return Ok(messages),
            }
        }
        Err(format!(
            "history of conversation {conversation}: more than {MAX_PAGES} pages"
        ))
    }

    /// Every conversation of `user` (archived or not), following `next` links.
    pub(crate) async fn conversations(&self, user: u64) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        for archived in [false, true] {
            let mut link =
                format!("/api/v1/messaging/conversations/?page_size=100&archived={archived}");
            for _ in 0..MAX_PAGES {
                let page = self
                    .get(As::User(user), &link)
                    .await
                    .ok()
                    .map_err(|e| format!("conversations of {user}: {e}"))?;
                let results = page["results"]
                    .as_array()
                    .ok_or_else(|| format!("conversation page without results: {page}"))?;
                all.extend(results.iter().cloned());
                match page["next"].as_str() {
                    Some(next) => link = next.to_owned(),
                    None => break,
                }
            }
        }
        Ok(all)
    }

    /// A `/ws/chat/` socket of `user`, once `connection_established` has come.
    pub(crate) async fn connect(&self, user: u64) -> Result<Ws, String> {
        let url = format!("ws://{}/ws/chat/?token={}", self.addr, self.token(user));
        let attempt = async {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.contains("\"connection_established\"") => {
                    Ok(ws)
                }
                Some(Ok(other)) => Err(format!("unexpected first frame: {other}")),
                Some(Err(e)) => Err(format!("read: {e}")),
                None => Err("closed before connection_established".into()),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err("no connection_established in time".into()))
    }
}

/// How a request that got no answer within [`REQUEST_TIMEOUT`] is described.
pub(crate) const TIMED_OUT: &str = "timed out";

/// A reqwest error with its causes (the top line alone says only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        TIMED_OUT.to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A server event's JSON, or `None` for frames that carry none (pings, binary).
pub(crate) fn event(frame: &Message) -> Option<Value> {
    match frame {
        Message::Text(text) => serde_json::from_str(text).ok(),
        _ => None,
    }
}

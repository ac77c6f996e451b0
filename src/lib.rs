//! # Indaba
//!
//! A single-binary messaging daemon: REST and WebSocket in one process, per-user priority
//! queues, presence, read receipts and unread counts, everything in one embedded redb file,
//! sealed at rest.
//!
//! # Layout
//!
//! Follow a message from the socket to the disk and back out to the other sockets:
//!
//! * **Socket.** [`http`] accepts connections ([`http::server`]) and routes them
//!   ([`http::router`]); [`http::upgrade`] turns a WebSocket request into a [`ws`] session.
//!   [`auth`] says who is calling (JWTs from the host app, or our own), [`users`] remembers
//!   their names, [`limits`] keeps each caller to its rate.
//! * **Protocol.** Each way in reads its input into a typed request: a REST request through
//!   the extractors of [`http::extract`] (caller, path ids, query, body), a socket frame of
//!   either dialect ([`ws::protocol`]).
//! * **Chat.** [`chat`] says what a request means, however it came in: one send request and
//!   one validation for REST, both socket dialects and the service API; broadcasts; read
//!   receipts; creating conversations. Each refusal carries one of the wire codes of
//!   [`error`], which also turns it into the contract's JSON error.
//! * **Hub.** [`hub`] knows who is connected: every socket's bounded outbox, presence, typing
//!   (relayed at once, never stored) and receipts.
//! * **Store.** [`store`] makes a message durable: [`store::ops`] says what each kind of
//!   write does to the tables (one serializable [`store::Op`], applied by the rules of its
//!   concern), [`store::engine`] folds concurrent writes into one commit and makes each batch
//!   durable through a journal before anyone hears of it, [`store::reader`] answers queries off
//!   the async runtime, and [`store::tables`] declares every table once, with the schema
//!   version; [`crypto`] seals what users wrote before it reaches the store. The types the
//!   store keeps and every layer above reads (priorities, message, conversation, membership
//!   and user records) live below them all, in [`model`].
//! * **Fan-out.** The writer reports each commit, in commit order, to the hub
//!   ([`hub::run_fanout`]), which sends it to every socket that should see it as [`events`]:
//!   typed, serialized once and shared by every socket. The REST shapes of messages and
//!   conversations, which REST answers and some events carry, are [`views`].
//!
//! Around that: [`state`] (what every handler and socket shares), [`config`] (one typed
//! struct), [`secrets`] (keys from config, or generated in dev mode), [`logging`],
//! [`metrics`], [`time`], [`shutdown`] (signals) and [`app`], which builds the state, wires it
//! all and stops it in order; nothing but `main.rs` uses [`app`]. `main.rs` only parses the
//! command line. [`admin`] serves `<data_dir>/admin.sock`, through which `indaba backup` asks
//! the running daemon for a consistent snapshot ([`store::backup`]) and `indaba admin` reaches
//! the operators' routes (`http::local`).
//!
//! Dependencies between these modules go one way (`tests/layout.rs` checks it): a module
//! never uses one that uses it back.
//!
//! # Example
//!
//! The pieces are usable on their own; tests and benches drive the same code as the daemon.
//! Sealing a message body the way the store does:
//!
//! ```
//! use indaba::config::Config;
//! use indaba::crypto::{Key, Keyring};
//!
//! let config = Config::load(None, [("INDABA_LIMITS__MAX_TEXT_BYTES".to_owned(), "4096".to_owned())])?;
//! assert_eq!(config.limits.max_text_bytes, 4096);
//!
//! let ring = Keyring::new(&Key::generate()?, &[])?;
//! let sealed = ring.seal(b"Hello, I am interested in your property");
//! assert_eq!(ring.open(&sealed)?, b"Hello, I am interested in your property");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod admin;
pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod crypto;
pub mod error;
pub mod events;
pub mod http;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod secrets;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod time;
pub mod users;
pub mod views;
pub mod ws;

/// This build's version, as `/health` and `--version` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Ids stay below 2^53 so JavaScript clients read them exactly.
pub const MAX_ID: u64 = 1 << 53;

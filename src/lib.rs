//! # Indaba
//!
//! A single-binary messaging daemon: REST and WebSocket in one process, per-user priority
//! queues, presence, read receipts and unread counts, everything in one embedded redb file,
//! sealed at rest.
//!
//! # Layout
//!
//! Follow a message from the socket to the disk:
//!
//! * [`http`] accepts connections ([`http::server`]), routes them ([`http::router`]) and serves
//!   one module per resource; [`error`] turns every failure into the contract's JSON error.
//! * [`auth`] says who is calling (JWTs from the host app, or our own).
//! * [`store`] makes it durable: [`store::ops`] says what each kind of write means (one
//!   serializable [`store::Op`], applied by the rules of its concern), [`store::engine`] folds
//!   concurrent writes into one commit and makes each batch durable through a journal before
//!   anyone hears of it, [`store::reader`] answers queries off the async runtime, and
//!   [`store::tables`] declares every table once, with the schema version. The types both the
//!   store and the layers above it use (priorities, message and conversation records) live
//!   below them all, in [`model`].
//! * [`crypto`] seals what users wrote before it reaches the store.
//!
//! Around that: [`config`] (one typed struct), [`secrets`] (keys from config, or generated in
//! dev mode), [`logging`], [`shutdown`] (signals) and [`app`], which wires it all and stops it in
//! order. `main.rs` only parses the command line.
//! [`admin`] serves `<data_dir>/admin.sock`, through which `indaba backup` asks the running
//! daemon for a consistent snapshot ([`store::backup`]).
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
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod messaging;
pub mod metrics;
pub mod model;
pub mod secrets;
pub mod shutdown;
pub mod store;
pub mod time;
pub mod users;
pub mod ws;

/// This build's version, as `/health` and `--version` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Ids stay below 2^53 so JavaScript clients read them exactly.
pub const MAX_ID: u64 = 1 << 53;

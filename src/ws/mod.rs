//! WebSocket sessions (contract section 3), with fastwebsockets' frame writer and our own
//! frame reader. The HTTP side of a socket (the upgrade, its token, what it may be) is
//! [`crate::http::upgrade`], which hands the upgraded TCP stream to a [`session`].
//!
//! * [`session`] runs one socket: it reads frames, hands what they ask for to
//!   [`crate::chat`] (sends, receipts) or the [`crate::hub`] (typing, joins), and writes the
//!   socket's outbox; [`acks`] answers its sends in order once they are durable.
//! * [`protocol`] reads the client frames of the three dialects into typed messages; what the
//!   daemon sends is in [`crate::events`].
//! * [`reader`] reads client frames without a buffer while a socket is idle; [`frames`] the
//!   frame-level rules (fragments, close frames); [`coalesce`] turns each batch of outbound
//!   frames into one write. The three are public so that the load generator's no-storage
//!   ceiling server (`benches/load/ceiling.rs`) runs the very same transport code as the daemon.

mod acks;
pub mod coalesce;
pub mod frames;
pub mod protocol;
pub mod reader;
pub mod session;

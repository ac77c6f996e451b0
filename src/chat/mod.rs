//! What the daemon's actions *mean*, whatever they came in by: a REST request, either
//! WebSocket dialect, or the service API. The HTTP handlers and the socket sessions only read
//! their input into the requests here and show the outcome in their own format.
//!
//! * [`send`]: one [`SendRequest`], one validation, then seal → commit (group commit). Fan-out
//!   is not done here: the writer reports each committed batch, in commit order, to the
//!   [`crate::hub`], so every socket sees messages in id order however many senders race.
//! * [`broadcast`]: one message to many users (the service API), checked like any send.
//! * [`read`]: read receipts and read markers, relayed live.
//! * [`conversations`]: creating conversations (the REST create, and the one-to-one
//!   conversation a service send or broadcast lands in), archiving, and telling the users'
//!   notification sockets.
//!
//! * [`moderation`]: operators disabling, enabling and erasing users and deleting messages.
//!
//! Every refusal is a [`ChatError`], which knows its wire [`crate::error::Code`].

pub mod broadcast;
pub mod conversations;
mod error;
pub mod moderation;
pub mod read;
pub mod send;

pub use error::ChatError;
pub use send::{SendRequest, Sender, Sent};

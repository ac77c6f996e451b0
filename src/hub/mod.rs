//! Who is online and what they should hear: presence now; fan-out and per-user queues join it
//! with the WebSocket layer.

pub mod presence;

pub use presence::Presence;

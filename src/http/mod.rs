//! HTTP: the accept loop, routing, and one module per resource. Handlers are thin: they read
//! the request, hand it to [`crate::chat`] (or read the store), and write the answer.
//!
//! * [`server`] accepts connections (with a limit), checks each request head before hyper reads
//!   it (so the HTTP layer's own errors are JSON too), and stops connections gracefully.
//! * [`router`] maps method and path to a handler; paths work with and without a trailing `/`.
//! * [`request`] reads bodies, JSON, queries and the caller's token, with precise 4xx errors.
//! * [`health`], [`auth`], [`conversations`], [`messages`] and [`service`] are the resources;
//!   their JSON is [`crate::views`].
//! * [`upgrade`] answers the WebSocket endpoints and hands each socket to [`crate::ws`].
//! * [`web`] serves the pages compiled into the binary (the demo chat at `/`).

pub mod auth;
pub mod conversations;
pub mod health;
pub mod messages;
pub mod request;
pub mod router;
pub mod server;
pub mod service;
pub mod upgrade;
pub mod web;

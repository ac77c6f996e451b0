//! HTTP: the accept loop, the routes by kind of caller, and one module per resource. Handlers
//! are thin: they take what they need as extractors, hand it to [`crate::chat`] (or read the
//! store), and write the answer.
//!
//! * [`server`] accepts connections (with a limit), checks each request head before hyper reads
//!   it (so the HTTP layer's own errors are JSON too), and stops connections gracefully; hyper
//!   hands each request to the axum router built by [`router`].
//! * [`router`] lists every route, grouped by who calls it (public, user, service, admin), and
//!   is the only way to add one: a route comes with its OpenAPI operation ([`openapi`]) or not
//!   at all. Paths work with and without a trailing `/` ([`layers`]).
//! * [`layers`] are tower-http's around the router: tracing (path only), trailing-slash
//!   trimming, body limits, and the place for CORS.
//! * [`extract`] reads requests: the caller (token or service secret), path ids, queries and
//!   bodies (JSON, form or multipart, as Django REST framework reads them), each with a precise
//!   4xx. [`caller`] finds who a request is from, by token, token cookie or the host app's
//!   session cookie, and checks the `Origin` of cookie users.
//! * [`health`], [`auth`], [`conversations`], [`messages`], [`service`] and [`profiles`] are
//!   the resources;
//!   their JSON is [`crate::views`] and the types beside each handler. Page-numbered lists
//!   page through [`pagination`].
//! * [`admin`] is the operators' API (contract section 9); [`local`] serves the same routes to
//!   `indaba admin` over the admin socket.
//! * [`upgrade`] answers the WebSocket endpoints and hands each socket to [`crate::ws`].
//! * [`web`] serves the pages compiled into the binary (the demo chat at `/`); [`docs`] the
//!   HTML API reference at `/api/docs/`, rendered from the [`openapi`] document by a vendored
//!   viewer.

pub mod admin;
pub mod auth;
pub mod caller;
pub mod conversations;
pub mod docs;
pub mod extract;
pub mod health;
pub mod layers;
pub mod local;
pub mod messages;
pub mod openapi;
pub mod pagination;
pub mod profiles;
pub mod router;
pub mod server;
pub mod service;
pub mod upgrade;
pub mod web;

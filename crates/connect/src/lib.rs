//! Celeste Connect: lets the signed-in users of an app connect their Microsoft Outlook, Gmail
//! and Dropbox accounts over OAuth 2.0, keeps every token on the server, encrypted and fresh,
//! and hands access tokens or proxied API calls to trusted backends.
//!
//! The module map is the architecture: `config` (one typed config) and `setting` (reading one
//! setting), `error` (one error type, mapped to HTTP in one place), `model` (newtypes and
//! views), `provider` (the catalog: a spec and a small trait per provider), `oauth` (the
//! grants), `identity` (user JWTs, service keys), `limits` (per-process rate limits), `vault`
//! (encryption at rest), `store` (the `Backend` contract: PostgreSQL, SQLite, and in memory for
//! tests), `broker` (the `Broker` and the use cases: connect, fresh tokens, disconnect,
//! rotation), `refresher` (the keep-alive worker), `http` (`AppState`, routes and pages),
//! `telemetry`, `demo`, `activity` (the access log: per-minute counts and their workers), and
//! `app` (the one place that wires them together). Dependencies point one way: `http` → `broker` → `store`/`provider`/`oauth`/`vault`; nothing in `broker`,
//! `refresher`, `store`, `provider`, `oauth` or `vault` imports `app` or `http`.

pub mod activity;
pub mod app;
pub mod broker;
pub mod config;
pub mod demo;
pub mod error;
pub mod http;
pub mod identity;
pub mod limits;
pub mod model;
pub mod oauth;
pub mod provider;
pub mod refresher;
pub mod setting;
pub mod store;
pub mod telemetry;
pub mod vault;

//! Celeste Connect: lets the signed-in users of an app connect their Microsoft Outlook account
//! (then Google and Dropbox) over OAuth 2.0, keeps every token on the server, encrypted and
//! fresh, and hands access tokens or proxied API calls to trusted backends.
//!
//! The module map is the architecture: `config` (one typed config), `error` (one error type,
//! mapped to HTTP in one place), `model` (newtypes and views), `provider` (the catalog),
//! `identity` (user JWTs, service keys), `limits` (per-process rate limits), `vault` (encryption at rest), `store` (PostgreSQL and
//! SQLite behind one contract), `broker` (use cases), `http` (routes and pages), `telemetry`,
//! `activity` (the access log), and `app` (the one place that wires them together).

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
pub mod store;
pub mod telemetry;
pub mod vault;

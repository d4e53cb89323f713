//! The one integration-test binary (each extra binary costs a link on a 2-core machine). Every
//! module tests behaviour a user or an operator would notice, over real HTTP and against real
//! PostgreSQL and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod activity;
mod api;
mod broker;
mod cache;
mod cluster;
mod connect_flow;
mod faults;
mod hardening;
mod identity;
mod keys;
mod n8n_examples;
mod newcomer;
mod postgres_rls;
mod providers;
mod status_cache;
mod store_contract;
mod supabase;
mod supabase_shape;
mod support;
mod tokens;
mod webhooks;

//! The use cases on the in-memory store, with no HTTP in between: the broker is built from its
//! parts (the store contract tests keep the memory store honest), and the provider emulator
//! runs in-process. What a caller of the broker would notice: one refresh for many concurrent
//! callers, `needs_reauth` when the provider refuses the grant, and a disconnect that deletes
//! even when the provider's revocation fails.

use std::sync::Arc;
use std::time::Duration;

use celeste_connect::broker::connect::{self, CallbackParams};
use celeste_connect::broker::{Broker, BrokerSettings, tokens};
use celeste_connect::config::RefreshSettings;
use celeste_connect::error::Error;
use celeste_connect::limits::PendingFlows;
use celeste_connect::model::{ConnectionState, UserId};
use celeste_connect::provider::{Catalog, ProviderId, dropbox, google, microsoft};
use celeste_connect::store::{NewConnection, ReturnMode, Store};
use celeste_connect::vault::Keyring;
use provider_emulator::{Emulator, EmulatorConfig, Faults, HttpFault, RegisteredClient};
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use uuid::Uuid;

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";
const ADA: &str = "108234567890123456789";
const CLIENT_ID: &str = "broker-test-client";
const CLIENT_SECRET: &str = "broker-test-secret";

struct Harness {
    broker: Arc<Broker>,
    emulator: Emulator,
    browser: reqwest::Client,
}

async fn harness() -> Harness {
    let emulator = Emulator::new(EmulatorConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let router = emulator.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let secret = || SecretString::from(CLIENT_SECRET.to_owned());
    let providers = Catalog::new([
        microsoft::on_emulator(&base, CLIENT_ID, secret()).unwrap(),
        google::on_emulator(&base, CLIENT_ID, secret()).unwrap(),
        dropbox::on_emulator(&base, CLIENT_ID, secret()).unwrap(),
    ]);
    let key = celeste_connect::vault::generate_entry("k1").unwrap();
    let broker = Arc::new(Broker::new(
        Store::memory(),
        Arc::new(Keyring::parse(key.expose_secret()).unwrap()),
        providers,
        celeste_connect::app::http_client().unwrap(),
        Arc::new(PendingFlows::new(10, Duration::from_secs(600))),
        BrokerSettings {
            refresh: RefreshSettings {
                keepalive_idle: None,
                provider_timeout: Duration::from_secs(5),
                ..RefreshSettings::default()
            },
            public_url: Url::parse("http://connect.localhost/").unwrap(),
            token_cache_capacity: 1000,
            status_cache_capacity: 1000,
            webhooks: Default::default(),
            activity: celeste_connect::config::ActivitySettings::default(),
        },
    ));
    emulator.add_client(RegisteredClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: ProviderId::ALL
            .iter()
            .map(|p| broker.redirect_uri(*p))
            .collect(),
    });
    Harness {
        broker,
        emulator,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl Harness {
    /// A whole connect through the broker: start, the user accepts at the emulator with
    /// `account`, the callback finishes in the same browser.
    async fn connect(&self, user: Uuid, provider: ProviderId, account: &str) {
        let started = connect::start(
            &self.broker,
            UserId(user),
            provider,
            "http://app.localhost".into(),
            ReturnMode::Popup,
        )
        .await
        .unwrap();
        let mut form: Vec<(String, String)> = started.auth_url.query_pairs().into_owned().collect();
        form.push(("account".into(), account.into()));
        form.push(("decision".into(), "accept".into()));
        let mut authorize = started.auth_url.clone();
        authorize.set_query(None);
        let answer = self
            .browser
            .post(authorize)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302, "the provider redirects back");
        let redirect = Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap();
        let params = callback_params(&redirect);
        let finished = connect::finish(
            &self.broker,
            provider,
            &params,
            Some(started.binding_secret.expose_secret()),
        )
        .await;
        assert_eq!(finished.result, Ok(()), "connected");
    }

    /// Makes the stored access token expired, as time would.
    async fn expire(&self, user: Uuid, provider: ProviderId) {
        let store = &self.broker.store;
        let row = store
            .token_row(UserId(user), provider)
            .await
            .unwrap()
            .unwrap();
        let summary = store
            .user_connection(UserId(user), provider)
            .await
            .unwrap()
            .unwrap();
        store
            .upsert_connection(&NewConnection {
                user_id: row.user_id,
                provider,
                access_token: row.access_token,
                refresh_token: row.refresh_token,
                key_id: row.key_id,
                expires_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                provider_user_id: row.provider_user_id,
                provider_email: row.provider_email,
                display_name: summary.display_name,
                scopes: row.scopes,
            })
            .await
            .unwrap();
        self.broker.cache.invalidate(UserId(user), provider);
    }

    async fn token(&self, user: Uuid) -> Result<Arc<tokens::FreshToken>, Error> {
        tokens::fresh_token(
            &self.broker,
            UserId(user),
            ProviderId::Microsoft,
            Duration::ZERO,
            None,
        )
        .await
    }

    fn refreshes(&self) -> u64 {
        self.emulator.stats().grant("refresh_token")
    }
}

/// What the browser brings to the callback.
fn callback_params(url: &Url) -> CallbackParams {
    let mut params = CallbackParams::default();
    for (k, v) in url.query_pairs() {
        match &*k {
            "code" => params.code = Some(v.into_owned()),
            "state" => params.state = Some(v.into_owned()),
            "error" => params.error = Some(v.into_owned()),
            _ => {}
        }
    }
    params
}

#[tokio::test]
async fn fifty_concurrent_fetches_of_an_expired_token_refresh_once() {
    let h = harness().await;
    let user = Uuid::new_v4();
    h.connect(user, ProviderId::Microsoft, ADELE).await;
    let before = h.token(user).await.unwrap();
    assert_eq!(h.refreshes(), 0, "a fresh connection needs no refresh");

    h.expire(user, ProviderId::Microsoft).await;
    let fetches = (0..50).map(|_| h.token(user));
    let answers = futures::future::join_all(fetches).await;
    let tokens: Vec<String> = answers
        .into_iter()
        .map(|a| a.unwrap().access_token.expose_secret().to_owned())
        .collect();
    assert_eq!(h.refreshes(), 1, "one provider refresh for fifty callers");
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "everyone got the same token"
    );
    assert_ne!(
        tokens[0],
        before.access_token.expose_secret(),
        "a new token"
    );
}

#[tokio::test]
async fn a_refused_grant_becomes_needs_reauth_once() {
    let h = harness().await;
    let user = Uuid::new_v4();
    h.connect(user, ProviderId::Microsoft, ADELE).await;
    h.emulator.revoke_grant(ADELE);
    h.expire(user, ProviderId::Microsoft).await;
    assert!(matches!(h.token(user).await, Err(Error::ReauthRequired)));
    let row = h
        .broker
        .store
        .token_row(UserId(user), ProviderId::Microsoft)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ConnectionState::NeedsReauth);
    assert_eq!(h.refreshes(), 1);
    assert!(matches!(h.token(user).await, Err(Error::ReauthRequired)));
    assert_eq!(h.refreshes(), 1, "no second try at the provider");
}

#[tokio::test]
async fn a_refresh_token_microsoft_cannot_parse_becomes_needs_reauth_not_an_outage() {
    let h = harness().await;
    let user = Uuid::new_v4();
    h.connect(user, ProviderId::Microsoft, ADELE).await;
    // A truncated refresh token: Microsoft (and the emulator) answer invalid_grant AADSTS9002313.
    let store = &h.broker.store;
    let row = store
        .token_row(UserId(user), ProviderId::Microsoft)
        .await
        .unwrap()
        .unwrap();
    let place = connect::token_place("refresh_token", UserId(user), ProviderId::Microsoft);
    let garbled = h.broker.keyring.seal(&place, b"0.AXgA-truncat").unwrap();
    store
        .upsert_connection(&NewConnection {
            user_id: row.user_id,
            provider: ProviderId::Microsoft,
            access_token: row.access_token,
            refresh_token: Some(garbled),
            key_id: row.key_id,
            expires_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
            provider_user_id: row.provider_user_id,
            provider_email: row.provider_email,
            display_name: None,
            scopes: row.scopes,
        })
        .await
        .unwrap();
    h.broker
        .cache
        .invalidate(UserId(user), ProviderId::Microsoft);
    assert!(matches!(h.token(user).await, Err(Error::ReauthRequired)));
    let row = store
        .token_row(UserId(user), ProviderId::Microsoft)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ConnectionState::NeedsReauth);
    assert_eq!(
        h.refreshes(),
        1,
        "one try at the provider, then the user is asked"
    );
}

#[tokio::test]
async fn a_disconnect_deletes_even_when_the_revocation_fails() {
    let h = harness().await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    h.connect(user, ProviderId::Google, ADA).await;
    // Another account: a disconnect keeps a grant another user of the same account uses.
    h.connect(other, ProviderId::Google, "117654321098765432101")
        .await;
    h.emulator.set_faults(Faults {
        revoke: Some(HttpFault::server_error(503)),
        ..Faults::default()
    });
    celeste_connect::broker::disconnect(
        &h.broker,
        UserId(user),
        ProviderId::Google,
        celeste_connect::activity::Actor::User,
    )
    .await
    .unwrap();
    // The disconnect is in the user's history, as the user's own.
    let counted = h.broker.activity.take();
    assert!(counted.iter().any(|(k, t)| k.user == UserId(user)
        && k.kind == celeste_connect::activity::Kind::Disconnected
        && k.actor == celeste_connect::activity::Actor::User
        && t.count == 1));
    let store = &h.broker.store;
    assert!(
        store
            .token_row(UserId(user), ProviderId::Google)
            .await
            .unwrap()
            .is_none(),
        "deleted although the provider answered 503"
    );
    assert_eq!(h.emulator.stats().revocations("google"), 0);
    assert_eq!(
        h.emulator
            .stats()
            .endpoint(provider_emulator::endpoint::GOOGLE_REVOKE),
        1,
        "the revocation was tried"
    );

    // Once the provider answers again, a disconnect revokes there too.
    h.emulator.set_faults(Faults::default());
    celeste_connect::broker::disconnect(
        &h.broker,
        UserId(other),
        ProviderId::Google,
        celeste_connect::activity::Actor::User,
    )
    .await
    .unwrap();
    assert_eq!(h.emulator.stats().revocations("google"), 1);
    assert!(
        store
            .token_row(UserId(other), ProviderId::Google)
            .await
            .unwrap()
            .is_none()
    );
}

//! What the emulator is set up with: registered client applications, test accounts (Microsoft,
//! Google, Dropbox) and the
//! lifetimes and marker it issues tokens with. Plain data with demo defaults; it must not hold
//! runtime state (codes, tokens, counters live in `state`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The marker every code, access token and refresh token contains, so tests can grep logs and
/// databases for leaks.
pub const DEFAULT_MARKER: &str = "TOKMARK";

/// Microsoft's authorization codes live about ten minutes.
pub const DEFAULT_CODE_LIFETIME: Duration = Duration::from_secs(600);

/// An app registration: a confidential web client with a secret and exact redirect URIs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

// The secret never reaches a log line through `{:?}`.
impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

/// Work/school (Entra ID) accounts sign in at `organizations` and tenant paths; personal
/// (Microsoft account) ones at `consumers`; both at `common`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    #[default]
    Work,
    Personal,
}

/// A user who can be picked on the consent page; `/v1.0/me` answers with these properties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TestAccount {
    /// Graph `id`: a GUID for work accounts, a 16-hex-digit id for personal ones.
    pub id: String,
    pub kind: AccountKind,
    /// Often null in real Graph answers, above all for personal accounts.
    pub mail: Option<String>,
    pub user_principal_name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub job_title: Option<String>,
    pub mobile_phone: Option<String>,
    pub office_location: Option<String>,
    pub preferred_language: Option<String>,
    pub business_phones: Vec<String>,
    /// Size of the seeded mailbox served by `/v1.0/me/messages`.
    pub message_count: usize,
}

impl Default for TestAccount {
    fn default() -> Self {
        Self {
            id: String::new(),
            kind: AccountKind::Work,
            mail: None,
            user_principal_name: String::new(),
            display_name: String::new(),
            given_name: None,
            surname: None,
            job_title: None,
            mobile_phone: None,
            office_location: None,
            preferred_language: None,
            business_phones: Vec::new(),
            message_count: 25,
        }
    }
}

/// A Google or Dropbox test account: Google's `sub` or Dropbox's `account_id`, and what the
/// profile answers. `item_count` is the size of its Gmail mailbox or Dropbox `/Documents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAccount {
    pub id: String,
    pub email: String,
    pub name: String,
    pub given_name: String,
    pub family_name: String,
    pub item_count: usize,
}

impl ProviderAccount {
    fn new(id: &str, email: &str, given_name: &str, family_name: &str) -> Self {
        Self {
            id: id.to_owned(),
            email: email.to_owned(),
            name: format!("{given_name} {family_name}"),
            given_name: given_name.to_owned(),
            family_name: family_name.to_owned(),
            item_count: 25,
        }
    }
}

/// Two Google accounts (`sub` is 21 digits, as Google's are).
pub fn google_demo_accounts() -> Vec<ProviderAccount> {
    vec![
        ProviderAccount::new(
            "108234567890123456789",
            "ada.lovelace@gmail.example",
            "Ada",
            "Lovelace",
        ),
        ProviderAccount::new(
            "117654321098765432101",
            "grace.hopper@gmail.example",
            "Grace",
            "Hopper",
        ),
    ]
}

/// Two Dropbox accounts (`account_id` is `dbid:` and 35 characters, as Dropbox's are).
pub fn dropbox_demo_accounts() -> Vec<ProviderAccount> {
    vec![
        ProviderAccount::new(
            "dbid:AADx7bYc2qLcQ1m3vT9kP0sWnE4rUfHgJ",
            "alan.turing@dropbox.example",
            "Alan",
            "Turing",
        ),
        ProviderAccount::new(
            "dbid:AAB9kLmN0pQrStUvWxYz1234567890abCdE",
            "katherine.johnson@dropbox.example",
            "Katherine",
            "Johnson",
        ),
    ]
}

/// Everything the emulator starts with.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub clients: Vec<RegisteredClient>,
    pub accounts: Vec<TestAccount>,
    pub google_accounts: Vec<ProviderAccount>,
    pub dropbox_accounts: Vec<ProviderAccount>,
    /// `None`: a random 3600..=5400 s per token, as Microsoft does (60–90 min).
    pub access_token_lifetime: Option<Duration>,
    pub code_lifetime: Duration,
    pub marker: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            accounts: demo_accounts(),
            google_accounts: google_demo_accounts(),
            dropbox_accounts: dropbox_demo_accounts(),
            access_token_lifetime: None,
            code_lifetime: DEFAULT_CODE_LIFETIME,
            marker: DEFAULT_MARKER.to_owned(),
        }
    }
}

impl EmulatorConfig {
    /// One registered client and the three demo accounts.
    pub fn demo(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            clients: vec![RegisteredClient {
                client_id: client_id.to_owned(),
                client_secret: client_secret.to_owned(),
                redirect_uris: vec![redirect_uri.to_owned()],
            }],
            ..Self::default()
        }
    }
}

/// Two work accounts and one personal account whose `mail` is null, as Graph often answers.
pub fn demo_accounts() -> Vec<TestAccount> {
    vec![
        TestAccount {
            id: "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d".to_owned(),
            kind: AccountKind::Work,
            mail: Some("adele.vance@contoso.example".to_owned()),
            user_principal_name: "adele.vance@contoso.example".to_owned(),
            display_name: "Adele Vance".to_owned(),
            given_name: Some("Adele".to_owned()),
            surname: Some("Vance".to_owned()),
            job_title: Some("Product Marketing Manager".to_owned()),
            mobile_phone: None,
            office_location: Some("18/2111".to_owned()),
            preferred_language: Some("en-US".to_owned()),
            business_phones: vec!["+1 425 555 0109".to_owned()],
            message_count: 25,
        },
        TestAccount {
            id: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".to_owned(),
            kind: AccountKind::Work,
            mail: Some("lee.gu@contoso.example".to_owned()),
            user_principal_name: "lee.gu@contoso.example".to_owned(),
            display_name: "Lee Gu".to_owned(),
            given_name: Some("Lee".to_owned()),
            surname: Some("Gu".to_owned()),
            job_title: Some("Director".to_owned()),
            mobile_phone: Some("+1 206 555 0113".to_owned()),
            office_location: Some("23/3101".to_owned()),
            preferred_language: Some("en-US".to_owned()),
            business_phones: vec![],
            message_count: 25,
        },
        TestAccount {
            id: "0b1c2d3e4f5a6b7c".to_owned(),
            kind: AccountKind::Personal,
            mail: None,
            user_principal_name: "sam.taylor@outlook.example".to_owned(),
            display_name: "Sam Taylor".to_owned(),
            given_name: Some("Sam".to_owned()),
            surname: Some("Taylor".to_owned()),
            job_title: None,
            mobile_phone: None,
            office_location: None,
            preferred_language: None,
            business_phones: vec![],
            message_count: 25,
        },
    ]
}

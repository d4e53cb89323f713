//! The `scope` parameter: OIDC scopes (bare only), Microsoft Graph permissions (bare or
//! `https://graph.microsoft.com/`-prefixed, case-insensitive), `.default`. Parsing and the words
//! shown on the consent page; it must not decide what a user consented to (`state` does).

use crate::identity::error::AadError;

pub(crate) const GRAPH_RESOURCE: &str = "https://graph.microsoft.com/";
/// Microsoft Graph's application id, the other way to name the resource.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000/";

/// Graph delegated permissions the emulator knows, with the words a user sees.
const GRAPH_PERMISSIONS: &[(&str, &str)] = &[
    ("User.Read", "Sign you in and read your profile"),
    ("User.ReadBasic.All", "Read the basic profiles of all users"),
    ("Mail.Read", "Read your mail"),
    ("Mail.ReadBasic", "Read basic properties of your mail"),
    ("Mail.ReadWrite", "Read and write access to your mail"),
    ("Mail.Send", "Send mail as you"),
    ("MailboxSettings.Read", "Read your mailbox settings"),
    (
        "MailboxSettings.ReadWrite",
        "Read and write your mailbox settings",
    ),
    ("Calendars.Read", "Read your calendars"),
    ("Contacts.Read", "Read your contacts"),
    ("Files.Read", "Read your files"),
];

const OIDC_SCOPES: &[(&str, &str)] = &[
    ("openid", "Sign you in"),
    ("profile", "View your basic profile"),
    ("email", "View your email address"),
    (
        "offline_access",
        "Maintain access to data you have given it access to",
    ),
];

/// A parsed `scope` value. Graph permissions are kept in their canonical spelling, in request
/// order, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scopes {
    pub graph: Vec<&'static str>,
    pub default_scope: bool,
    pub openid: bool,
    pub profile: bool,
    pub email: bool,
    pub offline_access: bool,
}

impl Scopes {
    /// Parses a space-separated scope string. An empty one is an error for the caller to word.
    pub fn parse(raw: &str) -> Result<Self, AadError> {
        let mut scopes = Self::default();
        for item in raw.split_whitespace() {
            if let Some(name) = oidc_name(item) {
                match name {
                    "openid" => scopes.openid = true,
                    "profile" => scopes.profile = true,
                    "email" => scopes.email = true,
                    _ => scopes.offline_access = true,
                }
                continue;
            }
            let permission = strip_graph_prefix(item).ok_or_else(|| invalid_scope(item))?;
            if oidc_name(permission).is_some() {
                // OIDC scopes must be bare: `https://graph.microsoft.com/offline_access` is refused.
                return Err(invalid_scope(item));
            }
            if permission == ".default" {
                scopes.default_scope = true;
                continue;
            }
            let canonical = graph_permission(permission).ok_or_else(|| unknown_permission(item))?;
            if !scopes.graph.contains(&canonical) {
                scopes.graph.push(canonical);
            }
        }
        if scopes.default_scope && !scopes.graph.is_empty() {
            return Err(AadError::invalid_scope(
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope \
                     '{raw}' is not valid. .default scope can't be combined with resource-specific scopes."
                ),
            ));
        }
        Ok(scopes)
    }

    /// The plain words for the consent page, OIDC scopes last.
    pub fn descriptions(&self, graph: &[&'static str]) -> Vec<&'static str> {
        let mut words: Vec<&'static str> = graph.iter().filter_map(|p| describe(p)).collect();
        for (flag, name) in [
            (self.openid, "openid"),
            (self.profile, "profile"),
            (self.email, "email"),
            (self.offline_access, "offline_access"),
        ] {
            if flag && let Some((_, text)) = OIDC_SCOPES.iter().find(|(n, _)| *n == name) {
                words.push(text);
            }
        }
        words
    }
}

/// The `scope` value of a token response: granted Graph permissions, fully qualified, as in
/// Microsoft's documented sample. OIDC scopes are not echoed.
pub(crate) fn granted_scope_string(graph: &[&'static str]) -> String {
    graph
        .iter()
        .map(|p| format!("{GRAPH_RESOURCE}{p}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn oidc_name(item: &str) -> Option<&'static str> {
    OIDC_SCOPES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| name.eq_ignore_ascii_case(item))
}

fn strip_graph_prefix(item: &str) -> Option<&str> {
    for prefix in [GRAPH_RESOURCE, GRAPH_APP_ID] {
        if item.len() >= prefix.len()
            && item.is_char_boundary(prefix.len())
            && item[..prefix.len()].eq_ignore_ascii_case(prefix)
        {
            return Some(&item[prefix.len()..]);
        }
    }
    // Anything naming another resource (a URI or `api://...`) is not emulated.
    if item.contains('/') || item.contains(':') {
        None
    } else {
        Some(item)
    }
}

fn graph_permission(name: &str) -> Option<&'static str> {
    GRAPH_PERMISSIONS
        .iter()
        .map(|(canonical, _)| *canonical)
        .find(|canonical| canonical.eq_ignore_ascii_case(name))
}

fn describe(permission: &str) -> Option<&'static str> {
    GRAPH_PERMISSIONS
        .iter()
        .find(|(name, _)| *name == permission)
        .map(|(_, text)| *text)
}

fn invalid_scope(item: &str) -> AadError {
    AadError::invalid_scope(
        70011,
        format!(
            "The provided value for the input parameter 'scope' is not valid. The scope '{item}' is not valid."
        ),
    )
}

fn unknown_permission(item: &str) -> AadError {
    AadError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_client",
        650053,
        format!(
            "The application asked for scope '{item}' that doesn't exist on the resource \
             '00000003-0000-0000-c000-000000000000'. Contact the app vendor."
        ),
    )
}

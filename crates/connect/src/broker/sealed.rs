//! The one conversion from a provider's token answer to the stored columns, used by the connect
//! flow and by every refresh: each token sealed under the active key for its own place (table,
//! column, user, provider), the expiry clamped, the granted scopes read. An answer without a
//! refresh token keeps the one held before (re-sealed), so a Google reconnect without consent
//! or a Dropbox refresh never loses the grant. Nothing here logs or stores plaintext.

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::model::UserId;
use crate::oauth::{MAX_TOKEN_LIFETIME_SECS, TokenSet};
use crate::provider::ProviderId;
use crate::vault::{Keyring, Place, VaultError};

/// Where a token column is sealed: the ciphertext opens only for this row and column.
pub fn token_place(column: &'static str, user: UserId, provider: ProviderId) -> Place {
    Place {
        table: "integration_tokens",
        column,
        user,
        provider,
    }
}

/// A provider's token answer, sealed for `integration_tokens`.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub access_token: Vec<u8>,
    /// The new refresh token, else the previous one re-sealed; `None` only when neither exists.
    pub refresh_token: Option<Vec<u8>>,
    /// The key both tokens are sealed with.
    pub key_id: String,
    pub expires_at: OffsetDateTime,
    /// The scopes the provider says it granted; `None` when it did not say.
    pub scopes: Option<Vec<String>>,
}

impl Sealed {
    /// Seals `response` for `user`'s connection to `provider`; `previous_refresh` is the refresh
    /// token held before, kept when the answer carries none.
    pub fn from_response(
        keyring: &Keyring,
        user: UserId,
        provider: ProviderId,
        response: &TokenSet,
        previous_refresh: Option<&SecretString>,
    ) -> Result<Self, VaultError> {
        let seal = |column, secret: &SecretString| {
            keyring.seal(
                &token_place(column, user, provider),
                secret.expose_secret().as_bytes(),
            )
        };
        let refresh_token = response
            .refresh_token
            .as_ref()
            .or(previous_refresh)
            .map(|rt| seal("refresh_token", rt))
            .transpose()?;
        let expires_in = response.expires_in.min(MAX_TOKEN_LIFETIME_SECS);
        Ok(Self {
            access_token: seal("access_token", &response.access_token)?,
            refresh_token,
            key_id: keyring.active_key_id().to_owned(),
            expires_at: OffsetDateTime::now_utc()
                + time::Duration::seconds(expires_in.cast_signed()),
            scopes: response
                .scope
                .as_deref()
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        let entry = crate::vault::generate_entry("k1").unwrap();
        Keyring::parse(entry.expose_secret()).unwrap()
    }

    fn answer(refresh: Option<&str>, scope: Option<&str>) -> TokenSet {
        TokenSet {
            access_token: SecretString::from("at-new"),
            refresh_token: refresh.map(SecretString::from),
            expires_in: 3600,
            scope: scope.map(str::to_owned),
            token_type: Some("Bearer".into()),
        }
    }

    fn open(keyring: &Keyring, column: &'static str, user: UserId, sealed: &[u8]) -> String {
        keyring
            .open_string(&token_place(column, user, ProviderId::Google), sealed)
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn an_answer_without_a_refresh_token_keeps_the_previous_one() {
        let keyring = keyring();
        let user = UserId(uuid::Uuid::new_v4());
        let previous = SecretString::from("rt-old");
        let sealed = Sealed::from_response(
            &keyring,
            user,
            ProviderId::Google,
            &answer(None, None),
            Some(&previous),
        )
        .unwrap();
        let refresh = sealed.refresh_token.unwrap();
        assert_eq!(open(&keyring, "refresh_token", user, &refresh), "rt-old");
        assert_eq!(
            open(&keyring, "access_token", user, &sealed.access_token),
            "at-new"
        );
        assert_eq!(sealed.scopes, None, "no scope in the answer: none claimed");
    }

    #[test]
    fn a_new_refresh_token_replaces_the_previous_one_and_scopes_are_read() {
        let keyring = keyring();
        let user = UserId(uuid::Uuid::new_v4());
        let sealed = Sealed::from_response(
            &keyring,
            user,
            ProviderId::Google,
            &answer(Some("rt-new"), Some("openid  email")),
            Some(&SecretString::from("rt-old")),
        )
        .unwrap();
        let refresh = sealed.refresh_token.unwrap();
        assert_eq!(open(&keyring, "refresh_token", user, &refresh), "rt-new");
        assert_eq!(sealed.scopes.unwrap(), ["openid", "email"]);
        assert_eq!(sealed.key_id, "k1");
        // Sealed for this user only: another user's place does not open it.
        let other = UserId(uuid::Uuid::new_v4());
        assert!(
            keyring
                .open(
                    &token_place("access_token", other, ProviderId::Google),
                    &sealed.access_token
                )
                .is_err()
        );
    }

    #[test]
    fn no_refresh_token_anywhere_stays_none_and_expiry_is_clamped() {
        let keyring = keyring();
        let user = UserId(uuid::Uuid::new_v4());
        let mut long = answer(None, None);
        long.expires_in = u64::MAX;
        let sealed =
            Sealed::from_response(&keyring, user, ProviderId::Google, &long, None).unwrap();
        assert!(sealed.refresh_token.is_none());
        assert!(sealed.expires_at <= OffsetDateTime::now_utc() + time::Duration::days(1));
    }
}

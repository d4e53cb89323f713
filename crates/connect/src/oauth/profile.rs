//! Who the tokens belong to: the provider's profile of the signed-in account, read where the
//! provider's [`ProfileSpec`](crate::provider::ProfileSpec) says (Graph `/v1.0/me`, Google's
//! userinfo, Dropbox's `get_current_account`).

use secrecy::ExposeSecret;
use serde_json::Value;

use super::ProviderError;
use crate::provider::{ConfiguredProvider, ProfileCall};

#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub provider_user_id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

/// A non-empty string at `pointer`; ids may be numbers in some answers.
fn text_at(answer: &Value, pointer: &str) -> Option<String> {
    match answer.pointer(pointer)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads the account out of a profile answer, as `provider`'s spec says.
pub fn read(provider: &ConfiguredProvider, answer: &Value) -> Option<Profile> {
    let spec = &provider.spec().profile;
    Some(Profile {
        provider_user_id: text_at(answer, spec.id)?,
        email: spec.email.iter().find_map(|p| text_at(answer, p)),
        display_name: text_at(answer, spec.name),
    })
}

pub async fn fetch(
    http: &reqwest::Client,
    provider: &ConfiguredProvider,
    access_token: &secrecy::SecretString,
) -> Result<Profile, ProviderError> {
    let request = match provider.spec().profile.call {
        ProfileCall::Get => http.get(provider.profile_url.clone()),
        ProfileCall::PostNull => http
            .post(provider.profile_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("null"),
    };
    let response = request
        .bearer_auth(access_token.expose_secret())
        .send()
        .await
        .map_err(|e| ProviderError::from_transport(&e))?;
    if !response.status().is_success() {
        return Err(ProviderError::from_response(response).await);
    }
    let answer: Value = response
        .json()
        .await
        .map_err(|_| ProviderError::Malformed("profile".into()))?;
    read(provider, &answer).ok_or_else(|| ProviderError::Malformed("profile without an id".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{dropbox, google, microsoft};
    use secrecy::SecretString;
    use serde_json::json;

    fn on(
        make: fn(&url::Url, &str, SecretString) -> Result<ConfiguredProvider, url::ParseError>,
    ) -> ConfiguredProvider {
        make(
            &url::Url::parse("http://127.0.0.1:9/").unwrap(),
            "id",
            SecretString::from("s".to_owned()),
        )
        .unwrap()
    }

    #[test]
    fn each_providers_profile_is_read_where_it_puts_it() {
        let graph = json!({"id": "g-1", "mail": null, "userPrincipalName": "sam@outlook.example", "displayName": "Sam"});
        assert_eq!(
            read(&on(microsoft::on_emulator), &graph),
            Some(Profile {
                provider_user_id: "g-1".into(),
                email: Some("sam@outlook.example".into()),
                display_name: Some("Sam".into())
            })
        );
        let userinfo = json!({"sub": "1234", "email": "ann@gmail.example", "email_verified": true, "name": "Ann"});
        assert_eq!(
            read(&on(google::on_emulator), &userinfo)
                .unwrap()
                .provider_user_id,
            "1234"
        );
        let account = json!({"account_id": "dbid:AAH", "email": "bo@example.com", "name": {"display_name": "Bo Lee"}});
        let profile = read(&on(dropbox::on_emulator), &account).unwrap();
        assert_eq!(profile.display_name.as_deref(), Some("Bo Lee"));
        assert_eq!(
            read(&on(dropbox::on_emulator), &json!({"email": "x"})),
            None
        );
    }
}

//! Who the tokens belong to: the provider's profile of the signed-in account (Microsoft Graph
//! `/v1.0/me`: `id`, `mail` falling back to `userPrincipalName`, `displayName`).

use secrecy::ExposeSecret;
use serde::Deserialize;

use super::ProviderError;
use crate::provider::ProviderEndpoints;

#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub provider_user_id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphMe {
    id: String,
    mail: Option<String>,
    user_principal_name: Option<String>,
    display_name: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub async fn fetch(
    http: &reqwest::Client,
    provider: &ProviderEndpoints,
    access_token: &secrecy::SecretString,
) -> Result<Profile, ProviderError> {
    let response = http
        .get(provider.profile_url.clone())
        .bearer_auth(access_token.expose_secret())
        .send()
        .await
        .map_err(|e| ProviderError::from_transport(&e))?;
    if !response.status().is_success() {
        return Err(ProviderError::from_response(response).await);
    }
    let me: GraphMe = response
        .json()
        .await
        .map_err(|_| ProviderError::Malformed("profile".into()))?;
    Ok(Profile {
        provider_user_id: me.id,
        email: non_empty(me.mail).or_else(|| non_empty(me.user_principal_name)),
        display_name: non_empty(me.display_name),
    })
}

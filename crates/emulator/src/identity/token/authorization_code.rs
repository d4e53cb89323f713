//! The `authorization_code` grant (providers.md §1.4, §1.10 item 2): a code is single use, lives
//! `code_lifetime`, and is bound to client, exact redirect URI, PKCE challenge, tenant path and
//! scopes. It must not mint tokens (the endpoint does) or authenticate the client.

use tokio::time::Instant;

use crate::identity::error::AadError;
use crate::identity::params::Params;
use crate::identity::scope::Scopes;
use crate::identity::tenant::Tenant;
use crate::identity::token::Grant;
use crate::state::State as Memory;

pub(super) fn redeem(
    memory: &mut Memory,
    client_id: &str,
    tenant: &Tenant,
    params: &Params,
    now: Instant,
) -> Result<Grant, AadError> {
    let value = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let looks_like_ours = memory.is_our_token(value, "code");
    let Some(code) = memory.code_mut(value) else {
        return Err(if looks_like_ours {
            AadError::invalid_grant(70000, "Provided grant is invalid or malformed.")
        } else {
            AadError::malformed_grant()
        });
    };
    if code.redeemed {
        return Err(AadError::invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code \
             or use an existing refresh token.",
        ));
    }
    if now >= code.expires_at {
        return Err(AadError::invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. \
             Send a new interactive authorization request for this user and resource.",
        ));
    }
    if code.client_id != client_id {
        return Err(AadError::invalid_grant(
            70000,
            "Provided grant is invalid or malformed.",
        ));
    }
    if code.tenant_path != tenant.path {
        return Err(AadError::invalid_grant(
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        ));
    }
    if code.redirect_uri != redirect_uri {
        // Observed wording (older responses paired it with 70002); error is invalid_client.
        return Err(AadError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_client",
            50011,
            format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' \
                 provided when requesting Authorization code.",
                code.redirect_uri
            ),
        ));
    }
    if let Some(challenge) = &code.challenge {
        match params.get("code_verifier") {
            None => {
                return Err(AadError::invalid_grant(
                    50148,
                    "The code_verifier does not match the code_challenge supplied in the \
                     authorization request for PKCE.",
                ));
            }
            Some(verifier) if !challenge.is_satisfied_by(verifier) => {
                return Err(AadError::invalid_grant(
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the \
                     authorization request.",
                ));
            }
            Some(_) => {}
        }
    }
    let account_id = code.account_id.clone();
    let offline_access = code.scopes.offline_access;
    let code_graph = code.scopes.graph.clone();

    let consented = memory
        .consent(&account_id, client_id)
        .map(|c| c.graph.clone())
        .ok_or_else(|| AadError::consent_required(client_id))?;
    if let Some(raw) = params.raw("scope") {
        if raw.trim().is_empty() {
            return Err(AadError::invalid_scope(
                28003,
                "Provided value for the input parameter scope cannot be empty when requesting an \
                 access token using the provided authorization code. Please specify a valid scope.",
            ));
        }
        let asked = Scopes::parse(raw)?;
        if asked.graph.iter().any(|p| !consented.contains(p)) {
            return Err(AadError::consent_required(client_id));
        }
    }
    if code_graph.iter().any(|p| !consented.contains(p)) {
        // Consent was withdrawn between the consent page and the redemption.
        return Err(AadError::consent_required(client_id));
    }
    if let Some(code) = memory.code_mut(value) {
        code.redeemed = true;
    }
    // Consent is cumulative: the token covers everything the user granted this app.
    Ok(Grant {
        account_id,
        graph: consented,
        refresh: offline_access,
    })
}

//! The `refresh_token` grant (providers.md §1.5): every use returns a new refresh token and the
//! old one keeps working, unless a test switch (revoked grant 50173, withdrawn consent 65001,
//! expired 700082) or the 90-day inactivity limit says otherwise. It must not mint tokens or
//! authenticate the client.

use tokio::time::Instant;

use crate::identity::error::{AadError, aad_message_time};
use crate::identity::params::Params;
use crate::identity::scope::Scopes;
use crate::identity::token::Grant;
use crate::state::{RefreshDenial, State as Memory};

pub(super) fn redeem(
    memory: &mut Memory,
    client_id: &str,
    params: &Params,
    now: Instant,
) -> Result<Grant, AadError> {
    let value = params.require("refresh_token")?;
    let looks_like_ours = memory.is_our_token(value, "rt");
    let Some(token) = memory.refresh_token(value).cloned() else {
        return Err(if looks_like_ours {
            AadError::invalid_grant(70000, "Provided grant is invalid or malformed.")
        } else {
            AadError::malformed_grant()
        });
    };
    if token.client_id != client_id {
        return Err(AadError::invalid_grant(
            70000,
            "Provided grant is invalid or malformed.",
        ));
    }
    let issued = aad_message_time(token.issued_at);
    if let Some(cutoff) = memory.refresh_cutoff(&token) {
        return Err(match cutoff.reason {
            RefreshDenial::Revoked => AadError::invalid_grant(
                50173,
                format!(
                    "The provided grant has expired due to it being revoked, a fresh auth token \
                     is needed. The user might have changed or reset their password. The grant \
                     was issued on '{issued}' and the TokensValidFrom date (before which tokens \
                     are not valid) for this user is '{}'.",
                    aad_message_time(cutoff.at)
                ),
            ),
            RefreshDenial::ConsentWithdrawn => AadError::consent_required(client_id),
            RefreshDenial::Expired => expired_by_inactivity(&issued),
        });
    }
    if now >= token.expires_at {
        return Err(expired_by_inactivity(&issued));
    }
    let consented = memory
        .consent(&token.account_id, client_id)
        .map(|c| c.graph.clone())
        .ok_or_else(|| AadError::consent_required(client_id))?;
    if let Some(raw) = params.get("scope") {
        // Must be what was consented or a subset of it.
        let asked = Scopes::parse(raw)?;
        if asked.graph.iter().any(|p| !consented.contains(p)) {
            return Err(AadError::consent_required(client_id));
        }
    }
    Ok(Grant {
        account_id: token.account_id,
        graph: consented,
        refresh: true,
    })
}

fn expired_by_inactivity(issued: &str) -> AadError {
    AadError::invalid_grant(
        700082,
        format!(
            "The refresh token has expired due to inactivity. The token was issued on {issued} \
             and was inactive for 90.00:00:00."
        ),
    )
}

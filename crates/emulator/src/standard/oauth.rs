//! The authorize page (with an account picker), the token endpoint and the revocation endpoint
//! of the Google and Dropbox stand-ins. Client and redirect URI are checked first and their
//! failures are an error page, never a redirect; the rest goes back to the client. Token errors
//! are `{"error", "error_description"}` with each provider's statuses (Google answers
//! `invalid_client` with 401, Dropbox with 400).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use super::memory::{Code, RefreshToken};
use super::{Endpoint, Flavor, bearer, fault_response, no_store};
use crate::config::ProviderAccount;
use crate::faults::ConsentFault;
use crate::html;
use crate::identity::params::Params;
use crate::identity::pkce::Challenge;
use crate::state::State as Memory;
use crate::{Emulator, Surface};

/// A token-endpoint or authorize error: `error`, a description, and the HTTP status.
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    fn invalid_client(flavor: Flavor, description: &str) -> Self {
        let status = match flavor {
            Flavor::Google => StatusCode::UNAUTHORIZED,
            Flavor::Dropbox => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_client", description)
    }

    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        no_store(&mut response);
        response
    }
}

fn params_or_default(body: &[u8]) -> Params {
    Params::parse(body).unwrap_or_default()
}

// --- authorize -----------------------------------------------------------------------------

pub(crate) async fn google_show(state: State<Emulator>, query: RawQuery) -> Response {
    show(Flavor::Google, state, query).await
}

pub(crate) async fn dropbox_show(state: State<Emulator>, query: RawQuery) -> Response {
    show(Flavor::Dropbox, state, query).await
}

pub(crate) async fn google_decide(state: State<Emulator>, body: Bytes) -> Response {
    decide(Flavor::Google, state, body).await
}

pub(crate) async fn dropbox_decide(state: State<Emulator>, body: Bytes) -> Response {
    decide(Flavor::Dropbox, state, body).await
}

/// The request, once client and redirect URI are known good.
struct Authorize {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    scopes: Vec<String>,
    challenge: Option<Challenge>,
    offline: bool,
    force_consent: bool,
    include_granted_scopes: bool,
}

/// An error page: the user stays at the provider.
fn error_page(flavor: Flavor, title: &str, detail: &str) -> Response {
    let body = format!(
        "<h1 class=\"error\">{}</h1><p>{}</p><p class=\"fine\">Provider emulator: {} stand-in.</p>",
        html::escape(title),
        html::escape(detail),
        flavor.name()
    );
    html::page(StatusCode::BAD_REQUEST, title, &body, None)
}

/// Checks whose failure must not redirect.
fn check_front(
    flavor: Flavor,
    memory: &Memory,
    params: &Params,
) -> Result<(String, String), Response> {
    let Some(client_id) = params.get("client_id") else {
        return Err(error_page(
            flavor,
            "Error 400: invalid_request",
            "Missing required parameter: client_id",
        ));
    };
    let Some(client) = memory.client(client_id) else {
        return Err(match flavor {
            Flavor::Google => error_page(
                flavor,
                "Error 401: invalid_client",
                "The OAuth client was not found.",
            ),
            Flavor::Dropbox => error_page(flavor, "Error (400)", "Invalid client_id."),
        });
    };
    let redirect_uri = params.get("redirect_uri").unwrap_or_default();
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(match flavor {
            Flavor::Google => error_page(
                flavor,
                "Error 400: redirect_uri_mismatch",
                "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 \
                 policy. The redirect_uri is not registered for this client.",
            ),
            Flavor::Dropbox => error_page(
                flavor,
                "Error (400)",
                "It seems the app you were using submitted a bad request. Invalid redirect_uri. \
                 It must exactly match one of the redirect URIs you've pre-configured for your \
                 app (including the path).",
            ),
        });
    }
    Ok((client_id.to_owned(), redirect_uri.to_owned()))
}

fn check_request(
    flavor: Flavor,
    params: &Params,
    client_id: String,
    redirect_uri: String,
) -> Result<Authorize, (Authorize, OAuthError)> {
    let mut request = Authorize {
        client_id,
        redirect_uri,
        state: params.raw("state").map(str::to_owned),
        scopes: params
            .get("scope")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        challenge: None,
        offline: false,
        force_consent: false,
        include_granted_scopes: false,
    };
    if params.get("response_type") != Some("code") {
        return Err((
            request,
            OAuthError::bad("unsupported_response_type", "response_type must be code"),
        ));
    }
    match Challenge::from_request(
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        Ok(challenge) => request.challenge = challenge,
        Err(_) => {
            return Err((
                request,
                OAuthError::bad("invalid_request", "Invalid code_challenge_method or size."),
            ));
        }
    }
    match flavor {
        Flavor::Google => {
            if request.scopes.is_empty() {
                return Err((
                    request,
                    OAuthError::bad("invalid_request", "Missing required parameter: scope"),
                ));
            }
            match params.get("access_type") {
                None | Some("online") => {}
                Some("offline") => request.offline = true,
                Some(_) => {
                    return Err((
                        request,
                        OAuthError::bad("invalid_request", "Invalid access_type."),
                    ));
                }
            }
            request.force_consent = params
                .get("prompt")
                .is_some_and(|p| p.split(' ').any(|w| w == "consent"));
            request.include_granted_scopes = params.get("include_granted_scopes") == Some("true");
        }
        Flavor::Dropbox => {
            if request.scopes.is_empty() {
                request.scopes = flavor
                    .app_scopes()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
            }
            match params.get("token_access_type") {
                None | Some("online") | Some("legacy") => {}
                Some("offline") => request.offline = true,
                Some(_) => {
                    return Err((
                        request,
                        OAuthError::bad("invalid_request", "Invalid token_access_type."),
                    ));
                }
            }
        }
    }
    Ok(request)
}

/// Sends the browser back to the client with `pairs` in the query.
fn redirect(request: &Authorize, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(&request.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        query.extend_pairs(pairs.iter());
        if let Some(state) = &request.state {
            query.append_pair("state", state);
        }
    }
    let mut response = (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response();
    no_store(&mut response);
    response
}

fn redirect_error(request: &Authorize, error: &OAuthError) -> Response {
    redirect(
        request,
        &[
            ("error", error.error),
            ("error_description", &error.description),
        ],
    )
}

async fn show(
    flavor: Flavor,
    State(emulator): State<Emulator>,
    RawQuery(query): RawQuery,
) -> Response {
    emulator
        .enter(flavor.endpoint(Endpoint::Authorize), Surface::Authorize)
        .await;
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(_) => {
            return error_page(
                flavor,
                "Error 400: invalid_request",
                "A parameter is repeated.",
            );
        }
    };
    emulator.with(|memory| {
        let (client_id, redirect_uri) = match check_front(flavor, memory, &params) {
            Ok(front) => front,
            Err(page) => return page,
        };
        match check_request(flavor, &params, client_id, redirect_uri) {
            Ok(request) => consent_page(flavor, memory.flavor_accounts(flavor), &request, &params),
            Err((request, error)) => redirect_error(&request, &error),
        }
    })
}

fn consent_page(
    flavor: Flavor,
    accounts: &[ProviderAccount],
    request: &Authorize,
    params: &Params,
) -> Response {
    let permissions: String = request
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", html::escape(s)))
        .collect();
    let hidden: String = params
        .pairs()
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                html::escape(name),
                html::escape(value)
            )
        })
        .collect();
    let choices: String = accounts
        .iter()
        .enumerate()
        .map(|(i, account)| {
            format!(
                "<label><input type=\"radio\" name=\"account\" value=\"{id}\"{checked}> {name} \
                 <span class=\"fine\">{email}</span></label>",
                id = html::escape(&account.id),
                checked = if i == 0 { " checked" } else { "" },
                name = html::escape(&account.name),
                email = html::escape(&account.email),
            )
        })
        .collect();
    let (title, picker, action) = match flavor {
        Flavor::Google => ("Choose an account", "Choose an account to continue", "auth"),
        Flavor::Dropbox => ("API Request Authorization", "Signed in as", "authorize"),
    };
    let body = format!(
        "<h1>{title}</h1>\
         <p>The app <code id=\"client-id\">{client_id}</code> wants to:</p>\
         <ul id=\"permissions\">{permissions}</ul>\
         <form method=\"post\" action=\"{action}\" id=\"consent\">{hidden}\
         <fieldset><legend>{picker}</legend>{choices}</fieldset>\
         <button type=\"submit\" name=\"decision\" value=\"accept\" id=\"accept\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>\
         </form>\
         <p class=\"fine\">Provider emulator: {provider} stand-in with test accounts only.</p>",
        client_id = html::escape(&request.client_id),
        provider = flavor.name(),
    );
    html::page(StatusCode::OK, title, &body, None)
}

async fn decide(flavor: Flavor, State(emulator): State<Emulator>, body: Bytes) -> Response {
    emulator
        .enter(flavor.endpoint(Endpoint::Consent), Surface::Authorize)
        .await;
    let mut params = match Params::parse(&body) {
        Ok(params) => params,
        Err(_) => {
            return error_page(
                flavor,
                "Error 400: invalid_request",
                "A parameter is repeated.",
            );
        }
    };
    let decision = params.take("decision");
    let account = params.take("account");
    emulator.with(|memory| {
        let (client_id, redirect_uri) = match check_front(flavor, memory, &params) {
            Ok(front) => front,
            Err(page) => return page,
        };
        let request = match check_request(flavor, &params, client_id, redirect_uri) {
            Ok(request) => request,
            Err((request, error)) => return redirect_error(&request, &error),
        };
        if decision.as_deref() != Some("accept") {
            memory.stats.consents_declined += 1;
            let description = match flavor {
                Flavor::Google => "The user denied access.",
                Flavor::Dropbox => {
                    "The user chose not to give your app access to their Dropbox account."
                }
            };
            return redirect_error(&request, &OAuthError::bad("access_denied", description));
        }
        if let Some(fault) = memory.faults.next_consent.take() {
            let error = match fault {
                ConsentFault::ConsentRequired => "consent_required",
                ConsentFault::InteractionRequired => "interaction_required",
                ConsentFault::ServerError => "server_error",
                ConsentFault::TemporarilyUnavailable => "temporarily_unavailable",
            };
            return redirect_error(&request, &OAuthError::bad(error, "Injected by a test."));
        }
        let accounts = memory.flavor_accounts(flavor);
        let Some(account) = account
            .as_deref()
            .and_then(|id| accounts.iter().find(|a| a.id == id))
            .or_else(|| accounts.first())
            .map(|a| a.id.clone())
        else {
            return error_page(flavor, "Error 400", "No test account to sign in with.");
        };
        memory.stats.consents_accepted += 1;
        let (consented_before, granted) =
            memory
                .standard
                .consent(flavor, &account, &request.client_id, &request.scopes);
        // Google's incremental authorization: the new token covers what was granted before.
        let scopes = if flavor == Flavor::Google && request.include_granted_scopes {
            granted
        } else {
            request.scopes.clone()
        };
        // Google: a refresh token on the first consent, or when consent was forced.
        let offline = match flavor {
            Flavor::Google => request.offline && (!consented_before || request.force_consent),
            Flavor::Dropbox => request.offline,
        };
        let code = Code {
            flavor,
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            account_id: account,
            scopes: scopes.clone(),
            challenge: request.challenge.clone(),
            offline,
            expires_at: Instant::now() + memory.code_lifetime,
            redeemed: false,
        };
        let marker = memory.marker.clone();
        let value = memory.standard.issue_code(code, &marker);
        match flavor {
            Flavor::Google => {
                let scope = scopes.join(" ");
                redirect(
                    &request,
                    &[
                        ("code", &value),
                        ("scope", &scope),
                        ("authuser", "0"),
                        ("prompt", "consent"),
                    ],
                )
            }
            Flavor::Dropbox => redirect(&request, &[("code", &value)]),
        }
    })
}

// --- token ---------------------------------------------------------------------------------

pub(crate) async fn google_token(
    state: State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(Flavor::Google, state, headers, body).await
}

pub(crate) async fn dropbox_token(
    state: State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(Flavor::Dropbox, state, headers, body).await
}

async fn token(
    flavor: Flavor,
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(fault) = emulator
        .enter(flavor.endpoint(Endpoint::Token), Surface::Token)
        .await
    {
        return fault_response(flavor, &fault);
    }
    emulator.with(|memory| match exchange(flavor, memory, &headers, &body) {
        Ok(body) => {
            let mut response = Json(body).into_response();
            no_store(&mut response);
            response
        }
        Err(error) => {
            memory
                .stats
                .standard_token_error(flavor.name(), error.error);
            error.into_response()
        }
    })
}

fn exchange(
    flavor: Flavor,
    memory: &mut Memory,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let params = params_or_default(body);
    let grant_type = params.get("grant_type");
    memory.stats.grant_requested(&format!(
        "{}.{}",
        flavor.name(),
        grant_type.unwrap_or("(none)")
    ));
    let grant_type = grant_type
        .ok_or_else(|| OAuthError::bad("unsupported_grant_type", "Invalid grant_type: "))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(OAuthError::bad(
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant_type}"),
        ));
    }
    let client_id = authenticate(flavor, memory, headers, &params)?;
    let (account_id, scopes, grant, refresh) = if grant_type == "authorization_code" {
        let code = redeem_code(flavor, memory, &client_id, &params)?;
        let grant = memory.standard.new_grant();
        let refresh = code.offline.then(|| RefreshToken {
            flavor,
            account_id: code.account_id.clone(),
            client_id: client_id.clone(),
            scopes: code.scopes.clone(),
            grant,
        });
        (code.account_id, code.scopes, grant, refresh)
    } else {
        let value = params.get("refresh_token").ok_or_else(|| {
            OAuthError::bad(
                "invalid_request",
                "Missing required parameter: refresh_token",
            )
        })?;
        let invalid = match flavor {
            Flavor::Google => "Token has been expired or revoked.",
            Flavor::Dropbox => "refresh token is invalid or revoked",
        };
        let stored = memory
            .standard
            .refresh_token(flavor, value)
            .cloned()
            .ok_or_else(|| OAuthError::bad("invalid_grant", invalid))?;
        if stored.client_id != client_id {
            return Err(match flavor {
                Flavor::Google => OAuthError::bad("unauthorized_client", "Unauthorized"),
                Flavor::Dropbox => OAuthError::bad("invalid_grant", invalid),
            });
        }
        let mut scopes = stored.scopes.clone();
        // Dropbox: a subset of the grant's scopes gives a down-scoped access token.
        if flavor == Flavor::Dropbox
            && let Some(asked) = params.get("scope")
        {
            let asked: Vec<String> = asked.split_whitespace().map(str::to_owned).collect();
            if asked.iter().any(|s| !stored.scopes.contains(s)) {
                return Err(OAuthError::bad(
                    "invalid_scope",
                    "scope is not a subset of the scopes granted",
                ));
            }
            scopes = asked;
        }
        // Neither provider sends a new refresh token on refresh.
        (stored.account_id, scopes, stored.grant, None)
    };
    let lifetime = memory
        .access_token_lifetime
        .unwrap_or_else(|| flavor.access_lifetime());
    let marker = memory.marker.clone();
    let access_token = memory.standard.mint_access(
        flavor,
        &account_id,
        scopes.clone(),
        grant,
        lifetime,
        &marker,
    );
    let refresh_token = refresh.map(|r| memory.standard.mint_refresh(r, &marker));
    memory
        .stats
        .token_issued(&format!("{}.{grant_type}", flavor.name()));
    let mut body = match flavor {
        Flavor::Google => json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "scope": scopes.join(" "),
            "token_type": "Bearer",
        }),
        Flavor::Dropbox => json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "token_type": "bearer",
            "scope": scopes.join(" "),
            "account_id": account_id,
            "uid": account_id.trim_start_matches("dbid:").chars().filter(char::is_ascii_digit).collect::<String>(),
        }),
    };
    if let (Some(rt), Some(map)) = (refresh_token, body.as_object_mut()) {
        map.insert("refresh_token".into(), Value::String(rt));
    }
    Ok(body)
}

fn redeem_code(
    flavor: Flavor,
    memory: &mut Memory,
    client_id: &str,
    params: &Params,
) -> Result<Code, OAuthError> {
    let bad_code = || match flavor {
        Flavor::Google => OAuthError::bad("invalid_grant", "Bad Request"),
        Flavor::Dropbox => OAuthError::bad("invalid_grant", "code doesn't exist or has expired"),
    };
    let value = params.get("code").ok_or_else(bad_code)?;
    let now = Instant::now();
    let code = memory.standard.code_mut(value).ok_or_else(bad_code)?;
    if code.flavor != flavor
        || code.redeemed
        || now >= code.expires_at
        || code.client_id != client_id
    {
        return Err(bad_code());
    }
    if params.get("redirect_uri").unwrap_or_default() != code.redirect_uri {
        return Err(match flavor {
            Flavor::Google => OAuthError::bad("redirect_uri_mismatch", "Bad Request"),
            Flavor::Dropbox => OAuthError::bad("invalid_grant", "redirect_uri mismatch"),
        });
    }
    match (&code.challenge, params.get("code_verifier")) {
        (Some(_), None) => return Err(OAuthError::bad("invalid_grant", "Missing code verifier.")),
        (None, Some(_)) => {
            return Err(OAuthError::bad(
                "invalid_grant",
                "code_verifier or verifier is not needed.",
            ));
        }
        (Some(challenge), Some(verifier)) if !challenge.is_satisfied_by(verifier) => {
            return Err(OAuthError::bad("invalid_grant", "Invalid code verifier."));
        }
        _ => {}
    }
    code.redeemed = true;
    Ok(code.clone())
}

/// `client_secret` in the body or HTTP Basic, not both. Returns the client id.
fn authenticate(
    flavor: Flavor,
    memory: &Memory,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| {
            STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|text| {
                    let (id, secret) = text.split_once(':')?;
                    Some((form_decode(id), form_decode(secret)))
                })
                .ok_or_else(|| {
                    OAuthError::bad("invalid_request", "Malformed Authorization header.")
                })
        })
        .transpose()?;
    let (client_id, secret) = match (basic, params.get("client_id"), params.get("client_secret")) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::bad(
                "invalid_request",
                "Client authentication used more than one method.",
            ));
        }
        (Some((id, secret)), body_id, None) => {
            if body_id.is_some_and(|b| b != id) {
                return Err(OAuthError::bad("invalid_request", "client_id mismatch."));
            }
            (id, secret)
        }
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, Some(_), None) | (None, None, _) => {
            return Err(OAuthError::invalid_client(
                flavor,
                "Client authentication failed: no client secret.",
            ));
        }
    };
    let Some(client) = memory.client(&client_id) else {
        return Err(OAuthError::invalid_client(
            flavor,
            match flavor {
                Flavor::Google => "The OAuth client was not found.",
                Flavor::Dropbox => "Invalid client_id or client_secret",
            },
        ));
    };
    let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
        secret.as_bytes(),
        client.client_secret.as_bytes(),
    )
    .is_ok();
    if !matches {
        return Err(OAuthError::invalid_client(
            flavor,
            match flavor {
                Flavor::Google => "Unauthorized",
                Flavor::Dropbox => "Invalid client_id or client_secret",
            },
        ));
    }
    Ok(client_id)
}

fn form_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

// --- revocation ----------------------------------------------------------------------------

/// `POST /revoke` (RFC 7009 style): `token=` an access or refresh token, in the form body or
/// the query; revokes the whole grant.
pub(crate) async fn google_revoke(
    State(emulator): State<Emulator>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let flavor = Flavor::Google;
    if let Some(fault) = emulator
        .enter(flavor.endpoint(Endpoint::Revoke), Surface::Revoke)
        .await
    {
        return fault_response(flavor, &fault);
    }
    let from_body = params_or_default(&body);
    let from_query = params_or_default(query.unwrap_or_default().as_bytes());
    let token = from_body
        .get("token")
        .or_else(|| from_query.get("token"))
        .map(str::to_owned);
    emulator.with(|memory| {
        let Some(token) = token else {
            return OAuthError::bad("invalid_request", "Missing required parameter: token")
                .into_response();
        };
        if memory.standard.revoke(flavor, &token) {
            memory.stats.revoked(flavor.name());
            Json(json!({})).into_response()
        } else {
            OAuthError::bad("invalid_token", "Token expired or revoked").into_response()
        }
    })
}

/// `GET /revoke` is not served (Google answers 404 there).
pub(crate) async fn google_revoke_get() -> Response {
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}

/// `POST /2/auth/token/revoke` with a valid access token: revokes it, its refresh token and
/// every access token minted from that refresh token. Answers `null`.
pub(crate) async fn dropbox_revoke(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
) -> Response {
    let flavor = Flavor::Dropbox;
    if let Some(fault) = emulator
        .enter(flavor.endpoint(Endpoint::Revoke), Surface::Revoke)
        .await
    {
        return fault_response(flavor, &fault);
    }
    emulator.with(|memory| {
        let token = bearer(&headers).unwrap_or_default().to_owned();
        if let Err(dead) = memory.standard.access_token(flavor, &token) {
            return super::dropbox_api::auth_error(dead);
        }
        memory.standard.revoke(flavor, &token);
        memory.stats.revoked(flavor.name());
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "null",
        )
            .into_response()
    })
}

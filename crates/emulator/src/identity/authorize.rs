//! `GET|POST /{tenant}/oauth2/v2.0/authorize` (providers.md §1.2–1.3): validates client and
//! redirect URI first (failures are an error page, never a redirect), then the rest (failures
//! go back to the client), then shows the consent page; its POST issues the code or declines.
//! It must not touch tokens.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::TestAccount;
use crate::faults::ConsentFault;
use crate::html;
use crate::identity::error::{AadError, Trace};
use crate::identity::params::Params;
use crate::identity::pkce::Challenge;
use crate::identity::redirect_uri::{self, ResponseMode};
use crate::identity::scope::Scopes;
use crate::identity::tenant::Tenant;
use crate::state::{IssuedCode, State as Memory};
use crate::stats::endpoint;
use crate::{Emulator, Surface};

/// What passed the no-redirect checks: the reply may now go to `redirect_uri`.
struct Front {
    tenant: Tenant,
    client_id: String,
    redirect_uri: String,
}

/// A fully valid authorize request.
struct Request {
    mode: ResponseMode,
    state: Option<String>,
    scopes: Scopes,
    challenge: Option<Challenge>,
    login_hint: Option<String>,
}

pub(crate) async fn show(
    State(emulator): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let trace = Trace::new(&headers);
    emulator
        .enter(endpoint::AUTHORIZE, Surface::Authorize)
        .await;
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(error) => return error.into_error_page(&trace),
    };
    emulator.with(|memory| {
        let front = match check_front(memory, &tenant, &params) {
            Ok(front) => front,
            Err(error) => return error.into_error_page(&trace),
        };
        match check_request(&params) {
            Ok(request) => consent_page(memory, &front, &request, &params),
            Err((error, mode, state)) => {
                reply_error(&front, mode, &error, state.as_deref(), &trace)
            }
        }
    })
}

pub(crate) async fn decide(
    State(emulator): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let trace = Trace::new(&headers);
    emulator.enter(endpoint::CONSENT, Surface::Authorize).await;
    let mut params = match Params::parse(&body) {
        Ok(params) => params,
        Err(error) => return error.into_error_page(&trace),
    };
    let decision = params.take("decision");
    let account_id = params.take("account");
    emulator.with(|memory| {
        let front = match check_front(memory, &tenant, &params) {
            Ok(front) => front,
            Err(error) => return error.into_error_page(&trace),
        };
        let request = match check_request(&params) {
            Ok(request) => request,
            Err((error, mode, state)) => {
                return reply_error(&front, mode, &error, state.as_deref(), &trace);
            }
        };
        match decision.as_deref() {
            Some("cancel") => {
                memory.stats.consents_declined += 1;
                let declined = AadError::new(
                    StatusCode::BAD_REQUEST,
                    "access_denied",
                    65004,
                    "The user has declined to consent to access the app.",
                );
                reply_error(
                    &front,
                    request.mode,
                    &declined,
                    request.state.as_deref(),
                    &trace,
                )
            }
            Some("accept") => accept(memory, &front, &request, account_id.as_deref(), &trace),
            _ => AadError::missing_parameter("decision").into_error_page(&trace),
        }
    })
}

/// The checks whose failure must not redirect: tenant, client, redirect URI.
fn check_front(memory: &Memory, tenant: &str, params: &Params) -> Result<Front, AadError> {
    let tenant = Tenant::parse(tenant)?;
    let client_id = params.require("client_id")?;
    let Some(client) = memory.client(client_id) else {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. \
                 This can happen if the application has not been installed by the administrator \
                 of the tenant or consented to by any user in the tenant. You may have sent your \
                 authentication request to the wrong tenant.",
                tenant.path
            ),
        ));
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return Err(AadError::invalid_request(
            900971,
            "No reply address provided.",
        ));
    };
    if !client
        .redirect_uris
        .iter()
        .any(|registered| redirect_uri::matches(redirect_uri, registered))
    {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URIs configured for the application '{client_id}'. Make sure the \
                 redirect URI sent in the request matches one added to your application in the \
                 Azure portal."
            ),
        ));
    }
    if url::Url::parse(redirect_uri).is_err() {
        return Err(AadError::invalid_request(
            90102,
            "'redirect_uri' value must be a valid absolute URI.",
        ));
    }
    Ok(Front {
        tenant,
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
    })
}

type Refusal = (AadError, ResponseMode, Option<String>);

/// The checks whose failure goes back to the client by redirect.
fn check_request(params: &Params) -> Result<Request, Refusal> {
    let state = params.get("state").map(strip_html);
    let Some(mode) = ResponseMode::parse(params.get("response_mode")) else {
        let error = AadError::invalid_request(
            9002313,
            "Invalid request. Request is malformed or invalid. The provided value for the input \
             parameter 'response_mode' is not valid.",
        );
        return Err((error, ResponseMode::Query, state));
    };
    let refuse = |error: AadError| (error, mode, state.clone());

    let response_type = params.require("response_type").map_err(refuse)?;
    if response_type != "code" {
        let error = if response_type.split(' ').any(|t| t == "id_token") {
            AadError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                700054,
                "response_type 'id_token' is not enabled for the application.",
            )
        } else {
            AadError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                70005,
                format!("response_type '{response_type}' is not enabled for the application."),
            )
        };
        return Err(refuse(error));
    }

    let scopes = Scopes::parse(params.require("scope").map_err(refuse)?).map_err(refuse)?;
    let challenge = Challenge::from_request(
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    )
    .map_err(refuse)?;

    match params.get("prompt") {
        None | Some("login" | "consent" | "select_account") => {}
        Some("none") => {
            // The emulator keeps no sign-in session, so a silent request always needs the user.
            return Err(refuse(AadError::new(
                StatusCode::BAD_REQUEST,
                "login_required",
                50058,
                "A silent sign-in request was sent but no user is signed in.",
            )));
        }
        Some(other) => {
            return Err(refuse(AadError::invalid_request(
                9002313,
                format!(
                    "Invalid request. Request is malformed or invalid. The provided value \
                     '{other}' for the input parameter 'prompt' is not valid."
                ),
            )));
        }
    }

    Ok(Request {
        mode,
        state,
        scopes,
        challenge,
        login_hint: params.get("login_hint").map(str::to_owned),
    })
}

fn accept(
    memory: &mut Memory,
    front: &Front,
    request: &Request,
    account_id: Option<&str>,
    trace: &Trace,
) -> Response {
    let Some(account) = account_id.and_then(|id| memory.account(id)).cloned() else {
        return AadError::invalid_request(
            50034,
            format!(
                "The user account {} does not exist in the directory.",
                account_id.unwrap_or("(none)")
            ),
        )
        .into_error_page(trace);
    };
    if !front.tenant.admits(account.kind) {
        return AadError::invalid_request(
            50020,
            format!(
                "User account '{}' does not exist in tenant '{}' and cannot access the \
                 application '{}' in that tenant.",
                account.user_principal_name, front.tenant.path, front.client_id
            ),
        )
        .into_error_page(trace);
    }
    if let Some(fault) = memory.faults.next_consent.take() {
        memory.stats.faults_injected += 1;
        let error = consent_fault_error(fault, &front.client_id);
        return reply_error(front, request.mode, &error, request.state.as_deref(), trace);
    }
    memory.stats.consents_accepted += 1;
    let graph = memory.record_consent(&account.id, &front.client_id, &request.scopes);
    let now = Instant::now();
    let code = memory.issue_code(
        IssuedCode {
            client_id: front.client_id.clone(),
            redirect_uri: front.redirect_uri.clone(),
            tenant_path: front.tenant.path.clone(),
            account_id: account.id.clone(),
            scopes: Scopes {
                graph,
                ..request.scopes.clone()
            },
            challenge: request.challenge.clone(),
            expires_at: now,
            redeemed: false,
        },
        now,
    );
    let session_state = Uuid::new_v4().to_string();
    let mut reply: Vec<(&str, &str)> = vec![("code", &code)];
    if let Some(state) = &request.state {
        reply.push(("state", state));
    }
    reply.push(("session_state", &session_state));
    redirect_uri::reply(&front.redirect_uri, request.mode, &reply)
        .unwrap_or_else(|| bad_redirect_uri().into_error_page(trace))
}

fn consent_fault_error(fault: ConsentFault, client_id: &str) -> AadError {
    match fault {
        ConsentFault::ConsentRequired => AadError::new(
            StatusCode::BAD_REQUEST,
            "consent_required",
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID \
                 '{client_id}'. Send an interactive authorization request for this user and resource."
            ),
        ),
        ConsentFault::InteractionRequired => AadError::new(
            StatusCode::BAD_REQUEST,
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, or because you moved to \
             a new location, you must use multi-factor authentication to access \
             '00000003-0000-0000-c000-000000000000'.",
        ),
        ConsentFault::ServerError => AadError::new(
            StatusCode::BAD_REQUEST,
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        ),
        ConsentFault::TemporarilyUnavailable => AadError::new(
            StatusCode::BAD_REQUEST,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
    }
}

fn bad_redirect_uri() -> AadError {
    AadError::invalid_request(90102, "'redirect_uri' value must be a valid absolute URI.")
}

/// `error` and `error_description` (with Microsoft's trace lines) back to the client.
fn reply_error(
    front: &Front,
    mode: ResponseMode,
    error: &AadError,
    state: Option<&str>,
    trace: &Trace,
) -> Response {
    let description = error.description(trace);
    let mut reply: Vec<(&str, &str)> =
        vec![("error", error.error), ("error_description", &description)];
    if let Some(state) = state {
        reply.push(("state", state));
    }
    redirect_uri::reply(&front.redirect_uri, mode, &reply)
        .unwrap_or_else(|| bad_redirect_uri().into_error_page(trace))
}

/// Entra strips HTML from `state` before echoing it.
fn strip_html(state: &str) -> String {
    let mut out = String::with_capacity(state.len());
    let mut rest = state;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn consent_page(memory: &Memory, front: &Front, request: &Request, params: &Params) -> Response {
    let accounts: Vec<&TestAccount> = memory
        .accounts
        .iter()
        .filter(|a| front.tenant.admits(a.kind))
        .collect();
    let preselected = request
        .login_hint
        .as_deref()
        .and_then(|hint| {
            accounts.iter().find(|a| {
                a.id.eq_ignore_ascii_case(hint)
                    || a.user_principal_name.eq_ignore_ascii_case(hint)
                    || a.mail
                        .as_deref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(hint))
            })
        })
        .or_else(|| accounts.first())
        .map(|a| a.id.as_str());

    let graph: Vec<&'static str> = if request.scopes.default_scope {
        memory
            .consent(preselected.unwrap_or_default(), &front.client_id)
            .map(|c| c.graph.clone())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| vec!["User.Read"])
    } else {
        request.scopes.graph.clone()
    };
    let permissions: String = request
        .scopes
        .descriptions(&graph)
        .iter()
        .map(|words| format!("<li>{}</li>", html::escape(words)))
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
    let choices: String = if accounts.is_empty() {
        "<p class=\"error\">No test account can sign in at this tenant.</p>".to_owned()
    } else {
        accounts
            .iter()
            .map(|account| {
                let checked = if Some(account.id.as_str()) == preselected {
                    " checked"
                } else {
                    ""
                };
                format!(
                    "<label><input type=\"radio\" name=\"account\" value=\"{id}\"{checked}> \
                     {name} <span class=\"fine\">{upn}</span></label>",
                    id = html::escape(&account.id),
                    name = html::escape(&account.display_name),
                    upn = html::escape(&account.user_principal_name),
                )
            })
            .collect()
    };
    // A relative action keeps the page working wherever the emulator is mounted.
    let body = format!(
        "<h1>Permissions requested</h1>\
         <p>The app <code id=\"client-id\">{client_id}</code> would like to:</p>\
         <ul id=\"permissions\">{permissions}</ul>\
         <form method=\"post\" action=\"authorize\" id=\"consent\">{hidden}\
         <fieldset><legend>Sign in as</legend>{choices}</fieldset>\
         <button type=\"submit\" name=\"decision\" value=\"accept\" id=\"accept\">Accept</button>\
         <button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>\
         </form>\
         <p class=\"fine\">Provider emulator: Microsoft identity platform stand-in with test \
         accounts only. Tenant: {tenant}.</p>",
        client_id = html::escape(&front.client_id),
        tenant = html::escape(&front.tenant.path),
    );
    html::page(StatusCode::OK, "Permissions requested", &body, None)
}

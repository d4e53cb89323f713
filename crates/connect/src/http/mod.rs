//! The HTTP surface: router assembly and the layers every request passes (request id, error
//! envelope, access log and metrics, panic catching, body limit, timeout, CORS for the app's
//! origins). Handlers live in one module per audience — `user` (the app's signed-in users) and
//! `ops` (health, readiness, OpenAPI, metrics) — and each calls one `broker` function. Nothing
//! here touches SQL.

pub mod activity;
pub mod assets;
pub mod browser;
pub mod demo;
pub mod middleware;
pub mod ops;
pub mod pages;
pub mod proxy;
pub mod service;
pub mod state;
pub mod upstream;
pub mod user;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use middleware::RequestContextLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::AppState;

/// Largest request body the API accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Celeste Connect",
        description = "Connect users' Outlook, Gmail and Dropbox accounts over OAuth 2.0; tokens stay on the server.",
    ),
    modifiers(&BearerAuth),
    components(schemas(ProviderName)),
    tags(
        (name = "user", description = "Called by the app for its signed-in user (Supabase JWT)."),
        (name = "browser", description = "Reached by the provider's redirect in the user's browser."),
        (name = "service", description = "Called by trusted backends and workflow engines (service key)."),
        (name = "ops", description = "Health, readiness and this document."),
    )
)]
struct ApiDoc;

/// The `{provider}` path segment, for the OpenAPI document: the configured providers by path
/// name (`microsoft` is an alias of `outlook`). Any other value is answered 404.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Outlook,
    Microsoft,
    Google,
    Dropbox,
}

/// Documents the proxy, which is routed by hand (any method, a wildcard path).
#[derive(OpenApi)]
#[openapi(paths(proxy_doc))]
struct ProxyDoc;

/// Forwards any method to the provider's API with the user's token: Graph for Microsoft,
/// `gmail.googleapis.com` for Google (`X-Connect-Api: www` for `www.googleapis.com`),
/// `api.dropboxapi.com` for Dropbox (`X-Connect-Api: content` for `content.dropboxapi.com`).
/// Refreshes once and retries on a 401; passes 429 and `Retry-After` through; streams bodies
/// (requests up to 4 MiB).
#[utoipa::path(method(get, post, put, patch, delete, head, options),
    path = "/v1/service/users/{user_id}/integrations/{provider}/proxy/{path}", tag = "service",
    security(("service_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The app's user id (JWT `sub`)."),
           ("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`"),
           ("path" = String, Path, description = "Provider API path, e.g. `v1.0/me/messages`, `gmail/v1/users/me/messages`, `2/files/list_folder`."),
           ("x-connect-api" = Option<String>, Header, description = "Which of the provider's APIs: `graph`; `gmail` (default) or `www`; `api` (default) or `content`.")),
    responses((status = 400, description = "This service's `invalid_request` (`user_id` is not a UUID, or the path would leave the provider's API), or the provider's own 400."),
              (status = 401, description = "This service's `unauthorized` (no or invalid service key), or the provider's 401 after one refresh and retry."),
              (status = 404, description = "This service's `not_connected` (same answer for an unknown user or provider), or the provider's own 404."),
              (status = 409, description = "This service's `reauth_required` (the user must connect again), or the provider's own 409."),
              (status = 429, description = "This service's `rate_limited` (per service key, or per user within it), or the provider's throttling; both with `Retry-After`."),
              (status = 503, description = "This service's `provider_unavailable` (with `Retry-After`), or the provider's own 503."),
              (status = "default", description = "The provider's answer, as it came: its status, body and headers (less hop-by-hop, cookie, site-data and auth ones). This service's own refusals carry its JSON error body (`ErrorBody`).")))]
#[allow(dead_code)]
async fn proxy_doc() {}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "service_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(user::list))
        .routes(routes!(user::status))
        .routes(routes!(user::disconnect))
        .routes(routes!(browser::auth_url))
        .routes(routes!(browser::callback))
        .routes(routes!(service::list))
        .routes(routes!(service::token))
        .routes(routes!(service::disconnect))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(webhooks::list_endpoints))
        .routes(routes!(webhooks::enable_endpoint))
        .routes(routes!(activity::user_activity))
        .routes(routes!(activity::service_activity))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = documented_routes()
        .split_for_parts()
        .1
        .merge_from(ProxyDoc::openapi());
    distinct_proxy_operation_ids(&mut doc);
    doc
}

/// The proxy is one documented function for every method; OpenAPI wants one operation id per
/// operation, so each method gets its own (`proxy_get`, `proxy_post`, …).
fn distinct_proxy_operation_ids(doc: &mut utoipa::openapi::OpenApi) {
    let Some(item) = doc
        .paths
        .paths
        .get_mut("/v1/service/users/{user_id}/integrations/{provider}/proxy/{path}")
    else {
        return;
    };
    let operations = [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("patch", &mut item.patch),
        ("delete", &mut item.delete),
        ("head", &mut item.head),
        ("options", &mut item.options),
    ];
    for (method, operation) in operations {
        if let Some(operation) = operation {
            operation.operation_id = Some(format!("proxy_{method}"));
        }
    }
}

/// CORS for the app's origins. The layer is cloned for every request, so the origins are shared
/// rather than a list copied each time; `Vary: Origin` and `Access-Control-Expose-Headers` are
/// added around it (see [`origin_headers`]) rather than built by the layer for every response.
/// Credentials are allowed for those origins only: a refused origin's answer, or one to a
/// request without an `Origin`, carries no `Allow-Credentials` either.
fn cors(state: &AppState) -> CorsLayer {
    let origins: Arc<[HeaderValue]> = state
        .settings
        .app_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let admitted = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.contains(origin)
        }))
        .vary([])
        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
            admitted.contains(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// Around the CORS layer: every answer depends on the request's `Origin`, preflights included
/// (`Vary`); and an answer to an admitted origin (one that carries `Allow-Origin`, preflights
/// aside) names the headers its page may read: the request id, and `Retry-After`, so the page
/// can honour a 429 or 503. tower-http would send the latter with every answer, refused origins'
/// and those to requests without an `Origin` included.
fn origin_headers<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        && !headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
    {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id,retry-after"),
        );
    }
    response
}

/// The public API router.
pub fn api_router(state: AppState) -> Router {
    let (mut router, _) = documented_routes().split_for_parts();
    let openapi = std::sync::Arc::new(openapi());
    if state.settings.demo {
        router = router.route("/demo/session", axum::routing::post(demo::session));
    }
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .route("/static/{file}", axum::routing::get(assets::static_file))
        .route("/sdk/connect.js", axum::routing::get(assets::sdk))
        .route("/settings", axum::routing::get(pages::settings))
        .route("/", axum::routing::get(pages::home))
        .route("/favicon.ico", axum::routing::get(assets::favicon))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .merge(
            Router::new()
                .route(
                    "/v1/service/users/{user_id}/integrations/{provider}/proxy/{*path}",
                    axum::routing::any(proxy::proxy),
                )
                .layer(RequestBodyLimitLayer::new(proxy::PROXY_BODY_LIMIT)),
        )
        .fallback(middleware::not_found)
        // One stack, added once: the router boxes each layer it is given around every route,
        // and clones every box for every request.
        .layer(
            ServiceBuilder::new()
                .map_response(origin_headers)
                .layer(cors(&state))
                .layer(RequestContextLayer)
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    Duration::from_secs(60),
                ))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .with_state(state)
}

/// The admin router (metrics), for a private listener.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(ops::metrics))
        .route("/v1/health", axum::routing::get(ops::health))
        .fallback(middleware::not_found)
        .layer(RequestContextLayer)
        .with_state(state)
}

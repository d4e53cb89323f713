//! The HTTP surface: router assembly and the layers every request passes (request id, error
//! envelope, access log and metrics, panic catching, body limit, timeout, CORS for the app's
//! origins). Handlers live in one module per audience — `user` (the app's signed-in users) and
//! `ops` (health, readiness, OpenAPI, metrics) — and each calls one `broker` function. Nothing
//! here touches SQL.

pub mod assets;
pub mod browser;
pub mod demo;
pub mod middleware;
pub mod ops;
pub mod pages;
pub mod proxy;
pub mod service;
pub mod user;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Largest request body the API accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Celeste Connect",
        description = "Connect users' Outlook accounts over OAuth 2.0; tokens stay on the server.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "user", description = "Called by the app for its signed-in user (Supabase JWT)."),
        (name = "browser", description = "Reached by the provider's redirect in the user's browser."),
        (name = "service", description = "Called by trusted backends and workflow engines (service key)."),
        (name = "ops", description = "Health, readiness and this document."),
    )
)]
struct ApiDoc;

/// Documents the proxy, which is routed by hand (any method, a wildcard path).
#[derive(OpenApi)]
#[openapi(paths(proxy_doc))]
struct ProxyDoc;

/// Forwards any method to the provider's API (Graph for Microsoft) with the user's token;
/// refreshes once and retries on a 401; passes 429 and `Retry-After` through; streams bodies
/// (requests up to 4 MiB).
#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/service/users/{user_id}/integrations/{provider}/proxy/{path}", tag = "service",
    security(("service_key" = [])),
    params(("user_id" = String, Path), ("provider" = String, Path, description = "`outlook` (alias `microsoft`)"),
           ("path" = String, Path, description = "Provider API path, e.g. `v1.0/me/messages`.")),
    responses((status = 200, description = "The provider's answer, as it came (also for its errors)."),
              (status = 400, description = "The path would leave the provider's API."), (status = 401),
              (status = 404), (status = 409), (status = 503)))]
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
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes()
        .split_for_parts()
        .1
        .merge_from(ProxyDoc::openapi())
}

fn cors(state: &AppState) -> CorsLayer {
    let origins: Vec<HeaderValue> = state
        .settings
        .app_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600))
}

/// The public API router.
pub fn api_router(state: AppState) -> Router {
    let (mut router, openapi) = documented_routes().split_for_parts();
    let openapi = std::sync::Arc::new(openapi.merge_from(ProxyDoc::openapi()));
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
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .layer(cors(&state))
        .with_state(state)
}

/// The admin router (metrics), for a private listener.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(ops::metrics))
        .route("/v1/health", axum::routing::get(ops::health))
        .fallback(middleware::not_found)
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}

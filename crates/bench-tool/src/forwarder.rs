//! `forwarder`: the floor for a proxied call, served next to the service in the same run. A
//! minimal axum service that forwards every request (method, path, query, `Authorization`,
//! `Content-Type`, body) to `--upstream` and streams the answer back (status, headers but the
//! hop-by-hop ones, body). No service key, no token lookup, no path checks, no limits, no
//! metrics, no activity: the requests carry the provider's own bearer token (the direct
//! scenarios' request files). `--client hyper` uses the service's own proxy client
//! (`celeste_connect::http::upstream::UpstreamClient`: hyper's connection-pooling client over
//! rustls), `--client reqwest` the reqwest client the service uses for its OAuth calls
//! (`celeste_connect::app::http_client`). Both buffer a request body, as the service's proxy
//! does. It prints `listening on http://ADDR` once bound, like the service,
//! and serves until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::{Body, HttpBody, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use celeste_connect::http::upstream::{Outgoing, UpstreamClient};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ClientKind {
    Reqwest,
    Hyper,
}

#[derive(clap::Args)]
pub struct ForwarderArgs {
    /// Where requests go: `http://HOST:PORT` (the emulator).
    #[arg(long)]
    upstream: String,
    #[arg(long, value_enum, default_value = "reqwest")]
    client: ClientKind,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

enum Upstream {
    Reqwest(reqwest::Client),
    Hyper(Box<UpstreamClient>),
}

struct Forwarder {
    base: String,
    client: Upstream,
}

/// Request headers forwarded (the service forwards a short list too).
const FORWARD: [HeaderName; 2] = [header::AUTHORIZATION, header::CONTENT_TYPE];

/// Largest request body forwarded (buffered, as the service does).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

pub async fn run(args: ForwarderArgs) -> anyhow::Result<()> {
    let client = match args.client {
        ClientKind::Reqwest => {
            Upstream::Reqwest(celeste_connect::app::http_client().context("building reqwest")?)
        }
        ClientKind::Hyper => Upstream::Hyper(Box::new(
            UpstreamClient::new().context("building the proxy client")?,
        )),
    };
    let state = Arc::new(Forwarder {
        base: args.upstream.trim_end_matches('/').to_owned(),
        client,
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    crate::baseline::serve_until_stopped(args.listen, app).await
}

/// The upstream's headers without the hop-by-hop ones.
fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
    ] {
        headers.remove(name);
    }
    headers
}

fn bad_gateway() -> Response {
    (StatusCode::BAD_GATEWAY, "upstream unreachable").into_response()
}

async fn forward(State(state): State<Arc<Forwarder>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = format!(
        "{}{}",
        state.base,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    match &state.client {
        Upstream::Reqwest(client) => {
            let mut upstream = client.request(parts.method, &target);
            for name in &FORWARD {
                if let Some(value) = parts.headers.get(name) {
                    upstream = upstream.header(name, value);
                }
            }
            if !body.is_end_stream() {
                let Ok(bytes) = to_bytes(body, BODY_LIMIT).await else {
                    return StatusCode::PAYLOAD_TOO_LARGE.into_response();
                };
                upstream = upstream.body(bytes);
            }
            let Ok(answer) = upstream.send().await else {
                return bad_gateway();
            };
            let (head, body) = axum::http::Response::from(answer).into_parts();
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = head.status;
            *response.headers_mut() = end_to_end(head.headers);
            response
        }
        Upstream::Hyper(client) => {
            let mut headers = HeaderMap::new();
            for name in &FORWARD {
                if let Some(value) = parts.headers.get(name) {
                    headers.insert(name, value.clone());
                }
            }
            let Ok(uri) = target.parse() else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let Ok(body) = to_bytes(body, BODY_LIMIT).await else {
                return StatusCode::PAYLOAD_TOO_LARGE.into_response();
            };
            let outgoing = Outgoing {
                method: parts.method,
                uri,
                headers,
                body,
            };
            let Ok(answer) = client.send(outgoing).await else {
                return bad_gateway();
            };
            let (head, body) = answer.into_parts();
            let mut response = Response::new(body);
            *response.status_mut() = head.status;
            *response.headers_mut() = end_to_end(head.headers);
            response
        }
    }
}

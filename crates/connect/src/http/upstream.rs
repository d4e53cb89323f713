//! The proxy's outbound client: hyper's connection-pooling client over rustls, without reqwest's
//! per-request layers (URL re-parsing, default headers, retry and timeout services) that the
//! proxy does not use. The OAuth calls (token, profile, revocation, JWKS) keep the reqwest
//! client; this one only carries proxied calls, which are the service's highest-volume
//! outbound traffic. Certificates are checked as reqwest checks them (the platform verifier,
//! rustls with aws-lc-rs); plain `http://` stays allowed for the emulator and test upstreams.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

/// How long a new connection to the provider may take (reqwest's client: the same).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the provider may take to answer, and then to send each part of its body.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a proxied call got no answer.
#[derive(Debug)]
pub enum UpstreamError {
    Timeout,
    Transport,
}

#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl UpstreamClient {
    pub fn new() -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Self { client })
    }

    /// Sends one request and returns the provider's answer, its body streamed with a
    /// [`ANSWER_TIMEOUT`] limit between frames.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|_| UpstreamError::Transport)?;
        Ok(answer
            .map(|body| Body::new(tower_http::timeout::TimeoutBody::new(ANSWER_TIMEOUT, body))))
    }
}

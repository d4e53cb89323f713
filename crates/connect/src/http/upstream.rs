//! The proxy's outbound client: hyper's connection-pooling client over rustls, without reqwest's
//! per-request layers (URL re-parsing, default headers, the retry and timeout services built
//! around every request) on the service's busiest outbound path. The OAuth calls (token,
//! profile, revocation, JWKS) keep the reqwest client.
//!
//! What reqwest did for these calls is kept: certificates checked by the platform verifier on
//! aws-lc-rs, HTTP/2 by ALPN, TCP keep-alive probes and a user timeout, 5 s to connect (TCP and
//! TLS), 60 s for the whole exchange (head and body), and a retry of a request an HTTP/2 server
//! refused before handling it (`REFUSED_STREAM`, or a graceful `GOAWAY`). A request the
//! environment sends through an outbound HTTP proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! minus `NO_PROXY`) goes through reqwest instead, which honours them as it does for the OAuth
//! calls. Plain `http://` stays allowed for the emulator and test upstreams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio::time::Instant;

/// How long a new connection to the provider may take, TLS included (reqwest's client: the same).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a whole exchange may take: the answer's head and its body.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP keep-alive probes on provider connections, and how long unacknowledged data may wait
/// before the kernel gives the connection up (reqwest's defaults): a connection that went
/// silent is noticed in seconds, not after the kernel's 15 minutes.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a request an HTTP/2 server refused unprocessed (reqwest's default: the same).
const REFUSED_RETRIES: usize = 2;

/// Why a proxied call got no answer.
#[derive(Debug)]
pub enum UpstreamError {
    Timeout,
    Transport,
}

/// One request to forward; kept whole so that a refused one can be sent again.
pub struct Outgoing {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Direct = Client<ConnectDeadline<HttpsConnector<HttpConnector>>, Full<Bytes>>;

#[derive(Clone)]
pub struct UpstreamClient {
    direct: Direct,
    /// Set when the environment names an outbound proxy: the requests it intercepts, and
    /// reqwest's client, which sends them through it.
    proxied: Option<Arc<(Matcher, reqwest::Client)>>,
}

/// The environment variables that name an outbound proxy (curl's, as reqwest reads them).
const PROXY_VARIABLES: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the outbound proxy's client: {0}")]
    Proxy(#[from] reqwest::Error),
}

impl UpstreamClient {
    /// The client for this process's environment.
    pub fn new() -> Result<Self, BuildError> {
        let proxy_named = PROXY_VARIABLES
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        let proxied = if proxy_named {
            Some((Matcher::from_env(), crate::app::http_client()?))
        } else {
            None
        };
        Self::with_proxy(proxied)
    }

    /// The client with the given outbound proxy rules and the reqwest client that applies them.
    pub fn with_proxy(proxied: Option<(Matcher, reqwest::Client)>) -> Result<Self, BuildError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(KEEPALIVE));
        http.set_keepalive_interval(Some(KEEPALIVE));
        http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let direct = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(ConnectDeadline(https));
        Ok(Self {
            direct,
            proxied: proxied.map(Arc::new),
        })
    }

    /// Sends one request and returns the provider's answer, its body streamed within what is
    /// left of [`EXCHANGE_TIMEOUT`].
    pub async fn send(&self, request: Outgoing) -> Result<http::Response<Body>, UpstreamError> {
        let deadline = Instant::now() + EXCHANGE_TIMEOUT;
        if let Some(proxied) = &self.proxied
            && proxied.0.intercept(&request.uri).is_some()
        {
            return send_proxied(&proxied.1, request).await;
        }
        let mut retries = 0;
        let answer = loop {
            let mut outgoing = http::Request::new(Full::new(request.body.clone()));
            *outgoing.method_mut() = request.method.clone();
            *outgoing.uri_mut() = request.uri.clone();
            *outgoing.headers_mut() = request.headers.clone();
            match tokio::time::timeout_at(deadline, self.direct.request(outgoing)).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Ok(answer)) => break answer,
                Ok(Err(e)) if retries < REFUSED_RETRIES && refused_unprocessed(&e) => retries += 1,
                Ok(Err(e)) => return Err(classify(&e)),
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        Ok(answer.map(|body| Body::new(tower_http::timeout::DeadlineBody::new(left, body))))
    }
}

/// Sends a request through the outbound proxy with reqwest (which retries refused HTTP/2
/// requests itself).
async fn send_proxied(
    client: &reqwest::Client,
    request: Outgoing,
) -> Result<http::Response<Body>, UpstreamError> {
    let mut outgoing = http::Request::new(request.body);
    *outgoing.method_mut() = request.method;
    *outgoing.uri_mut() = request.uri;
    *outgoing.headers_mut() = request.headers;
    let mut outgoing =
        reqwest::Request::try_from(outgoing).map_err(|_| UpstreamError::Transport)?;
    *outgoing.timeout_mut() = Some(EXCHANGE_TIMEOUT);
    let answer = client.execute(outgoing).await.map_err(|e| {
        if e.is_timeout() {
            UpstreamError::Timeout
        } else {
            UpstreamError::Transport
        }
    })?;
    Ok(http::Response::from(answer).map(Body::new))
}

/// Whether an HTTP/2 server refused the request before processing it: a graceful `GOAWAY` or
/// `REFUSED_STREAM` (RFC 9113 §8.7), so sending it again on another stream is safe.
fn refused_unprocessed(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error)
        .find_map(|e| e.downcast_ref::<h2::Error>())
        .is_some_and(|h2| {
            let remote = h2.is_remote();
            (h2.is_go_away() && remote && h2.reason() == Some(h2::Reason::NO_ERROR))
                || (h2.is_reset() && remote && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        })
}

fn classify(error: &(dyn std::error::Error + 'static)) -> UpstreamError {
    if causes(error).any(|e| e.is::<tokio::time::error::Elapsed>()) {
        UpstreamError::Timeout
    } else {
        UpstreamError::Transport
    }
}

/// An error and the errors beneath it.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// A connector whose connections must be ready, TLS included, within [`CONNECT_TIMEOUT`].
#[derive(Clone)]
pub struct ConnectDeadline<C>(C);

impl<C> tower::Service<http::Uri> for ConnectDeadline<C>
where
    C: tower::Service<http::Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = C::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(elapsed) => Err(elapsed.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `answer` and hands back each request's head.
    async fn server(answer: &'static str) -> (String, tokio::sync::mpsc::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&seen).into_owned()).await;
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        (address, rx)
    }

    fn get(uri: &str) -> Outgoing {
        Outgoing {
            method: http::Method::GET,
            uri: uri.parse().unwrap(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// The body's known length (what the server's own Content-Length then comes from: the
    /// proxy drops the provider's header) and its text.
    async fn body_of(answer: http::Response<Body>) -> (Option<u64>, String) {
        let length = axum::body::HttpBody::size_hint(answer.body()).exact();
        let bytes = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .unwrap();
        (length, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_the_environment_proxies_go_through_the_proxy_and_others_go_direct() {
        let (proxy, mut at_proxy) =
            server("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied").await;
        let (upstream, mut at_upstream) =
            server("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ndirect").await;
        let proxy_url = format!("http://{proxy}");
        let matcher = Matcher::builder()
            .http(proxy_url.clone())
            .no("127.0.0.1")
            .build();
        let via = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(&proxy_url).unwrap())
            .build()
            .unwrap();
        let client = UpstreamClient::with_proxy(Some((matcher, via))).unwrap();

        // A provider host: through the proxy, asked for in absolute form.
        let answer = client
            .send(get("http://graph.example.invalid/v1.0/me"))
            .await
            .unwrap();
        assert_eq!(body_of(answer).await.1, "proxied");
        let head = at_proxy.recv().await.unwrap();
        assert!(
            head.starts_with("GET http://graph.example.invalid/v1.0/me HTTP/1.1\r\n"),
            "{head}"
        );

        // A host NO_PROXY lists: straight to it.
        let answer = client
            .send(get(&format!("http://{upstream}/v1.0/me")))
            .await
            .unwrap();
        assert_eq!(body_of(answer).await.1, "direct");
        assert!(
            at_upstream
                .recv()
                .await
                .unwrap()
                .starts_with("GET /v1.0/me HTTP/1.1\r\n")
        );
        assert!(
            at_proxy.try_recv().is_err(),
            "the proxy saw one request only"
        );
    }

    #[tokio::test]
    async fn an_answers_length_reaches_the_caller() {
        let (upstream, _) = server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        let client = UpstreamClient::with_proxy(None).unwrap();
        let answer = client
            .send(get(&format!("http://{upstream}/x")))
            .await
            .unwrap();
        assert_eq!(body_of(answer).await, (Some(2), "{}".to_owned()));
    }

    #[test]
    fn errors_of_our_own_making_are_not_retried() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        // Built locally, these errors are not the server's: not retried.
        assert!(!refused_unprocessed(&refused));
        let io = std::io::Error::other("reset by peer");
        assert!(!refused_unprocessed(&io));
    }
}

//! The delivery worker, one per replica: claims due deliveries (`FOR UPDATE SKIP LOCKED` and a
//! lease, so replicas share the work and a dead replica's claims are taken over once their
//! lease ends), signs and sends each, and records the attempt: delivered on a 2xx; on a 410 the
//! delivery fails and the endpoint is disabled; otherwise the next attempt is scheduled
//! (`schedule`), until the schedule runs out. It wakes at once when an event is committed (an
//! in-process notification, and PostgreSQL's NOTIFY from other replicas) and polls as a
//! fallback. Logs name the endpoint and the event id; never a URL's path, a secret or a body.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Endpoint, WebhookSettings, net, schedule, signing};
use crate::broker::Broker;
use crate::store::{AttemptOutcome, ClaimedDelivery, DeliveryStatus, Store, StoreResult};

/// How much of a receiver's answer is kept with the attempt.
pub const RESPONSE_PREFIX_BYTES: usize = 256;

/// What one attempt found.
#[derive(Debug, Default)]
struct Attempt {
    http_status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    response: Option<String>,
}

/// Runs passes until `shutdown` turns true, then gives back the claims it still holds.
pub async fn run(app: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let settings = &app.settings.webhooks;
    if settings.endpoints.is_empty() {
        return;
    }
    let client = match net::client(settings.reach, settings.timeout) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "webhook client cannot be built; no webhook is sent");
            return;
        }
    };
    let outbox = app.store.outbox().clone();
    if let Store::Postgres(pg) = &app.store {
        tokio::spawn(listen(
            pg.listener_pool().clone(),
            outbox.clone(),
            shutdown.clone(),
        ));
    }
    loop {
        if *shutdown.borrow() {
            break;
        }
        let busy = match pass(&app, &client, &shutdown).await {
            Ok(claimed) => claimed >= settings.concurrency as usize,
            Err(e) => {
                tracing::warn!(error = %e, "webhook pass failed");
                false
            }
        };
        record_backlog(&app.store).await;
        if busy {
            continue;
        }
        tokio::select! {
            () = outbox.written.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    match app.store.release_deliveries_of(app.tokens.owner).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "webhook claims given back at shutdown"),
        Err(e) => {
            tracing::warn!(error = %e, "webhook claims not given back; their lease ends on its own")
        }
    }
}

/// The endpoints deliveries may go to now: configured, and not disabled for their current URL.
async fn enabled_endpoints(app: &Broker) -> StoreResult<Vec<String>> {
    let disabled = app.store.disabled_endpoints().await?;
    Ok(app
        .settings
        .webhooks
        .endpoints
        .iter()
        .filter(|e| {
            !disabled.iter().any(|d| {
                d.name == e.name && d.url_sha256.as_deref() == Some(e.url_sha256().as_str())
            })
        })
        .map(|e| e.name.clone())
        .collect())
}

/// Claims one batch and delivers it; the number claimed.
pub async fn pass(
    app: &Broker,
    client: &reqwest::Client,
    shutdown: &watch::Receiver<bool>,
) -> StoreResult<usize> {
    let settings = &app.settings.webhooks;
    let names = enabled_endpoints(app).await?;
    if names.is_empty() || *shutdown.borrow() {
        return Ok(0);
    }
    let claimed = app
        .store
        .claim_deliveries(
            &names,
            settings.concurrency,
            app.tokens.owner,
            settings.lease(),
        )
        .await?;
    let count = claimed.len();
    futures::stream::iter(claimed)
        .for_each_concurrent(settings.concurrency as usize, |delivery| async move {
            deliver(app, client, delivery).await;
        })
        .await;
    Ok(count)
}

/// Sends one claimed delivery and records what happened.
async fn deliver(app: &Broker, client: &reqwest::Client, delivery: ClaimedDelivery) {
    let settings: &WebhookSettings = &app.settings.webhooks;
    let Some(endpoint) = settings.endpoint(&delivery.endpoint) else {
        return;
    };
    let attempt = send(client, endpoint, settings.reach, &delivery).await;
    let attempt_no = delivery.attempts + 1;
    let delivered = attempt.http_status.is_some_and(|s| (200..300).contains(&s));
    let gone = attempt.http_status == Some(410);
    let (status, next_attempt_at) = if delivered {
        (DeliveryStatus::Delivered, None)
    } else if gone {
        (DeliveryStatus::Failed, None)
    } else {
        match schedule::next_delay(attempt_no, attempt.retry_after, schedule::random_jitter()) {
            Some(delay) => (
                DeliveryStatus::Pending,
                time::Duration::try_from(delay)
                    .ok()
                    .and_then(|d| OffsetDateTime::now_utc().checked_add(d)),
            ),
            None => (DeliveryStatus::Failed, None),
        }
    };
    let outcome = AttemptOutcome {
        status,
        next_attempt_at,
        http_status: attempt.http_status,
        error: attempt.error.clone(),
        response: attempt.response,
        disable_endpoint: gone.then(|| endpoint.url_sha256()),
    };
    let label = match (status, gone) {
        (DeliveryStatus::Delivered, _) => "delivered",
        (DeliveryStatus::Failed, true) => "gone",
        (DeliveryStatus::Failed, false) => "failed",
        (DeliveryStatus::Pending, _) => "retry",
    };
    metrics::counter!("webhook_attempts_total", "endpoint" => endpoint.name.clone(), "outcome" => label)
        .increment(1);
    match status {
        DeliveryStatus::Delivered => {
            metrics::counter!("webhook_delivered_total", "endpoint" => endpoint.name.clone())
                .increment(1)
        }
        DeliveryStatus::Failed => {
            metrics::counter!("webhook_failed_total", "endpoint" => endpoint.name.clone())
                .increment(1)
        }
        DeliveryStatus::Pending => {}
    }
    tracing::info!(
        endpoint = %endpoint.name,
        event_id = %delivery.event_id,
        attempt = attempt_no,
        http_status = attempt.http_status,
        error = attempt.error.as_deref(),
        outcome = label,
        "webhook attempt"
    );
    if gone {
        tracing::warn!(endpoint = %endpoint.name, "the endpoint answered 410 Gone: disabled until re-enabled (POST /v1/service/webhooks/endpoints/{{name}}/enable) or its URL changes");
    }
    match app
        .store
        .finish_delivery(delivery.id, &endpoint.name, app.tokens.owner, &outcome)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!(endpoint = %endpoint.name, event_id = %delivery.event_id,
            "webhook claim lost before its attempt was recorded; another replica sends it again"),
        Err(e) => {
            tracing::warn!(error = %e, endpoint = %endpoint.name, event_id = %delivery.event_id,
            "webhook attempt not recorded; it is sent again when its claim ends")
        }
    }
}

/// One signed POST of a delivery's body.
async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    reach: net::Reach,
    delivery: &ClaimedDelivery,
) -> Attempt {
    if let Err(why) = net::check_url(&endpoint.url, reach) {
        return Attempt {
            error: Some(why),
            ..Attempt::default()
        };
    }
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let signature = signing::signature_header(
        &endpoint.secrets,
        &delivery.event_id,
        timestamp,
        delivery.body.as_bytes(),
    );
    let sent = client
        .post(endpoint.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &delivery.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => {
            return Attempt {
                error: Some(transport_error(e)),
                ..Attempt::default()
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| schedule::parse_retry_after(v, OffsetDateTime::now_utc()));
    let mut prefix = Vec::new();
    let mut error = None;
    while prefix.len() < RESPONSE_PREFIX_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(transport_error(e));
                break;
            }
        }
    }
    prefix.truncate(RESPONSE_PREFIX_BYTES);
    let text: String = String::from_utf8_lossy(&prefix)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect();
    if error.is_none() && (300..400).contains(&status) {
        error = Some("redirect not followed".into());
    }
    Attempt {
        http_status: Some(status),
        retry_after,
        error,
        response: (!text.is_empty()).then_some(text),
    }
}

/// A transport failure in a few words, without the URL.
fn transport_error(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut detail = Vec::new();
    let e = e.without_url();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        detail.push(cause.to_string());
        source = cause.source();
    }
    let mut text = match detail.last() {
        Some(root) => format!("{kind}: {root}"),
        None => kind.to_owned(),
    };
    text.truncate(300);
    text
}

/// Publishes the backlog: pending deliveries and the age of the oldest.
pub async fn record_backlog(store: &Store) {
    if let Ok(backlog) = store.delivery_backlog().await {
        metrics::gauge!("webhook_pending").set(backlog.pending as f64);
        let age = backlog
            .oldest_created_at
            .map(|at| (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0))
            .unwrap_or(0.0);
        metrics::gauge!("webhook_oldest_pending_age_seconds").set(age);
    }
}

/// Wakes this replica's worker when another one commits an event (PostgreSQL NOTIFY).
async fn listen(
    pool: sqlx::PgPool,
    outbox: std::sync::Arc<crate::store::Outbox>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() || pool.is_closed() {
            return;
        }
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(crate::store::WEBHOOK_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            result = connected => match result {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::debug!(error = %e, "webhook listener cannot connect; polling");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        };
        // Whatever was committed while not listening is found by the next pass.
        outbox.written.notify_one();
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => outbox.written.notify_one(),
                    Ok(None) | Err(_) => break,
                },
                _ = stop.changed() => return,
            }
        }
    }
}

//! The outbox worker: delivers welcome emails and sign-out/session-revocation events, written in
//! the same transaction as the change that causes them, to a webhook: JSON body, an
//! `Idempotency-Key` header, an HMAC-SHA256 signature over the body, retries with exponential
//! backoff, never dropped. Delivery is at least once; the idempotency key lets the receiver
//! make it exactly once.

use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{OutboxEvent, Store};

/// Where and how events go.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Option<String>,
    /// Idle poll interval.
    pub poll: Duration,
}

/// The signature header value of a body: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `attempts + 1`: 1 s doubling, at most an hour.
pub fn backoff(attempts: i64) -> chrono::Duration {
    chrono::Duration::seconds((1i64 << attempts.clamp(0, 12)).min(3600))
}

async fn deliver(client: &reqwest::Client, cfg: &WebhookConfig, ev: &OutboxEvent) -> Result<(), String> {
    let body = serde_json::json!({
        "id": ev.id,
        "type": ev.event_type,
        "tenant_id": ev.tenant_id,
        // Tenant events (`tenant.held`, `tenant.released`) are about no user.
        "user_id": (!ev.user_id.is_empty()).then_some(ev.user_id.as_str()),
        "created_at": ev.created_at,
        "data": ev.payload,
    })
    .to_string();
    let mut req = client
        .post(&cfg.url)
        .header("content-type", "application/json")
        .header("idempotency-key", &ev.idempotency_key)
        .header("x-moonborn-event", &ev.event_type);
    if let Some(secret) = &cfg.secret {
        req = req.header("x-moonborn-signature", signature(secret, body.as_bytes()));
    }
    let res = req.body(body).send().await.map_err(|e| format!("request failed: {e}"))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {}", res.status()))
    }
}

/// Runs the delivery loop forever.
pub async fn run(store: Store, cfg: WebhookConfig) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    loop {
        let batch = match store.claim_due_events(50, 60).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                tokio::time::sleep(cfg.poll).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(cfg.poll).await;
            continue;
        }
        for ev in batch {
            let delivered = deliver(&client, &cfg, &ev).await;
            let outcome = if delivered.is_ok() { "delivered" } else { "failed" };
            crate::metrics::METRICS.webhook_deliveries.get_or_create(&crate::metrics::DeliveryLabels { outcome }).inc();
            let result = match delivered {
                Ok(()) => store.mark_delivered(&ev.id).await,
                Err(err) => {
                    let next = crate::controller::plan::fmt_time(Utc::now() + backoff(ev.attempts));
                    tracing::warn!(event = %ev.id, r#type = %ev.event_type, attempts = ev.attempts + 1, error = %err, "webhook delivery failed; will retry");
                    store.mark_failed(&ev.id, &next, &err).await
                }
            };
            if let Err(e) = result {
                tracing::warn!(event = %ev.id, error = %e, "cannot record a delivery outcome");
            }
        }
    }
}

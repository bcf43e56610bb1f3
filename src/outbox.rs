//! The outbox worker: delivers welcome emails, sign-outs and tenant events, written in the same
//! transaction as the change that causes them, to a webhook in the Standard Webhooks format
//! (<https://www.standardwebhooks.com/>): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//! configured secret), plus `Idempotency-Key`. Retried with jittered exponential backoff, never
//! dropped; delivery is at least once.
//!
//! Order: a user's events go out in the order they were written; a later one waits while an
//! earlier one is still failing (tenant events, about no user, are ordered among themselves per
//! tenant). The store's claim enforces it, so it holds across replicas. A success after failures
//! makes every waiting event due again at once (at most every `RESET_EVERY`), so deliveries resume
//! as soon as the receiver is back rather than when each event's backoff runs out.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use sha2::Sha256;

use crate::store::{OutboxEvent, Store};

/// Events claimed per round; delivered `CONCURRENCY` at a time (at most one per user, so the
/// order holds), which keeps a round well inside `LEASE_SECS` even if every request times out.
const BATCH: i64 = 32;
const CONCURRENCY: usize = 8;
const LEASE_SECS: i64 = 120;
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts of an event (before jitter).
const BACKOFF_CAP_SECS: i64 = 300;
/// A receiver that keeps failing one event while taking others gets that event retried at most
/// this often by the reset.
const RESET_EVERY: Duration = Duration::from_secs(30);

/// A webhook signing secret (`whsec_<base64>`): the decoded key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// The key of a `whsec_<base64>` secret (24 to 64 bytes once decoded, as the spec advises).
    ///
    /// # Errors
    /// A message that says what is wrong, never the secret.
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let b64 = secret.strip_prefix("whsec_").ok_or("does not start with whsec_")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "is not whsec_ followed by standard base64")?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("decodes to {} bytes; use 24 to 64 random bytes", key.len()));
        }
        Ok(SigningKey(key))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Every secret of a `--webhook-secret` value: several (while rotating) are separated by commas
/// or white space.
///
/// # Errors
/// None given, or one malformed (named by its position, never by its value).
pub fn parse_secrets(value: &str) -> Result<Vec<SigningKey>, String> {
    let parts: Vec<&str> = value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).collect();
    if parts.is_empty() {
        return Err("the webhook secret is empty".into());
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            SigningKey::parse(p).map_err(|why| {
                let which = if parts.len() == 1 { String::new() } else { format!(" {} of {}", i + 1, parts.len()) };
                format!("webhook secret{which} {why} (expected whsec_<base64 of 24 to 64 random bytes>)")
            })
        })
        .collect()
}

/// Where and how events go.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// Every event is signed with each (at least one).
    pub secrets: Vec<SigningKey>,
    /// CA certificates trusted besides the public roots (`--ca-file`).
    pub extra_roots: Vec<reqwest::Certificate>,
    /// Idle poll interval.
    pub poll: Duration,
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` for
/// each key, space-separated.
pub fn signature(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k.bytes()).expect("HMAC takes any key length");
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The delay before attempt `attempts + 1`: 1 s doubling, at most `BACKOFF_CAP_SECS`, of which a
/// random half (so events that failed together do not retry together).
pub fn backoff(attempts: i64) -> chrono::Duration {
    let ms = (1000i64 << attempts.clamp(0, 20)).min(BACKOFF_CAP_SECS * 1000);
    chrono::Duration::milliseconds(ms / 2 + rand::thread_rng().gen_range(0..=ms / 2))
}

/// The webhook client: TLS with the public roots plus `extra_roots`, no redirects followed (a
/// 3xx is a failed delivery), `TIMEOUT` per request.
///
/// # Errors
/// When the TLS setup fails.
pub fn client(extra_roots: &[reqwest::Certificate]) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none());
    for c in extra_roots {
        b = b.add_root_certificate(c.clone());
    }
    b.build()
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
    let timestamp = Utc::now().timestamp();
    let res = client
        .post(&cfg.url)
        .header("content-type", "application/json")
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&cfg.secrets, &ev.id, timestamp, body.as_bytes()))
        .header("idempotency-key", &ev.idempotency_key)
        .header("x-moonborn-event", &ev.event_type)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e.without_url())))?;
    if res.status().is_success() {
        Ok(())
    } else if res.status().is_redirection() {
        Err(format!("webhook answered {} (redirects are not followed)", res.status()))
    } else {
        Err(format!("webhook answered {}", res.status()))
    }
}

/// An error with its causes (reqwest's own message hides why a TLS handshake failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Runs the delivery loop forever.
pub async fn run(store: Store, cfg: WebhookConfig) {
    let client = match client(&cfg.extra_roots) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; outbox events stay queued");
            return;
        }
    };
    // A success after a failure: the receiver is (back) up.
    let mut failed_since_reset = false;
    let mut reset_due = false;
    let mut last_reset: Option<Instant> = None;
    loop {
        if reset_due && last_reset.is_none_or(|t| t.elapsed() >= RESET_EVERY) {
            match store.reset_outbox_backoff().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(events = n, "webhook receiver answering again; waiting events are due now");
                    }
                    reset_due = false;
                    last_reset = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "cannot reset the outbox backoff"),
            }
        }
        let batch = match store.claim_due_events(BATCH, LEASE_SECS).await {
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
        let outcomes: Vec<bool> = futures_util::stream::iter(batch)
            .map(|ev| {
                let (client, cfg, store) = (&client, &cfg, &store);
                async move {
                    let delivered = deliver(client, cfg, &ev).await;
                    let ok = delivered.is_ok();
                    let outcome = if ok { "delivered" } else { "failed" };
                    crate::metrics::METRICS
                        .webhook_deliveries
                        .get_or_create(&crate::metrics::DeliveryLabels { outcome })
                        .inc();
                    let result = match delivered {
                        Ok(()) => store.mark_delivered(&ev.id).await,
                        Err(err) => {
                            let next = crate::domain::fmt_time(Utc::now() + backoff(ev.attempts));
                            tracing::warn!(event = %ev.id, r#type = %ev.event_type, attempts = ev.attempts + 1, error = %err, "webhook delivery failed; will retry");
                            store.mark_failed(&ev.id, &next, &err).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(event = %ev.id, error = %e, "cannot record a delivery outcome");
                    }
                    ok
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        if outcomes.iter().any(|ok| !ok) {
            failed_since_reset = true;
        }
        if failed_since_reset && outcomes.iter().any(|ok| *ok) {
            failed_since_reset = false;
            reset_due = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/v1Ze+g9tXU=";

    /// The value Python's hmac/base64 give for the same inputs.
    #[test]
    fn signs_id_timestamp_and_body_with_each_key() {
        let keys = parse_secrets(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let one = signature(&keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(one, "v1,+8Kq1Dsh9IhbTnomFx3qPlIG+Z4UXpoWuBEu+xbFjVg=");
        let two = parse_secrets(&format!("{SECRET},  whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")).unwrap();
        let both = signature(&two, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], one);
        assert!(parts[1].starts_with("v1,") && parts[1] != one);
    }

    #[test]
    fn malformed_secrets_are_named_by_position_never_by_value() {
        for (value, needle) in [
            ("", "empty"),
            ("hunter2hunter2hunter2hunter2", "does not start with whsec_"),
            ("whsec_hunter2!!", "not whsec_ followed by standard base64"),
            ("whsec_aHVudGVyMg==", "decodes to 7 bytes"),
            (&format!("{SECRET} whsec_aHVudGVyMg=="), "secret 2 of 2 decodes to 7 bytes"),
        ] {
            let err = parse_secrets(value).unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("aHVudGVyMg") && !err.contains("MfKQ9"), "{err}");
        }
        assert_eq!(format!("{:?}", parse_secrets(SECRET).unwrap()), "[SigningKey(***)]");
    }

    #[test]
    fn backoff_is_jittered_doubling_and_capped() {
        for attempts in 0..40 {
            let base = (1000i64 << attempts.min(20)).min(BACKOFF_CAP_SECS * 1000);
            let ms = backoff(attempts).num_milliseconds();
            assert!((base / 2..=base).contains(&ms), "attempt {attempts}: {ms} ms");
        }
    }
}

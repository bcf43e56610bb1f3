//! The outbox queue: events written in the transaction of the change they announce (at most
//! one per idempotency key), claimed in order per user, delivered or backed off.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::exec::Stmt;
use super::{Store, StoreError};

/// The outbox row of an event (at most one per idempotency key).
pub(super) fn outbox_stmt(
    tenant_id: i64,
    event_type: &str,
    user_id: &str,
    key: &str,
    payload: &Value,
    now: &str,
) -> Stmt {
    Stmt::new(
        "INSERT INTO outbox (id, tenant_id, event_type, user_id, idempotency_key, payload, status, attempts, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .arg(uuid::Uuid::now_v7().to_string())
    .arg(tenant_id)
    .arg(event_type)
    .arg(user_id)
    .arg(key)
    .arg(payload.to_string())
    .arg(now)
}

/// An outbox event.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEvent {
    /// Position in the outbox (insertion order); listings page by it.
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant_id: i64,
    pub user_id: String,
    pub idempotency_key: String,
    pub payload: Value,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

fn event_from_row(r: &AnyRow) -> Result<OutboxEvent, StoreError> {
    let payload: String = r.try_get("payload")?;
    Ok(columns!(r, OutboxEvent {
        seq, id, event_type, tenant_id, user_id, idempotency_key, status, attempts, next_attempt_at, last_error,
        created_at, delivered_at,
    } + { payload: serde_json::from_str(&payload).unwrap_or(Value::Null) }))
}

const EVENT_COLS: &str = "seq, id, event_type, tenant_id, user_id, idempotency_key, payload, status, attempts, \
                          next_attempt_at, last_error, created_at, delivered_at";

/// An outbox row `o` that may be claimed at `$1` (now): pending, due, not leased, and the first
/// pending event of its (tenant, user) — the `outbox_user_pending` index answers the last part.
const CLAIMABLE: &str = "o.status = 'pending' AND o.next_attempt_at <= $1 \
     AND (o.claimed_until IS NULL OR o.claimed_until <= $1) \
     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.tenant_id = o.tenant_id AND p.user_id = o.user_id \
     AND p.status = 'pending' AND p.seq < o.seq)";

impl Store {
    /// A page of a tenant's outbox, oldest first: events after position `after_seq`, at most
    /// `limit`, optionally only of one type and/or about one user.
    ///
    /// # Errors
    /// Database errors.
    pub async fn outbox_page(
        &self,
        tenant_id: i64,
        after_seq: i64,
        limit: i64,
        event_type: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut cond = String::new();
        let mut args: Vec<&str> = Vec::new();
        for (col, v) in [("event_type", event_type), ("user_id", user_id)] {
            if let Some(v) = v {
                args.push(v);
                cond.push_str(&format!(" AND {col} = ${}", args.len() + 2));
            }
        }
        let sql = format!(
            "SELECT {EVENT_COLS} FROM outbox WHERE tenant_id = $1 AND seq > $2{cond} ORDER BY seq LIMIT ${}",
            args.len() + 3
        );
        let mut q = sqlx::query(&sql).bind(tenant_id).bind(after_seq);
        for a in args {
            q = q.bind(a);
        }
        q = q.bind(limit.max(1));
        q.fetch_all(&self.pool).await?.iter().map(event_from_row).collect()
    }

    /// The outbox at a metrics scrape: events not yet delivered (all tenants), and when the
    /// oldest of them (by position) was queued. One query over the partial index
    /// `outbox_undelivered`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<String>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, (SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1) \
             AS oldest FROM outbox WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get::<i64, _>("n")?, row.try_get::<Option<String>, _>("oldest")?))
    }

    /// A tenant's outbox, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_outbox(&self, tenant_id: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {EVENT_COLS} FROM outbox WHERE tenant_id = $1 ORDER BY seq"))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Claims up to `limit` due events for delivery, oldest first: each is leased to this
    /// deliverer until `lease_secs` from now (`claimed_until`, a compare-and-set, so only one
    /// deliverer holds it; one that dies leaves it to be retried when the lease runs out).
    ///
    /// Only the first pending event of each (tenant, user) is ever claimed: a user's later
    /// event waits while an earlier one is pending (being delivered, or failing), so a user's
    /// events go out in the order they were written, across replicas. Tenant events (an empty
    /// `user_id`) are ordered the same way among themselves, per tenant.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due_events(&self, limit: i64, lease_secs: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let now = chrono::Utc::now();
        let now_s = crate::domain::fmt_time(now);
        let lease = crate::domain::fmt_time(now + chrono::Duration::seconds(lease_secs));
        let rows = sqlx::query(&format!("SELECT {EVENT_COLS} FROM outbox o WHERE {CLAIMABLE} ORDER BY seq LIMIT $2"))
            .bind(&now_s)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let events: Vec<OutboxEvent> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
        if events.is_empty() {
            return Ok(events);
        }
        let stmts = events
            .iter()
            .map(|ev| {
                Stmt::new(format!("UPDATE outbox AS o SET claimed_until = $3 WHERE o.id = $2 AND {CLAIMABLE}"))
                    .arg(now_s.as_str())
                    .arg(ev.id.as_str())
                    .arg(lease.as_str())
            })
            .collect();
        let changed = self.write_stmts(stmts).await?;
        Ok(events.into_iter().zip(changed).filter(|(_, n)| *n == 1).map(|(ev, _)| ev).collect())
    }

    /// Marks an event delivered (and ends its claim).
    ///
    /// # Errors
    /// Database errors.
    pub async fn mark_delivered(&self, id: &str) -> Result<(), StoreError> {
        let stmt = Stmt::new(
            "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = $1, last_error = NULL, \
             claimed_until = NULL WHERE id = $2 AND status = 'pending'",
        )
        .arg(crate::domain::now())
        .arg(id);
        self.write_stmts(vec![stmt]).await.map(drop)
    }

    /// Records a failed delivery and when to try again (and ends its claim).
    ///
    /// # Errors
    /// Database errors.
    pub async fn mark_failed(&self, id: &str, next_attempt_at: &str, error: &str) -> Result<(), StoreError> {
        let stmt = Stmt::new(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, claimed_until = NULL \
             WHERE id = $3 AND status = 'pending'",
        )
        .arg(next_attempt_at)
        .arg(error)
        .arg(id);
        self.write_stmts(vec![stmt]).await.map(drop)
    }

    /// Makes a tenant's pending events that wait out a backoff due now (an operator's "retry
    /// now"); how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn retry_tenant_outbox(&self, tenant_id: i64) -> Result<u64, StoreError> {
        let now = crate::domain::now();
        let stmt = Stmt::new(
            "UPDATE outbox SET next_attempt_at = $1 WHERE tenant_id = $2 AND status = 'pending' AND next_attempt_at > $1",
        )
        .arg(now.as_str())
        .arg(tenant_id);
        Ok(self.write_stmts(vec![stmt]).await?.into_iter().sum())
    }

    /// Makes every pending event waiting out a backoff due now (the receiver answers again);
    /// how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn reset_outbox_backoff(&self) -> Result<u64, StoreError> {
        let now = crate::domain::now();
        let stmt =
            Stmt::new("UPDATE outbox SET next_attempt_at = $1 WHERE status = 'pending' AND next_attempt_at > $1")
                .arg(now.as_str());
        Ok(self.write_stmts(vec![stmt]).await?.into_iter().sum())
    }
}

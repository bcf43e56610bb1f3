//! Direct database work: seeding (setup, not measured), the storage ceilings, and the
//! controller-progress reads the scenarios wait on.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::TryStreamExt;
use moonborn_scim::domain::{desired_user, user_id_for, Bindings};
use moonborn_scim::scim::schema::{normalize, Kind};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

use crate::client::Sample;

/// Opens a pool with the server's SQLite pragmas (WAL, synchronous=FULL, busy_timeout), plus a
/// bigger page cache for the bench's own bulk work.
pub async fn pool(url: &str, max: u32) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let url = if sqlite && !url.contains("mode=") { format!("{url}?mode=rwc") } else { url.to_string() };
    let opts = AnyConnectOptions::from_str(&url)?;
    let p = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; \
                         PRAGMA foreign_keys=ON;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(p)
}

/// A tenant's id by slug.
pub async fn tenant_id(pool: &AnyPool, slug: &str) -> anyhow::Result<i64> {
    let r = sqlx::query("SELECT id FROM tenants WHERE slug = $1").bind(slug).fetch_one(pool).await?;
    Ok(r.try_get("id")?)
}

/// The userName of seeded user `i`.
pub fn user_name(i: usize) -> String {
    format!("user{i:07}@bench.example")
}

/// A SCIM user body as Okta sends it.
pub fn user_body(user_name: &str, i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "externalId": format!("00u{i:013}"),
        "name": {"givenName": format!("Given{i:07}"), "familyName": format!("Family{i:07}")},
        "displayName": format!("Given{i:07} Family{i:07}"),
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true
    })
}

fn values_sql(table_cols: &str, ncols: usize, nrows: usize, consts: &str) -> String {
    let mut s = format!("INSERT INTO {table_cols} VALUES ");
    for r in 0..nrows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..ncols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!("${}", r * ncols + c + 1));
        }
        s.push_str(consts);
        s.push(')');
    }
    s
}

/// Seeds `n` users (SCIM desired state and, already reconciled, the Moonborn actual state with
/// version 1 and the default role) and the bench groups; the SCIM ids, in user order.
/// `groups` are (group id, displayName, member indexes).
pub async fn seed(
    pool: &AnyPool,
    tenant_id: i64,
    n: usize,
    groups: &[(String, String, Vec<usize>)],
) -> anyhow::Result<Vec<String>> {
    const ROWS: usize = 100;
    const TX_ROWS: usize = 20_000;
    let now = moonborn_scim::domain::now();
    let bindings = Bindings::default();
    // Ids as the server makes them (time-ordered UUIDv7), so the seeded tenant is laid out as
    // one whose users were created through the API.
    let ids: Vec<String> = (0..n).map(|_| moonborn_scim::domain::new_resource_id()).collect();
    let mut group_names: Vec<Vec<String>> = vec![Vec::new(); n];
    for (_, name, members) in groups {
        for &m in members {
            group_names[m].push(name.clone());
        }
    }
    let mut conn = pool.acquire().await?;
    if pool.connect_options().database_url.scheme().starts_with("sqlite") {
        // Setup only: a big cache and no fsync per bulk transaction.
        conn.execute("PRAGMA cache_size=-262144; PRAGMA synchronous=OFF;").await?;
    }
    let mut start = 0;
    while start < n {
        let end = (start + TX_ROWS).min(n);
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut chunk_start = start;
        while chunk_start < end {
            let chunk_end = (chunk_start + ROWS).min(end);
            let k = chunk_end - chunk_start;
            let su = values_sql(
                "scim_users (tenant_id, id, user_name, user_name_lc, external_id, display_name, doc, created_at, \
                 updated_at, active, version)",
                9,
                k,
                ", 1, 1",
            );
            let em = values_sql("scim_user_emails (tenant_id, user_id, value_lc)", 3, k, "");
            let us = values_sql(
                "users (tenant_id, id, email, email_lc, display_name, contact_email, scim_id, external_id, \
                 created_at, updated_at, status, managed_by, version)",
                10,
                k,
                ", 'active', 'scim', 1",
            );
            let mut q_su = sqlx::query(&su);
            let mut q_em = sqlx::query(&em);
            let mut q_us = sqlx::query(&us);
            let mut roles: Vec<(String, String)> = Vec::new();
            for i in chunk_start..chunk_end {
                let name = user_name(i);
                let doc = normalize(Kind::User, user_body(&name, i)).map_err(|e| anyhow::anyhow!(e.detail))?;
                let d = desired_user(&ids[i], &doc, &group_names[i], &bindings);
                let uid = user_id_for(&ids[i]);
                q_su = q_su
                    .bind(tenant_id)
                    .bind(ids[i].clone())
                    .bind(name.clone())
                    .bind(name.to_lowercase())
                    .bind(d.external_id.clone())
                    .bind(doc.get("displayName").and_then(Value::as_str).map(str::to_string))
                    .bind(doc.to_string())
                    .bind(now.clone())
                    .bind(now.clone());
                q_em = q_em.bind(tenant_id).bind(ids[i].clone()).bind(name.to_lowercase());
                q_us = q_us
                    .bind(tenant_id)
                    .bind(uid.clone())
                    .bind(d.user_name.clone())
                    .bind(d.user_name.to_lowercase())
                    .bind(d.display_name.clone())
                    .bind(d.contact_email.clone())
                    .bind(ids[i].clone())
                    .bind(d.external_id.clone())
                    .bind(now.clone())
                    .bind(now.clone());
                roles.extend(d.roles.iter().map(|r| (uid.clone(), r.clone())));
            }
            q_su.execute(&mut *tx).await?;
            q_em.execute(&mut *tx).await?;
            q_us.execute(&mut *tx).await?;
            for part in roles.chunks(ROWS) {
                let sql = values_sql("user_roles (tenant_id, user_id, role)", 3, part.len(), "");
                let mut q = sqlx::query(&sql);
                for (u, r) in part {
                    q = q.bind(tenant_id).bind(u.clone()).bind(r.clone());
                }
                q.execute(&mut *tx).await?;
            }
            chunk_start = chunk_end;
        }
        tx.commit().await?;
        start = end;
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for (gid, name, members) in groups {
        let doc = normalize(
            Kind::Group,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name}),
        )
        .map_err(|e| anyhow::anyhow!(e.detail))?;
        sqlx::query(
            "INSERT INTO scim_groups (tenant_id, id, display_name, display_name_lc, doc, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(tenant_id)
        .bind(gid.clone())
        .bind(name.clone())
        .bind(name.to_lowercase())
        .bind(doc.to_string())
        .bind(now.clone())
        .execute(&mut *tx)
        .await?;
        for part in members.chunks(ROWS) {
            let sql = values_sql("scim_group_members (tenant_id, group_id, member_id, member_type)", 4, part.len(), "");
            let mut q = sqlx::query(&sql);
            for &m in part {
                q = q.bind(tenant_id).bind(gid.clone()).bind(ids[m].clone()).bind("User");
            }
            q.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    drop(conn);
    if pool.connect_options().database_url.scheme().starts_with("sqlite") {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
        sqlx::query("ANALYZE").execute(pool).await?;
    } else {
        sqlx::query("ANALYZE").execute(pool).await?;
    }
    Ok(ids)
}

/// Raw insert ceiling: one scim_users-shaped row per transaction, durable at commit, into a
/// table of its own. `writers` concurrent connections (1 on SQLite: one writer at a time).
pub async fn insert_ceiling(pool: &AnyPool, writers: usize, window: Duration) -> anyhow::Result<Sample> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_insert_ceiling (tenant_id BIGINT NOT NULL, id TEXT NOT NULL, \
         user_name_lc TEXT NOT NULL, doc TEXT NOT NULL, version BIGINT NOT NULL, created_at TEXT NOT NULL, \
         UNIQUE (tenant_id, id), UNIQUE (tenant_id, user_name_lc))",
    )
    .execute(pool)
    .await?;
    let doc = normalize(Kind::User, user_body("ceiling@bench.example", 0)).map_err(|e| anyhow::anyhow!(e.detail))?;
    let doc = Arc::new(doc.to_string());
    let until = Instant::now() + window;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = pool.clone();
        let doc = doc.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = pool.acquire().await?;
            let mut i = 0u64;
            while Instant::now() < until {
                let t0 = Instant::now();
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query(
                    "INSERT INTO bench_insert_ceiling (tenant_id, id, user_name_lc, doc, version, created_at) \
                     VALUES (1, $1, $2, $3, 1, $4)",
                )
                .bind(moonborn_scim::domain::new_resource_id())
                .bind(format!("w{w}-{i}@bench.example"))
                .bind(doc.as_str())
                .bind(moonborn_scim::domain::now())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                lat.push(t0.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Sample::merge(parts, window.as_secs_f64()))
}

/// Indexed point-read ceiling: the row `GET /Users/{id}` reads, by random id, from `readers`
/// tasks over the pool.
pub async fn point_read_ceiling(
    pool: &AnyPool,
    tenant_id: i64,
    ids: Arc<Vec<String>>,
    readers: usize,
    window: Duration,
) -> anyhow::Result<Sample> {
    let until = Instant::now() + window;
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let pool = pool.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let id = ids[rand::thread_rng().gen_range(0..ids.len())].clone();
                let t0 = Instant::now();
                let row = sqlx::query(
                    "SELECT seq, id, doc, version, created_at, updated_at FROM scim_users WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&pool)
                .await?;
                anyhow::ensure!(row.is_some(), "a seeded user is missing");
                lat.push(t0.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Sample::merge(parts, window.as_secs_f64()))
}

/// Ordered full-scan ceiling: what a full plan must read, streamed in key order (desired users
/// with their documents by SCIM id, actual users by id); (rows, seconds).
pub async fn scan_ceiling(pool: &AnyPool, tenant_id: i64) -> anyhow::Result<(u64, f64)> {
    let t0 = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0usize;
    let mut s =
        sqlx::query("SELECT id, doc FROM scim_users WHERE tenant_id = $1 ORDER BY id").bind(tenant_id).fetch(pool);
    while let Some(r) = s.try_next().await? {
        let doc: String = r.try_get("doc")?;
        bytes += doc.len();
        rows += 1;
    }
    drop(s);
    let mut s = sqlx::query(
        "SELECT id, email, display_name, contact_email, status, managed_by, scim_id, external_id, purge_after, \
         version, hand_edited FROM users WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch(pool);
    while let Some(r) = s.try_next().await? {
        let id: String = r.try_get("id")?;
        bytes += id.len();
        rows += 1;
    }
    std::hint::black_box(bytes);
    Ok((rows, t0.elapsed().as_secs_f64()))
}

/// Waits until the controller has reconciled the tenant's whole intent journal (and, with
/// `full_run`, finished a whole-tenant run); false on timeout.
pub async fn wait_controller(
    pool: &AnyPool,
    tenant_id: i64,
    full_run: bool,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    loop {
        let r = sqlx::query(
            "SELECT COALESCE((SELECT MAX(seq) FROM intent_journal WHERE tenant_id = $1), 0) AS head, \
             COALESCE((SELECT applied_journal_seq FROM controller_state WHERE tenant_id = $1), 0) AS done, \
             (SELECT COUNT(*) FROM controller_state WHERE tenant_id = $1 AND last_full_run_at IS NOT NULL) AS full_runs",
        )
        .bind(tenant_id)
        .fetch_one(pool)
        .await?;
        let head: i64 = r.try_get("head")?;
        let done: i64 = r.try_get("done")?;
        let full: i64 = r.try_get("full_runs")?;
        if done >= head && (!full_run || full > 0) {
            return Ok(true);
        }
        if t0.elapsed() > timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Drifts 1% of a tenant's SCIM-managed users (a hand edit of the display name, marked as the
/// admin API's hand edits are); how many.
pub async fn drift(pool: &AnyPool, tenant_id: i64) -> anyhow::Result<u64> {
    let r = sqlx::query(
        "UPDATE users SET display_name = 'Drifted by hand', version = version + 1, hand_edited = 1 \
         WHERE tenant_id = $1 AND managed_by = 'scim' AND seq % 100 = 37",
    )
    .bind(tenant_id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// For the users whose email starts with `prefix`: (email, applied at, run finished at — of the
/// run whose audit row records creating the user, at or after `since`). Two indexed reads joined
/// here: the audit log has no index by user, so joining it to the users in SQL scanned the
/// tenant's whole audit log once per user (minutes at a million users).
pub async fn applied_times(
    pool: &AnyPool,
    tenant_id: i64,
    prefix: &str,
    since: &str,
) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    let users = sqlx::query(
        "SELECT id, email_lc, created_at FROM users \
         WHERE tenant_id = $1 AND status <> 'purged' AND email_lc >= $2 AND email_lc < $3",
    )
    .bind(tenant_id)
    .bind(prefix.to_string())
    .bind(format!("{prefix}\u{7f}"))
    .fetch_all(pool)
    .await?;
    let created = sqlx::query(
        "SELECT a.user_id, r.finished_at FROM audit_log a LEFT JOIN runs r ON r.id = a.run_id \
         WHERE a.tenant_id = $1 AND a.at >= $2 AND a.action = 'create' AND a.user_id IS NOT NULL",
    )
    .bind(tenant_id)
    .bind(since.to_string())
    .fetch_all(pool)
    .await?;
    let mut finished: HashMap<String, Option<String>> = HashMap::new();
    for r in &created {
        finished.insert(r.try_get("user_id")?, r.try_get("finished_at")?);
    }
    users
        .iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            Ok((r.try_get("email_lc")?, r.try_get("created_at")?, finished.get(&id).cloned().flatten()))
        })
        .collect()
}

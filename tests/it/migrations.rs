//! Migrations applied to a database that already holds data. A SQLite file is brought to an
//! earlier schema version with the migration files of that version, filled with rows as the code
//! of that version wrote them, then opened by the real store (which runs the later migrations)
//! and read and written through the real router over HTTP.

use std::path::Path;
use std::str::FromStr as _;

use moonborn_scim::app::{App, Config};
use moonborn_scim::http::SCIM_BASE;
use moonborn_scim::Store;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// Brings a new SQLite file at `url` to the schema of migrations `..=version`.
async fn migrate_to(url: &str, version: i64, dir: &Path) -> sqlx::SqlitePool {
    let src = dir.join(format!("migrations-{version}"));
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let v: i64 = name[..4].parse().unwrap();
        if v <= version {
            std::fs::copy(e.path(), src.join(&name)).unwrap();
        }
    }
    let opts = SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
    let m = sqlx::migrate::Migrator::new(src.as_path()).await.unwrap();
    assert_eq!(m.iter().map(|m| m.version).max(), Some(version));
    m.run(&pool).await.unwrap();
    pool
}

async fn send(
    c: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.header("content-type", "application/scim+json").body(b.to_string());
    }
    let res = rb.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["value"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// 0005 stores memberships and emails clustered by their keys (`WITHOUT ROWID`): every row,
/// key and index survives, and reads and writes of both go on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_0005_keeps_memberships_and_emails() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("scim.db").display());
    let pool = migrate_to(&url, 4, dir.path()).await;
    let now = "2026-01-01T00:00:00Z";
    sqlx::raw_sql(
        "INSERT INTO tenants (id, slug, tier, created_at) VALUES (7, 'acme', 'enterprise', '2026-01-01T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let users = [("u-1", "ada@acme.test"), ("u-2", "bob@acme.test"), ("u-3", "cyd@acme.test")];
    for (id, name) in users {
        let doc = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "emails": [{"value": name, "primary": true}],
            "active": true
        });
        sqlx::query(
            "INSERT INTO scim_users (tenant_id, id, user_name, user_name_lc, active, doc, version, created_at, \
             updated_at) VALUES (7, ?, ?, ?, 1, ?, 1, ?, ?)",
        )
        .bind(id)
        .bind(name)
        .bind(name)
        .bind(doc.to_string())
        .bind(now)
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO scim_user_emails (tenant_id, user_id, value_lc) VALUES (7, ?, ?)")
            .bind(id)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
    }
    let group_doc = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Staff"});
    sqlx::query(
        "INSERT INTO scim_groups (tenant_id, id, display_name, display_name_lc, doc, version, created_at, updated_at) \
         VALUES (7, 'g-1', 'Staff', 'staff', ?, 1, ?, ?)",
    )
    .bind(group_doc.to_string())
    .bind(now)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    for m in ["u-1", "u-2"] {
        sqlx::query(
            "INSERT INTO scim_group_members (tenant_id, group_id, member_id, member_type, display) \
             VALUES (7, 'g-1', ?, 'User', ?)",
        )
        .bind(m)
        .bind(format!("display of {m}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    // Both tables as they are before the migration, in key order, to compare with after it.
    const MEMBERS: &str = "SELECT tenant_id, group_id, member_id, member_type, display FROM scim_group_members \
                           ORDER BY tenant_id, group_id, member_id";
    const EMAILS: &str =
        "SELECT tenant_id, user_id, value_lc FROM scim_user_emails ORDER BY tenant_id, value_lc, user_id";
    type MemberRow = (i64, String, String, String, Option<String>);
    let members_before: Vec<MemberRow> = sqlx::query_as(MEMBERS).fetch_all(&pool).await.unwrap();
    let emails_before: Vec<(i64, String, String)> = sqlx::query_as(EMAILS).fetch_all(&pool).await.unwrap();
    assert_eq!((members_before.len(), emails_before.len()), (2, 3));
    pool.close().await;

    let store = Store::open(&url).await.unwrap();
    let p = store.pool();
    let members_after: Vec<MemberRow> = sqlx::query_as(MEMBERS).fetch_all(p).await.unwrap();
    let emails_after: Vec<(i64, String, String)> = sqlx::query_as(EMAILS).fetch_all(p).await.unwrap();
    assert_eq!(members_after, members_before);
    assert_eq!(emails_after, emails_before);
    // The same keys and index columns as 0001 declared.
    async fn cols(p: &sqlx::AnyPool, sql: &str) -> Vec<String> {
        sqlx::query_as::<_, (String,)>(sql).fetch_all(p).await.unwrap().into_iter().map(|(c,)| c).collect()
    }
    let pk = "SELECT name FROM pragma_table_info($1) WHERE pk > 0 ORDER BY pk";
    assert_eq!(
        sqlx::query_as::<_, (String,)>(pk).bind("scim_group_members").fetch_all(p).await.unwrap(),
        [("tenant_id".to_string(),), ("group_id".to_string(),), ("member_id".to_string(),)]
    );
    assert_eq!(
        sqlx::query_as::<_, (String,)>(pk).bind("scim_user_emails").fetch_all(p).await.unwrap(),
        [("tenant_id".to_string(),), ("value_lc".to_string(),), ("user_id".to_string(),)]
    );
    assert_eq!(
        cols(p, "SELECT name FROM pragma_index_info('scim_group_members_member') ORDER BY seqno").await,
        ["tenant_id", "member_id", "group_id"]
    );
    assert_eq!(
        cols(p, "SELECT name FROM pragma_index_info('scim_user_emails_user') ORDER BY seqno").await,
        ["tenant_id", "user_id"]
    );
    for table in ["scim_group_members", "scim_user_emails"] {
        let (sql,): (String,) = sqlx::query_as("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(table)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(sql.contains("WITHOUT ROWID"), "{table}: {sql}");
    }
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let indexes: Vec<&str> = indexes.iter().map(|(n,)| n.as_str()).collect();
    assert!(indexes.contains(&"scim_group_members_member"), "{indexes:?}");
    assert!(indexes.contains(&"scim_user_emails_user"), "{indexes:?}");
    assert!(!indexes.iter().any(|n| n.contains("clustered")), "{indexes:?}");
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check").fetch_one(store.pool()).await.unwrap();
    assert_eq!(check, "ok");

    let (_, token) = store.create_token("acme").await.unwrap();
    let config = Config { controller_workers: 0, ..Config::new(url.clone()) };
    let app = App::with_store(store.clone(), config).unwrap();
    let base = format!("http://{}{SCIM_BASE}", app.addr());
    let server = tokio::spawn(async move { app.run_until_stopped(std::future::pending()).await.unwrap() });
    let c = reqwest::Client::new();
    use reqwest::Method;

    // The memberships written before the migration, from both sides.
    let (s, g) = send(&c, &token, Method::GET, &format!("{base}/Groups/g-1"), None).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(member_ids(&g), ["u-1", "u-2"]);
    let (s, u) = send(&c, &token, Method::GET, &format!("{base}/Users/u-1"), None).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["groups"][0]["value"], "g-1", "{u}");
    assert_eq!(u["groups"][0]["display"], "Staff", "{u}");
    let (_, u3) = send(&c, &token, Method::GET, &format!("{base}/Users/u-3"), None).await;
    assert!(u3.get("groups").is_none(), "{u3}");
    // The emails written before the migration answer a filter.
    let f = format!("{base}/Users?filter=emails%20eq%20%22BOB@acme.test%22");
    let (s, l) = send(&c, &token, Method::GET, &f, None).await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["totalResults"], 1, "{l}");
    assert_eq!(l["Resources"][0]["id"], "u-2", "{l}");

    // Writes to both tables after it: a member removed and one added; an email replaced.
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "remove", "path": "members[value eq \"u-2\"]"},
            {"op": "add", "path": "members", "value": [{"value": "u-3"}]}
        ]
    });
    let (s, r) = send(&c, &token, Method::PATCH, &format!("{base}/Groups/g-1"), Some(patch)).await;
    assert!(s == 200 || s == 204, "{s} {r}");
    let (_, g) = send(&c, &token, Method::GET, &format!("{base}/Groups/g-1"), None).await;
    assert_eq!(member_ids(&g), ["u-1", "u-3"]);
    let (_, u2) = send(&c, &token, Method::GET, &format!("{base}/Users/u-2"), None).await;
    assert!(u2.get("groups").is_none(), "{u2}");
    let put = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bob@acme.test",
        "emails": [{"value": "robert@acme.test", "primary": true}],
        "active": true
    });
    let (s, r) = send(&c, &token, Method::PUT, &format!("{base}/Users/u-2"), Some(put)).await;
    assert_eq!(s, 200, "{r}");
    let (_, l) = send(&c, &token, Method::GET, &f, None).await;
    assert_eq!(l["totalResults"], 0, "{l}");
    let f2 = format!("{base}/Users?filter=emails%20eq%20%22robert@acme.test%22");
    let (_, l) = send(&c, &token, Method::GET, &f2, None).await;
    assert_eq!(l["totalResults"], 1, "{l}");
    assert_eq!(l["Resources"][0]["id"], "u-2", "{l}");
    server.abort();
}

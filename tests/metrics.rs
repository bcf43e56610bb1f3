//! `GET /v1/admin/metrics`: the process's metrics in the OpenMetrics text format, behind the
//! admin token, counting what the requests before it did. A binary of its own: the registry
//! belongs to the process, so nothing else may count while a test compares readings (its two
//! tests, one per backend, take turns).

mod common;

use reqwest::Method;

use common::app::{eventually, Backend, TestApp};

/// The value of the sample `name{labels}` (exact label text, `""` for none); 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let key = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|l| l.strip_prefix(key.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

const STARTUP_NOOP: (&str, &str) =
    ("moonborn_controller_runs_total", r#"trigger="startup",scope="full",status="noop""#);
const PUSH_APPLIED: (&str, &str) =
    ("moonborn_controller_runs_total", r#"trigger="push",scope="incremental",status="applied""#);

async fn scrape(app: &TestApp) -> String {
    let r = app.admin_get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(r.text.ends_with("# EOF\n"), "{}", r.text);
    r.text
}

async fn check(app: &TestApp, before: &str) {
    let delta = |now: &str, (name, labels): (&str, &str)| sample(now, name, labels) - sample(before, name, labels);
    app.request(None, Method::GET, "/metrics", None, &[]).await.expect_admin_error(401);
    app.request(Some(&app.token), Method::GET, "/metrics", None, &[]).await.expect_admin_error(401);
    app.admin(Method::POST, "/metrics", None).await.expect_admin_error(405);
    // The empty tenant's start-up run finds nothing to do; waited for, so that the push below
    // gets a run of its own.
    eventually("the start-up run", || async { (delta(&scrape(app).await, STARTUP_NOOP) == 1.0).then_some(()) }).await;

    app.scim_user("metered@acme.com").await;
    app.wait_user("metered@acme.com", "provisioned", |u| u["status"] == "active").await;
    app.scim(Method::GET, "/Users/no-such-id", None).await.expect(404);
    let now = eventually("the push's run", || async {
        let t = scrape(app).await;
        (delta(&t, PUSH_APPLIED) >= 1.0).then_some(t)
    })
    .await;
    let d = |name: &str, labels: &str| delta(&now, (name, labels));
    assert_eq!(d("moonborn_http_requests_total", r#"api="scim",method="POST",status="201""#), 1.0, "{now}");
    assert_eq!(d("moonborn_http_requests_total", r#"api="scim",method="GET",status="404""#), 1.0, "{now}");
    assert!(d("moonborn_http_requests_total", r#"api="admin",method="GET",status="401""#) >= 2.0, "{now}");
    assert!(d("moonborn_http_requests_total", r#"api="admin",method="GET",status="200""#) >= 2.0, "{now}");
    assert!(d("moonborn_http_request_duration_seconds_count", r#"api="scim""#) >= 2.0, "{now}");
    assert_eq!(delta(&now, STARTUP_NOOP), 1.0, "{now}");
    // The user was provisioned by a push-triggered run: one change (more only if a second push
    // run re-applied, which nothing here causes).
    assert_eq!(d("moonborn_controller_changes_applied_total", ""), 1.0, "{now}");
    assert!(d("moonborn_controller_run_duration_seconds_count", r#"scope="incremental""#) >= 1.0, "{now}");
    let fsyncs = d("moonborn_sqlite_wal_fsync_duration_seconds_count", "");
    let batches = d("moonborn_sqlite_batch_writes_count", "");
    let commits = d("moonborn_sqlite_commit_duration_seconds_count", "");
    match app.backend {
        // Every acknowledged write waited for an fsync of the WAL, carried by a committed batch.
        Backend::Sqlite => assert!(fsyncs >= 1.0 && batches >= 1.0 && commits >= 1.0, "{now}"),
        // Nothing of PostgreSQL goes through the SQLite writer.
        Backend::Postgres => assert!(fsyncs == 0.0 && batches == 0.0 && commits == 0.0, "{now}"),
    }
    // The welcome event stays queued (no webhook): the outbox gauges read it from this backend.
    assert!(sample(&now, "moonborn_outbox_backlog", "") >= 1.0, "{now}");
    assert!(now.contains("\nmoonborn_outbox_oldest_undelivered_age_seconds "), "{now}");
    // Labels come from fixed sets: no tenant, user name or id ever becomes a series.
    for secret in ["acme", "metered", "no-such-id"] {
        assert!(!now.contains(secret), "{secret} in the metrics:\n{now}");
    }
}

/// One server at a time: the registry belongs to the process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn metrics_count_what_the_server_did(backend: Backend) {
    let _one = ONE_AT_A_TIME.lock().await;
    // Read in-process before the server exists: its start-up run is counted after this.
    let before = moonborn_scim::metrics::METRICS.encode();
    let app = TestApp::admin_api(backend).await;
    check(&app, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_server_did_sqlite() {
    metrics_count_what_the_server_did(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn metrics_count_what_the_server_did_postgres() {
    metrics_count_what_the_server_did(Backend::Postgres).await;
}

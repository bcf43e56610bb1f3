//! `GET /v1/admin/metrics`: the process's metrics in the OpenMetrics text format, behind the
//! admin token, counting what the requests before it did.

use reqwest::Method;

use crate::admin_test;
use crate::helpers::{eventually, Backend};

/// The value of the sample `name{labels}` (exact label text, `""` for none) in `text`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|l| l.strip_prefix(key.as_str())).and_then(|v| v.trim().parse().ok())
}

admin_test!(
    async fn metrics_need_the_admin_token(app) {
        app.request(None, Method::GET, "/metrics", None, &[]).await.expect_error(401);
        app.request(Some(&app.token), Method::GET, "/metrics", None, &[]).await.expect_error(401);
        app.admin(Method::POST, "/metrics", None).await.expect_error(405);
    }
);

admin_test!(
    async fn metrics_count_requests_runs_and_the_disk(app) {
        app.scim_user("metered@acme.com").await;
        app.wait_user("metered@acme.com", "provisioned", |u| u["status"] == "active").await;
        app.scim(Method::GET, "/Users/no-such-id", None).await.expect(404);
        let text = eventually("the push's run in the metrics", || async {
            let r = app.get("/metrics").await;
            assert_eq!(r.status, 200, "{}", r.text);
            let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
            let runs = sample(
                &r.text,
                "moonborn_controller_runs_total",
                r#"trigger="push",scope="incremental",status="applied""#,
            );
            runs.is_some_and(|n| n >= 1.0).then(|| r.text.clone())
        })
        .await;
        let at_least_one = |name: &str, labels: &str| {
            let v = sample(&text, name, labels);
            assert!(v.is_some_and(|n| n >= 1.0), "{name}{{{labels}}} = {v:?} in:\n{text}");
        };
        at_least_one("moonborn_http_requests_total", r#"api="scim",method="POST",status="201""#);
        at_least_one("moonborn_http_requests_total", r#"api="scim",method="GET",status="404""#);
        at_least_one("moonborn_http_requests_total", r#"api="admin",method="GET",status="200""#);
        at_least_one("moonborn_http_request_duration_seconds_count", r#"api="scim""#);
        at_least_one("moonborn_controller_run_duration_seconds_count", r#"scope="incremental""#);
        at_least_one("moonborn_controller_changes_applied_total", "");
        // The start-up run of the empty tenant found nothing to change.
        at_least_one("moonborn_controller_runs_total", r#"trigger="startup",scope="full",status="noop""#);
        if app.backend == Backend::Sqlite {
            // Every acknowledged write waited for an fsync of the WAL, carried by a batch.
            at_least_one("moonborn_sqlite_wal_fsync_duration_seconds_count", "");
            at_least_one("moonborn_sqlite_batch_writes_count", "");
            at_least_one("moonborn_sqlite_commit_duration_seconds_count", "");
            // Histogram buckets are cumulative and end at +Inf = count.
            let buckets: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with("moonborn_sqlite_wal_fsync_duration_seconds_bucket{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            assert!(buckets.len() > 2 && buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
            assert_eq!(
                buckets.last().copied(),
                sample(&text, "moonborn_sqlite_wal_fsync_duration_seconds_count", ""),
                "{text}"
            );
        }
        // Labels come from fixed sets: no tenant, user name or id ever becomes a series.
        for secret in ["acme", "metered", "no-such-id"] {
            assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
);

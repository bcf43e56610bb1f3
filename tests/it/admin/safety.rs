//! The safety valve as an IdP and an operator meet it: a burst of destructive pushes is judged
//! whole (over several connections, or paced over a minute), an ordinary leaver goes through
//! after the settle time, creates are never delayed, the hold's reason states the numbers, the
//! IdP's revert ends the hold by itself, and every hold is seen at once (tenant status, the
//! `tenant.held` event, the metric). Each test has a tenant of its own (a unique slug), so the
//! process-wide metric it reads is its own.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::backend_test;
use crate::common::app::{eventually, Resp, TestApp, ADMIN_TOKEN};
use moonborn_scim::http::SCIM_BASE;
use moonborn_scim::Tier;

/// A tenant of its own inside a test server, with its SCIM token.
struct Tenant<'a> {
    app: &'a TestApp,
    slug: String,
    token: String,
}

impl<'a> Tenant<'a> {
    /// A new Enterprise tenant with the valve's defaults but `settle_secs` (the default 10 s
    /// would make every test wait that long).
    async fn new(app: &'a TestApp, settle_secs: f64) -> Tenant<'a> {
        let slug = format!("valve-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        app.store.create_tenant(&slug, Tier::Enterprise).await.expect("tenant");
        let (_, token) = app.store.create_token(&slug).await.expect("token");
        let t = Tenant { app, slug, token };
        let s = app.admin_put(&t.path("/safety"), &json!({"settle_secs": settle_secs})).await.expect(200).clone();
        assert_eq!((s["percent"].as_u64(), s["min_users"].as_u64()), (Some(20), Some(10)), "defaults: {s}");
        assert_eq!(s["max_wait_secs"], 120.0);
        t
    }

    fn path(&self, rest: &str) -> String {
        format!("/tenants/{}{rest}", self.slug)
    }

    async fn scim(&self, client: &reqwest::Client, method: Method, path: &str, body: &Value) -> Resp {
        let url = format!("{}{SCIM_BASE}{path}", self.app.origin);
        let mut rb = client.request(method, url).bearer_auth(&self.token);
        if !body.is_null() {
            rb = rb.header("content-type", "application/scim+json").body(body.to_string());
        }
        let res = rb.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, body }
    }

    /// Pushes `n` users `u{i}@{slug}.example` and waits until all are provisioned; their SCIM ids.
    async fn users(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(self.create(&self.app.client, &self.email(i)).await);
        }
        self.wait_count("active", n).await;
        ids
    }

    fn email(&self, i: usize) -> String {
        format!("u{i}@{}.example", self.slug)
    }

    async fn create(&self, client: &reqwest::Client, user_name: &str) -> String {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name, "name": {"givenName": "G", "familyName": "F"}, "active": true
        });
        let r = self.scim(client, Method::POST, "/Users", &body).await;
        r.expect(201)["id"].as_str().expect("id").to_string()
    }

    async fn set_active(&self, client: &reqwest::Client, scim_id: &str, active: bool) {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": active}]
        });
        self.scim(client, Method::PATCH, &format!("/Users/{scim_id}"), &body).await.expect(200);
    }

    /// Every Moonborn user of the tenant.
    async fn all(&self) -> Vec<Value> {
        let r = self.app.admin_get(&self.path("/users?limit=1000")).await.expect(200).clone();
        r["users"].as_array().expect("users").clone()
    }

    async fn count(&self, status: &str) -> usize {
        self.all().await.iter().filter(|u| u["status"] == status).count()
    }

    async fn user(&self, email: &str) -> Value {
        self.all().await.into_iter().find(|u| u["email"] == email).unwrap_or_else(|| panic!("no user {email}"))
    }

    async fn wait_count(&self, status: &str, n: usize) {
        eventually(&format!("{n} users {status}"), || async { (self.count(status).await == n).then_some(()) }).await;
    }

    async fn safety(&self) -> Value {
        self.app.admin_get(&self.path("/safety")).await.expect(200).clone()
    }

    async fn wait_held(&self) -> Value {
        eventually("the hold", || async {
            let s = self.safety().await;
            (!s["held"].is_null()).then_some(s["held"].clone())
        })
        .await
    }

    async fn events(&self, ty: &str) -> Vec<Value> {
        let r = self.app.admin_get(&self.path(&format!("/outbox?type={ty}"))).await.expect(200).clone();
        r["events"].as_array().expect("events").clone()
    }

    async fn status(&self) -> Value {
        let all = self.app.admin_get("/tenants").await.expect(200).clone();
        let t = all["tenants"].as_array().unwrap().iter().find(|t| t["slug"] == self.slug.as_str()).cloned();
        t.expect("listed")["status"].clone()
    }

    /// This tenant's `tenant_held_changes` sample, if the series exists.
    async fn held_metric(&self) -> Option<f64> {
        let text = self.app.admin_get("/metrics").await.text;
        let key = format!("moonborn_tenant_held_changes{{tenant=\"{}\"}} ", self.slug);
        text.lines().find_map(|l| l.strip_prefix(key.as_str())).and_then(|v| v.trim().parse().ok())
    }

    /// Waits until the tenant has no pushes to reconcile, no run going and no burst waiting.
    async fn quiet(&self) {
        eventually("the tenant to be quiet", || async {
            let st = self.status().await;
            let running = st["last_run"]["status"] == "running";
            (!running && st["pushes_pending"] == false && st["waiting_since"].is_null()).then_some(())
        })
        .await;
    }
}

/// Deactivates `ids` over four connections (each its own client), a quarter each, pausing
/// `pace` between a connection's pushes.
async fn deactivate_over_four_connections(t: &Tenant<'_>, ids: &[String], pace: Duration) {
    let chunks: Vec<Vec<String>> = ids.chunks(ids.len().div_ceil(4)).map(<[String]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = reqwest::Client::new();
        let (origin, token) = (t.app.origin.clone(), t.token.clone());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "active", "value": false}]
                });
                let r = client
                    .patch(format!("{origin}{SCIM_BASE}/Users/{id}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("push");
                assert_eq!(r.status().as_u16(), 200);
                tokio::time::sleep(pace).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("pusher");
    }
}

backend_test!(
    async fn a_burst_of_60_of_200_over_four_connections_is_held_whole_and_its_revert_ends_the_hold(app = TestApp::admin_api) {
        let t = Tenant::new(&app, 2.0).await;
        let ids = t.users(200).await;
        t.quiet().await;
        assert_eq!(t.status().await["state"], "in_sync");
        deactivate_over_four_connections(&t, &ids[..60], Duration::from_millis(20)).await;
        // While the burst settles, a create goes through at once.
        let client = reqwest::Client::new();
        let late = t.create(&client, "late@valve.example").await;
        eventually("the create during the burst", || async {
            (t.all().await.iter().any(|u| u["email"] == "late@valve.example" && u["status"] == "active")).then_some(())
        })
        .await;
        assert_eq!(t.count("disabled").await, 0, "nothing destructive before the burst is judged");

        let held = t.wait_held().await;
        assert_eq!(
            held["reason"],
            "would deactivate 60 of 201 SCIM users; threshold 20% (40) and at least 10",
            "{held}"
        );
        assert_eq!(held["destructive"], 60);
        t.quiet().await;
        assert_eq!(t.count("disabled").await, 0, "the whole burst is held");
        assert!(t.events("user.deactivated").await.is_empty());
        // Seen at once: the tenant's state, one event, the metric; the plan says the same.
        let st = t.status().await;
        assert_eq!((st["state"].as_str(), st["held"]["destructive"].as_u64()), (Some("held"), Some(60)), "{st}");
        let ev = t.events("tenant.held").await;
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0]["payload"]["tenant"], t.slug.as_str());
        assert_eq!(ev[0]["payload"]["deactivate"], 60);
        assert_eq!(ev[0]["payload"]["fingerprint"], held["fingerprint"]);
        // (The metric follows the stored hold within the same run: read until it does.)
        eventually("the held metric", || async { (t.held_metric().await == Some(60.0)).then_some(()) }).await;
        let plan = t.app.admin_get(&t.path("/plan")).await.expect(200).clone();
        assert_eq!(plan["fingerprint"], held["fingerprint"], "the hold stands above the whole-tenant plan");
        assert_eq!(plan["held"]["reason"], held["reason"]);
        let text = t.app.admin_get(&t.path("/plan?format=text")).await.text;
        assert!(text.contains("would deactivate 60 of 201 SCIM users"), "{text}");

        // A second burst while held adds to the hold: still nothing applied.
        deactivate_over_four_connections(&t, &ids[60..90], Duration::from_millis(20)).await;
        eventually("the hold to cover 90", || async {
            (t.safety().await["held"]["destructive"] == 90).then_some(())
        })
        .await;
        let held = t.safety().await["held"].clone();
        assert_eq!(held["reason"], "would deactivate 90 of 201 SCIM users; threshold 20% (40) and at least 10");
        assert_eq!(t.count("disabled").await, 0);
        assert_eq!(t.events("tenant.held").await.len(), 1, "one event per hold");

        // The IdP reverts its mistake: the hold ends by itself, and says so.
        for id in &ids[..90] {
            t.set_active(&client, id, true).await;
        }
        eventually("the hold to end", || async { t.safety().await["held"].is_null().then_some(()) }).await;
        assert_eq!(t.count("disabled").await, 0);
        assert!(t.events("user.deactivated").await.is_empty());
        let released = t.events("tenant.released").await;
        assert_eq!(released.len(), 1, "{released:?}");
        assert_eq!(released[0]["payload"]["how"], "reverted");
        let runs = t.app.admin_get(&t.path("/runs")).await.expect(200).clone();
        let said = runs["runs"].as_array().unwrap().iter().any(|r| {
            r["summary"]["hold"].as_str().is_some_and(|h| h.contains("nothing held is left"))
        });
        assert!(said, "the run history says the hold ended: {runs}");
        eventually("the series to go with the hold", || async { t.held_metric().await.is_none().then_some(()) }).await;
        assert_ne!(t.status().await["state"], "held");

        // The next ordinary leaver is applied without approval.
        t.set_active(&client, &ids[150], false).await;
        eventually("the leaver", || async { (t.user(&t.email(150)).await["status"] == "disabled").then_some(()) }).await;
        assert_eq!(t.events("user.deactivated").await.len(), 1);
        let _ = late;
    }
);

backend_test!(
    async fn an_ordinary_leaver_waits_only_the_settle_time_and_creates_never_wait(app = TestApp::admin_api) {
        let t = Tenant::new(&app, 1.0).await;
        let ids = t.users(30).await;
        t.quiet().await;
        let client = reqwest::Client::new();
        let start = Instant::now();
        t.set_active(&client, &ids[0], false).await;
        // A create pushed right after it is applied at once, not after the settle time.
        t.create(&client, "new@valve.example").await;
        eventually("the create", || async {
            t.all().await.iter().any(|u| u["email"] == "new@valve.example").then_some(())
        })
        .await;
        let st = t.status().await;
        assert_eq!(st["state"], "waiting", "the leaver waits for the burst to settle: {st}");
        assert_eq!(t.user(&t.email(0)).await["status"], "active");
        eventually("the leaver", || async { (t.user(&t.email(0)).await["status"] == "disabled").then_some(()) }).await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "applied within settle + 2 s, took {took:?}");
        assert!(took >= Duration::from_millis(900), "not before the settle time: {took:?}");
        assert_eq!(t.events("user.deactivated").await.len(), 1);
        assert!(t.events("tenant.held").await.is_empty());
    }
);

backend_test!(
    async fn a_burst_paced_at_one_push_a_second_for_a_minute_is_held_whole(app = TestApp::admin_api) {
        // The default settle time (10 s) is longer than the pace: the burst stays open.
        let t = Tenant::new(&app, 10.0).await;
        let ids = t.users(200).await;
        t.quiet().await;
        let client = reqwest::Client::new();
        for id in &ids[..60] {
            t.set_active(&client, id, false).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(t.count("disabled").await, 0, "nothing applied while the burst goes on");
        // Judged once the pushes have been quiet for the settle time.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(t.count("disabled").await, 0);
        let held = t.wait_held().await;
        assert_eq!(held["reason"], "would deactivate 60 of 200 SCIM users; threshold 20% (40) and at least 10");
        t.quiet().await;
        assert_eq!(t.count("disabled").await, 0);
        assert!(t.events("user.deactivated").await.is_empty());
    }
);

backend_test!(
    async fn the_window_adds_up_bursts_but_not_what_a_person_released(app = TestApp::admin_api) {
        let t = Tenant::new(&app, 0.5).await;
        let ids = t.users(100).await;
        t.quiet().await;
        let client = reqwest::Client::new();
        // 15 of 100: over the minimum but not over 20%: applied.
        deactivate_over_four_connections(&t, &ids[..15], Duration::ZERO).await;
        t.wait_count("disabled", 15).await;
        t.quiet().await;
        // 10 more in the window: 25 of 100 > 20%: held, with the window in the reason.
        deactivate_over_four_connections(&t, &ids[15..25], Duration::ZERO).await;
        let held = t.wait_held().await;
        assert_eq!(
            held["reason"],
            "would deactivate 10 of 100 SCIM users, after 15 deactivated or deleted in the last 15 minutes \
             (25 in all); threshold 20% (20) and at least 10",
            "{held}"
        );
        assert_eq!(t.count("disabled").await, 15);
        // Release: the held changes go through once, and the answer says how many.
        let r = t.app.admin_post_empty(&t.path("/hold/release")).await.expect(200).clone();
        assert_eq!((r["status"].as_str(), r["applied"].as_u64(), r["released"].as_u64()), (Some("applied"), Some(10), Some(10)), "{r}");
        assert_eq!(t.count("disabled").await, 25);
        assert!(t.safety().await["held"].is_null());
        let released = t.events("tenant.released").await;
        assert_eq!((released.len(), released[0]["payload"]["how"].as_str()), (1, Some("released")));
        // The released ten do not count toward the window: 15 + 1 of 100 is under 20%.
        t.set_active(&client, &ids[50], false).await;
        eventually("the leaver", || async { (t.user(&t.email(50)).await["status"] == "disabled").then_some(()) }).await;
        assert!(t.safety().await["held"].is_null());
        // Releasing again: nothing is held, nothing runs.
        let again = t.app.admin_post_empty(&t.path("/hold/release")).await.expect(200).clone();
        assert_eq!(again["status"], "nothing_held");
    }
);

backend_test!(
    async fn deletions_count_over_the_users_before_them_and_a_switched_off_valve_holds_nothing(app = TestApp::admin_api) {
        let t = Tenant::new(&app, 2.0).await;
        let ids = t.users(40).await;
        t.quiet().await;
        let client = reqwest::Client::new();
        for id in &ids[..12] {
            t.scim(&client, Method::DELETE, &format!("/Users/{id}"), &Value::Null).await.expect(204);
        }
        let held = t.wait_held().await;
        assert_eq!(held["reason"], "would delete 12 of 40 SCIM users; threshold 20% (8) and at least 10", "{held}");
        assert_eq!(t.count("deleted").await, 0);
        // Switching the valve off lets everything through, and ends the hold.
        t.app.admin_put(&t.path("/safety"), &json!({"enabled": false})).await.expect(200);
        t.wait_count("deleted", 12).await;
        eventually("the hold to end", || async { t.safety().await["held"].is_null().then_some(()) }).await;
        assert_eq!(t.events("tenant.released").await[0]["payload"]["how"], "disabled");
        // Off: a mass deactivation is applied at once.
        for id in &ids[12..30] {
            t.set_active(&client, id, false).await;
        }
        t.wait_count("disabled", 18).await;
        assert!(t.safety().await["held"].is_null());
    }
);

backend_test!(
    async fn approving_applies_the_plan_shown_and_only_once(app = TestApp::admin_api) {
        let t = Tenant::new(&app, 2.0).await;
        let ids = t.users(20).await;
        t.quiet().await;
        deactivate_over_four_connections(&t, &ids[..10], Duration::ZERO).await;
        let held = t.wait_held().await;
        t.quiet().await;
        let fp = held["fingerprint"].as_str().unwrap().to_string();
        assert!(held["approve"].as_str().unwrap().ends_with(&format!("approve --tenant {} {fp}", t.slug)));
        let run = t.app.admin_post_empty(&t.path(&format!("/plan/{fp}/approve"))).await.expect(200).clone();
        assert_eq!((run["status"].as_str(), run["applied"].as_u64()), (Some("applied"), Some(10)), "{run}");
        assert_eq!(t.count("disabled").await, 10);
        let again = t.app.admin_post_empty(&t.path(&format!("/plan/{fp}/approve"))).await.expect(200).clone();
        assert_eq!(again["status"], "already_applied", "{again}");
        assert_eq!(again["run_id"], run["run_id"]);
        assert_eq!(t.events("user.deactivated").await.len(), 10, "nothing applied twice");
        let released = t.events("tenant.released").await;
        assert_eq!((released.len(), released[0]["payload"]["how"].as_str()), (1, Some("approved")));
        // The audit trail names the approval with its fingerprint's run.
        let audit = t.app.admin_get(&t.path("/audit")).await.expect(200).clone();
        let rel = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "release").cloned().unwrap();
        assert_eq!((rel["actor"].as_str(), rel["after"]["fingerprint"].as_str()), (Some("operator"), Some(fp.as_str())));
        let _ = ADMIN_TOKEN;
    }
);

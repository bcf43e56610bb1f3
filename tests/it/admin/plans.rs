//! Plans, reconcile and approval: the report in three formats, drift shown then repaired (only
//! on SCIM users), dry runs, the safety valve's hold and an approval by fingerprint.

use reqwest::Method;
use serde_json::{json, Value};

use crate::backend_test;
use crate::common::app::{eventually, TestApp, ADMIN_TOKEN};

async fn plan_with(app: &TestApp, accept: &str) -> crate::common::app::Resp {
    app.request(Some(ADMIN_TOKEN), Method::GET, "/tenants/acme/plan", None, &[("accept", accept)]).await
}

backend_test!(
    async fn the_plan_in_three_formats(app = TestApp::admin_api) {
        let j = app.admin_get("/tenants/acme/plan").await.expect(200).clone();
        assert_eq!(j["schema"], "moonborn-scim/plan/v1");
        assert_eq!(j["tenant"], "acme");
        assert_eq!(j["changes"], json!([]));
        assert!(j["fingerprint"].as_str().is_some_and(|f| f.len() == 32), "{j}");
        assert!(j["summary_line"].as_str().unwrap().starts_with("Plan: 0 to create"));

        let t = plan_with(&app, "text/plain").await;
        t.expect(200);
        assert!(t.header("content-type").unwrap().starts_with("text/plain"));
        assert!(t.text.contains("No changes") && t.text.contains("Plan: 0 to create"), "{}", t.text);
        assert!(!t.text.contains('\u{1b}'), "no colour over HTTP");

        let h = plan_with(&app, "text/html,application/xhtml+xml,*/*;q=0.8").await;
        h.expect(200);
        assert!(h.header("content-type").unwrap().starts_with("text/html"));
        assert!(h.text.starts_with("<!doctype html>"), "{}", h.text);

        assert!(plan_with(&app, "application/json").await.expect(200).is_object());
        assert!(plan_with(&app, "*/*").await.expect(200).is_object());
        assert!(plan_with(&app, "text/html;q=0.1, text/plain").await.text.contains("Plan: 0"));
        let f = app.admin_get("/tenants/acme/plan?format=text").await;
        assert!(f.text.starts_with("Tenant acme"), "{}", f.text);
        app.admin_get("/tenants/acme/plan?format=pdf").await.expect_admin_error(400);
        app.admin_get("/tenants/nope/plan").await.expect_admin_error(404);
    }
);

backend_test!(
    async fn drift_is_shown_then_repaired_but_manual_users_are_left_alone(app = TestApp::admin_api) {
        app.scim_user("sam@acme.com").await;
        let sam = app.wait_user("sam@acme.com", "sam provisioned", |u| u["status"] == "active").await;
        let manual = app.admin_post("/tenants/acme/users", &json!({"email": "mia@acme.com", "display_name": "Mia"})).await.expect(201).clone();
        for u in [&sam, &manual] {
            let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
            app.admin_put(&format!("{p}/roles"), &json!({"roles": ["admin"]})).await.expect(200);
            app.admin_patch(&p, &json!({"display_name": "Hand Edited"})).await.expect(200);
        }
        // The plan shows the SCIM user's drift, and only that.
        let plan = app.admin_get("/tenants/acme/plan").await.expect(200).clone();
        let changes = plan["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{plan}");
        let c = &changes[0];
        assert_eq!((c["kind"].as_str(), c["user_id"].as_str()), (Some("update"), sam["id"].as_str()));
        let diff = c["diff"].as_str().unwrap();
        for line in ["-display_name: Hand Edited", "+display_name: Given Family", "-roles: admin", "+roles: viewer"] {
            assert!(diff.contains(line), "{line} missing in\n{diff}");
        }
        let text = plan_with(&app, "text/plain").await.text;
        assert!(text.contains("user sam@acme.com will be updated"), "{text}");
        assert!(text.contains("Plan: 0 to create, 1 to update"), "{text}");

        // A dry run changes nothing.
        let dry = app.admin_post("/tenants/acme/reconcile", &json!({"dry_run": true})).await.expect(200).clone();
        assert_eq!((dry["status"].as_str(), dry["run_id"].as_str(), dry["applied"].as_u64()), (Some("dry_run"), None, Some(0)));
        assert_eq!(dry["report"]["fingerprint"], plan["fingerprint"]);
        assert_eq!(app.user_by_email("sam@acme.com").await.unwrap()["roles"], json!(["admin"]));

        // A run repairs it.
        let run = app.admin_post_empty("/tenants/acme/reconcile").await.expect(200).clone();
        assert_eq!(run["status"], "applied", "{run}");
        assert_eq!((run["applied"].as_u64(), run["held"].as_u64(), run["stale"].as_u64()), (Some(1), Some(0), Some(0)));
        assert_eq!(run["report"]["changes"].as_array().unwrap().len(), 1);
        let run_id = run["run_id"].as_str().unwrap().to_string();
        let sam = app.user_by_email("sam@acme.com").await.unwrap();
        assert_eq!((sam["display_name"].as_str(), sam["roles"].clone()), (Some("Given Family"), json!(["viewer"])));
        let mia = app.user_by_email("mia@acme.com").await.unwrap();
        assert_eq!((mia["display_name"].as_str(), mia["roles"].clone()), (Some("Hand Edited"), json!(["admin"])));
        assert_eq!(mia["managed_by"], "manual");

        // The run is listed and audited; a second run has nothing to do.
        let runs = app.admin_get("/tenants/acme/runs").await.expect(200).clone();
        let r = runs["runs"].as_array().unwrap().iter().find(|r| r["id"] == run_id.as_str()).cloned().expect("listed");
        assert_eq!((r["trigger"].as_str(), r["status"].as_str()), (Some("operator"), Some("applied")));
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["run_id"] == run_id.as_str() && e["action"] == "update"));
        let again = app.admin_post("/tenants/acme/reconcile", &json!({})).await.expect(200).clone();
        assert_eq!((again["status"].as_str(), again["run_id"].clone()), (Some("noop"), Value::Null));
    }
);

backend_test!(
    async fn reconcile_errors(app = TestApp::admin_api) {
        let r = app.request(Some(ADMIN_TOKEN), Method::POST, "/tenants/acme/reconcile", Some("{\"dry_run\":"), &[]).await;
        r.expect_admin_error(400);
        app.admin_post("/tenants/acme/reconcile", &json!({"dry_run": "yes"})).await.expect_admin_error(400);
        app.admin_post("/tenants/acme/reconcile", &json!({"dryrun": true})).await.expect_admin_error(400);
        app.admin_post_empty("/tenants/nope/reconcile").await.expect_admin_error(404);
        app.admin_post_empty("/tenants/nope/plan/00/approve").await.expect_admin_error(404);
        let msg = app.admin_post_empty("/tenants/acme/plan/not-hex/approve").await.expect_admin_error(400);
        assert!(msg.contains("not-hex"), "{msg}");
    }
);

backend_test!(
    async fn a_held_plan_is_approved_by_its_fingerprint(app = TestApp::admin_api) {
        // Any deactivation trips the valve.
        app.trip_valve_with_one_deactivation().await;
        let held = eventually("the push run to be held", || async {
            let s = app.admin_get("/tenants/acme/safety").await.expect(200).clone();
            (!s["held"].is_null()).then_some(s)
        })
        .await;
        assert!(held["held"]["reason"].as_str().unwrap().contains("deactivate"), "{held}");
        // The held push run wakes a whole-tenant run, which holds too.
        let runs = eventually("the runs to finish", || async {
            let r = app.admin_get("/tenants/acme/runs").await.expect(200).clone();
            r["runs"].as_array().unwrap().iter().all(|x| x["status"] != "running").then_some(r)
        })
        .await;
        assert_eq!(runs["runs"][0]["status"], "held", "{runs}");
        assert_eq!(app.user_by_email("ann@acme.com").await.unwrap()["status"], "active", "nothing destructive applied");

        let plan = app.admin_get("/tenants/acme/plan").await.expect(200).clone();
        assert!(plan["held"].is_object(), "{plan}");
        assert_eq!(plan["changes"][0]["kind"], "deactivate");
        let fp = plan["fingerprint"].as_str().unwrap();
        assert!(plan_with(&app, "text/plain").await.text.contains("HELD"));

        // A stale (or made-up) fingerprint is refused; nothing happens.
        let msg = app.admin_post_empty(&format!("/tenants/acme/plan/{}/approve", "0".repeat(32))).await.expect_admin_error(409);
        assert!(msg.contains(fp), "the message names the current plan: {msg}");
        assert_eq!(app.user_by_email("ann@acme.com").await.unwrap()["status"], "active");

        let run = app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect(200).clone();
        assert_eq!((run["status"].as_str(), run["applied"].as_u64(), run["held"].as_u64()), (Some("applied"), Some(1), Some(0)));
        assert_eq!(app.user_by_email("ann@acme.com").await.unwrap()["status"], "disabled");
        assert_eq!(app.admin_get("/tenants/acme/safety").await.expect(200)["held"], Value::Null);
        assert_eq!(app.events("acme", Some("user.deactivated")).await.len(), 1);
        // Approving the same plan again says it was applied, by which run (not "stale").
        let again = app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect(200).clone();
        assert_eq!((again["status"].as_str(), again["run_id"].as_str()), (Some("already_applied"), run["run_id"].as_str()), "{again}");
        assert_eq!(app.events("acme", Some("user.deactivated")).await.len(), 1, "nothing applied twice");
    }
);

backend_test!(
    async fn a_hand_edit_makes_a_shown_plan_stale(app = TestApp::admin_api) {
        app.scim_user("sam@acme.com").await;
        let sam = app.wait_user("sam@acme.com", "sam provisioned", |u| u["status"] == "active").await;
        let p = format!("/tenants/acme/users/{}", sam["id"].as_str().unwrap());
        app.admin_put(&format!("{p}/roles"), &json!({"roles": ["admin"]})).await.expect(200);
        let fp = app.admin_get("/tenants/acme/plan").await.expect(200)["fingerprint"].as_str().unwrap().to_string();
        app.admin_patch(&p, &json!({"display_name": "Again"})).await.expect(200);
        app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect_admin_error(409);
        let fp = app.admin_get("/tenants/acme/plan").await.expect(200)["fingerprint"].as_str().unwrap().to_string();
        let run = app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect(200).clone();
        assert_eq!(run["status"], "applied");
        assert_eq!(app.user_by_email("sam@acme.com").await.unwrap()["roles"], json!(["viewer"]));
    }
);

backend_test!(
    async fn a_held_deletion_can_be_approved(app = TestApp::admin_api) {
        app.admin_put("/tenants/acme/safety", &json!({"percent": 0, "min_users": 1})).await.expect(200);
        let a = app.scim_user("ann@acme.com").await;
        app.wait_user("ann@acme.com", "provisioned", |u| u["status"] == "active").await;
        app.scim(Method::DELETE, &format!("/Users/{}", a["id"].as_str().unwrap()), None).await.expect(204);
        eventually("the hold", || async { (!app.admin_get("/tenants/acme/safety").await.body["held"].is_null()).then_some(()) }).await;
        let fp = app.admin_get("/tenants/acme/plan").await.expect(200)["fingerprint"].as_str().unwrap().to_string();
        app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect(200);
        assert_eq!(app.user_by_email("ann@acme.com").await.unwrap()["status"], "deleted");
    }
);

backend_test!(
    async fn releasing_a_hold_lets_the_held_deletions_through_once(app = TestApp::admin_api) {
        app.admin_put("/tenants/acme/safety", &json!({"percent": 0, "min_users": 1})).await.expect(200);
        let a = app.scim_user("rex@acme.com").await;
        let b = app.scim_user("roy@acme.com").await;
        app.wait_user("rex@acme.com", "provisioned", |u| u["status"] == "active").await;
        app.wait_user("roy@acme.com", "provisioned", |u| u["status"] == "active").await;
        app.scim(Method::DELETE, &format!("/Users/{}", a["id"].as_str().unwrap()), None).await.expect(204);
        eventually("the hold", || async { (!app.admin_get("/tenants/acme/safety").await.body["held"].is_null()).then_some(()) }).await;
        assert_eq!(app.user_by_email("rex@acme.com").await.unwrap()["status"], "active", "held, not deleted");
        app.admin_post_empty("/tenants/acme/hold/release").await.expect(200);
        eventually("the released deletion", || async {
            (app.user_by_email("rex@acme.com").await.unwrap()["status"] == "deleted").then_some(())
        })
        .await;
        // The release was for that run only: the next mass deletion is held again.
        app.scim(Method::DELETE, &format!("/Users/{}", b["id"].as_str().unwrap()), None).await.expect(204);
        eventually("the new hold", || async { (!app.admin_get("/tenants/acme/safety").await.body["held"].is_null()).then_some(()) }).await;
        assert_eq!(app.user_by_email("roy@acme.com").await.unwrap()["status"], "active");
    }
);

backend_test!(
    async fn deactivations_pushed_one_at_a_time_still_trip_the_safety_valve(app = TestApp::admin_api) {
        app.admin_put("/tenants/acme/safety", &json!({"percent": 20, "min_users": 3})).await.expect(200);
        let mut ids = Vec::new();
        for i in 0..10 {
            let u = app.scim_user(&format!("one{i}@acme.com")).await;
            ids.push(u["id"].as_str().unwrap().to_string());
        }
        for i in 0..10 {
            app.wait_user(&format!("one{i}@acme.com"), "provisioned", |u| u["status"] == "active").await;
        }
        // Two deactivations, each its own small run: under the valve's minimum.
        for (i, id) in ids.iter().enumerate().take(2) {
            app.scim_set_active(id, false).await;
            app.wait_user(&format!("one{i}@acme.com"), "deactivated", |u| u["status"] == "disabled").await;
        }
        // The third, alone in its run, makes 3 in the window: 3 of 12 > 20% and ≥ 3: held.
        app.scim_set_active(&ids[2], false).await;
        eventually("the hold", || async { (!app.admin_get("/tenants/acme/safety").await.body["held"].is_null()).then_some(()) }).await;
        app.settle().await;
        assert_eq!(app.user_by_email("one2@acme.com").await.unwrap()["status"], "active", "held, not applied");
        // The operator approves the whole-tenant plan as shown.
        let fp = app.admin_get("/tenants/acme/plan").await.expect(200)["fingerprint"].as_str().unwrap().to_string();
        app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect(200);
        assert_eq!(app.user_by_email("one2@acme.com").await.unwrap()["status"], "disabled");
    }
);

backend_test!(
    async fn an_empty_plan_is_fingerprinted_by_its_tenant_and_journal_position(app = TestApp::admin_api) {
        app.admin_post("/tenants", &json!({"slug": "globex", "tier": "enterprise"})).await.expect(201);
        let plan = |slug: &'static str| {
            let app = &app;
            async move {
                let p = app.admin_get(&format!("/tenants/{slug}/plan")).await.expect(200).clone();
                assert_eq!(p["changes"], json!([]), "{p}");
                p["fingerprint"].as_str().unwrap().to_string()
            }
        };
        let (acme, globex) = (plan("acme").await, plan("globex").await);
        assert_ne!(acme, globex, "two tenants' empty plans");
        assert_eq!(plan("acme").await, acme, "the same state, the same fingerprint");

        // A push that leaves nothing to apply (a group that binds no role) still moves the
        // journal: the empty plan computed after it is another.
        let t = app.store.tenant("acme").await.unwrap();
        let head = app.store.journal_head(t.id).await.unwrap();
        app.scim_group("no-role-here", &[]).await;
        app.settle().await;
        assert!(app.store.journal_head(t.id).await.unwrap() > head, "the push is journaled");
        let after = plan("acme").await;
        assert_ne!(after, acme);
        assert_eq!(plan("globex").await, globex, "another tenant's push changes nothing here");
    }
);

/// Waits until no run is running and at least `n` runs were held.
async fn held_runs(app: &TestApp, n: usize) {
    eventually("the held runs", || async {
        let r = app.admin_get("/tenants/acme/runs").await.expect(200).clone();
        let runs = r["runs"].as_array().unwrap();
        let held = runs.iter().filter(|x| x["status"] == "held").count();
        (held >= n && runs.iter().all(|x| x["status"] != "running")).then_some(())
    })
    .await
}

backend_test!(
    async fn drift_repair_is_told_apart_from_an_idp_change(app = TestApp::admin_api) {
        // Any deactivation is held, so the IdP's waits in the plan.
        app.admin_put("/tenants/acme/safety", &json!({"percent": 0, "min_users": 1})).await.expect(200);
        let sam_scim = app.scim_user("sam@acme.com").await;
        let bob_scim = app.scim_user("bob@acme.com").await;
        let sam = app.wait_user("sam@acme.com", "sam provisioned", |u| u["status"] == "active").await;
        let bob = app.wait_user("bob@acme.com", "bob provisioned", |u| u["status"] == "active").await;
        // bob is deactivated in the IdP: it waits for the push's burst to settle, then is held.
        app.scim_set_active(bob_scim["id"].as_str().unwrap(), false).await;
        held_runs(&app, 1).await;
        app.settle().await;
        // sam's display name is edited by hand in Moonborn (nothing wakes the controller).
        let sam_path = format!("/tenants/acme/users/{}", sam["id"].as_str().unwrap());
        app.admin_patch(&sam_path, &json!({"display_name": "Hand Edited"})).await.expect(200);

        let plan = app.admin_get("/tenants/acme/plan").await.expect(200).clone();
        let change = |u: &Value| {
            plan["changes"].as_array().unwrap().iter().find(|c| c["user_id"] == u["id"]).cloned().expect("planned")
        };
        assert_eq!(plan["changes"].as_array().unwrap().len(), 2, "{plan}");
        let (s, b) = (change(&sam), change(&bob));
        assert_eq!((s["kind"].as_str(), s["cause"].as_str()), (Some("update"), Some("drift")), "{s}");
        let drift_header = "user sam@acme.com will be updated — drift repair (reverts a hand edit made in Moonborn)";
        assert_eq!(s["header"], drift_header);
        assert!(s["diff"].as_str().unwrap().contains("-display_name: Hand Edited"), "{s}");
        assert_eq!((b["kind"].as_str(), b["cause"].as_str()), (Some("deactivate"), Some("idp")), "{b}");
        assert_eq!(b["header"], "user bob@acme.com will be deactivated (signed out, sessions revoked)");
        let text = plan_with(&app, "text/plain").await.text;
        assert!(text.contains(&format!("{drift_header}\n")), "{text}");
        assert!(text.contains("user bob@acme.com will be deactivated (signed out, sessions revoked)\n"), "{text}");
        let html = plan_with(&app, "text/html").await.text;
        assert!(html.contains(&format!("<h2 class=\"update drift\">{drift_header}</h2>")), "{html}");
        assert!(html.contains("<h2 class=\"deactivate idp\">user bob@acme.com"), "{html}");

        // Approved: both apply, and the controller's write of sam clears the mark. A hand edit
        // that changes nothing marks nothing: the IdP's next change of sam is the IdP's.
        let fp = plan["fingerprint"].as_str().unwrap();
        let run = app.admin_post_empty(&format!("/tenants/acme/plan/{fp}/approve")).await.expect(200).clone();
        assert_eq!(run["applied"], 2, "{run}");
        app.admin_patch(&sam_path, &json!({"display_name": "Given Family"})).await.expect(200);
        app.scim_set_active(sam_scim["id"].as_str().unwrap(), false).await;
        held_runs(&app, 2).await;
        let plan = app.admin_get("/tenants/acme/plan").await.expect(200).clone();
        assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{plan}");
        let s = plan["changes"][0].clone();
        assert_eq!(s["user_id"], sam["id"], "{s}");
        assert_eq!((s["kind"].as_str(), s["cause"].as_str()), (Some("deactivate"), Some("idp")), "{s}");
    }
);

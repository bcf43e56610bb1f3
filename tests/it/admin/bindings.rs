//! Group → role bindings (validated; a change re-evaluates every member through a full run; a
//! preview answers that run's plan and stores nothing), the safety-valve settings and releasing a
//! hold.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::backend_test;
use crate::common::app::{eventually, TestApp, ADMIN_TOKEN};

/// A PUT of bindings with a query string (`""` for none) and extra headers.
async fn put_bindings(app: &TestApp, query: &str, body: &Value, headers: &[(&str, &str)]) -> crate::common::app::Resp {
    let b = body.to_string();
    app.request(Some(ADMIN_TOKEN), Method::PUT, &format!("/tenants/acme/group-bindings{query}"), Some(&b), headers)
        .await
}

/// What changes do: (user id, kind, record after) each, as a plan shows them (`kind`) or the audit
/// trail records them (`action`).
fn effects<'a>(entries: impl IntoIterator<Item = &'a Value>, kind: &str) -> BTreeSet<String> {
    entries.into_iter().map(|e| json!([e["user_id"], e[kind], e["after"]]).to_string()).collect()
}

backend_test!(
    async fn bindings_default_to_the_product_page(app = TestApp::admin_api) {
        let b = app.admin_get("/tenants/acme/group-bindings").await.expect(200).clone();
        assert_eq!(b["default_role"], "viewer");
        let pairs: Vec<(String, String)> = b["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["group"].as_str().unwrap().into(), x["role"].as_str().unwrap().into()))
            .collect();
        assert_eq!(pairs.len(), 5);
        assert!(pairs.contains(&("moonborn-admin".into(), "admin".into())));
        app.admin_get("/tenants/nope/group-bindings").await.expect_admin_error(404);
    }
);

backend_test!(
    async fn bad_bindings_are_refused_with_the_reason(app = TestApp::admin_api) {
        let before = app.admin_get("/tenants/acme/group-bindings").await.expect(200).clone();
        let cases = [
            (json!({"bindings": [{"group": "ops", "role": "root"}], "default_role": "viewer"}), "unknown role"),
            (json!({"bindings": [{"group": "  ", "role": "admin"}], "default_role": null}), "empty"),
            (json!({"bindings": [], "default_role": "superuser"}), "default_role"),
            (json!({"bindings": [{"group": "ops"}]}), "role"),
            (json!({"default_role": "viewer"}), "bindings"),
            (json!({"bindings": [], "extra": 1}), "extra"),
            (json!({"bindings": "ops=admin"}), "invalid"),
        ];
        for (body, needle) in cases {
            let msg = app.admin_put("/tenants/acme/group-bindings", &body).await.expect_admin_error(400);
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        app.admin_put("/tenants/nope/group-bindings", &json!({"bindings": []})).await.expect_admin_error(404);
        assert_eq!(app.admin_get("/tenants/acme/group-bindings").await.expect(200), &before);
    }
);

backend_test!(
    async fn put_stores_and_answers_the_bindings(app = TestApp::admin_api) {
        let body = json!({"bindings": [{"group": "Engineering", "role": "editor"}, {"group": "Finance", "role": "billing"}], "default_role": null});
        let put = app.admin_put("/tenants/acme/group-bindings", &body).await.expect(200).clone();
        assert_eq!(put["default_role"], Value::Null);
        assert_eq!(put["bindings"].as_array().unwrap().len(), 2);
        assert_eq!(app.admin_get("/tenants/acme/group-bindings").await.expect(200), &put);
        // An absent default_role keeps the current one; an explicit one sets it.
        let kept = app.admin_put("/tenants/acme/group-bindings", &json!({"bindings": []})).await.expect(200).clone();
        assert_eq!(kept, json!({"bindings": [], "default_role": null}));
        let set = app.admin_put("/tenants/acme/group-bindings", &json!({"bindings": [], "default_role": "auditor"})).await;
        assert_eq!(set.expect(200)["default_role"], "auditor");
        let kept = app.admin_put("/tenants/acme/group-bindings", &json!({"bindings": []})).await;
        assert_eq!(kept.expect(200)["default_role"], "auditor");
        // Each change is audited, by the operator.
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        let n = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "bindings" && e["actor"] == "operator").count();
        assert_eq!(n, 4, "{audit}");
    }
);

backend_test!(
    async fn a_binding_change_re_evaluates_every_member(app = TestApp::admin_api) {
        let u = app.scim_user("dev@acme.com").await;
        let id = u["id"].as_str().unwrap();
        app.scim_group("Engineering", &[id]).await;
        app.wait_user("dev@acme.com", "dev provisioned as viewer", |u| u["roles"] == json!(["viewer"])).await;
        let body = json!({"bindings": [{"group": "engineering", "role": "editor"}, {"group": "ENGINEERING", "role": "auditor"}], "default_role": "viewer"});
        app.admin_put("/tenants/acme/group-bindings", &body).await.expect(200);
        app.wait_user("dev@acme.com", "roles from the new binding", |u| u["roles"] == json!(["auditor", "editor"])).await;
        // Back to no binding for the group and no default role: no roles at all.
        app.admin_put("/tenants/acme/group-bindings", &json!({"bindings": [], "default_role": null})).await.expect(200);
        app.wait_user("dev@acme.com", "no roles", |u| u["roles"] == json!([])).await;
    }
);

backend_test!(
    async fn safety_settings(app = TestApp::admin_api) {
        let view = |pct: u32, min: u64, on: bool, settle: f64, max: f64| {
            json!({"enabled": on, "percent": pct, "min_users": min, "settle_secs": settle, "max_wait_secs": max,
                   "held": null, "waiting": null})
        };
        // (The harness sets settle and max wait to 0; a new tenant has 10 s and 120 s.)
        let s = app.admin_get("/tenants/acme/safety").await.expect(200).clone();
        assert_eq!(s, view(20, 10, true, 0.0, 0.0));
        let s = app.admin_put("/tenants/acme/safety", &json!({"settle_secs": 10, "max_wait_secs": 120})).await.expect(200).clone();
        assert_eq!(s, view(20, 10, true, 10.0, 120.0));
        let s = app.admin_put("/tenants/acme/safety", &json!({"percent": 50})).await.expect(200).clone();
        assert_eq!(s, view(50, 10, true, 10.0, 120.0));
        let s = app.admin_put("/tenants/acme/safety", &json!({"percent": 0, "min_users": 3, "settle_secs": 0.5})).await.expect(200).clone();
        assert_eq!(s, view(0, 3, true, 0.5, 120.0));
        let s = app.admin_put("/tenants/acme/safety", &json!({"enabled": false})).await.expect(200).clone();
        assert_eq!(s, view(0, 3, false, 0.5, 120.0));
        for bad in [
            json!({"percent": 101}), json!({"percent": -1}), json!({"min_users": -1}), json!({"percent": "ten"}),
            json!({"pct": 5}), json!({"settle_secs": -1}), json!({"settle_secs": 3601}), json!({"max_wait_secs": 0.1}),
            json!({"enabled": "no"}), json!({"settle_secs": 200, "max_wait_secs": 100}),
        ] {
            app.admin_put("/tenants/acme/safety", &bad).await.expect_admin_error(400);
        }
        assert_eq!(app.admin_get("/tenants/acme/safety").await.expect(200), &s);
        app.admin_put("/tenants/nope/safety", &json!({"percent": 5})).await.expect_admin_error(404);
    }
);

backend_test!(
    async fn releasing_without_a_hold_is_harmless_and_audited(app = TestApp::admin_api) {
        let r = app.admin_post_empty("/tenants/acme/hold/release").await.expect(200).clone();
        assert_eq!(r["held"], Value::Null);
        assert_eq!((r["status"].as_str(), r["applied"].as_u64()), (Some("nothing_held"), Some(0)), "{r}");
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        let e = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "release").cloned().expect("audited");
        assert_eq!(e["actor"], "operator");
        app.admin_post_empty("/tenants/nope/hold/release").await.expect_admin_error(404);
    }
);

backend_test!(
    async fn a_binding_preview_matches_the_run_that_follows(app = TestApp::admin_api) {
        // dev in Engineering, fin in Finance, ops in both, bea in neither: all viewers now (the
        // default bindings bind neither group).
        let mut ids = Vec::new();
        for e in ["dev@acme.com", "fin@acme.com", "ops@acme.com", "bea@acme.com"] {
            ids.push(app.scim_user(e).await["id"].as_str().unwrap().to_string());
        }
        app.scim_group("Engineering", &[&ids[0], &ids[2]]).await;
        app.scim_group("Finance", &[&ids[1], &ids[2]]).await;
        for e in ["dev@acme.com", "fin@acme.com", "ops@acme.com", "bea@acme.com"] {
            app.wait_user(e, "provisioned as a viewer", |u| u["roles"] == json!(["viewer"])).await;
        }
        let bindings = app.admin_get("/tenants/acme/group-bindings").await.expect(200).clone();
        let users = app.admin_get("/tenants/acme/users").await.expect(200).clone();
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        let runs = app.admin_get("/tenants/acme/runs").await.expect(200).clone();

        // The preview: exactly the role changes, nothing stored.
        let body =
            json!({"bindings": [{"group": "engineering", "role": "editor"}, {"group": "FINANCE", "role": "billing"}]});
        let preview = put_bindings(&app, "?dry_run=true", &body, &[]).await.expect(200).clone();
        assert_eq!(preview["schema"], "moonborn-scim/plan/v1");
        let line = "Plan: 0 to create, 3 to update, 0 to deactivate, 0 to delete, 0 to purge.";
        assert_eq!(preview["summary_line"], line);
        let changes = preview["changes"].as_array().unwrap().clone();
        // (email, roles before, roles after)
        let roles: BTreeSet<String> = changes
            .iter()
            .map(|c| json!([c["after"]["email"], c["before"]["roles"], c["after"]["roles"]]).to_string())
            .collect();
        let want: BTreeSet<String> = [
            json!(["dev@acme.com", ["viewer"], ["editor"]]),
            json!(["fin@acme.com", ["viewer"], ["billing"]]),
            json!(["ops@acme.com", ["viewer"], ["billing", "editor"]]),
        ]
        .iter()
        .map(Value::to_string)
        .collect();
        assert_eq!(roles, want, "{preview}");
        for c in &changes {
            assert_eq!((c["kind"].as_str(), c["cause"].as_str()), (Some("update"), Some("idp")), "{c}");
            // Only the roles change.
            let after: Vec<&str> = c["after"]["roles"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            let after = after.join(", ");
            let diff = format!(
                "--- before\n+++ after\n … 4 unchanged fields\n-roles: viewer\n+roles: {after}\n … 4 unchanged fields\n"
            );
            assert_eq!(c["diff"], diff);
        }
        // The same plan as text or HTML, negotiated as GET …/plan does.
        let text = put_bindings(&app, "?dry_run=true&format=text", &body, &[]).await;
        assert!(text.header("content-type").unwrap().starts_with("text/plain"), "{:?}", text.headers);
        let fp = preview["fingerprint"].as_str().unwrap();
        assert!(text.text.starts_with(&format!("Tenant acme — plan {fp}\n")), "{}", text.text);
        let ops = "user ops@acme.com will be updated\n--- before\n+++ after\n … 4 unchanged fields\n-roles: viewer\n\
                   +roles: billing, editor\n";
        assert!(text.text.contains(ops), "{}", text.text);
        let html = put_bindings(&app, "?dry_run=true", &body, &[("accept", "text/html")]).await;
        assert!(html.header("content-type").unwrap().starts_with("text/html"));
        assert!(html.text.starts_with("<!doctype html>"), "{}", html.text);
        assert!(html.text.contains("<ins>+roles: billing, editor</ins>"), "{}", html.text);
        let accept_text = put_bindings(&app, "?dry_run=true", &body, &[("accept", "text/plain")]).await;
        assert!(accept_text.text.starts_with("Tenant acme"), "{}", accept_text.text);
        // Refused with a reason, before anything happens.
        for (query, body, needle) in [
            ("?dry_run=yes", body.clone(), "dry_run"),
            ("?dry_run=", body.clone(), "dry_run"),
            ("?dryrun=true", body.clone(), "dryrun"),
            ("?dry_run=true&format=pdf", body.clone(), "pdf"),
            ("?format=text", body.clone(), "format"),
            ("?dry_run=true", json!({"bindings": [{"group": "ops", "role": "root"}]}), "unknown role"),
            ("?dry_run=true", json!({"bindings": [], "extra": 1}), "extra"),
            ("?dry_run=true", json!([]), "object"),
        ] {
            let msg = put_bindings(&app, query, &body, &[]).await.expect_admin_error(400);
            assert!(msg.contains(needle), "{query} {body}: {msg}");
        }
        let nope = "/tenants/nope/group-bindings?dry_run=true";
        app.request(Some(ADMIN_TOKEN), Method::PUT, nope, Some(&body.to_string()), &[]).await.expect_admin_error(404);
        // Nothing was stored, run or audited.
        app.settle().await;
        assert_eq!(app.admin_get("/tenants/acme/group-bindings").await.expect(200), &bindings);
        assert_eq!(app.admin_get("/tenants/acme/users").await.expect(200), &users);
        assert_eq!(app.admin_get("/tenants/acme/audit").await.expect(200), &audit);
        assert_eq!(app.admin_get("/tenants/acme/runs").await.expect(200), &runs);

        // For real: the run that follows applies exactly the previewed changes.
        put_bindings(&app, "", &body, &[]).await.expect(200);
        let known: Vec<Value> = runs["runs"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
        let run = eventually("the run the binding change wakes", || async {
            let r = app.admin_get("/tenants/acme/runs").await.expect(200).clone();
            let runs = r["runs"].as_array().unwrap();
            runs.iter().find(|x| !known.contains(&x["id"]) && x["status"] != "running").cloned()
        })
        .await;
        assert_eq!((run["trigger"].as_str(), run["status"].as_str()), (Some("bindings"), Some("applied")));
        assert_eq!(run["fingerprint"], preview["fingerprint"], "the plan previewed is the plan run");
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        let applied = audit["entries"].as_array().unwrap().iter().filter(|e| e["run_id"] == run["id"]);
        assert_eq!(effects(applied, "action"), effects(&changes, "kind"));
        let ops = app.user_by_email("ops@acme.com").await.unwrap();
        assert_eq!(ops["roles"], json!(["billing", "editor"]));
    }
);

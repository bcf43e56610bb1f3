//! Named operators on the admin API: their tokens open it, a tenant-scoped one sees only its
//! tenant, and the audit trail names the operator for what they do.

use reqwest::Method;
use serde_json::{json, Value};

use crate::backend_test;
use crate::common::app::{eventually, TestApp};
use moonborn_scim::Tier;

async fn as_op(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> crate::common::app::Resp {
    let b = body.map(Value::to_string);
    app.request(Some(token), method, path, b.as_deref(), &[]).await
}

backend_test!(
    async fn a_tenant_scoped_operator_sees_and_changes_only_its_tenant(app = TestApp::admin_api) {
        app.tenant("globex", Tier::Enterprise).await;
        let (info, tok) = app.store.create_operator("acme-admin", Some("acme")).await.expect("operator");
        assert_eq!(info.tenant_slug.as_deref(), Some("acme"));
        assert!(tok.starts_with("mbop_"));

        let list = as_op(&app, &tok, Method::GET, "/tenants", None).await.expect(200).clone();
        let slugs: Vec<&str> = list["tenants"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, ["acme"]);
        as_op(&app, &tok, Method::GET, "/tenants/acme/plan", None).await.expect(200);
        for (m, path) in [
            (Method::GET, "/tenants/globex"),
            (Method::GET, "/tenants/globex/plan"),
            (Method::GET, "/tenants/globex/scim-tokens"),
            (Method::POST, "/tenants/globex/scim-tokens"),
            (Method::PUT, "/tenants/globex/group-bindings"),
            (Method::GET, "/tenants/globex/audit"),
        ] {
            as_op(&app, &tok, m, path, Some(&json!({}))).await.expect_admin_error(404);
        }
        // What needs every tenant: 403.
        as_op(&app, &tok, Method::POST, "/tenants", Some(&json!({"slug": "mine", "tier": "enterprise"})))
            .await
            .expect_admin_error(403);
        as_op(&app, &tok, Method::PATCH, "/tenants/acme", Some(&json!({"tier": "free"}))).await.expect_admin_error(403);
        as_op(&app, &tok, Method::GET, "/metrics", None).await.expect_admin_error(403);
        assert_eq!(app.store.tenant("acme").await.unwrap().tier, Tier::Enterprise);

        // A revoked operator is let in no more.
        assert!(app.store.revoke_operator("acme-admin").await.unwrap());
        as_op(&app, &tok, Method::GET, "/tenants", None).await.expect_admin_error(401);
    }
);

backend_test!(
    async fn the_audit_trail_names_the_operator(app = TestApp::admin_api) {
        let (_, tok) = app.store.create_operator("alice", None).await.expect("operator");
        // Token issue (named) and revoke.
        let t = as_op(&app, &tok, Method::POST, "/tenants/acme/scim-tokens", Some(&json!({"name": "Okta"})))
            .await
            .expect(201)
            .clone();
        assert_eq!(t["name"], "Okta");
        let listed = app.admin_get("/tenants/acme/scim-tokens").await.expect(200).clone();
        assert!(listed["tokens"].as_array().unwrap().iter().any(|x| x["id"] == t["id"] && x["name"] == "Okta"), "{listed}");
        let id = t["id"].as_str().unwrap();
        as_op(&app, &tok, Method::DELETE, &format!("/tenants/acme/scim-tokens/{id}"), None).await;
        // A hand action (an invite).
        as_op(&app, &tok, Method::POST, "/tenants/acme/users", Some(&json!({"email": "hand@acme.com"}))).await.expect(201);
        // A binding change.
        as_op(&app, &tok, Method::PUT, "/tenants/acme/group-bindings", Some(&json!({"bindings": [{"group": "Eng", "role": "editor"}]})))
            .await
            .expect(200);
        // An approval: trip the valve with one deactivation, approve the held plan.
        app.trip_valve_with_one_deactivation().await;
        eventually("the tenant to hold", || async {
            let s = app.admin_get("/tenants/acme/safety").await.expect(200).clone();
            (!s["held"].is_null()).then_some(())
        })
        .await;
        let fp = app.admin_get("/tenants/acme/plan").await.expect(200)["fingerprint"].as_str().unwrap().to_string();
        let run = as_op(&app, &tok, Method::POST, &format!("/tenants/acme/plan/{fp}/approve"), None).await.expect(200).clone();
        assert_eq!(run["status"], "applied", "{run}");

        let audit = app.admin_get("/tenants/acme/audit?limit=1000").await.expect(200).clone();
        let entries = audit["entries"].as_array().unwrap();
        // (Past the harness's own first token, issued by the system.)
        let by = |action: &str| -> Vec<&Value> {
            entries.iter().filter(|e| e["action"] == action && e["actor"] != "system").collect()
        };
        for action in ["token_issue", "token_revoke", "invite", "bindings", "approve", "release"] {
            let found = by(action);
            assert!(!found.is_empty(), "no {action} entry in {audit}");
            assert!(found.iter().all(|e| e["actor"] == "operator:alice"), "{action}: {found:?}");
        }
        assert_eq!(by("approve")[0]["after"]["fingerprint"], fp.as_str());
        assert_eq!(by("release")[0]["after"]["how"], "approved");
        // The change the approval let through is the operator's too.
        let deactivated: Vec<&Value> =
            entries.iter().filter(|e| e["run_id"] == run["run_id"] && e["user_id"].is_string()).collect();
        assert!(!deactivated.is_empty() && deactivated.iter().all(|e| e["actor"] == "operator:alice"), "{deactivated:?}");
    }
);

//! API keys, preferences and manual workspace memberships: written by hand, and never touched by
//! the controller (not by a deactivation, not by drift repair).

use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::common::app::TestApp;

backend_test!(
    async fn extras_are_written_and_read_back(app = TestApp::admin_api) {
        let u = app.admin_post("/tenants/acme/users", &json!({"email": "mia@acme.com"})).await.expect(201).clone();
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        let k = app.admin_post(&format!("{p}/api-keys"), &json!({"name": "ci"})).await.expect(201).clone();
        assert_eq!((k["name"].as_str(), k["user_id"].as_str()), (Some("ci"), u["id"].as_str()));
        let pref = app.admin_put(&format!("{p}/preferences/theme"), &json!({"value": "dark"})).await.expect(200).clone();
        assert_eq!(pref, json!({"key": "theme", "value": "dark"}));
        app.admin_put(&format!("{p}/preferences/theme"), &json!({"value": "light"})).await.expect(200);
        app.admin_put(&format!("{p}/preferences/layout"), &json!({"value": {"cols": 2}})).await.expect(200);
        let w = app.admin_post(&format!("{p}/workspaces"), &json!({"workspace": "design"})).await.expect(201).clone();
        assert_eq!(w["workspace"], "design");
        let msg = app.admin_post(&format!("{p}/workspaces"), &json!({"workspace": "design"})).await.expect_admin_error(409);
        assert!(msg.contains("design"), "{msg}");
        let x = app.admin_get(&format!("{p}/extras")).await.expect(200).clone();
        assert_eq!(x["api_keys"].as_array().unwrap().len(), 1);
        assert_eq!(x["api_keys"][0]["id"], k["id"]);
        assert_eq!(x["preferences"], json!({"layout": {"cols": 2}, "theme": "light"}));
        assert_eq!(x["workspaces"].as_array().unwrap().len(), 1);
        assert_eq!(x["workspaces"][0]["workspace"], "design");
        // None of these is a user change: the version stays; each is audited.
        assert_eq!(app.admin_get(&p).await.expect(200)["version"], u["version"]);
        let audit = app.admin_get(&format!("/tenants/acme/audit?user_id={}", u["id"].as_str().unwrap())).await;
        let actions: Vec<String> = audit.expect(200)["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
        assert_eq!(actions, ["invite", "api_key", "preference", "preference", "preference", "workspace"]);
    }
);

backend_test!(
    async fn extras_errors(app = TestApp::admin_api) {
        let u = app.admin_post("/tenants/acme/users", &json!({"email": "mia@acme.com"})).await.expect(201).clone();
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        app.admin_post(&format!("{p}/api-keys"), &json!({})).await.expect_admin_error(400);
        app.admin_post(&format!("{p}/api-keys"), &json!({"name": ""})).await.expect_admin_error(400);
        app.admin_put(&format!("{p}/preferences/theme"), &json!({"val": 1})).await.expect_admin_error(400);
        app.admin(Method::PUT, &format!("{p}/preferences/theme"), None).await.expect_admin_error(400);
        app.admin_post(&format!("{p}/workspaces"), &json!({"workspace": 3})).await.expect_admin_error(400);
        app.admin_post("/tenants/acme/users/usr_nope/api-keys", &json!({"name": "k"})).await.expect_admin_error(404);
        app.admin_put("/tenants/acme/users/usr_nope/preferences/k", &json!({"value": 1})).await.expect_admin_error(404);
        app.admin_post("/tenants/acme/users/usr_nope/workspaces", &json!({"workspace": "w"})).await.expect_admin_error(404);
        app.admin_get("/tenants/acme/users/usr_nope/extras").await.expect_admin_error(404);
        let x = app.admin_get(&format!("{p}/extras")).await.expect(200).clone();
        assert_eq!(x, json!({"api_keys": [], "preferences": {}, "workspaces": []}));
    }
);

backend_test!(
    async fn the_controller_never_touches_extras(app = TestApp::admin_api) {
        let s = app.scim_user("sam@acme.com").await;
        let u = app.wait_user("sam@acme.com", "sam provisioned", |u| u["status"] == "active").await;
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        app.admin_post(&format!("{p}/api-keys"), &json!({"name": "laptop"})).await.expect(201);
        app.admin_put(&format!("{p}/preferences/lang"), &json!({"value": "fr"})).await.expect(200);
        app.admin_post(&format!("{p}/workspaces"), &json!({"workspace": "research"})).await.expect(201);
        let before = app.admin_get(&format!("{p}/extras")).await.expect(200).clone();
        // A deactivation by the IdP, then a full drift-repair run.
        app.scim_set_active(s["id"].as_str().unwrap(), false).await;
        app.wait_user("sam@acme.com", "sam disabled", |u| u["status"] == "disabled").await;
        app.admin_post_empty("/tenants/acme/reconcile").await.expect(200);
        assert_eq!(app.admin_get(&format!("{p}/extras")).await.expect(200), &before);
        // Reactivated: still the same.
        app.scim_set_active(s["id"].as_str().unwrap(), true).await;
        app.wait_user("sam@acme.com", "sam active again", |u| u["status"] == "active").await;
        assert_eq!(app.admin_get(&format!("{p}/extras")).await.expect(200), &before);
    }
);

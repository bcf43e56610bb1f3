//! Tenants and SCIM tokens: create, list, conflicts and bad input; tokens shown once, listed
//! without secrets, revoked per tenant.

use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::common::app::TestApp;

backend_test!(
    async fn create_and_list_tenants(app = TestApp::admin_api) {
        let t = app.admin_post("/tenants", &json!({"slug": "globex", "tier": "pro"})).await;
        let t = t.expect(201);
        assert_eq!(t["slug"], "globex");
        assert_eq!(t["tier"], "pro");
        assert!(t["id"].is_i64() && t["created_at"].is_string(), "{t}");
        let list = app.admin_get("/tenants").await;
        let slugs: Vec<&str> =
            list.expect(200)["tenants"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, ["acme", "globex"]);
        assert_eq!(app.admin_get("/tenants/globex").await.expect(200)["tier"], "pro");
        assert!(app.admin_get("/tenants/nope").await.expect_admin_error(404).contains("nope"));
    }
);

backend_test!(
    async fn tenant_errors(app = TestApp::admin_api) {
        let msg = app.admin_post("/tenants", &json!({"slug": "acme", "tier": "enterprise"})).await.expect_admin_error(409);
        assert!(msg.contains("acme"), "{msg}");
        for bad in ["Acme", "has space", "", "-lead", &"x".repeat(64)] {
            app.admin_post("/tenants", &json!({"slug": bad, "tier": "free"})).await.expect_admin_error(400);
        }
        let msg = app.admin_post("/tenants", &json!({"slug": "ok", "tier": "platinum"})).await.expect_admin_error(400);
        assert!(msg.contains("platinum"), "{msg}");
        app.admin_post("/tenants", &json!({"slug": "ok"})).await.expect_admin_error(400);
        app.admin_post("/tenants", &json!({"slug": 7, "tier": "free"})).await.expect_admin_error(400);
        app.admin_post("/tenants", &json!(["ok", "free"])).await.expect_admin_error(400);
        app.admin_post_empty("/tenants").await.expect_admin_error(400);
        let r = app.request(Some(crate::common::app::ADMIN_TOKEN), Method::POST, "/tenants", Some("{\"slug\":"), &[]).await;
        assert!(r.expect_admin_error(400).contains("invalid JSON"));
        // Nothing was created by the bad requests.
        assert_eq!(app.admin_get("/tenants").await.expect(200)["tenants"].as_array().unwrap().len(), 1);
    }
);

backend_test!(
    async fn tokens_are_shown_once_listed_without_secrets_and_revoked(app = TestApp::admin_api) {
        let created = app.admin_post_empty("/tenants/acme/scim-tokens").await;
        let created = created.expect(201).clone();
        let (id, secret) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
        // The new token works on the SCIM API.
        let r = app.request(Some(secret), Method::GET, "/v1/auth/scim/v2/Users", None, &[]).await;
        r.expect(200);
        let list = app.admin_get("/tenants/acme/scim-tokens").await;
        assert!(!list.text.contains(secret), "a listing must never show a secret");
        assert!(!list.text.contains(&app.token));
        let tokens = list.expect(200)["tokens"].as_array().unwrap().clone();
        assert_eq!(tokens.len(), 2);
        let mine = tokens.iter().find(|t| t["id"] == id).expect("listed");
        let mut keys: Vec<&str> = mine.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["created_at", "id", "last_used_at", "name", "prefix", "revoked_at"]);
        assert!(secret.starts_with(mine["prefix"].as_str().unwrap()));
        assert!(mine["revoked_at"].is_null());
        assert!(mine["last_used_at"].is_string(), "used once above: {mine}");

        let r = app.admin_delete(&format!("/tenants/acme/scim-tokens/{id}")).await;
        assert_eq!(r.status.as_u16(), 204, "{}", r.text);
        let r = app.request(Some(secret), Method::GET, "/v1/auth/scim/v2/Users", None, &[]).await;
        assert_eq!(r.status.as_u16(), 401);
        // Revoking again is a no-op; the other token is untouched.
        assert_eq!(app.admin_delete(&format!("/tenants/acme/scim-tokens/{id}")).await.status.as_u16(), 204);
        let list = app.admin_get("/tenants/acme/scim-tokens").await;
        let tokens = list.expect(200)["tokens"].as_array().unwrap().clone();
        assert!(tokens.iter().find(|t| t["id"] == id).unwrap()["revoked_at"].is_string());
        assert!(tokens.iter().find(|t| t["id"] != id).unwrap()["revoked_at"].is_null());
        app.scim(Method::GET, "/Users", None).await.expect(200);

        app.admin_delete("/tenants/acme/scim-tokens/no-such-token").await.expect_admin_error(404);
        app.admin_post_empty("/tenants/nope/scim-tokens").await.expect_admin_error(404);
        app.admin_get("/tenants/nope/scim-tokens").await.expect_admin_error(404);
    }
);

backend_test!(
    async fn revoking_is_scoped_to_the_tenant(app = TestApp::admin_api) {
        app.admin_post("/tenants", &json!({"slug": "globex", "tier": "enterprise"})).await.expect(201);
        let other = app.admin_post_empty("/tenants/globex/scim-tokens").await.expect(201).clone();
        let id = other["id"].as_str().unwrap();
        // acme cannot revoke (or even see) globex's token.
        app.admin_delete(&format!("/tenants/acme/scim-tokens/{id}")).await.expect_admin_error(404);
        let acme = app.admin_get("/tenants/acme/scim-tokens").await;
        assert!(!acme.text.contains(id));
        let secret = other["token"].as_str().unwrap();
        let r = app.request(Some(secret), Method::GET, "/v1/auth/scim/v2/Users", None, &[]).await;
        r.expect(200);
        assert_eq!(app.admin_delete(&format!("/tenants/globex/scim-tokens/{id}")).await.status.as_u16(), 204);
        let r = app.request(Some(secret), Method::GET, "/v1/auth/scim/v2/Users", None, &[]).await;
        assert_eq!(r.status.as_u16(), 401);
    }
);

backend_test!(
    async fn a_tenant_is_offboarded_through_the_controller(app = TestApp::admin_api) {
        // 15 SCIM users (over the valve's threshold: the confirmation releases it), a group, a
        // user invited by hand.
        let mut ids = Vec::new();
        for i in 0..15 {
            ids.push(app.scim_user(&format!("u{i}@acme.example")).await["id"].as_str().unwrap().to_string());
        }
        app.scim_group("staff", &[ids[0].as_str()]).await;
        let body = json!({"email": "hand@acme.example", "display_name": "By Hand"});
        app.admin_post("/tenants/acme/users", &body).await.expect(201);
        app.wait_user("u14@acme.example", "the last push applied", |u| u["status"] == "active").await;

        let msg = app.admin_delete("/tenants/acme").await.expect_admin_error(400);
        assert!(msg.contains("confirm=acme"), "{msg}");
        app.admin_delete("/tenants/acme?confirm=other").await.expect_admin_error(400);
        // Nothing happened yet.
        app.scim(Method::GET, "/Users?count=1", None).await.expect(200);

        let done = app.admin_delete("/tenants/acme?confirm=acme").await.expect(200).clone();
        let o = &done["offboarded"];
        assert_eq!((o["scim_users"].as_u64(), o["scim_groups"].as_u64(), o["disabled"].as_u64()), (Some(15), Some(1), Some(1)), "{done}");
        assert_eq!(o["deleted"].as_u64(), Some(15), "every provisioned user soft-deleted at once: {done}");
        // The IdP is shut out; the tenant stays listed as deleted, with its users' grace period.
        let r = app.scim(Method::GET, "/Users?count=1", None).await;
        assert_eq!(r.status, 401, "{}", r.text);
        let t = app.admin_get("/tenants/acme").await.expect(200).clone();
        assert!(t["deleted_at"].is_string(), "{t}");
        for i in 0..15 {
            let u = app.user_by_email(&format!("u{i}@acme.example")).await.expect("kept until purged");
            assert_eq!(u["status"], "deleted", "{u}");
            assert!(u["purge_after"].is_string(), "{u}");
        }
        assert_eq!(app.user_by_email("hand@acme.example").await.unwrap()["status"], "disabled");
        let tokens = app.admin_get("/tenants/acme/scim-tokens").await.expect(200)["tokens"].as_array().unwrap().clone();
        assert!(tokens.iter().all(|k| k["revoked_at"].is_string()), "{tokens:?}");
        app.admin_post_empty("/tenants/acme/scim-tokens").await.expect_admin_error(400);
        app.admin_patch("/tenants/acme", &json!({"tier": "pro"})).await.expect_admin_error(400);
        // Again: nothing more to do, and said so.
        let again = app.admin_delete("/tenants/acme?confirm=acme").await.expect(200).clone();
        assert_eq!(again["offboarded"]["deleted"].as_u64(), Some(0), "{again}");
    }
);

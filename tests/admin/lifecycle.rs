//! The lifecycle rows of DESIGN.md end to end: a SCIM push in, Moonborn state out through the
//! admin API, within a bounded wait (poll every 20 ms, at most 10 s; no sleeps tuned to timing).

use reqwest::Method;
use serde_json::json;

use crate::admin_test;

admin_test!(
    async fn a_scim_create_provisions_a_viewer_with_one_welcome_email(app) {
        let s = app.scim_user("Alice@Acme.com").await;
        let u = app.wait_user("alice@acme.com", "alice provisioned", |u| u["status"] == "active").await;
        assert_eq!(u["email"], "Alice@Acme.com");
        assert_eq!(u["display_name"], "Given Family");
        assert_eq!(u["contact_email"], "contact+Alice@Acme.com");
        assert_eq!(u["roles"], json!(["viewer"]));
        assert_eq!(u["managed_by"], "scim");
        assert_eq!(u["scim_id"], s["id"]);
        assert_eq!(u["active_sessions"], 0);
        let welcome = app.events("acme", Some("user.provisioned")).await;
        assert_eq!(welcome.len(), 1, "{welcome:?}");
        assert_eq!(welcome[0]["user_id"], u["id"]);
        assert_eq!(app.events("acme", None).await.len(), 1);
        // A full run changes nothing more: no second welcome email.
        let r = app.post_empty("/tenants/acme/reconcile").await.expect(200).clone();
        assert_eq!(r["status"], "noop", "{r}");
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1);
    }
);

admin_test!(
    async fn deactivate_signs_out_and_reactivate_keeps_old_sessions_revoked(app) {
        let s = app.scim_user("bob@acme.com").await;
        let u = app.wait_user("bob@acme.com", "bob provisioned", |u| u["status"] == "active").await;
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        app.post_empty(&format!("{p}/sessions")).await.expect(201);
        app.post_empty(&format!("{p}/sessions")).await.expect(201);
        assert_eq!(app.get(&p).await.expect(200)["active_sessions"], 2);
        app.scim_set_active(s["id"].as_str().unwrap(), false).await;
        let u = app.wait_user("bob@acme.com", "bob disabled", |u| u["status"] == "disabled").await;
        assert_eq!(u["active_sessions"], 0);
        assert_eq!(app.events("acme", Some("user.deactivated")).await.len(), 1);
        app.scim_set_active(s["id"].as_str().unwrap(), true).await;
        let u = app.wait_user("bob@acme.com", "bob active again", |u| u["status"] == "active").await;
        assert_eq!(u["active_sessions"], 0);
        let sessions = app.get(&format!("{p}/sessions")).await.expect(200)["sessions"].as_array().unwrap().clone();
        assert!(sessions.iter().all(|s| s["revoked_at"].is_string()), "{sessions:?}");
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1, "no second welcome email");
    }
);

admin_test!(
    async fn delete_is_soft_and_a_create_within_grace_restores(app) {
        let s = app.scim_user("cat@acme.com").await;
        let u = app.wait_user("cat@acme.com", "cat provisioned", |u| u["status"] == "active").await;
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        app.put(&format!("{p}/preferences/theme"), &json!({"value": "dark"})).await.expect(200);
        app.scim(Method::DELETE, &format!("/Users/{}", s["id"].as_str().unwrap()), None).await.expect(204);
        let d = app.wait_user("cat@acme.com", "cat soft-deleted", |u| u["status"] == "deleted").await;
        assert!(d["purge_after"].is_string(), "{d}");
        assert_eq!(app.events("acme", Some("user.deleted")).await.len(), 1);
        app.scim(Method::GET, &format!("/Users/{}", s["id"].as_str().unwrap()), None).await.expect(404);
        // Created again within grace: the same Moonborn user, its data kept, no second welcome.
        app.scim_user("cat@acme.com").await;
        let r = app.wait_user("cat@acme.com", "cat restored", |u| u["status"] == "active").await;
        assert_eq!(r["id"], u["id"]);
        assert_eq!(r["purge_after"], serde_json::Value::Null);
        assert_eq!(app.events("acme", Some("user.restored")).await.len(), 1);
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1);
        let x = app.get(&format!("{p}/extras")).await.expect(200).clone();
        assert_eq!(x["preferences"], json!({"theme": "dark"}));
    }
);

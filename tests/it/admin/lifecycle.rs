//! The lifecycle rows of docs/architecture.md end to end: a SCIM push in, Moonborn state out through the
//! admin API, within a bounded wait (poll every 20 ms, at most 10 s; no sleeps tuned to timing).

use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::common::app::TestApp;

backend_test!(
    async fn a_scim_create_provisions_a_viewer_with_one_welcome_email(app = TestApp::admin_api) {
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
        let r = app.admin_post_empty("/tenants/acme/reconcile").await.expect(200).clone();
        assert_eq!(r["status"], "noop", "{r}");
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1);
    }
);

backend_test!(
    async fn an_inactive_create_is_disabled_with_no_welcome_email_until_reactivated(app = TestApp::admin_api) {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ivy@acme.com",
            "active": false
        });
        let s = app.scim(Method::POST, "/Users", Some(&body)).await.expect(201).clone();
        let u = app.wait_user("ivy@acme.com", "ivy provisioned disabled", |u| u["status"] == "disabled").await;
        assert_eq!(u["managed_by"], "scim");
        assert!(app.events("acme", None).await.is_empty(), "no welcome email for a disabled user");
        // The first reactivation is when the welcome email goes out, once.
        app.scim_set_active(s["id"].as_str().unwrap(), true).await;
        app.wait_user("ivy@acme.com", "ivy active", |u| u["status"] == "active").await;
        let welcome = app.events("acme", Some("user.provisioned")).await;
        assert_eq!(welcome.len(), 1, "{welcome:?}");
        assert_eq!(welcome[0]["user_id"], u["id"]);
    }
);

backend_test!(
    async fn deactivate_signs_out_and_reactivate_keeps_old_sessions_revoked(app = TestApp::admin_api) {
        let s = app.scim_user("bob@acme.com").await;
        let u = app.wait_user("bob@acme.com", "bob provisioned", |u| u["status"] == "active").await;
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        app.admin_post_empty(&format!("{p}/sessions")).await.expect(201);
        app.admin_post_empty(&format!("{p}/sessions")).await.expect(201);
        assert_eq!(app.admin_get(&p).await.expect(200)["active_sessions"], 2);
        app.scim_set_active(s["id"].as_str().unwrap(), false).await;
        let u = app.wait_user("bob@acme.com", "bob disabled", |u| u["status"] == "disabled").await;
        assert_eq!(u["active_sessions"], 0);
        assert_eq!(app.events("acme", Some("user.deactivated")).await.len(), 1);
        app.scim_set_active(s["id"].as_str().unwrap(), true).await;
        let u = app.wait_user("bob@acme.com", "bob active again", |u| u["status"] == "active").await;
        assert_eq!(u["active_sessions"], 0);
        let sessions = app.admin_get(&format!("{p}/sessions")).await.expect(200)["sessions"].as_array().unwrap().clone();
        assert!(sessions.iter().all(|s| s["revoked_at"].is_string()), "{sessions:?}");
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1, "no second welcome email");
    }
);

backend_test!(
    async fn delete_is_soft_and_a_create_within_grace_restores(app = TestApp::admin_api) {
        let s = app.scim_user("cat@acme.com").await;
        let u = app.wait_user("cat@acme.com", "cat provisioned", |u| u["status"] == "active").await;
        let p = format!("/tenants/acme/users/{}", u["id"].as_str().unwrap());
        app.admin_put(&format!("{p}/preferences/theme"), &json!({"value": "dark"})).await.expect(200);
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
        let x = app.admin_get(&format!("{p}/extras")).await.expect(200).clone();
        assert_eq!(x["preferences"], json!({"theme": "dark"}));
    }
);

backend_test!(
    async fn an_update_changes_the_record_and_group_membership_changes_roles(app = TestApp::admin_api) {
        let s = app.scim_user("upd@acme.com").await;
        let id = s["id"].as_str().unwrap().to_string();
        app.wait_user("upd@acme.com", "provisioned", |u| u["roles"] == json!(["viewer"])).await;
        // A PATCH of the name: the display name follows.
        let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "name.givenName", "value": "Ursula"}]});
        app.scim(Method::PATCH, &format!("/Users/{id}"), Some(&patch)).await.expect(200);
        app.wait_user("upd@acme.com", "renamed", |u| u["display_name"] == "Ursula Family").await;
        // Group push: admin and billing; the default role goes.
        let admins = app.scim_group("moonborn-admin", &[&id]).await;
        app.scim_group("Moonborn-Billing", &[&id]).await;
        app.wait_user("upd@acme.com", "roles", |u| u["roles"] == json!(["admin", "billing"])).await;
        // A member removal: only billing stays.
        let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]});
        app.scim(Method::PATCH, &format!("/Groups/{}", admins["id"].as_str().unwrap()), Some(&remove)).await.expect(204);
        app.wait_user("upd@acme.com", "admin revoked", |u| u["roles"] == json!(["billing"])).await;
        // A group rename away from a bound name: back to the default role.
        let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName", "value": "finance"}]});
        let billing = app.scim(Method::GET, "/Groups?filter=displayName%20eq%20%22moonborn-billing%22", None).await;
        let gid = billing.expect(200)["Resources"][0]["id"].as_str().unwrap().to_string();
        app.scim(Method::PATCH, &format!("/Groups/{gid}"), Some(&rename)).await.expect(204);
        app.wait_user("upd@acme.com", "default role", |u| u["roles"] == json!(["viewer"])).await;
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1, "updates send no welcome");
    }
);

backend_test!(
    async fn an_idp_create_adopts_a_manually_invited_user(app = TestApp::admin_api) {
        let invited = app.admin_post("/tenants/acme/users", &json!({"email": "Mia@acme.com", "roles": ["editor"]})).await;
        let mid = invited.expect(201)["id"].as_str().unwrap().to_string();
        let plan_before = app.scim_user("mia@acme.com").await;
        let u = app.wait_user("mia@acme.com", "adopted", |u| u["managed_by"] == "scim").await;
        assert_eq!(u["id"], mid, "the same Moonborn user, not a new one");
        assert_eq!(u["scim_id"], plan_before["id"]);
        assert_eq!(u["roles"], json!(["viewer"]), "roles now come from SCIM");
        assert!(app.events("acme", Some("user.provisioned")).await.is_empty(), "an adopted user is not welcomed again");
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "adopt" && e["user_id"] == mid));
    }
);

backend_test!(
    async fn after_the_grace_period_the_purge_removes_personal_data_and_keeps_the_audit(app = TestApp::admin_api) {
        let s = app.scim_user("gone@acme.com").await;
        let u = app.wait_user("gone@acme.com", "provisioned", |u| u["status"] == "active").await;
        let uid = u["id"].as_str().unwrap().to_string();
        app.admin_post(&format!("/tenants/acme/users/{uid}/sessions"), &json!({})).await.expect(201);
        app.admin_put(&format!("/tenants/acme/users/{uid}/preferences/theme"), &json!({"value": "dark"})).await.expect(200);
        app.scim(Method::DELETE, &format!("/Users/{}", s["id"].as_str().unwrap()), None).await.expect(204);
        let d = app.wait_user("gone@acme.com", "soft-deleted", |u| u["status"] == "deleted").await;
        assert!(d["purge_after"].is_string());
        // Not due yet: a run keeps it.
        app.admin_post_empty("/tenants/acme/reconcile").await.expect(200);
        assert_eq!(app.user_by_email("gone@acme.com").await.unwrap()["status"], "deleted");
        // The grace period ends (moved into the past, as 30 days passing would).
        sqlx::query("UPDATE users SET purge_after = '2000-01-01T00:00:00.000Z' WHERE id = $1")
            .bind(&uid)
            .execute(app.store.pool())
            .await
            .unwrap();
        let r = app.admin_post_empty("/tenants/acme/reconcile").await.expect(200).clone();
        assert_eq!(r["report"]["summary"]["purge"], 1, "{r}");
        let users = app.admin_get("/tenants/acme/users").await.expect(200).clone();
        let purged = users["users"].as_array().unwrap().iter().find(|u| u["id"] == uid).cloned().expect("row kept");
        assert_eq!(purged["status"], "purged");
        assert_eq!(purged["email"], "");
        assert!(purged["display_name"].is_null() && purged["contact_email"].is_null());
        let extras = app.admin_get(&format!("/tenants/acme/users/{uid}/extras")).await.expect(200).clone();
        assert_eq!(extras["preferences"], json!({}), "personal data removed");
        assert_eq!(app.events("acme", Some("user.purged")).await.len(), 1);
        let audit = app.admin_get("/tenants/acme/audit").await.expect(200).clone();
        let mine: Vec<_> = audit["entries"].as_array().unwrap().iter().filter(|e| e["user_id"] == uid).collect();
        assert!(mine.iter().any(|e| e["action"] == "create") && mine.iter().any(|e| e["action"] == "purge"));
        // The email is free again: a new SCIM user with it is a new Moonborn user, welcomed.
        app.scim_user("gone@acme.com").await;
        let fresh = app.wait_user("gone@acme.com", "recreated", |u| u["status"] == "active").await;
        assert_ne!(fresh["id"], uid);
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 2);
    }
);

backend_test!(
    async fn a_create_with_the_same_external_id_within_grace_restores(app = TestApp::admin_api) {
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ext@acme.com", "externalId": "00uEXT1", "active": true});
        let s = app.scim(Method::POST, "/Users", Some(&body)).await.expect(201).clone();
        let u = app.wait_user("ext@acme.com", "provisioned", |u| u["status"] == "active").await;
        app.scim(Method::DELETE, &format!("/Users/{}", s["id"].as_str().unwrap()), None).await.expect(204);
        app.wait_user("ext@acme.com", "deleted", |u| u["status"] == "deleted").await;
        // The IdP recreates the person under a new userName, same externalId.
        let again = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ext.renamed@acme.com", "externalId": "00uEXT1", "active": true});
        app.scim(Method::POST, "/Users", Some(&again)).await.expect(201);
        let r = app.wait_user("ext.renamed@acme.com", "restored", |u| u["status"] == "active").await;
        assert_eq!(r["id"], u["id"], "the same Moonborn user");
        assert!(r["purge_after"].is_null());
        assert_eq!(app.events("acme", Some("user.provisioned")).await.len(), 1, "no second welcome");
        assert_eq!(app.events("acme", Some("user.restored")).await.len(), 1);
    }
);

backend_test!(
    async fn the_controller_reads_long_key_lists_and_keys_that_need_escaping(app = TestApp::admin_api) {
        // More users than one of the old `IN (…)` lists (500) and than a planning batch (1,000).
        let mut ids: Vec<String> = Vec::new();
        let names: Vec<String> = (0..1_200).map(|i| format!("bulk{i:04}@acme.com")).collect();
        for chunk in names.chunks(50) {
            let made = futures_util::future::join_all(chunk.iter().map(|n| app.scim_user(n))).await;
            ids.extend(made.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        }
        // Two groups of 60 (more users than the one-by-one group reads take).
        let in_a: Vec<&str> = ids[..60].iter().map(String::as_str).collect();
        let in_b: Vec<&str> = ids[30..90].iter().map(String::as_str).collect();
        app.scim_group("bulk-a", &in_a).await;
        app.scim_group("bulk-b", &in_b).await;
        let t = app.store.tenant("acme").await.unwrap();
        let mut asked = ids.clone();
        asked.push("not-a-user".into());
        let desired = app.store.desired_by_ids(t.id, &asked).await.unwrap();
        assert_eq!(desired.len(), ids.len(), "every pushed user read back, the unknown id skipped");
        let groups: std::collections::HashMap<&str, Vec<String>> =
            desired.iter().map(|(id, _, gs)| (id.as_str(), gs.clone())).collect();
        assert_eq!(groups[ids[0].as_str()], vec!["bulk-a".to_string()]);
        assert_eq!(groups[ids[45].as_str()], vec!["bulk-a".to_string(), "bulk-b".to_string()]);
        assert_eq!(groups[ids[89].as_str()], vec!["bulk-b".to_string()]);
        assert!(groups[ids[90].as_str()].is_empty());
        // Keys the reads pass as one JSON array: quotes, backslashes and non-ASCII survive.
        let odd = [r#"o"neil@acme.com"#, r"back\slash@acme.com", "zoë+ü@acme.com"];
        for e in odd {
            app.admin_post("/tenants/acme/users", &json!({"email": e, "roles": ["editor"]})).await.expect(201);
        }
        let lc: Vec<String> = odd.iter().map(|e| e.to_lowercase()).collect();
        let found = app.store.actual_candidates(t.id, &[], &lc, &[]).await.unwrap();
        let mut emails: Vec<String> = found.iter().map(|u| u.email.clone()).collect();
        emails.sort();
        let mut want: Vec<String> = odd.iter().map(|e| e.to_string()).collect();
        want.sort();
        assert_eq!(emails, want);
        app.settle().await;
        // More users than the listing's default page.
        let users = app.admin_get("/tenants/acme/users?limit=10000").await.expect(200).clone();
        assert_eq!(users["next"], serde_json::Value::Null);
        let scim = users["users"].as_array().unwrap().iter().filter(|u| u["managed_by"] == "scim").count();
        assert_eq!(scim, ids.len(), "every pushed user provisioned");
        let linked = app.store.actual_candidates(t.id, &ids, &[], &[]).await.unwrap();
        assert_eq!(linked.len(), ids.len());
        assert!(linked.iter().all(|u| u.roles.contains("viewer")), "roles read with the users");
    }
);

backend_test!(
    async fn a_bulks_users_reach_moonborn_with_their_roles(app = TestApp::admin_api) {
        // An initial load by /Bulk: users, and a bound group whose members reference them by
        // bulkId (before them in the request).
        let mut ops = vec![json!({"method": "POST", "path": "/Groups", "bulkId": "admins", "data": {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "moonborn-admin",
            "members": [{"value": "bulkId:u0"}, {"value": "bulkId:u1"}]}})];
        ops.extend((0..5).map(|i| json!({"method": "POST", "path": "/Users", "bulkId": format!("u{i}"), "data": {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": format!("bulk{i}@acme.example")}})));
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
        let r = app.scim(Method::POST, "/Bulk", Some(&body)).await;
        let answered = r.expect(200)["Operations"].as_array().unwrap().clone();
        assert!(answered.iter().all(|o| o["status"] == "201"), "{answered:?}");
        for i in 0..5 {
            let want = if i < 2 { "admin" } else { "viewer" };
            let u = app
                .wait_user(&format!("bulk{i}@acme.example"), "the bulk's user applied with its role", |u| {
                    u["status"] == "active" && u["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == want))
                })
                .await;
            assert_eq!(u["managed_by"], "scim", "{u}");
        }
    }
);

//! Runs, the audit trail and the outbox: shapes, filters, paging and bad parameters.

use serde_json::{json, Value};

use crate::backend_test;
use crate::common::app::eventually;
use crate::common::app::TestApp;

backend_test!(
    async fn runs_audit_and_outbox_listings(app = TestApp::admin_api) {
        assert_eq!(app.admin_get("/tenants/acme/runs").await.expect(200), &json!({"runs": []}));
        assert_eq!(app.admin_get("/tenants/acme/outbox").await.expect(200), &json!({"events": []}));
        for e in ["a@acme.com", "b@acme.com", "c@acme.com"] {
            app.admin_post("/tenants/acme/users", &json!({"email": e})).await.expect(201);
        }
        let all = app.admin_get("/tenants/acme/audit").await.expect(200)["entries"].as_array().unwrap().clone();
        // (Past the harness's own safety setting and token.)
        let all: Vec<Value> = all.into_iter().filter(|e| e["action"] != "safety" && e["action"] != "token_issue").collect();
        assert_eq!(all.len(), 3);
        let e = &all[0];
        let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["action", "actor", "after", "at", "before", "run_id", "seq", "user_id"]);
        assert!(e["after"].is_object(), "before/after are JSON, not text: {e}");
        assert!(all.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()), "oldest first");
        // Paging.
        let first = all[0]["seq"].as_i64().unwrap();
        let page = app.admin_get(&format!("/tenants/acme/audit?after={first}&limit=1")).await.expect(200).clone();
        assert_eq!(page["entries"].as_array().unwrap().len(), 1);
        assert_eq!(page["entries"][0]["seq"], all[1]["seq"]);
        for bad in ["limit=0", "limit=x", "after=x", "limit=100000"] {
            app.admin_get(&format!("/tenants/acme/audit?{bad}")).await.expect_admin_error(400);
        }
        app.admin_get("/tenants/acme/runs?limit=-1").await.expect_admin_error(400);

        // A SCIM user: a run and a welcome email.
        app.scim_user("sam@acme.com").await;
        let sam = app.wait_user("sam@acme.com", "sam provisioned", |u| u["status"] == "active").await;
        // The user shows as soon as its change commits; the run row is finished just after.
        let run = eventually("the run to finish", || async {
            let runs = app.admin_get("/tenants/acme/runs?limit=1").await.expect(200)["runs"].clone();
            assert!(runs.as_array().unwrap().len() <= 1);
            Some(runs[0].clone()).filter(|r| r["status"] == "applied")
        })
        .await;
        // The push's wake-up may collapse into the startup run that was still pending.
        assert!(["push", "startup"].contains(&run["trigger"].as_str().unwrap()), "{run}");
        assert_eq!(run["summary"]["applied"], 1);
        let ev = app.events("acme", None).await;
        assert_eq!(ev.len(), 1);
        for k in ["id", "type", "user_id", "status", "attempts", "created_at"] {
            assert!(ev[0].get(k).is_some(), "{k} missing in {}", ev[0]);
        }
        assert_eq!((ev[0]["type"].as_str(), ev[0]["user_id"].as_str()), (Some("user.provisioned"), sam["id"].as_str()));
        assert_eq!((ev[0]["status"].as_str(), ev[0]["attempts"].as_i64()), (Some("pending"), Some(0)));
        assert!(app.events("acme", Some("user.deleted")).await.is_empty());
        let by_user = app.admin_get("/tenants/acme/outbox?user_id=usr_nope").await.expect(200).clone();
        assert_eq!(by_user, json!({"events": []}));
        app.admin_get("/tenants/nope/runs").await.expect_admin_error(404);
        app.admin_get("/tenants/nope/audit").await.expect_admin_error(404);
        app.admin_get("/tenants/nope/outbox").await.expect_admin_error(404);
    }
);

backend_test!(
    async fn the_outbox_pages_by_seq_with_its_filters(app = TestApp::admin_api) {
        for n in ["p1@acme.com", "p2@acme.com", "p3@acme.com"] {
            app.scim_user(n).await;
        }
        let all = eventually("three welcome events", || async {
            let ev = app.events("acme", Some("user.provisioned")).await;
            (ev.len() == 3).then_some(ev)
        })
        .await;
        let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().expect("seq")).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");
        let page = app.admin_get("/tenants/acme/outbox?limit=2").await.expect(200)["events"].as_array().unwrap().clone();
        assert_eq!(page.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), seqs[..2]);
        let rest = app.admin_get(&format!("/tenants/acme/outbox?after={}&limit=2", seqs[1])).await.expect(200).clone();
        assert_eq!(rest["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), seqs[2..]);
        // Filters apply before the limit: one user's events, found past the others.
        let uid = all[2]["user_id"].as_str().unwrap();
        let mine = app.admin_get(&format!("/tenants/acme/outbox?user_id={uid}&type=user.provisioned&limit=1")).await.expect(200).clone();
        assert_eq!(mine["events"].as_array().unwrap().len(), 1, "{mine}");
        assert_eq!(mine["events"][0]["seq"], all[2]["seq"]);
        let alone = app.admin_get(&format!("/tenants/acme/outbox?user_id={uid}")).await.expect(200).clone();
        assert_eq!(alone["events"].as_array().unwrap().len(), 1, "{alone}");
        let none = app.admin_get(&format!("/tenants/acme/outbox?after={}", seqs[2])).await.expect(200).clone();
        assert_eq!(none, json!({"events": []}));
        for bad in ["limit=0", "limit=10001", "after=x"] {
            app.admin_get(&format!("/tenants/acme/outbox?{bad}")).await.expect_admin_error(400);
        }
    }
);

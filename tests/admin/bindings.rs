//! Group → role bindings (validated; a change re-evaluates every member through a full run), the
//! safety-valve settings and releasing a hold.

use serde_json::{json, Value};

use crate::admin_test;

admin_test!(
    async fn bindings_default_to_the_product_page(app) {
        let b = app.get("/tenants/acme/group-bindings").await.expect(200).clone();
        assert_eq!(b["default_role"], "viewer");
        let pairs: Vec<(String, String)> = b["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["group"].as_str().unwrap().into(), x["role"].as_str().unwrap().into()))
            .collect();
        assert_eq!(pairs.len(), 5);
        assert!(pairs.contains(&("moonborn-admin".into(), "admin".into())));
        app.get("/tenants/nope/group-bindings").await.expect_error(404);
    }
);

admin_test!(
    async fn bad_bindings_are_refused_with_the_reason(app) {
        let before = app.get("/tenants/acme/group-bindings").await.expect(200).clone();
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
            let msg = app.put("/tenants/acme/group-bindings", &body).await.expect_error(400);
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        app.put("/tenants/nope/group-bindings", &json!({"bindings": []})).await.expect_error(404);
        assert_eq!(app.get("/tenants/acme/group-bindings").await.expect(200), &before);
    }
);

admin_test!(
    async fn put_stores_and_answers_the_bindings(app) {
        let body = json!({"bindings": [{"group": "Engineering", "role": "editor"}, {"group": "Finance", "role": "billing"}], "default_role": null});
        let put = app.put("/tenants/acme/group-bindings", &body).await.expect(200).clone();
        assert_eq!(put["default_role"], Value::Null);
        assert_eq!(put["bindings"].as_array().unwrap().len(), 2);
        assert_eq!(app.get("/tenants/acme/group-bindings").await.expect(200), &put);
        // An absent default_role keeps the current one; an explicit one sets it.
        let kept = app.put("/tenants/acme/group-bindings", &json!({"bindings": []})).await.expect(200).clone();
        assert_eq!(kept, json!({"bindings": [], "default_role": null}));
        let set = app.put("/tenants/acme/group-bindings", &json!({"bindings": [], "default_role": "auditor"})).await;
        assert_eq!(set.expect(200)["default_role"], "auditor");
        let kept = app.put("/tenants/acme/group-bindings", &json!({"bindings": []})).await;
        assert_eq!(kept.expect(200)["default_role"], "auditor");
        // Each change is audited, by the operator.
        let audit = app.get("/tenants/acme/audit").await.expect(200).clone();
        let n = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "bindings" && e["actor"] == "operator").count();
        assert_eq!(n, 4, "{audit}");
    }
);

admin_test!(
    async fn a_binding_change_re_evaluates_every_member(app) {
        let u = app.scim_user("dev@acme.com").await;
        let id = u["id"].as_str().unwrap();
        app.scim_group("Engineering", &[id]).await;
        app.wait_user("dev@acme.com", "dev provisioned as viewer", |u| u["roles"] == json!(["viewer"])).await;
        let body = json!({"bindings": [{"group": "engineering", "role": "editor"}, {"group": "ENGINEERING", "role": "auditor"}], "default_role": "viewer"});
        app.put("/tenants/acme/group-bindings", &body).await.expect(200);
        app.wait_user("dev@acme.com", "roles from the new binding", |u| u["roles"] == json!(["auditor", "editor"])).await;
        // Back to no binding for the group and no default role: no roles at all.
        app.put("/tenants/acme/group-bindings", &json!({"bindings": [], "default_role": null})).await.expect(200);
        app.wait_user("dev@acme.com", "no roles", |u| u["roles"] == json!([])).await;
    }
);

admin_test!(
    async fn safety_settings(app) {
        let view = |pct: u32, min: u64, on: bool, settle: f64, max: f64| {
            json!({"enabled": on, "percent": pct, "min_users": min, "settle_secs": settle, "max_wait_secs": max,
                   "held": null, "waiting": null})
        };
        // (The harness sets settle and max wait to 0; a new tenant has 10 s and 120 s.)
        let s = app.get("/tenants/acme/safety").await.expect(200).clone();
        assert_eq!(s, view(20, 10, true, 0.0, 0.0));
        let s = app.put("/tenants/acme/safety", &json!({"settle_secs": 10, "max_wait_secs": 120})).await.expect(200).clone();
        assert_eq!(s, view(20, 10, true, 10.0, 120.0));
        let s = app.put("/tenants/acme/safety", &json!({"percent": 50})).await.expect(200).clone();
        assert_eq!(s, view(50, 10, true, 10.0, 120.0));
        let s = app.put("/tenants/acme/safety", &json!({"percent": 0, "min_users": 3, "settle_secs": 0.5})).await.expect(200).clone();
        assert_eq!(s, view(0, 3, true, 0.5, 120.0));
        let s = app.put("/tenants/acme/safety", &json!({"enabled": false})).await.expect(200).clone();
        assert_eq!(s, view(0, 3, false, 0.5, 120.0));
        for bad in [
            json!({"percent": 101}), json!({"percent": -1}), json!({"min_users": -1}), json!({"percent": "ten"}),
            json!({"pct": 5}), json!({"settle_secs": -1}), json!({"settle_secs": 3601}), json!({"max_wait_secs": 0.1}),
            json!({"enabled": "no"}), json!({"settle_secs": 200, "max_wait_secs": 100}),
        ] {
            app.put("/tenants/acme/safety", &bad).await.expect_error(400);
        }
        assert_eq!(app.get("/tenants/acme/safety").await.expect(200), &s);
        app.put("/tenants/nope/safety", &json!({"percent": 5})).await.expect_error(404);
    }
);

admin_test!(
    async fn releasing_without_a_hold_is_harmless_and_audited(app) {
        let r = app.post_empty("/tenants/acme/hold/release").await.expect(200).clone();
        assert_eq!(r["held"], Value::Null);
        assert_eq!((r["status"].as_str(), r["applied"].as_u64()), (Some("nothing_held"), Some(0)), "{r}");
        let audit = app.get("/tenants/acme/audit").await.expect(200).clone();
        let e = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "release").cloned().expect("audited");
        assert_eq!(e["actor"], "operator");
        app.post_empty("/tenants/nope/hold/release").await.expect_error(404);
    }
);

//! The admin token: required everywhere (even on unknown paths), compared exactly; unknown paths
//! and methods answer JSON errors; without an admin token only named operators get in.

use reqwest::Method;

use crate::backend_test;
use crate::common::app::{Backend, TestApp, ADMIN_TOKEN};

const PATHS: &[(&str, &str)] = &[
    ("GET", "/tenants"),
    ("POST", "/tenants"),
    ("GET", "/tenants/acme"),
    ("GET", "/tenants/acme/users"),
    ("POST", "/tenants/acme/users"),
    ("GET", "/tenants/acme/scim-tokens"),
    ("PUT", "/tenants/acme/group-bindings"),
    ("GET", "/tenants/acme/plan"),
    ("POST", "/tenants/acme/reconcile"),
    ("GET", "/tenants/acme/outbox"),
    ("GET", "/tenants/nope/users"),
    ("GET", "/no/such/path"),
    ("DELETE", "/tenants"),
];

backend_test!(
    async fn every_endpoint_needs_the_admin_token(app = TestApp::admin_api) {
        let wrong = format!("{ADMIN_TOKEN}x");
        let scim = app.token.clone();
        let truncated = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
        for (m, path) in PATHS {
            let method: Method = m.parse().unwrap();
            for token in [None, Some(wrong.as_str()), Some(truncated), Some(scim.as_str()), Some("")] {
                let r = app.request(token, method.clone(), path, Some("{}"), &[]).await;
                r.expect_admin_error(401);
                assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer realm=\"moonborn-admin\""));
            }
            // Another scheme with the right secret is still no bearer token.
            let basic = format!("Basic {ADMIN_TOKEN}");
            app.request(None, method.clone(), path, None, &[("authorization", &basic)]).await.expect_admin_error(401);
        }
        // The scheme is case-insensitive.
        let lower = format!("bearer {ADMIN_TOKEN}");
        app.request(None, Method::GET, "/tenants", None, &[("authorization", &lower)]).await.expect(200);
    }
);

backend_test!(
    async fn unknown_paths_and_methods_answer_json(app = TestApp::admin_api) {
        assert!(app.admin_get("/no/such/path").await.expect_admin_error(404).contains("no such admin endpoint"));
        app.admin_get("/tenants/acme/users/u1/nothing").await.expect_admin_error(404);
        app.admin_get("").await.expect_admin_error(404);
        app.admin_delete("/tenants").await.expect_admin_error(405);
        app.admin(Method::PATCH, "/tenants/acme/plan", None).await.expect_admin_error(405);
        app.admin_get("/tenants/acme/reconcile").await.expect_admin_error(405);
    }
);

backend_test!(
    async fn the_admin_token_does_not_open_the_scim_api(app = TestApp::admin_api) {
        let r = app.request(Some(ADMIN_TOKEN), Method::GET, "/v1/auth/scim/v2/Users", None, &[]).await;
        assert_eq!(r.status.as_u16(), 401, "{}", r.text);
    }
);

/// The server of these tests, but without an admin token.
async fn no_admin_token(backend: Backend) -> TestApp {
    TestApp::builder(backend).build().await
}

backend_test!(
    async fn without_an_admin_token_only_operators_open_the_admin_api(app = no_admin_token) {
        for token in [None, Some(ADMIN_TOKEN), Some("")] {
            let r = app.request(token, Method::GET, "/tenants", None, &[]).await;
            r.expect_admin_error(401);
        }
        let (_, op) = app.store.create_operator("ops", None).await.expect("operator");
        app.request(Some(&op), Method::GET, "/tenants", None, &[]).await.expect(200);
        // The SCIM API still works.
        let r = app.request(Some(&app.token.clone()), Method::GET, "/v1/auth/scim/v2/Users", None, &[]).await;
        r.expect(200);
    }
);

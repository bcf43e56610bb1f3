//! The basic round trip.

use serde_json::json;

use crate::backend_test;
use crate::common::app::TestApp;

backend_test!(
    async fn create_then_get_user(app = TestApp::scim_api) {
        let u = app.create_user("Alice@Acme.com").await;
        let id = u["id"].as_str().unwrap();
        let r = app.get(&format!("/Users/{id}")).await;
        let body = r.expect(200);
        assert_eq!(body["userName"], "Alice@Acme.com");
        assert_eq!(r.header("etag").unwrap(), body["meta"]["version"].as_str().unwrap());
        app.post("/Users", &json!({"userName": "alice@acme.com"})).await.expect_error(409, Some("uniqueness"));
    }
);

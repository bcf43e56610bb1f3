//! ETags (RFC 7644 §3.14): the ETag header is meta.version; If-None-Match and If-Match.

use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;
use crate::common::app::{Resp, TestApp};

async fn with_header(app: &TestApp, method: Method, path: &str, body: Option<&Value>, h: &str, v: &str) -> Resp {
    app.send_as(&app.token, method, path, body, &[(h, v)]).await
}

backend_test!(
    async fn etag_header_equals_meta_version_everywhere(app = TestApp::scim_api) {
        let r = app.post("/Users", &json!({"schemas": [USER_URN], "userName": "e@example.com"})).await;
        let u = r.expect(201).clone();
        assert_eq!(r.header("etag").as_deref(), u["meta"]["version"].as_str());
        let r = app.get(&user_path(&u)).await;
        assert_eq!(r.header("etag").as_deref(), r.body["meta"]["version"].as_str());
        let r = app.put(&user_path(&u), &json!({"schemas": [USER_URN], "userName": "e@example.com", "title": "x"})).await;
        assert_eq!(r.header("etag").as_deref(), r.body["meta"]["version"].as_str());
        let g = app.create_group("G", &[]).await;
        let r = app.get(&group_path(&g)).await;
        assert_eq!(r.header("etag").as_deref(), r.body["meta"]["version"].as_str());
        let etag = r.header("etag").unwrap();
        assert!(etag.starts_with("W/\"") || etag.starts_with('"'), "an entity tag: {etag}");
    }
);

backend_test!(
    async fn if_none_match_with_the_current_etag_is_304(app = TestApp::scim_api) {
        let u = app.create_user("e@example.com").await;
        let v = u["meta"]["version"].as_str().unwrap();
        let r = with_header(&app, Method::GET, &user_path(&u), None, "if-none-match", v).await;
        assert_eq!(r.status.as_u16(), 304);
        assert_eq!(r.body, Value::Null, "304 has no body");
        let g = app.create_group("G", &[]).await;
        let gv = g["meta"]["version"].as_str().unwrap();
        let r = with_header(&app, Method::GET, &group_path(&g), None, "if-none-match", gv).await;
        assert_eq!(r.status.as_u16(), 304);
        // A stale one gets the resource.
        let r = with_header(&app, Method::GET, &user_path(&u), None, "if-none-match", "W/\"999999\"").await;
        assert_eq!(r.expect(200), &u);
    }
);

backend_test!(
    async fn if_match_with_a_stale_etag_is_412_and_changes_nothing(app = TestApp::scim_api) {
        let u = app.create_user("e@example.com").await;
        let stale = u["meta"]["version"].as_str().unwrap().to_string();
        let u2 = app.put(&user_path(&u), &json!({"schemas": [USER_URN], "userName": "e@example.com", "title": "v2"})).await.ok(200);
        let put = json!({"schemas": [USER_URN], "userName": "e@example.com", "title": "v3"});
        with_header(&app, Method::PUT, &user_path(&u), Some(&put), "if-match", &stale).await.expect_error(412, None);
        let p = patch_body(json!([{"op": "replace", "path": "title", "value": "v3"}]));
        with_header(&app, Method::PATCH, &user_path(&u), Some(&p), "if-match", &stale).await.expect_error(412, None);
        with_header(&app, Method::DELETE, &user_path(&u), None, "if-match", &stale).await.expect_error(412, None);
        assert_eq!(app.get_ok(&user_path(&u)).await, u2);
    }
);

backend_test!(
    async fn if_match_with_a_stale_etag_on_a_group_is_412_and_changes_nothing(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("G", &[]).await;
        let stale = g["meta"]["version"].as_str().unwrap().to_string();
        app.patch_ops(&group_path(&g), json!([{"op": "replace", "path": "displayName", "value": "G2"}])).await.expect(204);
        let g2 = app.get_ok(&group_path(&g)).await;
        let put = json!({"schemas": [GROUP_URN], "displayName": "G3"});
        with_header(&app, Method::PUT, &group_path(&g), Some(&put), "if-match", &stale).await.expect_error(412, None);
        let p = patch_body(json!([{"op": "add", "path": "members", "value": [{"value": id_of(&a)}]}]));
        with_header(&app, Method::PATCH, &group_path(&g), Some(&p), "if-match", &stale).await.expect_error(412, None);
        with_header(&app, Method::DELETE, &group_path(&g), None, "if-match", &stale).await.expect_error(412, None);
        assert_eq!(app.get_ok(&group_path(&g)).await, g2);
    }
);

backend_test!(
    async fn if_match_with_the_current_etag_succeeds_and_the_version_increments(app = TestApp::scim_api) {
        let u = app.create_user("e@example.com").await;
        let v1 = u["meta"]["version"].as_str().unwrap().to_string();
        let put = json!({"schemas": [USER_URN], "userName": "e@example.com", "title": "v2"});
        let r = with_header(&app, Method::PUT, &user_path(&u), Some(&put), "if-match", &v1).await;
        let v2 = r.expect(200)["meta"]["version"].as_str().unwrap().to_string();
        assert_eq!(version_number(&v2), version_number(&v1) + 1);
        let p = patch_body(json!([{"op": "replace", "path": "title", "value": "v3"}]));
        let r = with_header(&app, Method::PATCH, &user_path(&u), Some(&p), "if-match", &v2).await;
        let v3 = r.expect(200)["meta"]["version"].as_str().unwrap().to_string();
        assert_eq!(version_number(&v3), version_number(&v2) + 1);
        with_header(&app, Method::DELETE, &user_path(&u), None, "if-match", &v3).await.expect(204);
        app.get(&user_path(&u)).await.expect_error(404, None);
    }
);

backend_test!(
    async fn if_match_with_the_current_etag_on_a_group_succeeds(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("G", &[]).await;
        let v1 = g["meta"]["version"].as_str().unwrap().to_string();
        let p = patch_body(json!([{"op": "add", "path": "members", "value": [{"value": id_of(&a)}]}]));
        let r = with_header(&app, Method::PATCH, &group_path(&g), Some(&p), "if-match", &v1).await;
        r.expect(204);
        let got = app.get_ok(&group_path(&g)).await;
        let v2 = got["meta"]["version"].as_str().unwrap().to_string();
        assert_eq!(version_number(&v2), version_number(&v1) + 1);
        assert_eq!(member_ids(&got), set([id_of(&a)]));
        let put = json!({"schemas": [GROUP_URN], "displayName": "G2"});
        let r = with_header(&app, Method::PUT, &group_path(&g), Some(&put), "if-match", &v2).await;
        assert_eq!(version_number(r.expect(200)["meta"]["version"].as_str().unwrap()), version_number(&v2) + 1);
    }
);

backend_test!(
    async fn every_write_changes_the_version(app = TestApp::scim_api) {
        let u = app.create_user("e@example.com").await;
        let mut last = version_number(u["meta"]["version"].as_str().unwrap());
        for title in ["a", "b", "c"] {
            let body = app.patch_ops(&user_path(&u), json!([{"op": "replace", "path": "title", "value": title}])).await.ok(200);
            let v = version_number(body["meta"]["version"].as_str().unwrap());
            assert!(v > last, "version {v} after {last}");
            last = v;
        }
    }
);

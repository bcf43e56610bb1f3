//! Errors (RFC 7644 §3.12): authentication, authorisation, unknown things, bad bodies. Never a 500.

use moonborn_scim::Tier;
use reqwest::Method;
use serde_json::json;

use super::support::*;
use crate::backend_test;
use crate::common::app::Resp;

#[track_caller]
fn assert_401(r: &Resp) {
    r.expect_error(401, None);
    let h = r.header("www-authenticate").expect("WWW-Authenticate on a 401");
    assert!(h.to_ascii_lowercase().starts_with("bearer"), "{h}");
}

backend_test!(
    async fn no_token_is_401_with_www_authenticate(app = TestApp::scim_api) {
        assert_401(&app.raw(Method::GET, "/Users", None, None, None).await);
        assert_401(&app.raw(Method::GET, "/ServiceProviderConfig", None, None, None).await);
        let body = json!({"schemas": [USER_URN], "userName": "x@example.com"}).to_string().into_bytes();
        assert_401(&app.raw(Method::POST, "/Users", None, Some("application/scim+json"), Some(body)).await);
        assert_eq!(app.get_ok("/Users").await["totalResults"], 0, "nothing was created");
    }
);

backend_test!(
    async fn a_bad_token_is_401(app = TestApp::scim_api) {
        for t in ["garbage", "mbscim_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""] {
            assert_401(&app.raw(Method::GET, "/Users", Some(t), None, None).await);
        }
        let basic = app.client.get(format!("{}/Users", app.base)).basic_auth("user", Some("pw")).send().await.unwrap();
        assert_eq!(basic.status().as_u16(), 401);
        assert!(basic.headers().get("www-authenticate").is_some());
    }
);

backend_test!(
    async fn a_revoked_token_is_401(app = TestApp::scim_api) {
        let (info, token) = app.store.create_token("acme").await.unwrap();
        app.send_as(&token, Method::GET, "/Users", None, &[]).await.expect(200);
        assert!(app.store.revoke_token(&info.id).await.unwrap());
        assert_401(&app.send_as(&token, Method::GET, "/Users", None, &[]).await);
        // The other token still works.
        app.get("/Users").await.expect(200);
    }
);

backend_test!(
    async fn a_non_enterprise_tenant_is_403_saying_why(app = TestApp::scim_api) {
        for (slug, tier) in [("pro-co", Tier::Pro), ("free-co", Tier::Free)] {
            let token = app.tenant(slug, tier).await;
            for (m, path) in [(Method::GET, "/Users"), (Method::GET, "/Groups"), (Method::GET, "/ServiceProviderConfig")] {
                let r = app.send_as(&token, m, path, None, &[]).await;
                r.expect_error(403, None);
                assert!(r.body["detail"].as_str().unwrap().contains("Enterprise"), "{}", r.body);
            }
            let r = app
                .send_as(&token, Method::POST, "/Users", Some(&json!({"schemas": [USER_URN], "userName": "p@x.com"})), &[])
                .await;
            r.expect_error(403, None);
        }
        assert_eq!(app.get_ok("/Users").await["totalResults"], 0);
    }
);

backend_test!(
    async fn unknown_ids_and_paths_are_scim_404s(app = TestApp::scim_api) {
        for path in ["/Users/does-not-exist", "/Groups/does-not-exist", "/Nope", "/Users/x/y", "/v2/Users", "/Schemas/x/y"] {
            app.get(path).await.expect_error(404, None);
        }
        app.post("/Widgets", &json!({})).await.expect_error(404, None);
        app.delete("/Groups/does-not-exist").await.expect_error(404, None);
    }
);

backend_test!(
    async fn a_wrong_method_on_a_discovery_endpoint_is_405(app = TestApp::scim_api) {
        app.delete("/ServiceProviderConfig").await.expect_error(405, None);
        app.post("/ServiceProviderConfig", &json!({})).await.expect_error(405, None);
        app.post("/Schemas", &json!({})).await.expect_error(405, None);
        app.put("/ResourceTypes", &json!({})).await.expect_error(405, None);
        app.delete(&format!("/Schemas/{USER_URN}")).await.expect_error(405, None);
        app.patch("/ResourceTypes/User", &json!({})).await.expect_error(405, None);
    }
);

backend_test!(
    async fn a_wrong_method_on_a_resource_endpoint_is_405(app = TestApp::scim_api) {
        app.delete("/Users").await.expect_error(405, None);
        app.put("/Groups", &json!({})).await.expect_error(405, None);
        app.get("/Users/.search").await.expect_error(405, None);
        app.get("/.search").await.expect_error(405, None);
    }
);

backend_test!(
    async fn me_is_501(app = TestApp::scim_api) {
        app.get("/Me").await.expect_error(501, None);
        app.post("/Me", &json!({"userName": "me"})).await.expect_error(501, None);
    }
);

backend_test!(
    async fn a_body_over_16_mib_is_413(app = TestApp::scim_api) {
        let big = "x".repeat(17 * 1024 * 1024);
        let body = format!(r#"{{"schemas":["{USER_URN}"],"userName":"big@example.com","title":"{big}"}}"#);
        // The server may answer 413 and close the connection while the client is still sending
        // the body; the client then sees a broken pipe instead of the answer. Retry until it reads
        // the answer.
        // A client of its own, so that the closed connection never goes back into the pool that
        // the other requests use.
        let mut answer = None;
        for _ in 0..5 {
            let client = reqwest::Client::new();
            let res = client
                .post(format!("{}/Users", app.base))
                .bearer_auth(&app.token)
                .header("content-type", "application/scim+json")
                .body(body.clone())
                .send()
                .await;
            if let Ok(res) = res {
                let status = res.status();
                let headers = res.headers().clone();
                let text = res.text().await.unwrap_or_default();
                answer = Some(crate::common::app::Resp {
                    status,
                    headers,
                    body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone())),
                    text,
                });
                break;
            }
        }
        answer.expect("an answer to the oversized request").expect_error(413, None);
        assert_eq!(app.get_ok("/Users").await["totalResults"], 0);
    }
);

backend_test!(
    async fn a_body_just_under_the_limit_is_not_413(app = TestApp::scim_api) {
        let big = "x".repeat(15 * 1024 * 1024);
        let body = format!(r#"{{"schemas":["{USER_URN}"],"userName":"big@example.com","title":"{big}"}}"#);
        let r = app.raw(Method::POST, "/Users", Some(&app.token), Some("application/scim+json"), Some(body.into_bytes())).await;
        assert_ne!(r.status.as_u16(), 413);
        assert!(r.status.as_u16() < 500, "{}", r.status);
    }
);

backend_test!(
    async fn invalid_json_is_400_invalid_syntax(app = TestApp::scim_api) {
        let u = app.create_user("u@example.com").await;
        let g = app.create_group("G", &[]).await;
        for (m, path) in [
            (Method::POST, "/Users".to_string()),
            (Method::PUT, user_path(&u)),
            (Method::PATCH, user_path(&u)),
            (Method::POST, "/Groups".to_string()),
            (Method::PUT, group_path(&g)),
            (Method::PATCH, group_path(&g)),
            (Method::POST, "/Users/.search".to_string()),
            (Method::POST, "/.search".to_string()),
        ] {
            for body in [&b"{\"userName\": "[..], b"not json", b"", b"{\"a\":1}}"] {
                let r = app.raw(m.clone(), &path, Some(&app.token), Some("application/scim+json"), Some(body.to_vec())).await;
                r.expect_error(400, Some("invalidSyntax"));
            }
        }
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn a_json_array_body_is_400(app = TestApp::scim_api) {
        app.post("/Users", &json!([{"userName": "a@example.com"}])).await.expect_error(400, Some("invalidSyntax"));
        app.post("/Groups", &json!([{"displayName": "G"}])).await.expect_error(400, Some("invalidSyntax"));
        let u = app.create_user("u@example.com").await;
        app.put(&user_path(&u), &json!(["x"])).await.expect_error(400, Some("invalidSyntax"));
        app.post("/Users", &json!("just a string")).await.expect_error(400, Some("invalidSyntax"));
    }
);

backend_test!(
    async fn a_numeric_user_name_is_kept_as_its_text(app = TestApp::scim_api) {
        // The code's choice: a number sent for a string attribute is stored as its text.
        let body = app.post("/Users", &json!({"schemas": [USER_URN], "userName": 5})).await.ok(201);
        assert_eq!(body["userName"], "5");
    }
);

backend_test!(
    async fn a_non_boolean_active_is_400_invalid_value(app = TestApp::scim_api) {
        app.post("/Users", &json!({"schemas": [USER_URN], "userName": "a@example.com", "active": "maybe"}))
            .await
            .expect_error(400, Some("invalidValue"));
        app.post("/Users", &json!({"schemas": [USER_URN], "userName": "a@example.com", "active": 1}))
            .await
            .expect_error(400, Some("invalidValue"));
        assert_eq!(app.get_ok("/Users").await["totalResults"], 0);
    }
);

backend_test!(
    async fn a_missing_or_empty_user_name_is_400_invalid_value(app = TestApp::scim_api) {
        app.post("/Users", &json!({"schemas": [USER_URN], "displayName": "No Name"})).await.expect_error(400, Some("invalidValue"));
        app.post("/Users", &json!({"schemas": [USER_URN], "userName": ""})).await.expect_error(400, Some("invalidValue"));
        app.post("/Users", &json!({"schemas": [USER_URN], "userName": null})).await.expect_error(400, Some("invalidValue"));
        let u = app.create_user("u@example.com").await;
        app.put(&user_path(&u), &json!({"schemas": [USER_URN], "title": "x"})).await.expect_error(400, Some("invalidValue"));
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn wrongly_typed_attributes_are_400_invalid_value(app = TestApp::scim_api) {
        for bad in [
            json!({"name": "Just A String"}),
            json!({"emails": [{"value": "a@b.c", "primary": "sometimes"}]}),
            json!({"title": ["a", "b"]}),
            json!({"externalId": 17}),
            json!({ENTERPRISE: "not an object"}),
        ] {
            let mut body = json!({"schemas": [USER_URN], "userName": "typed@example.com"});
            for (k, v) in bad.as_object().unwrap() {
                body[k] = v.clone();
            }
            app.post("/Users", &body).await.expect_error(400, Some("invalidValue"));
        }
        app.post("/Users", &json!({"schemas": "not-a-list", "userName": "s@example.com"}))
            .await
            .expect_error(400, Some("invalidSyntax"));
    }
);

backend_test!(
    async fn plain_application_json_is_accepted(app = TestApp::scim_api) {
        let body = json!({"schemas": [USER_URN], "userName": "plain@example.com"}).to_string().into_bytes();
        let r = app.raw(Method::POST, "/Users", Some(&app.token), Some("application/json"), Some(body)).await;
        let u = r.ok(201);
        let p = patch_body(json!([{"op": "replace", "path": "title", "value": "x"}])).to_string().into_bytes();
        let r = app.raw(Method::PATCH, &user_path(&u), Some(&app.token), Some("application/json; charset=utf-8"), Some(p)).await;
        assert_eq!(r.ok(200)["title"], "x");
    }
);

backend_test!(
    async fn responses_are_application_scim_json(app = TestApp::scim_api) {
        let u = app.create_user("u@example.com").await;
        let g = app.create_group("G", &[]).await;
        for path in [
            "/Users".to_string(),
            user_path(&u),
            "/Groups".to_string(),
            group_path(&g),
            "/ServiceProviderConfig".into(),
            "/ResourceTypes".into(),
            "/Schemas".into(),
            "/Users/missing".into(),
        ] {
            let r = app.get(&path).await;
            assert_eq!(r.header("content-type").as_deref(), Some("application/scim+json"), "{path}");
        }
        let r = app.post("/Users", &json!({"schemas": [USER_URN], "userName": "v@example.com"})).await;
        assert_eq!(r.header("content-type").as_deref(), Some("application/scim+json"));
    }
);

backend_test!(
    async fn hostile_input_never_causes_a_500(app = TestApp::scim_api) {
        let u = app.create_user("u@example.com").await;
        let g = app.create_group("G", &[&id_of(&u)]).await;
        let mut failures: Vec<String> = Vec::new();
        let deep = format!("{}userName pr{}", "(".repeat(5000), ")".repeat(5000));
        let wide = vec![r#"userName eq "x""#; 1100].join(" or ");
        let long_id = "x".repeat(10_000);
        let gets = [
            format!("/Users?{}", filter_q(&deep)),
            format!("/Users?{}", filter_q(&wide)),
            format!("/Users?{}", filter_q("userName eq \"\u{0}\"")),
            format!("/Users?{}", filter_q("emails[value eq \"x\"].value.x eq \"y\"")),
            format!("/Users?{}", filter_q("meta.lastModified gt \"not a date\"")),
            format!("/Users?{}", filter_q("active gt 5")),
            format!("/Users?{}", filter_q(&format!("{ENTERPRISE}:manager eq \"x\""))),
            "/Users?startIndex=99999999999999999999999".into(),
            "/Users?startIndex=9223372036854775807&count=1000".into(),
            "/Users?count=-1".into(),
            "/Users?count=abc".into(),
            "/Users?sortOrder=sideways".into(),
            "/Users?sortBy=!!!".into(),
            "/Users?sortBy=emails.value".into(),
            "/Users?sortBy=urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager".into(),
            "/Users?attributes=!!!".into(),
            "/Users?attributes=urn:x:y:z".into(),
            "/Groups?attributes=members.value".into(),
            format!("/Users/{long_id}"),
            "/Users/%27%20OR%201%3D1%20--".into(),
            "/Users/%00".into(),
            format!("{}?attributes={}", user_path(&u), enc("groups.display")),
            format!("/Groups?{}", filter_q("members[value eq \"x\" or display co \"y\"]")),
            format!("/Groups?{}", filter_q("members pr")),
        ];
        for p in gets {
            let r = app.get(&p).await;
            if r.status.as_u16() >= 500 {
                failures.push(format!("GET {}: {} {}", &p[..p.len().min(120)], r.status, r.body));
            }
        }
        let bodies = [
            json!({"schemas": [USER_URN], "userName": "a\u{0}b@example.com"}),
            json!({"schemas": [USER_URN], "userName": "ü@exämple.com", "name": {"givenName": "Ünïcödé 🚀"}}),
            json!({"schemas": [USER_URN], "userName": "x".repeat(100_000)}),
            json!({"schemas": [USER_URN], "userName": "nested@example.com", "name": {"givenName": {"a": {"b": 1}}}}),
            json!({"schemas": [USER_URN], "userName": "m@example.com", ENTERPRISE: {"manager": 5}}),
            json!({"schemas": [USER_URN], "userName": "e@example.com", "emails": "e@example.com"}),
            json!({"schemas": [], "userName": "s@example.com"}),
            json!({}),
        ];
        for b in &bodies {
            let r = app.post("/Users", b).await;
            if r.status.as_u16() >= 500 {
                let t = b.to_string();
                failures.push(format!("POST {}: {} {}", &t[..t.len().min(120)], r.status, r.body));
            }
        }
        for ops in [
            json!("x"),
            json!([1, 2]),
            json!([{"op": "add", "path": "members", "value": "not-a-list"}]),
            json!([{"op": "add", "path": "members", "value": [{"value": 5}]}]),
            json!([{"op": "remove", "path": "members[value eq 5]"}]),
            json!([{"op": "replace", "path": "displayName", "value": null}]),
            json!([{"op": "replace", "path": "displayName", "value": ""}]),
            json!([{"op": "add", "path": "members", "value": [{"value": id_of(&g)}]}]),
        ] {
            let r = app.patch(&group_path(&g), &json!({"schemas": [PATCH_OP], "Operations": ops})).await;
            if r.status.as_u16() >= 500 {
                failures.push(format!("group PATCH {ops}: {} {}", r.status, r.body));
            }
        }
        for ops in [
            json!([{"op": "replace", "path": "userName", "value": null}]),
            json!([{"op": "add", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}]),
            json!([{"op": "replace", "path": "emails[type eq \"nope\"].value", "value": "x@example.com"}]),
            json!([{"op": "add", "value": "not an object"}]),
            json!([{"op": "add", "path": "urn:example:unknown:1.0:User:foo", "value": "x"}]),
            json!([{"op": "replace", "path": "name", "value": 5}]),
            json!([{"op": "replace", "value": {"name.givenName.x": "a"}}]),
        ] {
            let r = app.patch(&user_path(&u), &json!({"schemas": [PATCH_OP], "Operations": ops})).await;
            if r.status.as_u16() >= 500 {
                failures.push(format!("user PATCH {ops}: {} {}", r.status, r.body));
            }
        }
        assert!(failures.is_empty(), "5xx answers to bad input:\n{}", failures.join("\n"));
    }
);

backend_test!(
    async fn a_nul_character_in_an_id_is_404_not_500(app = TestApp::scim_api) {
        app.get("/Users/%00").await.expect_error(404, None);
        app.get("/Groups/a%00b").await.expect_error(404, None);
        app.delete("/Users/%00").await.expect_error(404, None);
    }
);

backend_test!(
    async fn a_nul_character_in_a_filter_value_is_not_a_500(app = TestApp::scim_api) {
        let r = app.get(&format!("/Users?{}", filter_q("userName eq \"a\u{0}b\""))).await;
        assert!(r.status.as_u16() < 500, "{} {}", r.status, r.body);
        let r = app.get(&format!("/Users?{}", filter_q("externalId eq \"\u{0}\""))).await;
        assert!(r.status.as_u16() < 500, "{} {}", r.status, r.body);
    }
);

backend_test!(
    async fn a_nul_character_in_a_user_name_is_not_a_500(app = TestApp::scim_api) {
        let r = app.post("/Users", &json!({"schemas": [USER_URN], "userName": "a\u{0}b@example.com"})).await;
        assert!(r.status.as_u16() < 500, "{} {}", r.status, r.body);
    }
);

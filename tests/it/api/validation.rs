//! Hostile input (issue 20): sign-in identities with control, bidirectional or zero-width
//! characters, surrounding whitespace or a million characters; Unicode twins; over-long indexed
//! strings; too many values; filters of 1,000 comparisons. The same answer on both backends,
//! never a 500, and nothing stored by a refused request.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

/// Identities every write refuses, and what the test calls them.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("newline", "u@acme.example\nBcc: x@evil.example".to_string()),
        ("tab", "u@acme\t.example".to_string()),
        ("bidi override", "u@acme.example\u{202E}lpmaxe".to_string()),
        ("zero-width space", "u\u{200B}@acme.example".to_string()),
        ("surrounding spaces", " u@acme.example ".to_string()),
        ("1,000,000 characters", format!("{}@acme.example", "u".repeat(1_000_000))),
    ]
}

async fn total_users(app: &TestApp) -> i64 {
    app.get_ok("/Users?count=0").await["totalResults"].as_i64().unwrap()
}

backend_test!(
    async fn hostile_identities_are_refused_by_every_write(app = TestApp::scim_api) {
        let base = app.create_user("base@acme.example").await;
        let before = app.get_ok(&user_path(&base)).await;
        for (what, v) in hostile() {
            let posts = [
                json!({"schemas": [USER_URN], "userName": v}),
                json!({"schemas": [USER_URN], "userName": "ok@acme.example", "emails": [{"value": v}]}),
            ];
            for body in &posts {
                let r = app.post("/Users", body).await;
                r.expect_error(400, Some("invalidValue"));
                let detail = r.body["detail"].as_str().unwrap();
                assert!(detail.contains("userName") || detail.contains("emails.value"), "{what}: {detail}");
            }
            let put = json!({"schemas": [USER_URN], "userName": v, "active": true});
            app.put(&user_path(&base), &put).await.expect_error(400, Some("invalidValue"));
            let put = json!({"schemas": [USER_URN], "userName": "base@acme.example", "emails": [{"value": v}]});
            app.put(&user_path(&base), &put).await.expect_error(400, Some("invalidValue"));
            for ops in [
                json!([{"op": "replace", "path": "userName", "value": v}]),
                json!([{"op": "replace", "value": {"userName": v}}]),
                json!([{"op": "add", "path": "emails", "value": [{"value": v, "type": "home"}]}]),
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": v}]),
            ] {
                let r = app.patch_ops(&user_path(&base), ops.clone()).await;
                assert_eq!(r.status.as_u16(), 400, "{what}: PATCH {}: {}", &ops.to_string()[..80], r.body);
                r.expect_error(400, Some("invalidValue"));
            }
        }
        assert_eq!(total_users(&app).await, 1, "nothing stored");
        assert_eq!(app.get_ok(&user_path(&base)).await, before, "the user did not change");
        // An ordinary change still goes through.
        app.patch_ops(&user_path(&base), json!([{"op": "replace", "value": {"active": false}}])).await.expect(200);
    }
);

backend_test!(
    async fn an_nfd_twin_of_a_user_name_is_a_uniqueness_conflict(app = TestApp::scim_api) {
        let nfc = "jos\u{E9}@acme.example";
        let nfd = "jose\u{301}@acme.example";
        let u = app.create_user(nfc).await;
        let r = app.post("/Users", &json!({"schemas": [USER_URN], "userName": nfd})).await;
        r.expect_error(409, Some("uniqueness"));
        let r = app.post("/Users", &json!({"schemas": [USER_URN], "userName": "JOSE\u{301}@ACME.example"})).await;
        r.expect_error(409, Some("uniqueness"));
        let other = app.create_user("other@acme.example").await;
        app.patch_ops(&user_path(&other), json!([{"op": "replace", "path": "userName", "value": nfd}]))
            .await
            .expect_error(409, Some("uniqueness"));
        // Looked up by either form, the one user; stored as sent.
        assert_eq!(app.filter_users(&format!("userName eq \"{nfd}\"")).await, vec![id_of(&u)]);
        assert_eq!(app.filter_users(&format!("emails.value eq \"{nfd}\"")).await, vec![id_of(&u)]);
        assert_eq!(app.get_ok(&user_path(&u)).await["userName"], nfc);
        assert_eq!(total_users(&app).await, 2);
    }
);

backend_test!(
    async fn indexed_strings_have_one_limit_on_both_backends(app = TestApp::scim_api) {
        let long = "g".repeat(3 * 1024);
        let r = app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": long})).await;
        r.expect_error(400, Some("invalidValue"));
        assert!(r.body["detail"].as_str().unwrap().contains("displayName"), "{}", r.body);
        let body = json!({"schemas": [USER_URN], "userName": "x@acme.example", "externalId": long});
        app.post("/Users", &body).await.expect_error(400, Some("invalidValue"));
        let g = app.create_group("Team", &[]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "replace", "path": "displayName", "value": long}]))
            .await
            .expect_error(400, Some("invalidValue"));
        app.put(&group_path(&g), &json!({"schemas": [GROUP_URN], "displayName": "Team", "externalId": long}))
            .await
            .expect_error(400, Some("invalidValue"));
        assert_eq!(app.get_ok("/Groups?count=0").await["totalResults"], 1);
        assert_eq!(total_users(&app).await, 0);
        // At the limit, in 4-byte characters (2,048 bytes, lower-cased too): stored on both.
        let widest = "\u{10400}".repeat(512);
        let body = json!({"schemas": [GROUP_URN], "displayName": widest, "externalId": widest});
        let g = app.post("/Groups", &body).await.ok(201);
        assert_eq!(app.filter_groups(&format!("displayName eq \"{widest}\"")).await, vec![id_of(&g)]);
        let over = "\u{10400}".repeat(513);
        app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": over}))
            .await
            .expect_error(400, Some("invalidValue"));
        let u = app.create_user("wide@acme.example").await;
        let userish = format!("{}@x", "\u{10400}".repeat(318));
        app.patch_ops(&user_path(&u), json!([{"op": "replace", "value": {"userName": userish, "externalId": widest}}]))
            .await
            .expect(200);
    }
);

fn emails(n: usize, prefix: &str) -> Vec<Value> {
    (0..n).map(|i| json!({"value": format!("{prefix}{i}@bulk.example"), "type": "other"})).collect()
}

backend_test!(
    async fn a_patch_adding_100000_emails_is_refused_quickly(app = TestApp::scim_api) {
        let u = app.create_user("bulk@acme.example").await;
        let before = app.get_ok(&user_path(&u)).await;
        // As IdPs send them (objects), and as bare strings: refused, within a second each (a
        // bound of a few seconds here, for a loaded test machine).
        let as_strings: Vec<Value> = (0..100_000).map(|i| json!(format!("s{i}@bulk.example"))).collect();
        for value in [Value::Array(emails(100_000, "m")), Value::Array(as_strings)] {
            let body = patch_body(json!([{"op": "add", "path": "emails", "value": value}])).to_string().into_bytes();
            let path = user_path(&u);
            let t = Instant::now();
            let r = app.raw(Method::PATCH, &path, Some(&app.token), Some("application/scim+json"), Some(body)).await;
            let took = t.elapsed();
            r.expect_error(400, Some("tooMany"));
            eprintln!("100,000 emails refused in {took:?}");
            assert!(took < Duration::from_secs(2), "took {took:?}");
        }
        // The cap per multi-valued attribute: 1,000 in all.
        let ops = json!([{"op": "add", "path": "emails", "value": emails(1_000, "c")}]);
        let r = app.patch_ops(&user_path(&u), ops).await;
        r.expect_error(400, Some("tooMany"));
        assert!(r.body["detail"].as_str().unwrap().contains("emails"), "{}", r.body);
        assert_eq!(app.get_ok(&user_path(&u)).await, before, "nothing stored");
        let ops = json!([{"op": "add", "path": "emails", "value": emails(999, "c")}]);
        assert_eq!(app.patch_ops(&user_path(&u), ops).await.ok(200)["emails"].as_array().unwrap().len(), 1_000);
        let mut body = json!({"schemas": [USER_URN], "userName": "many@acme.example"});
        body["phoneNumbers"] = json!((0..1_001).map(|i| json!({"value": format!("+1 555 {i:04}")})).collect::<Vec<_>>());
        app.post("/Users", &body).await.expect_error(400, Some("tooMany"));
        // A user that holds more than the cap (stored before it existed) still takes other changes.
        app.patch_ops(&user_path(&u), json!([{"op": "replace", "value": {"active": false}}])).await.expect(200);
    }
);

backend_test!(
    async fn a_body_of_too_many_values_is_refused_before_parsing(app = TestApp::scim_api) {
        // An unknown attribute (ignored when small) holding a million tiny values.
        let zeros = format!("[{}0]", "0,".repeat(1_000_000));
        let body = format!(r#"{{"schemas":["{USER_URN}"],"userName":"z@acme.example","urn:example:x:1.0:User:junk":{zeros}}}"#);
        let r = app
            .raw(Method::POST, "/Users", Some(&app.token), Some("application/scim+json"), Some(body.into_bytes()))
            .await;
        r.expect_error(400, Some("tooMany"));
        // Entra's custom extension attributes are ignored, not refused.
        let body = json!({
            "schemas": [USER_URN, "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"],
            "userName": "ext@acme.example",
            "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User": {"customAttribute": "x"},
        });
        app.post("/Users", &body).await.expect(201);
        assert_eq!(total_users(&app).await, 1);
    }
);

backend_test!(
    async fn a_filter_of_1000_comparisons_works(app = TestApp::scim_api) {
        let mut want = Vec::new();
        let mut names = Vec::new();
        for i in 0..30 {
            let name = format!("f{i:02}@acme.example");
            want.push(id_of(&app.create_user(&name).await));
            names.push(name);
        }
        app.create_user("not-asked@acme.example").await;
        want.sort();
        // Names that match nobody, then the 30 that do: `n` comparisons on one attribute.
        let terms = |attr: &str, n: usize| -> String {
            let mut t: Vec<String> = (0..n - 30).map(|i| format!("{attr} eq \"nobody{i}@acme.example\"")).collect();
            t.extend(names.iter().map(|n| format!("{attr} eq \"{n}\"")));
            t.join(" or ")
        };
        let search = |f: String| json!({"schemas": [SEARCH_URN], "filter": f, "count": 1000});
        for f in [terms("userName", 1000), terms("emails.value", 1000), format!("active eq true and ({})", terms("userName", 999))] {
            let r = app.post("/Users/.search", &search(f.clone())).await.ok(200);
            let mut got = crate::api::support::ids(&r);
            got.sort();
            assert_eq!(got, want, "{}", &f[..60]);
        }
        // A chain of `and`s as long.
        let and = vec![format!("userName eq \"{}\"", names[0]); 1000].join(" and ");
        let r = app.post("/Users/.search", &search(and)).await.ok(200);
        assert_eq!(r["totalResults"], 1);
        app.post("/Users/.search", &search(terms("userName", 1001))).await.expect_error(400, Some("invalidFilter"));
        // Over GET too (Okta's form), with short values.
        let short = (0..1000).map(|i| format!("userName eq \"{i}\"")).collect::<Vec<_>>().join(" or ");
        assert_eq!(app.filter_users(&short).await, Vec::<String>::new());
    }
);

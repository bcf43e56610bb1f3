//! `/Users`: create, read, replace, delete; what is stored and what is returned.

use serde_json::{json, Value};
use sqlx::Row as _;

use super::support::*;
use crate::backend_test;

fn full_user(user_name: &str) -> Value {
    json!({
        "schemas": [USER_URN],
        "userName": user_name,
        "externalId": "Ext-01",
        "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"},
        "displayName": "Ada Lovelace",
        "title": "Analyst",
        "active": true,
        "emails": [{"value": "Ada@Example.COM", "type": "work", "primary": true}]
    })
}

backend_test!(
    async fn create_answers_201_with_location_etag_and_meta(app = TestApp::scim_api) {
        let r = app.post("/Users", &full_user("ada@example.com")).await;
        let body = r.expect(201).clone();
        let id = id_of(&body);
        assert!(!id.is_empty());
        let meta = &body["meta"];
        assert_eq!(meta["resourceType"], "User");
        assert!(meta["created"].is_string(), "{meta}");
        assert_eq!(meta["created"], meta["lastModified"], "a new resource was modified when created");
        let location = meta["location"].as_str().expect("meta.location");
        assert!(location.starts_with("http") && location.ends_with(&format!("/Users/{id}")), "{location}");
        assert_eq!(r.header("location").as_deref(), Some(location), "Location header is meta.location");
        assert_eq!(r.header("etag").as_deref(), meta["version"].as_str(), "ETag header is meta.version");
        assert!(body["schemas"].as_array().unwrap().contains(&json!(USER_URN)));
    }
);

backend_test!(
    async fn created_user_is_returned_as_sent(app = TestApp::scim_api) {
        let sent = full_user("Ada.Lovelace@Example.COM");
        let body = app.create_user_with(sent.clone()).await;
        for key in ["userName", "externalId", "name", "displayName", "title", "active", "emails"] {
            assert_eq!(body[key], sent[key], "{key} is returned as sent (case preserved)");
        }
    }
);

backend_test!(
    async fn get_returns_what_create_returned(app = TestApp::scim_api) {
        let created = app.create_user_with(full_user("ada@example.com")).await;
        let r = app.get(&user_path(&created)).await;
        assert_eq!(r.expect(200), &created);
        assert_eq!(r.header("etag").as_deref(), created["meta"]["version"].as_str());
    }
);

backend_test!(
    async fn get_of_an_unknown_id_is_404(app = TestApp::scim_api) {
        app.get("/Users/00000000-0000-0000-0000-000000000000").await.expect_error(404, None);
    }
);

backend_test!(
    async fn an_inactive_user_is_still_returned(app = TestApp::scim_api) {
        let mut u = full_user("off@example.com");
        u["active"] = json!(false);
        let created = app.create_user_with(u).await;
        assert_eq!(app.get_ok(&user_path(&created)).await["active"], false);
    }
);

backend_test!(
    async fn password_is_accepted_but_never_returned_or_stored(app = TestApp::scim_api) {
        let mut u = full_user("pw@example.com");
        u["password"] = json!("S3cret-Hunter2!");
        let created = app.create_user_with(u).await;
        assert!(created.get("password").is_none(), "create response: {created}");
        let got = app.get_ok(&user_path(&created)).await;
        assert!(got.get("password").is_none(), "GET: {got}");
        let asked = app.get_ok(&format!("{}?attributes=password,userName", user_path(&created))).await;
        assert!(asked.get("password").is_none(), "GET ?attributes=password: {asked}");
        let list = app.get_ok("/Users").await;
        assert!(!list.to_string().contains("S3cret-Hunter2!"), "list: {list}");
        let rows = sqlx::query("SELECT doc FROM scim_users").fetch_all(app.store.pool()).await.unwrap();
        assert_eq!(rows.len(), 1);
        for row in rows {
            let doc: String = row.try_get("doc").unwrap();
            assert!(!doc.contains("S3cret-Hunter2!") && !doc.contains("password"), "stored: {doc}");
        }
    }
);

backend_test!(
    async fn read_only_attributes_in_a_create_body_are_ignored(app = TestApp::scim_api) {
        let mut u = full_user("ro@example.com");
        u["id"] = json!("client-chosen-id");
        u["meta"] = json!({"resourceType": "User", "created": "2001-01-01T00:00:00Z", "version": "W/\"999\""});
        u["groups"] = json!([{"value": "some-group", "display": "Admins"}]);
        let created = app.create_user_with(u).await;
        assert_ne!(created["id"], "client-chosen-id");
        assert_ne!(created["meta"]["created"], "2001-01-01T00:00:00Z");
        assert_ne!(created["meta"]["version"], "W/\"999\"");
        assert!(created.get("groups").is_none_or(|g| g == &json!([])), "groups: {created}");
        app.get("/Users/client-chosen-id").await.expect_error(404, None);
    }
);

backend_test!(
    async fn unknown_schema_urns_and_extension_attributes_are_ignored(app = TestApp::scim_api) {
        let mut u = full_user("ext@example.com");
        u["schemas"] = json!([USER_URN, "urn:example:params:scim:schemas:extension:acme:1.0:User"]);
        u["urn:example:params:scim:schemas:extension:acme:1.0:User"] = json!({"badge": "B-17"});
        let created = app.create_user_with(u).await;
        assert!(created.get("urn:example:params:scim:schemas:extension:acme:1.0:User").is_none(), "{created}");
        assert_eq!(created["userName"], "ext@example.com");
    }
);

backend_test!(
    async fn put_replaces_the_whole_user(app = TestApp::scim_api) {
        let created = app.create_user_with(full_user("put@example.com")).await;
        let r = app
            .put(
                &user_path(&created),
                &json!({
                    "schemas": [USER_URN],
                    "userName": "put@example.com",
                    "displayName": "Renamed",
                    "active": true
                }),
            )
            .await;
        let body = r.expect(200).clone();
        assert_eq!(body["id"], created["id"]);
        assert_eq!(body["displayName"], "Renamed");
        for gone in ["title", "name", "emails", "externalId"] {
            assert!(body.get(gone).is_none(), "{gone} should be gone after PUT: {body}");
        }
        assert_ne!(body["meta"]["version"], created["meta"]["version"]);
        assert_eq!(body["meta"]["created"], created["meta"]["created"]);
        assert_eq!(r.header("etag").as_deref(), body["meta"]["version"].as_str());
        assert_eq!(app.get_ok(&user_path(&created)).await, body);
    }
);

backend_test!(
    async fn okta_read_modify_write_put_with_id_meta_groups_and_password_succeeds(app = TestApp::scim_api) {
        let created = app.create_user_with(full_user("okta@example.com")).await;
        let group = app.create_group("Readers", &[&id_of(&created)]).await;
        let mut body = app.get_ok(&user_path(&created)).await;
        assert_eq!(group_ids_of_user(&body), set([id_of(&group)]));
        body["name"]["givenName"] = json!("Augusta");
        body["password"] = json!("new-password-1");
        let r = app.put(&user_path(&created), &body).await;
        let after = r.expect(200).clone();
        assert_eq!(after["name"]["givenName"], "Augusta");
        assert_eq!(after["id"], created["id"]);
        assert!(after.get("password").is_none());
        assert_eq!(group_ids_of_user(&after), set([id_of(&group)]), "groups are computed, not replaced by PUT");
    }
);

backend_test!(
    async fn put_that_omits_active_keeps_it(app = TestApp::scim_api) {
        let mut u = full_user("inactive@example.com");
        u["active"] = json!(false);
        let created = app.create_user_with(u).await;
        let body = app
            .put(&user_path(&created), &json!({"schemas": [USER_URN], "userName": "inactive@example.com"}))
            .await
            .ok(200);
        assert_eq!(body["active"], false);
    }
);

backend_test!(
    async fn put_of_an_unknown_id_is_404(app = TestApp::scim_api) {
        app.put("/Users/nope", &full_user("x@example.com")).await.expect_error(404, None);
    }
);

backend_test!(
    async fn delete_answers_204_then_the_user_is_gone(app = TestApp::scim_api) {
        let created = app.create_user_with(full_user("del@example.com")).await;
        let r = app.delete(&user_path(&created)).await;
        r.expect(204);
        assert_eq!(r.body, Value::Null, "204 has no body");
        app.get(&user_path(&created)).await.expect_error(404, None);
        app.delete(&user_path(&created)).await.expect_error(404, None);
        assert_eq!(app.get_ok("/Users").await["totalResults"], 0);
    }
);

backend_test!(
    async fn user_name_is_unique_case_insensitively_on_create(app = TestApp::scim_api) {
        let created = app.create_user_with(full_user("Dup@Example.com")).await;
        app.post("/Users", &full_user("dup@example.COM")).await.expect_error(409, Some("uniqueness"));
        let list = app.get_ok("/Users").await;
        assert_eq!(ids(&list), vec![id_of(&created)]);
        assert_eq!(list["Resources"][0]["userName"], "Dup@Example.com");
    }
);

backend_test!(
    async fn put_renaming_to_a_taken_user_name_is_409(app = TestApp::scim_api) {
        app.create_user_with(full_user("Taken@example.com")).await;
        let other = app.create_user_with(full_user("other@example.com")).await;
        app.put(&user_path(&other), &full_user("TAKEN@example.com")).await.expect_error(409, Some("uniqueness"));
        assert_eq!(app.get_ok(&user_path(&other)).await, other);
    }
);

backend_test!(
    async fn patch_renaming_to_a_taken_user_name_is_409(app = TestApp::scim_api) {
        app.create_user_with(full_user("Taken@example.com")).await;
        let other = app.create_user_with(full_user("other@example.com")).await;
        app.patch_ops(&user_path(&other), json!([{"op": "replace", "path": "userName", "value": "taken@EXAMPLE.com"}]))
            .await
            .expect_error(409, Some("uniqueness"));
        assert_eq!(app.get_ok(&user_path(&other)).await, other);
    }
);

backend_test!(
    async fn a_user_may_change_the_case_of_its_own_user_name(app = TestApp::scim_api) {
        let created = app.create_user_with(full_user("case@example.com")).await;
        let body = app.put(&user_path(&created), &full_user("CASE@Example.com")).await.ok(200);
        assert_eq!(body["userName"], "CASE@Example.com");
    }
);

backend_test!(
    async fn enterprise_extension_round_trips(app = TestApp::scim_api) {
        let manager = app.create_user("boss@example.com").await;
        let ext = json!({
            "employeeNumber": "701984",
            "costCenter": "4130",
            "organization": "Universal Studios",
            "division": "Theme Park",
            "department": "Tour Operations",
            "manager": {"value": id_of(&manager)}
        });
        let mut u = full_user("ext@example.com");
        u["schemas"] = json!([USER_URN, ENTERPRISE]);
        u[ENTERPRISE] = ext.clone();
        let created = app.create_user_with(u).await;
        assert!(created["schemas"].as_array().unwrap().contains(&json!(ENTERPRISE)), "{created}");
        let got = app.get_ok(&user_path(&created)).await;
        assert_eq!(got[ENTERPRISE]["employeeNumber"], "701984");
        assert_eq!(got[ENTERPRISE]["department"], "Tour Operations");
        assert_eq!(got[ENTERPRISE]["manager"]["value"], id_of(&manager));
        for k in ["employeeNumber", "costCenter", "organization", "division", "department"] {
            assert_eq!(got[ENTERPRISE][k], ext[k], "{k}");
        }
    }
);

backend_test!(
    async fn a_manager_sent_as_a_plain_string_becomes_an_object(app = TestApp::scim_api) {
        let mut u = full_user("managed@example.com");
        u["schemas"] = json!([USER_URN, ENTERPRISE]);
        u[ENTERPRISE] = json!({"manager": "mgr-123"});
        let created = app.create_user_with(u).await;
        assert_eq!(created[ENTERPRISE]["manager"], json!({"value": "mgr-123"}));
        assert_eq!(app.get_ok(&user_path(&created)).await[ENTERPRISE]["manager"], json!({"value": "mgr-123"}));
    }
);

backend_test!(
    async fn groups_attribute_is_computed_from_memberships(app = TestApp::scim_api) {
        let u = app.create_user("member@example.com").await;
        let uid = id_of(&u);
        let a = app.create_group("Alpha", &[&uid]).await;
        let b = app.create_group("Beta", &[&uid]).await;
        app.create_group("Gamma", &[]).await;
        let got = app.get_ok(&format!("/Users/{uid}")).await;
        assert_eq!(group_ids_of_user(&got), set([id_of(&a), id_of(&b)]));
        let alpha = got["groups"].as_array().unwrap().iter().find(|g| g["value"] == a["id"]).unwrap().clone();
        assert_eq!(alpha["display"], "Alpha");
        assert!(alpha["$ref"].as_str().unwrap().ends_with(&format!("/Groups/{}", id_of(&a))), "{alpha}");
        // Also in lists.
        let list = app.get_ok(&format!("/Users?{}", filter_q(&format!("id eq \"{uid}\"")))).await;
        assert_eq!(group_ids_of_user(&list["Resources"][0]), set([id_of(&a), id_of(&b)]));
    }
);

backend_test!(
    async fn the_harness_runs_on_the_requested_backend(app = TestApp::scim_api) {
        let want = match app.backend {
            crate::common::app::Backend::Sqlite => moonborn_scim::store::Backend::Sqlite,
            crate::common::app::Backend::Postgres => moonborn_scim::store::Backend::Postgres,
        };
        assert_eq!(app.store.backend(), want);
    }
);

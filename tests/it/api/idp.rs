//! Requests exactly as Okta and Microsoft Entra ID send them (tests/fixtures/idp/), replayed in the
//! order the IdP sends them. Placeholder ids are swapped for real ones; everything else is as sent.

use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

const OKTA_CREATE_USER: &str = include_str!("../../fixtures/idp/okta-create-user.json");
const OKTA_PUT_USER: &str = include_str!("../../fixtures/idp/okta-put-user.json");
const OKTA_DEACTIVATE: &str = include_str!("../../fixtures/idp/okta-deactivate-patch.json");
const OKTA_GROUP_CREATE: &str = include_str!("../../fixtures/idp/okta-group-create.json");
const OKTA_GROUP_RENAME: &str = include_str!("../../fixtures/idp/okta-group-rename-patch.json");
const OKTA_GROUP_MEMBERS: &str = include_str!("../../fixtures/idp/okta-group-members-patch.json");
const OKTA_GROUP_MEMBERS_REPLACE: &str = include_str!("../../fixtures/idp/okta-group-members-replace-patch.json");
const ENTRA_CREATE_USER: &str = include_str!("../../fixtures/idp/entra-create-user.json");
const ENTRA_PATCH_CAPITALISED: &str = include_str!("../../fixtures/idp/entra-patch-user-capitalised.json");
const ENTRA_DISABLE: &str = include_str!("../../fixtures/idp/entra-disable-user-capitalised.json");
const ENTRA_PATHLESS_DOTTED: &str = include_str!("../../fixtures/idp/entra-patch-user-pathless-dotted.json");
const ENTRA_MANAGER_STRING: &str = include_str!("../../fixtures/idp/entra-manager-string-patch.json");
const ENTRA_GROUP_CREATE: &str = include_str!("../../fixtures/idp/entra-group-create.json");
const ENTRA_GROUP_ADD_MEMBER: &str = include_str!("../../fixtures/idp/entra-group-add-member.json");
const ENTRA_GROUP_REMOVE_MEMBERS: &str = include_str!("../../fixtures/idp/entra-group-remove-members.json");

/// Okta's placeholder user ids and group id in the fixtures.
const OKTA_USER_1: &str = "23a35c27-23d3-4c03-b4c5-6443c09e7173";
const OKTA_USER_2: &str = "89bb1940-b905-4575-9e7f-6f887cfb368e";
const OKTA_GROUP: &str = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b";
const ENTRA_MEMBER: &str = "f648f8d5ea4e4cd38e9c";
const ENTRA_MANAGER: &str = "2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2";

/// A fixture with placeholders replaced.
fn fixture(text: &str, swaps: &[(&str, &str)]) -> Value {
    let mut t = text.to_string();
    for (from, to) in swaps {
        assert!(t.contains(from), "placeholder {from} not in fixture");
        t = t.replace(from, to);
    }
    serde_json::from_str(&t).expect("fixture is JSON")
}

const OKTA_UA: (&str, &str) = ("user-agent", "Okta SCIM Client 1.0.0");

async fn okta(app: &TestApp, method: Method, path: &str, body: Option<&Value>) -> crate::common::app::Resp {
    app.send_as(&app.token, method, path, body, &[OKTA_UA]).await
}

fn okta_lookup(user_name: &str) -> String {
    format!("/Users?{}&startIndex=1&count=100", filter_q(&format!("userName eq \"{user_name}\"")))
}

backend_test!(
    async fn okta_looks_up_then_creates_then_finds_the_user(app = TestApp::scim_api) {
        let miss = okta(&app, Method::GET, &okta_lookup("test.user@okta.local"), None).await.ok(200);
        assert_eq!(
            miss,
            json!({"schemas": [LIST_URN], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []})
        );
        let sent = fixture(OKTA_CREATE_USER, &[]);
        let r = okta(&app, Method::POST, "/Users", Some(&sent)).await;
        let created = r.expect(201).clone();
        for k in ["userName", "name", "emails", "displayName", "locale", "externalId", "active"] {
            assert_eq!(created[k], sent[k], "{k} as sent");
        }
        assert!(created.get("password").is_none());
        let hit = okta(&app, Method::GET, &okta_lookup("test.user@okta.local"), None).await.ok(200);
        assert_eq!(hit["totalResults"], 1);
        assert_eq!(hit["Resources"][0], created);
    }
);

backend_test!(
    async fn okta_duplicate_create_is_409_with_a_scim_body(app = TestApp::scim_api) {
        let sent = fixture(OKTA_CREATE_USER, &[]);
        okta(&app, Method::POST, "/Users", Some(&sent)).await.expect(201);
        okta(&app, Method::POST, "/Users", Some(&sent)).await.expect_error(409, Some("uniqueness"));
    }
);

backend_test!(
    async fn okta_read_modify_write_put(app = TestApp::scim_api) {
        let created = okta(&app, Method::POST, "/Users", Some(&fixture(OKTA_CREATE_USER, &[]))).await.ok(201);
        let id = id_of(&created);
        let put = fixture(OKTA_PUT_USER, &[(OKTA_USER_1, &id)]);
        let body = okta(&app, Method::PUT, &format!("/Users/{id}"), Some(&put)).await.ok(200);
        assert_eq!(body["id"], id);
        assert_eq!(body["name"], put["name"]);
        assert_eq!(body["emails"], put["emails"]);
        assert_eq!(body["active"], true);
        assert_eq!(app.get_ok(&format!("/Users/{id}")).await, body);
        // A read-modify-write: GET, change, PUT back everything (id, meta, groups) plus a password.
        let mut again = app.get_ok(&format!("/Users/{id}")).await;
        again["displayName"] = json!("Another User");
        again["password"] = json!("t0p-s3cret");
        let body = okta(&app, Method::PUT, &format!("/Users/{id}"), Some(&again)).await.ok(200);
        assert_eq!(body["displayName"], "Another User");
        assert!(body.get("password").is_none());
    }
);

backend_test!(
    async fn okta_deactivates_with_a_pathless_replace_and_can_reactivate(app = TestApp::scim_api) {
        let created = okta(&app, Method::POST, "/Users", Some(&fixture(OKTA_CREATE_USER, &[]))).await.ok(201);
        let path = user_path(&created);
        let body = okta(&app, Method::PATCH, &path, Some(&fixture(OKTA_DEACTIVATE, &[]))).await.ok(200);
        assert_eq!(body["active"], false);
        assert_eq!(app.get_ok(&path).await["active"], false, "a deactivated user is still there");
        let body = app.patch_ops(&path, json!([{"op": "replace", "value": {"active": true}}])).await.ok(200);
        assert_eq!(body["active"], true);
    }
);

backend_test!(
    async fn okta_group_push(app = TestApp::scim_api) {
        let u1 = app.create_user("one@okta.local").await;
        let u2 = app.create_user("two@okta.local").await;
        let (id1, id2) = (id_of(&u1), id_of(&u2));
        // Create with members: [].
        let g = okta(&app, Method::POST, "/Groups", Some(&fixture(OKTA_GROUP_CREATE, &[]))).await.ok(201);
        assert_eq!(g["displayName"], "Test SCIMv2");
        assert!(member_ids(&g).is_empty());
        let gid = id_of(&g);
        let gp = format!("/Groups/{gid}");
        // Rename: Okta renames the group in the console, then pushes the new name.
        app.patch_ops(&gp, json!([{"op": "replace", "path": "displayName", "value": "Old Name"}])).await.expect(204);
        okta(&app, Method::PATCH, &gp, Some(&fixture(OKTA_GROUP_RENAME, &[(OKTA_GROUP, &gid)]))).await.expect(204);
        assert_eq!(app.get_ok(&gp).await["displayName"], "Test SCIMv2");
        // Member delta: remove user 2, add user 1.
        app.patch_ops(&gp, json!([{"op": "add", "path": "members", "value": [{"value": id2}]}])).await.expect(204);
        let delta = fixture(OKTA_GROUP_MEMBERS, &[(OKTA_USER_1, &id1), (OKTA_USER_2, &id2)]);
        okta(&app, Method::PATCH, &gp, Some(&delta)).await.expect(204);
        assert_eq!(member_ids(&app.get_ok(&gp).await), set([id1.clone()]));
        // Full push of the membership.
        let replace = fixture(OKTA_GROUP_MEMBERS_REPLACE, &[(OKTA_USER_1, &id1), (OKTA_USER_2, &id2)]);
        okta(&app, Method::PATCH, &gp, Some(&replace)).await.expect(204);
        let got = app.get_ok(&gp).await;
        assert_eq!(member_ids(&got), set([id1.clone(), id2.clone()]));
        assert_eq!(got["displayName"], "Test SCIMv2");
        // The rename arrives again with the membership update: nothing breaks.
        okta(&app, Method::PATCH, &gp, Some(&fixture(OKTA_GROUP_RENAME, &[(OKTA_GROUP, &gid)]))).await.expect(204);
        assert_eq!(member_ids(&app.get_ok(&gp).await), set([id1, id2]));
    }
);

async fn entra_user(app: &TestApp) -> Value {
    app.post("/Users", &fixture(ENTRA_CREATE_USER, &[])).await.ok(201)
}

backend_test!(
    async fn entra_creates_a_user_and_finds_it_by_external_id(app = TestApp::scim_api) {
        let sent = fixture(ENTRA_CREATE_USER, &[]);
        let created = entra_user(&app).await;
        for k in ["userName", "externalId", "active", "emails", "name"] {
            assert_eq!(created[k], sent[k], "{k} as sent");
        }
        let found = app.get_ok(&format!("/Users?{}", filter_q(r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#))).await;
        assert_eq!(ids(&found), vec![id_of(&created)]);
        let by_name = app
            .get_ok(&format!("/Users?{}", filter_q(r#"userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee""#)))
            .await;
        assert_eq!(ids(&by_name), vec![id_of(&created)]);
        let by_mail = app
            .get_ok(&format!(
                "/Users?{}",
                filter_q(r#"emails[type eq "work"].value eq "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com""#)
            ))
            .await;
        assert_eq!(ids(&by_mail), vec![id_of(&created)]);
    }
);

backend_test!(
    async fn entra_capitalised_replace_ops(app = TestApp::scim_api) {
        let u = entra_user(&app).await;
        let body = app.patch(&user_path(&u), &fixture(ENTRA_PATCH_CAPITALISED, &[])).await.ok(200);
        assert_eq!(body["displayName"], "Pvlo");
        let work = body["emails"].as_array().unwrap().iter().find(|e| e["type"] == "work").unwrap().clone();
        assert_eq!(work["value"], "TestBcwqnm@test.microsoft.com");
        assert_eq!(body["name"]["givenName"], "Gtfd");
        assert_eq!(body["name"]["familyName"], "Pkqf");
        assert_eq!(body["externalId"], "Eqpj");
        assert_eq!(body[ENTERPRISE]["employeeNumber"], "Eqpj");
        assert_eq!(app.filter_users(r#"externalId eq "Eqpj""#).await, vec![id_of(&u)]);
        assert_eq!(
            app.filter_users(r#"emails[type eq "work"].value eq "TestBcwqnm@test.microsoft.com""#).await,
            vec![id_of(&u)]
        );
    }
);

backend_test!(
    async fn entra_disables_with_a_false_string(app = TestApp::scim_api) {
        let u = entra_user(&app).await;
        let body = app.patch(&user_path(&u), &fixture(ENTRA_DISABLE, &[])).await.ok(200);
        assert_eq!(body["active"], json!(false));
        assert_eq!(app.filter_users("active eq false").await, vec![id_of(&u)]);
    }
);

backend_test!(
    async fn entra_pathless_replace_with_dotted_keys(app = TestApp::scim_api) {
        let u = entra_user(&app).await;
        let body = app.patch(&user_path(&u), &fixture(ENTRA_PATHLESS_DOTTED, &[])).await.ok(200);
        assert_eq!(body["displayName"], "Bjfe");
        assert_eq!(body["name"]["givenName"], "Kkom");
        assert_eq!(body["name"]["familyName"], "Unua");
        assert_eq!(body["name"]["formatted"], "givenName familyName");
        assert_eq!(body[ENTERPRISE]["employeeNumber"], "Aklq");
        let work = body["emails"].as_array().unwrap().iter().find(|e| e["type"] == "work").unwrap().clone();
        assert_eq!(work["value"], "TestMhvaes@test.microsoft.com");
    }
);

backend_test!(
    async fn entra_manager_as_a_plain_string(app = TestApp::scim_api) {
        let u = entra_user(&app).await;
        let boss = app.create_user("boss@example.com").await;
        let body = app.patch(&user_path(&u), &fixture(ENTRA_MANAGER_STRING, &[(ENTRA_MANAGER, &id_of(&boss))])).await.ok(200);
        assert_eq!(body[ENTERPRISE]["manager"]["value"], id_of(&boss), "nested under the extension key, as an object");
        assert!(body.get("manager").is_none());
        assert_eq!(
            app.filter_users(&format!(r#"{ENTERPRISE}:manager.value eq "{}""#, id_of(&boss))).await,
            vec![id_of(&u)]
        );
    }
);

backend_test!(
    async fn entra_group_lifecycle(app = TestApp::scim_api) {
        let sent = fixture(ENTRA_GROUP_CREATE, &[]);
        let g = app.post("/Groups", &sent).await.ok(201);
        assert_eq!(g["displayName"], "displayName");
        assert_eq!(g["externalId"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");
        let gp = group_path(&g);
        // Entra's lookup of the group before it manages membership.
        let found = app
            .get_ok(&format!("/Groups?excludedAttributes=members&{}", filter_q(r#"displayName eq "displayName""#)))
            .await;
        assert_eq!(ids(&found), vec![id_of(&g)]);
        assert!(found["Resources"][0].get("members").is_none());
        // Add a member with "$ref": null.
        let u = entra_user(&app).await;
        let r = app.patch(&gp, &fixture(ENTRA_GROUP_ADD_MEMBER, &[(ENTRA_MEMBER, &id_of(&u))])).await;
        r.expect(204);
        assert_eq!(member_ids(&app.get_ok(&gp).await), set([id_of(&u)]));
        // Remove it with a value list.
        app.patch(&gp, &fixture(ENTRA_GROUP_REMOVE_MEMBERS, &[(ENTRA_MEMBER, &id_of(&u))])).await.expect(204);
        assert!(member_ids(&app.get_ok(&gp).await).is_empty());
        // Entra with the aadOptscim062020 flag: lowercase ops, removal by value filter.
        app.patch(&gp, &fixture(ENTRA_GROUP_ADD_MEMBER, &[(ENTRA_MEMBER, &id_of(&u))])).await.expect(204);
        app.patch_ops(&gp, json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", id_of(&u))}]))
            .await
            .expect(204);
        assert!(member_ids(&app.get_ok(&gp).await).is_empty());
    }
);

backend_test!(
    async fn entra_with_flag_disables_with_a_real_boolean(app = TestApp::scim_api) {
        let u = entra_user(&app).await;
        let body = app.patch_ops(&user_path(&u), json!([{"op": "replace", "path": "active", "value": false}])).await.ok(200);
        assert_eq!(body["active"], false);
    }
);

backend_test!(
    async fn google_probe_with_count_1(app = TestApp::scim_api) {
        app.create_user("a@example.com").await;
        app.create_user("b@example.com").await;
        let body = app.get_ok("/Users?count=1").await;
        assert_eq!(body["totalResults"], 2);
        assert_eq!(body["itemsPerPage"], 1);
        assert_eq!(body["Resources"].as_array().unwrap().len(), 1);
    }
);

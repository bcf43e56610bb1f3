//! `/Groups`: create, members, projection, uniqueness, replace, delete.

use moonborn_scim::Tier;
use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;

backend_test!(
    async fn create_without_members(app = TestApp::scim_api) {
        let r = app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": "Empty"})).await;
        let body = r.expect(201).clone();
        assert_eq!(body["displayName"], "Empty");
        assert_eq!(body["meta"]["resourceType"], "Group");
        assert!(body["meta"]["location"].as_str().unwrap().ends_with(&format!("/Groups/{}", id_of(&body))));
        assert_eq!(r.header("location").as_deref(), body["meta"]["location"].as_str());
        assert_eq!(r.header("etag").as_deref(), body["meta"]["version"].as_str());
        assert!(member_ids(&body).is_empty());
    }
);

backend_test!(
    async fn create_with_members_returns_value_ref_type_and_display(app = TestApp::scim_api) {
        let mut u = app
            .create_user_with(json!({"schemas": [USER_URN], "userName": "ann@example.com", "displayName": "Ann"}))
            .await;
        let v = app.create_user("vic@example.com").await;
        let inner = app.create_group("Inner", &[]).await;
        let g = app.create_group("Outer", &[&id_of(&u), &id_of(&v), &id_of(&inner)]).await;
        assert_eq!(member_ids(&g), set([id_of(&u), id_of(&v), id_of(&inner)]));
        let find = |id: &str| g["members"].as_array().unwrap().iter().find(|m| m["value"] == id).unwrap().clone();
        let m = find(&id_of(&u));
        assert_eq!(m["type"], "User");
        assert!(m["$ref"].as_str().unwrap().ends_with(&format!("/Users/{}", id_of(&u))), "{m}");
        let m = find(&id_of(&inner));
        assert_eq!(m["type"], "Group");
        assert!(m["$ref"].as_str().unwrap().ends_with(&format!("/Groups/{}", id_of(&inner))), "{m}");
        // GET returns the same.
        assert_eq!(app.get_ok(&group_path(&g)).await, g);
        u = app.get_ok(&user_path(&u)).await;
        assert_eq!(group_ids_of_user(&u), set([id_of(&g)]));
    }
);

backend_test!(
    async fn member_display_is_returned_as_sent(app = TestApp::scim_api) {
        let u = app.create_user("ann@example.com").await;
        let g = app
            .post(
                "/Groups",
                &json!({"schemas": [GROUP_URN], "displayName": "Shown", "members": [{"value": id_of(&u), "display": "Ann D."}]}),
            )
            .await
            .ok(201);
        assert_eq!(g["members"][0]["display"], "Ann D.");
        assert_eq!(app.get_ok(&group_path(&g)).await["members"][0]["display"], "Ann D.");
    }
);

backend_test!(
    async fn get_with_excluded_members_omits_them(app = TestApp::scim_api) {
        let u = app.create_user("m@example.com").await;
        let g = app.create_group("Team", &[&id_of(&u)]).await;
        let body = app.get_ok(&format!("{}?excludedAttributes=members", group_path(&g))).await;
        assert!(body.get("members").is_none(), "{body}");
        assert_eq!(body["displayName"], "Team");
        assert_eq!(body["id"], g["id"]);
        let list = app.get_ok("/Groups?excludedAttributes=members").await;
        assert!(list["Resources"][0].get("members").is_none(), "{list}");
    }
);

backend_test!(
    async fn display_name_is_unique_case_insensitively(app = TestApp::scim_api) {
        let g = app.create_group("Engineering", &[]).await;
        app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": "ENGINEERING"}))
            .await
            .expect_error(409, Some("uniqueness"));
        let other = app.create_group("Sales", &[]).await;
        app.put(&group_path(&other), &json!({"schemas": [GROUP_URN], "displayName": "engineering"}))
            .await
            .expect_error(409, Some("uniqueness"));
        let list = app.get_ok("/Groups").await;
        assert_eq!(ids(&list), vec![id_of(&g), id_of(&other)]);
    }
);

backend_test!(
    async fn put_replaces_members_and_display_name(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let b = app.create_user("b@example.com").await;
        let c = app.create_user("c@example.com").await;
        let g = app.create_group("Team", &[&id_of(&a), &id_of(&b)]).await;
        let body = app
            .put(
                &group_path(&g),
                &json!({"schemas": [GROUP_URN], "displayName": "Team 2", "members": [{"value": id_of(&c)}]}),
            )
            .await
            .ok(200);
        assert_eq!(body["displayName"], "Team 2");
        assert_eq!(member_ids(&body), set([id_of(&c)]));
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&c)]));
        assert!(group_ids_of_user(&app.get_ok(&user_path(&a)).await).is_empty());
        assert_eq!(group_ids_of_user(&app.get_ok(&user_path(&c)).await), set([id_of(&g)]));
    }
);

backend_test!(
    async fn delete_removes_the_group_and_its_memberships(app = TestApp::scim_api) {
        let u = app.create_user("u@example.com").await;
        let g = app.create_group("Doomed", &[&id_of(&u)]).await;
        let keep = app.create_group("Kept", &[&id_of(&u)]).await;
        app.delete(&group_path(&g)).await.expect(204);
        app.get(&group_path(&g)).await.expect_error(404, None);
        app.delete(&group_path(&g)).await.expect_error(404, None);
        assert_eq!(group_ids_of_user(&app.get_ok(&user_path(&u)).await), set([id_of(&keep)]));
    }
);

backend_test!(
    async fn deleting_a_user_removes_it_from_its_groups(app = TestApp::scim_api) {
        let u = app.create_user("gone@example.com").await;
        let v = app.create_user("stays@example.com").await;
        let g = app.create_group("Team", &[&id_of(&u), &id_of(&v)]).await;
        app.delete(&user_path(&u)).await.expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&v)]));
    }
);

backend_test!(
    async fn deleting_a_member_changes_the_version_of_each_group_it_leaves(app = TestApp::scim_api) {
        let u = app.create_user("gone@example.com").await;
        let inner = app.create_group("Inner", &[]).await;
        let outer = app.create_group("Outer", &[&id_of(&u), &id_of(&inner)]).await;
        let bystander = app.create_group("Bystander", &[]).await;
        let version = |g: &Value| g["meta"]["version"].as_str().unwrap().to_string();
        let mut seen = version(&outer);
        for gone in [user_path(&u), group_path(&inner)] {
            app.delete(&gone).await.expect(204);
            let now = app.get_ok(&group_path(&outer)).await;
            assert_ne!(version(&now), seen, "the members of Outer changed with {gone}, so its version must");
            // A client holding the old version must not overwrite the new member list.
            let put = json!({"schemas": [GROUP_URN], "displayName": "Outer"});
            app.send_as(&app.token, Method::PUT, &group_path(&outer), Some(&put), &[("if-match", &seen)])
                .await
                .expect_error(412, None);
            seen = version(&now);
        }
        assert!(member_ids(&app.get_ok(&group_path(&outer)).await).is_empty());
        assert_eq!(version(&app.get_ok(&group_path(&bystander)).await), version(&bystander));
    }
);

backend_test!(
    async fn a_member_that_does_not_exist_is_dropped_and_journaled(app = TestApp::scim_api) {
        // Entra batches member adds: one stale id (a user deleted since) must not fail the
        // batch, or the IdP retries it forever and the valid members never land.
        let u = app.create_user("real@example.com").await;
        let r = app
            .post(
                "/Groups",
                &json!({"schemas": [GROUP_URN], "displayName": "Ghosts",
                        "members": [{"value": "no-such-user"}, {"value": id_of(&u)}]}),
            )
            .await;
        let g = r.expect(201).clone();
        assert_eq!(member_ids(&g), set([id_of(&u)]));
        let v = app.create_user("also@example.com").await;
        app.put(
            &group_path(&g),
            &json!({"schemas": [GROUP_URN], "displayName": "Ghosts", "members": [{"value": "ghost-2"}, {"value": id_of(&v)}]}),
        )
        .await
        .expect(200);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&v)]));
        // A PATCH adding one existing and one unknown member adds the existing one.
        let w = app.create_user("third@example.com").await;
        app.patch_ops(
            &group_path(&g),
            json!([{"op": "add", "path": "members", "value": [{"value": id_of(&w)}, {"value": "ghost-3"}]}]),
        )
        .await
        .expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&v), id_of(&w)]));
        // The tenant's journal names every dropped id, on the group.
        let dropped: Vec<String> = app
            .journal()
            .await
            .into_iter()
            .filter(|e| e.resource_type == "Group" && e.op.starts_with("dropped_member "))
            .map(|e| {
                assert_eq!(e.resource_id, id_of(&g));
                e.op["dropped_member ".len()..].to_string()
            })
            .collect();
        assert_eq!(dropped, ["no-such-user", "ghost-2", "ghost-3"]);
        // A member that is not an object with a string value is still refused.
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": 7}]}]))
            .await
            .expect_error(400, Some("invalidValue"));
    }
);

backend_test!(
    async fn a_member_from_another_tenant_is_dropped(app = TestApp::scim_api) {
        let other = app.tenant("globex", Tier::Enterprise).await;
        let foreign = app
            .send_as(
                &other,
                Method::POST,
                "/Users",
                Some(&json!({"schemas": [USER_URN], "userName": "foreign@globex.com"})),
                &[],
            )
            .await
            .ok(201);
        let g = app
            .post(
                "/Groups",
                &json!({"schemas": [GROUP_URN], "displayName": "Mixed", "members": [{"value": id_of(&foreign)}]}),
            )
            .await
            .expect(201)
            .clone();
        assert!(member_ids(&g).is_empty());
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": id_of(&foreign)}]}]))
            .await
            .expect(204);
        assert!(member_ids(&app.get_ok(&group_path(&g)).await).is_empty());
    }
);

backend_test!(
    async fn a_group_with_a_member_without_value_is_400(app = TestApp::scim_api) {
        app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": "Bad", "members": [{"display": "x"}]}))
            .await
            .expect_error(400, Some("invalidValue"));
    }
);

backend_test!(
    async fn a_group_without_display_name_is_400_invalid_value(app = TestApp::scim_api) {
        app.post("/Groups", &json!({"schemas": [GROUP_URN], "members": []})).await.expect_error(400, Some("invalidValue"));
    }
);

//! PATCH (RFC 7644 §3.5.2) on Users and Groups, in every form the issue lists and IdPs send.

use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

async fn user(app: &TestApp) -> Value {
    app.create_user_with(json!({
        "schemas": [USER_URN, ENTERPRISE],
        "userName": "pat@example.com",
        "displayName": "Pat",
        "title": "Engineer",
        "active": true,
        "name": {"givenName": "Pat", "familyName": "Smith"},
        "emails": [
            {"value": "pat@work.example", "type": "work", "primary": true},
            {"value": "pat@home.example", "type": "home"}
        ],
        ENTERPRISE: {"employeeNumber": "100", "department": "R&D"}
    }))
    .await
}

/// PATCHes a user, expects 200, checks the answer is what GET returns, and returns it.
async fn patch_ok(app: &TestApp, u: &Value, ops: Value) -> Value {
    let r = app.patch_ops(&user_path(u), ops).await;
    let body = r.expect(200).clone();
    assert_eq!(body["id"], u["id"]);
    assert_eq!(r.header("etag").as_deref(), body["meta"]["version"].as_str(), "ETag is the new version");
    assert_eq!(app.get_ok(&user_path(u)).await, body, "PATCH answer equals a later GET");
    body
}

fn email_of(u: &Value, ty: &str) -> Option<String> {
    u["emails"].as_array()?.iter().find(|e| e["type"] == ty).and_then(|e| e["value"].as_str()).map(str::to_string)
}

backend_test!(
    async fn user_patch_answers_200_with_the_resource(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "replace", "path": "displayName", "value": "Patricia"}])).await;
        assert_eq!(body["displayName"], "Patricia");
        assert_eq!(body["userName"], "pat@example.com");
        assert_eq!(body["meta"]["resourceType"], "User");
        assert_ne!(body["meta"]["version"], u["meta"]["version"]);
        assert_eq!(body["meta"]["created"], u["meta"]["created"]);
    }
);

backend_test!(
    async fn add_with_a_path(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "add", "path": "nickName", "value": "Patty"}])).await;
        assert_eq!(body["nickName"], "Patty");
        assert_eq!(body["title"], "Engineer");
    }
);

backend_test!(
    async fn add_without_a_path_merges_the_value(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body =
            patch_ok(&app, &u, json!([{"op": "add", "value": {"nickName": "Patty", "name": {"middleName": "Q"}}}]))
                .await;
        assert_eq!(body["nickName"], "Patty");
        assert_eq!(body["name"], json!({"givenName": "Pat", "familyName": "Smith", "middleName": "Q"}));
    }
);

backend_test!(
    async fn add_to_a_multi_valued_attribute_appends(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(
            &app,
            &u,
            json!([{"op": "add", "path": "phoneNumbers", "value": [{"value": "+1 555 0100", "type": "work"}]}]),
        )
        .await;
        assert_eq!(body["phoneNumbers"], json!([{"value": "+1 555 0100", "type": "work"}]));
        let body =
            patch_ok(&app, &u, json!([{"op": "add", "path": "emails", "value": [{"value": "pat@other.example", "type": "other"}]}]))
                .await;
        assert_eq!(body["emails"].as_array().unwrap().len(), 3);
        assert_eq!(email_of(&body, "work").as_deref(), Some("pat@work.example"));
    }
);

backend_test!(
    async fn replace_with_a_path(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "replace", "path": "title", "value": "Director"}])).await;
        assert_eq!(body["title"], "Director");
    }
);

backend_test!(
    async fn replace_without_a_path(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body =
            patch_ok(&app, &u, json!([{"op": "replace", "value": {"title": "Director", "displayName": "P. Smith"}}]))
                .await;
        assert_eq!(body["title"], "Director");
        assert_eq!(body["displayName"], "P. Smith");
        assert_eq!(body["name"]["givenName"], "Pat", "attributes not named are kept");
    }
);

backend_test!(
    async fn remove_with_a_path(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "remove", "path": "title"}])).await;
        assert!(body.get("title").is_none(), "{body}");
        assert_eq!(body["displayName"], "Pat");
    }
);

backend_test!(
    async fn remove_without_a_path_is_400_no_target(app = TestApp::scim_api) {
        let u = user(&app).await;
        app.patch_ops(&user_path(&u), json!([{"op": "remove"}])).await.expect_error(400, Some("noTarget"));
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn replace_a_value_selected_by_a_value_filter(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(
            &app,
            &u,
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "Pat.Smith@Work.example"}]),
        )
        .await;
        assert_eq!(email_of(&body, "work").as_deref(), Some("Pat.Smith@Work.example"));
        assert_eq!(email_of(&body, "home").as_deref(), Some("pat@home.example"));
        let work = body["emails"].as_array().unwrap().iter().find(|e| e["type"] == "work").unwrap().clone();
        assert_eq!(work["primary"], true, "other sub-attributes of the element are kept");
    }
);

backend_test!(
    async fn remove_elements_selected_by_a_value_filter(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "remove", "path": "emails[type eq \"home\"]"}])).await;
        assert_eq!(body["emails"], json!([{"value": "pat@work.example", "type": "work", "primary": true}]));
    }
);

backend_test!(
    async fn replace_a_sub_attribute(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "replace", "path": "name.givenName", "value": "Patricia"}])).await;
        assert_eq!(body["name"], json!({"givenName": "Patricia", "familyName": "Smith"}));
        let body = patch_ok(&app, &u, json!([{"op": "add", "path": "name.honorificPrefix", "value": "Dr."}])).await;
        assert_eq!(body["name"]["honorificPrefix"], "Dr.");
        let body = patch_ok(&app, &u, json!([{"op": "remove", "path": "name.familyName"}])).await;
        assert!(body["name"].get("familyName").is_none(), "{body}");
    }
);

backend_test!(
    async fn extension_urn_paths(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(
            &app,
            &u,
            json!([{"op": "replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "200"}]),
        )
        .await;
        assert_eq!(body[ENTERPRISE]["employeeNumber"], "200");
        assert_eq!(body[ENTERPRISE]["department"], "R&D");
        let body =
            patch_ok(&app, &u, json!([{"op": "add", "path": format!("{ENTERPRISE}:costCenter"), "value": "CC-9"}])).await;
        assert_eq!(body[ENTERPRISE]["costCenter"], "CC-9");
        let body = patch_ok(&app, &u, json!([{"op": "remove", "path": format!("{ENTERPRISE}:department")}])).await;
        assert!(body[ENTERPRISE].get("department").is_none(), "{body}");
    }
);

backend_test!(
    async fn extension_attribute_on_a_user_that_had_no_extension(app = TestApp::scim_api) {
        let u = app.create_user("plain@example.com").await;
        let body =
            patch_ok(&app, &u, json!([{"op": "add", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "7"}])).await;
        assert_eq!(body[ENTERPRISE]["employeeNumber"], "7");
        assert!(body["schemas"].as_array().unwrap().contains(&json!(ENTERPRISE)), "{body}");
    }
);

backend_test!(
    async fn op_names_are_case_insensitive(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(
            &app,
            &u,
            json!([
                {"op": "Replace", "path": "title", "value": "A"},
                {"op": "ADD", "path": "nickName", "value": "B"},
                {"op": "Remove", "path": "displayName"}
            ]),
        )
        .await;
        assert_eq!(body["title"], "A");
        assert_eq!(body["nickName"], "B");
        assert!(body.get("displayName").is_none());
    }
);

backend_test!(
    async fn boolean_strings_are_accepted(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "Replace", "path": "active", "value": "False"}])).await;
        assert_eq!(body["active"], json!(false));
        let body = patch_ok(&app, &u, json!([{"op": "Replace", "path": "active", "value": "True"}])).await;
        assert_eq!(body["active"], json!(true));
        let body = patch_ok(&app, &u, json!([{"op": "replace", "value": {"active": "false"}}])).await;
        assert_eq!(body["active"], json!(false));
    }
);

backend_test!(
    async fn a_non_boolean_for_active_is_400_invalid_value(app = TestApp::scim_api) {
        let u = user(&app).await;
        app.patch_ops(&user_path(&u), json!([{"op": "replace", "path": "active", "value": "maybe"}]))
            .await
            .expect_error(400, Some("invalidValue"));
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn entra_pathless_replace_with_dotted_and_urn_keys(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(
            &app,
            &u,
            json!([{"op": "replace", "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                format!("{ENTERPRISE}:employeeNumber"): "Aklq"
            }}]),
        )
        .await;
        assert_eq!(body["displayName"], "Bjfe");
        assert_eq!(body["name"], json!({"givenName": "Kkom", "familyName": "Unua"}));
        assert_eq!(body[ENTERPRISE]["employeeNumber"], "Aklq");
        assert_eq!(body[ENTERPRISE]["department"], "R&D");
        assert!(body.get("name.givenName").is_none(), "dotted keys are paths, not attribute names: {body}");
    }
);

backend_test!(
    async fn okta_pathless_replace_of_active(app = TestApp::scim_api) {
        let u = user(&app).await;
        let body = patch_ok(&app, &u, json!([{"op": "replace", "value": {"active": false}}])).await;
        assert_eq!(body["active"], false);
        assert_eq!(body["title"], "Engineer");
    }
);

backend_test!(
    async fn manager_as_a_string_and_as_an_object(app = TestApp::scim_api) {
        let u = user(&app).await;
        let boss = app.create_user("boss@example.com").await;
        let path = format!("{ENTERPRISE}:manager");
        let body = patch_ok(&app, &u, json!([{"op": "add", "path": path, "value": id_of(&boss)}])).await;
        assert_eq!(body[ENTERPRISE]["manager"]["value"], id_of(&boss));
        assert!(body[ENTERPRISE]["manager"].is_object(), "{body}");
        let body = patch_ok(&app, &u, json!([{"op": "replace", "path": path, "value": {"value": "other-boss"}}])).await;
        assert_eq!(body[ENTERPRISE]["manager"]["value"], "other-boss");
        let body =
            patch_ok(&app, &u, json!([{"op": "replace", "path": format!("{path}.value"), "value": "third-boss"}])).await;
        assert_eq!(body[ENTERPRISE]["manager"]["value"], "third-boss");
        let body = patch_ok(&app, &u, json!([{"op": "remove", "path": path}])).await;
        assert!(body[ENTERPRISE].get("manager").is_none(), "{body}");
    }
);

backend_test!(
    async fn a_request_whose_second_op_is_invalid_changes_nothing(app = TestApp::scim_api) {
        let u = user(&app).await;
        let before = app.get_ok(&user_path(&u)).await;
        let journal = app.journal().await.len();
        let bad_seconds = [
            json!({"op": "replace", "path": "emails[type eq \"work\"", "value": "x"}),
            json!({"op": "replace", "path": "active", "value": "maybe"}),
            json!({"op": "remove"}),
            json!({"op": "frobnicate", "path": "title", "value": "x"}),
            json!({"op": "remove", "path": "id"}),
        ];
        for bad in bad_seconds {
            let r = app
                .patch_ops(&user_path(&u), json!([{"op": "replace", "path": "displayName", "value": "Changed"}, bad]))
                .await;
            r.expect_error(400, None);
            let after = app.get_ok(&user_path(&u)).await;
            assert_eq!(after, before, "after {bad}");
            assert_eq!(after["meta"]["version"], before["meta"]["version"]);
        }
        assert_eq!(app.journal().await.len(), journal);
    }
);

backend_test!(
    async fn removing_a_read_only_attribute_is_400_mutability(app = TestApp::scim_api) {
        let u = user(&app).await;
        app.patch_ops(&user_path(&u), json!([{"op": "remove", "path": "id"}])).await.expect_error(400, Some("mutability"));
        app.patch_ops(&user_path(&u), json!([{"op": "remove", "path": "meta"}]))
            .await
            .expect_error(400, Some("mutability"));
        app.patch_ops(&user_path(&u), json!([{"op": "remove", "path": "groups"}]))
            .await
            .expect_error(400, Some("mutability"));
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn a_malformed_path_is_400_invalid_path(app = TestApp::scim_api) {
        let u = user(&app).await;
        for path in ["emails[type eq \"work\"", "name.givenName.first", "emails[type zz \"work\"]", "[]", "emails]", "a b"] {
            let r = app.patch_ops(&user_path(&u), json!([{"op": "replace", "path": path, "value": "x"}])).await;
            assert_eq!(r.body["scimType"], "invalidPath", "path {path:?}: {}", r.body);
            r.expect_error(400, Some("invalidPath"));
        }
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn a_body_without_operations_or_patch_schema_is_400(app = TestApp::scim_api) {
        let u = user(&app).await;
        let ok_types = ["invalidSyntax", "invalidValue"];
        app.patch(&user_path(&u), &json!({"schemas": [PATCH_OP]})).await.expect_400_one_of(&ok_types);
        app.patch(&user_path(&u), &json!({"schemas": [PATCH_OP], "Operations": "replace"}))
            .await
            .expect_400_one_of(&ok_types);
        app.patch(
            &user_path(&u),
            &json!({"schemas": [USER_URN], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
        )
        .await
        .expect_400_one_of(&ok_types);
        app.patch(&user_path(&u), &json!([{"op": "replace", "path": "title", "value": "x"}]))
            .await
            .expect_400_one_of(&ok_types);
        app.patch_ops(&user_path(&u), json!([{"path": "title", "value": "x"}])).await.expect_400_one_of(&ok_types);
        app.patch_ops(&user_path(&u), json!([{"op": "replace", "path": "title"}])).await.expect_400_one_of(&ok_types);
        assert_eq!(app.get_ok(&user_path(&u)).await, u);
    }
);

backend_test!(
    async fn patch_of_an_unknown_id_is_404(app = TestApp::scim_api) {
        app.patch_ops("/Users/nope", json!([{"op": "replace", "path": "title", "value": "x"}]))
            .await
            .expect_error(404, None);
        app.patch_ops("/Groups/nope", json!([{"op": "replace", "path": "displayName", "value": "x"}]))
            .await
            .expect_error(404, None);
    }
);

// ---- Groups ----

backend_test!(
    async fn group_patch_answers_204_by_default(app = TestApp::scim_api) {
        let g = app.create_group("Team", &[]).await;
        let r = app.patch_ops(&group_path(&g), json!([{"op": "replace", "path": "displayName", "value": "Team B"}])).await;
        r.expect(204);
        assert_eq!(r.body, Value::Null, "204 has no body");
        assert_eq!(app.get_ok(&group_path(&g)).await["displayName"], "Team B");
    }
);

backend_test!(
    async fn group_patch_answers_200_with_the_projection_when_asked(app = TestApp::scim_api) {
        let u = app.create_user("u@example.com").await;
        let g = app.create_group("Team", &[]).await;
        let r = app
            .patch(
                &format!("{}?attributes=displayName", group_path(&g)),
                &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": id_of(&u)}]}])),
            )
            .await;
        let body = r.expect(200).clone();
        assert_eq!(body["id"], g["id"]);
        assert_eq!(body["displayName"], "Team");
        assert!(body.get("members").is_none(), "{body}");
        let r = app
            .patch(
                &format!("{}?excludedAttributes=members", group_path(&g)),
                &patch_body(json!([{"op": "replace", "path": "displayName", "value": "Team C"}])),
            )
            .await;
        let body = r.expect(200).clone();
        assert_eq!(body["displayName"], "Team C");
        assert!(body.get("members").is_none(), "{body}");
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&u)]));
    }
);

backend_test!(
    async fn group_member_add_and_remove_by_value_filter(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let b = app.create_user("b@example.com").await;
        let g = app.create_group("Team", &[&id_of(&a)]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": id_of(&b)}]}]))
            .await
            .expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&a), id_of(&b)]));
        app.patch_ops(&group_path(&g), json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", id_of(&a))}]))
            .await
            .expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&b)]));
        assert!(group_ids_of_user(&app.get_ok(&user_path(&a)).await).is_empty());
    }
);

backend_test!(
    async fn group_member_add_without_a_path(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Team", &[]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "add", "value": {"members": [{"value": id_of(&a)}]}}]))
            .await
            .expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&a)]));
    }
);

backend_test!(
    async fn adding_an_existing_member_again_is_harmless(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Team", &[&id_of(&a)]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": id_of(&a)}]}]))
            .await
            .expect(204);
        assert_eq!(app.get_ok(&group_path(&g)).await["members"].as_array().unwrap().len(), 1);
    }
);

backend_test!(
    async fn entra_member_removal_with_a_value_list(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let b = app.create_user("b@example.com").await;
        let c = app.create_user("c@example.com").await;
        let g = app.create_group("Team", &[&id_of(&a), &id_of(&b), &id_of(&c)]).await;
        app.patch_ops(
            &group_path(&g),
            json!([{"op": "Remove", "path": "members", "value": [{"value": id_of(&a)}, {"value": id_of(&c)}]}]),
        )
        .await
        .expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&b)]));
    }
);

backend_test!(
    async fn member_add_with_a_null_ref(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Team", &[]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id_of(&a)}]}]))
            .await
            .expect(204);
        let got = app.get_ok(&group_path(&g)).await;
        assert_eq!(member_ids(&got), set([id_of(&a)]));
        assert!(got["members"][0]["$ref"].as_str().unwrap().ends_with(&format!("/Users/{}", id_of(&a))));
    }
);

backend_test!(
    async fn replace_of_members(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let b = app.create_user("b@example.com").await;
        let c = app.create_user("c@example.com").await;
        let g = app.create_group("Team", &[&id_of(&a), &id_of(&b)]).await;
        app.patch_ops(
            &group_path(&g),
            json!([{"op": "replace", "path": "members", "value": [{"value": id_of(&b)}, {"value": id_of(&c)}]}]),
        )
        .await
        .expect(204);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([id_of(&b), id_of(&c)]));
        app.patch_ops(&group_path(&g), json!([{"op": "replace", "path": "members", "value": []}])).await.expect(204);
        assert!(member_ids(&app.get_ok(&group_path(&g)).await).is_empty());
    }
);

backend_test!(
    async fn remove_of_all_members(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Team", &[&id_of(&a)]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "remove", "path": "members"}])).await.expect(204);
        let got = app.get_ok(&group_path(&g)).await;
        assert!(member_ids(&got).is_empty());
        assert_eq!(got["displayName"], "Team");
    }
);

backend_test!(
    async fn okta_group_replace_with_id_and_display_name_renames(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Old Name", &[&id_of(&a)]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "replace", "value": {"id": id_of(&g), "displayName": "New Name"}}]))
            .await
            .expect(204);
        let got = app.get_ok(&group_path(&g)).await;
        assert_eq!(got["displayName"], "New Name");
        assert_eq!(got["id"], g["id"]);
        assert_eq!(member_ids(&got), set([id_of(&a)]), "members are untouched by a rename");
    }
);

backend_test!(
    async fn group_rename_to_a_taken_name_is_409(app = TestApp::scim_api) {
        app.create_group("Taken", &[]).await;
        let g = app.create_group("Mine", &[]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "replace", "path": "displayName", "value": "TAKEN"}]))
            .await
            .expect_error(409, Some("uniqueness"));
        assert_eq!(app.get_ok(&group_path(&g)).await, g);
    }
);

backend_test!(
    async fn group_member_add_of_an_unknown_id_adds_the_known_ones(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Team", &[]).await;
        app.patch_ops(
            &group_path(&g),
            json!([
                {"op": "replace", "path": "displayName", "value": "Renamed"},
                {"op": "add", "path": "members", "value": [{"value": id_of(&a)}, {"value": "ghost"}]}
            ]),
        )
        .await
        .expect(204);
        let now = app.get_ok(&group_path(&g)).await;
        assert_eq!(now["displayName"], "Renamed");
        assert_eq!(member_ids(&now), set([id_of(&a)]), "the known member added, the unknown one dropped");
    }
);

backend_test!(
    async fn a_group_request_whose_second_op_is_invalid_changes_nothing(app = TestApp::scim_api) {
        let a = app.create_user("a@example.com").await;
        let g = app.create_group("Team", &[]).await;
        app.patch_ops(
            &group_path(&g),
            json!([
                {"op": "add", "path": "members", "value": [{"value": id_of(&a)}]},
                {"op": "replace", "path": "members[value eq", "value": "x"}
            ]),
        )
        .await
        .expect_error(400, Some("invalidPath"));
        assert_eq!(app.get_ok(&group_path(&g)).await, g);
    }
);

backend_test!(
    async fn many_emails_in_one_patch_are_deduplicated_in_linear_time(app = TestApp::scim_api) {
        // 998 emails, each sent twice (keys in another order the second time): stored once
        // each, 1,000 in all (the most a user may hold). (Comparing every pair took minutes at
        // 100,000; more than 1,000 are refused, see validation.rs.)
        let u = user(&app).await;
        let mut values = Vec::new();
        for i in 0..998 {
            values.push(json!({"value": format!("m{i}@bulk.example"), "type": "other"}));
        }
        for i in 0..998 {
            values.push(json!({"type": "other", "value": format!("m{i}@bulk.example")}));
        }
        let ops = json!([{"op": "add", "path": "emails", "value": values}]);
        let body = patch_ok(&app, &u, ops).await;
        assert_eq!(body["emails"].as_array().unwrap().len(), 1_000, "two of before, 998 new, once each");
        // A create with repeated emails keeps each once too.
        let mut emails = Vec::new();
        for i in 0..2_000 {
            emails.push(json!({"value": format!("c{}@bulk.example", i % 1_000)}));
        }
        let c = app
            .create_user_with(json!({"schemas": [USER_URN], "userName": "many@bulk.example", "emails": emails}))
            .await;
        assert_eq!(c["emails"].as_array().unwrap().len(), 1_000);
    }
);

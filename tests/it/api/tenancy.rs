//! Tenant isolation: a token sees only its own tenant, on every endpoint.

use moonborn_scim::Tier;
use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

struct Other {
    token: String,
    user: Value,
    group: Value,
}

async fn other_tenant(app: &TestApp) -> Other {
    let token = app.tenant("globex", Tier::Enterprise).await;
    let user = app
        .send_as(
            &token,
            Method::POST,
            "/Users",
            Some(&json!({"schemas": [USER_URN], "userName": "hank@globex.com", "externalId": "G-1"})),
            &[],
        )
        .await
        .ok(201);
    let group = app
        .send_as(
            &token,
            Method::POST,
            "/Groups",
            Some(&json!({"schemas": [GROUP_URN], "displayName": "Globex Staff", "members": [{"value": id_of(&user)}]})),
            &[],
        )
        .await
        .ok(201);
    // The user as it now reads, with its computed `groups`.
    let user = app.send_as(&token, Method::GET, &user_path(&user), None, &[]).await.ok(200);
    Other { token, user, group }
}

async fn as_other(app: &TestApp, o: &Other, path: &str) -> Value {
    app.send_as(&o.token, Method::GET, path, None, &[]).await.ok(200)
}

backend_test!(
    async fn another_tenants_resources_are_404_on_every_method(app = TestApp::scim_api) {
        let o = other_tenant(&app).await;
        let globex = app.store.tenant("globex").await.unwrap().id;
        let journal_before = app.store.journal(globex, 0, 1000).await.unwrap().len();
        let up = user_path(&o.user);
        let gp = group_path(&o.group);
        app.get(&up).await.expect_error(404, None);
        app.get(&gp).await.expect_error(404, None);
        app.put(&up, &json!({"schemas": [USER_URN], "userName": "stolen@acme.com"})).await.expect_error(404, None);
        app.put(&gp, &json!({"schemas": [GROUP_URN], "displayName": "Stolen"})).await.expect_error(404, None);
        app.patch_ops(&up, json!([{"op": "replace", "path": "active", "value": false}])).await.expect_error(404, None);
        app.patch_ops(&gp, json!([{"op": "remove", "path": "members"}])).await.expect_error(404, None);
        app.patch_ops(&gp, json!([{"op": "replace", "path": "displayName", "value": "Stolen"}]))
            .await
            .expect_error(404, None);
        app.delete(&up).await.expect_error(404, None);
        app.delete(&gp).await.expect_error(404, None);
        // Globex's data is untouched.
        assert_eq!(as_other(&app, &o, &up).await, o.user);
        assert_eq!(as_other(&app, &o, &gp).await, o.group);
        assert_eq!(app.store.journal(globex, 0, 1000).await.unwrap().len(), journal_before);
    }
);

backend_test!(
    async fn lists_filters_and_searches_never_show_another_tenant(app = TestApp::scim_api) {
        let o = other_tenant(&app).await;
        let mine = app.create_user("me@acme.com").await;
        let uid = id_of(&o.user);
        let gid = id_of(&o.group);
        assert_eq!(ids(&app.get_ok("/Users").await), vec![id_of(&mine)]);
        assert_eq!(app.get_ok("/Groups").await["totalResults"], 0);
        for f in [
            r#"userName eq "hank@globex.com""#.to_string(),
            format!(r#"id eq "{uid}""#),
            r#"externalId eq "G-1""#.to_string(),
            r#"userName co "globex""#.to_string(),
            format!(r#"groups.value eq "{gid}""#),
        ] {
            assert!(app.filter_users(&f).await.is_empty(), "{f}");
        }
        for f in [
            r#"displayName eq "Globex Staff""#.to_string(),
            format!(r#"members.value eq "{uid}""#),
            format!(r#"id eq "{gid}""#),
        ] {
            assert!(app.filter_groups(&f).await.is_empty(), "{f}");
        }
        let all = app.post("/.search", &json!({"schemas": [SEARCH_URN]})).await.ok(200);
        assert_eq!(ids(&all), vec![id_of(&mine)]);
        let s = app.post("/Users/.search", &json!({"schemas": [SEARCH_URN], "filter": format!("id eq \"{uid}\"")})).await.ok(200);
        assert_eq!(s["totalResults"], 0);
        // And the other way round.
        let theirs = as_other(&app, &o, "/Users").await;
        assert_eq!(ids(&theirs), vec![uid]);
    }
);

backend_test!(
    async fn another_tenants_user_cannot_be_added_to_my_group_nor_my_user_to_theirs(app = TestApp::scim_api) {
        // An id of another tenant does not exist in this one: it is dropped like any unknown
        // member (the write succeeds, the membership is not made).
        let o = other_tenant(&app).await;
        let g = app.create_group("Mine", &[]).await;
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": id_of(&o.user)}]}]))
            .await
            .expect(204);
        app.put(
            &group_path(&g),
            &json!({"schemas": [GROUP_URN], "displayName": "Mine", "members": [{"value": id_of(&o.group)}]}),
        )
        .await
        .expect(200);
        assert!(member_ids(&app.get_ok(&group_path(&g)).await).is_empty());
        let mine = app.create_user("me@acme.com").await;
        let r = app
            .send_as(
                &o.token,
                Method::PATCH,
                &group_path(&o.group),
                Some(&patch_body(json!([{"op": "add", "path": "members", "value": [{"value": id_of(&mine)}]}]))),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 204, "{}", r.text);
        assert_eq!(member_ids(&as_other(&app, &o, &group_path(&o.group)).await), member_ids(&o.group));
    }
);

backend_test!(
    async fn the_same_user_name_and_group_name_may_exist_in_two_tenants(app = TestApp::scim_api) {
        let o = other_tenant(&app).await;
        let u = app.create_user("HANK@globex.com").await;
        assert_ne!(u["id"], o.user["id"]);
        let g = app.create_group("globex staff", &[]).await;
        assert_ne!(g["id"], o.group["id"]);
        assert_eq!(app.filter_users(r#"userName eq "hank@globex.com""#).await, vec![id_of(&u)]);
        let theirs = app
            .send_as(&o.token, Method::GET, &format!("/Users?{}", filter_q(r#"userName eq "hank@globex.com""#)), None, &[])
            .await
            .ok(200);
        assert_eq!(ids(&theirs), vec![id_of(&o.user)]);
    }
);

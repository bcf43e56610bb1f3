//! `/Bulk` (RFC 7644 §3.7) and the tolerant door (paths as clients send them).

use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

fn user_op(n: usize) -> Value {
    json!({"method": "POST", "path": "/Users", "bulkId": format!("u{n}"),
           "data": {"schemas": [USER_URN], "userName": format!("bulk{n}@example.com")}})
}

fn ops_of(r: &Value) -> Vec<Value> {
    r["Operations"].as_array().expect("Operations").clone()
}

backend_test!(
    async fn a_group_references_users_created_in_the_same_request(app = TestApp::scim_api) {
        // The group comes first: its members resolve whatever the order.
        let members: Vec<Value> = (0..100).map(|n| json!({"value": format!("bulkId:u{n}")})).collect();
        let mut ops = vec![json!({"method": "POST", "path": "/Groups", "bulkId": "g",
                                  "data": {"schemas": [GROUP_URN], "displayName": "Bulk staff", "members": members}})];
        ops.extend((0..100).map(user_op));
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "Operations": ops})).await;
        let body = r.expect(200).clone();
        assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:BulkResponse");
        let answered = ops_of(&body);
        assert_eq!(answered.len(), 101);
        for op in &answered {
            assert_eq!(op["status"], "201", "{op}");
            assert!(op["location"].as_str().is_some_and(|l| l.contains("/v1/auth/scim/v2/")), "{op}");
            assert!(op["version"].as_str().is_some_and(|v| v.starts_with("W/")), "{op}");
        }
        // Answers in request order, each with its bulkId.
        assert_eq!(answered[0]["bulkId"], "g");
        assert_eq!(answered[1]["bulkId"], "u0");
        let group_loc = answered[0]["location"].as_str().unwrap();
        let gid = group_loc.rsplit('/').next().unwrap();
        let g = app.get_ok(&format!("/Groups/{gid}")).await;
        let user_ids: std::collections::BTreeSet<String> = answered[1..]
            .iter()
            .map(|o| o["location"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(member_ids(&g), user_ids);
        let u = app.get_ok(&format!("/Users/{}", user_ids.iter().next().unwrap())).await;
        assert!(u["groups"].as_array().unwrap().iter().any(|x| x["value"] == gid), "{u}");
    }
);

backend_test!(
    async fn fail_on_errors_stops_at_the_first_error(app = TestApp::scim_api) {
        app.create_user("taken@example.com").await;
        let ops = json!([
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"schemas": [USER_URN], "userName": "a@example.com"}},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"schemas": [USER_URN], "userName": "taken@example.com"}},
            {"method": "POST", "path": "/Users", "bulkId": "c", "data": {"schemas": [USER_URN], "userName": "c@example.com"}},
            {"method": "DELETE", "path": "/Users/bulkId:a"},
        ]);
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "failOnErrors": 1, "Operations": ops})).await;
        let answered = ops_of(r.expect(200));
        // The first succeeded, the second failed as its single request would (409 uniqueness);
        // the rest were not processed.
        assert_eq!(answered.len(), 2, "{answered:?}");
        assert_eq!(answered[0]["status"], "201");
        assert_eq!(answered[1]["status"], "409");
        assert_eq!(answered[1]["response"]["scimType"], "uniqueness");
        let list = app.get_ok(&format!("/Users?filter={}", enc("userName eq \"c@example.com\""))).await;
        assert_eq!(list["totalResults"], 0, "c was not processed");
        let list = app.get_ok(&format!("/Users?filter={}", enc("userName eq \"a@example.com\""))).await;
        assert_eq!(list["totalResults"], 1, "a stays created (not deleted: that operation did not run)");

        // Without failOnErrors every operation runs and answers for itself.
        let ops = json!([
            {"method": "POST", "path": "/Users", "bulkId": "d", "data": {"schemas": [USER_URN], "userName": "taken@example.com"}},
            {"method": "POST", "path": "/Users", "bulkId": "e", "data": {"schemas": [USER_URN], "userName": "e@example.com"}},
            {"method": "PATCH", "path": "/Users/bulkId:e", "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "Eve"}]}},
            {"method": "PUT", "path": "/Users/bulkId:d", "data": {"schemas": [USER_URN], "userName": "d@example.com"}},
        ]);
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "Operations": ops})).await;
        let answered = ops_of(r.expect(200));
        let statuses: Vec<&str> = answered.iter().map(|o| o["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["409", "201", "200", "409"], "{answered:?}");
        let eid = answered[1]["location"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        assert_eq!(app.get_ok(&format!("/Users/{eid}")).await["displayName"], "Eve");
    }
);

backend_test!(
    async fn limits_cycles_and_malformed_requests_are_refused(app = TestApp::scim_api) {
        let ops: Vec<Value> = (0..1001).map(user_op).collect();
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "Operations": ops})).await;
        r.expect_error(413, None);
        let list = app.get_ok("/Users").await;
        assert_eq!(list["totalResults"], 0, "nothing of a refused bulk is stored");

        // Two groups that are each other's member cannot be created first: 409 for both.
        let ops = json!([
            {"method": "POST", "path": "/Groups", "bulkId": "x", "data": {"schemas": [GROUP_URN], "displayName": "X", "members": [{"value": "bulkId:y"}]}},
            {"method": "POST", "path": "/Groups", "bulkId": "y", "data": {"schemas": [GROUP_URN], "displayName": "Y", "members": [{"value": "bulkId:x"}]}},
            {"method": "POST", "path": "/Users", "bulkId": "z", "data": {"schemas": [USER_URN], "userName": "z@example.com"}},
            {"method": "DELETE", "path": "/Users/bulkId:nowhere"},
        ]);
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "Operations": ops})).await;
        let statuses: Vec<String> =
            ops_of(r.expect(200)).iter().map(|o| o["status"].as_str().unwrap().to_string()).collect();
        assert_eq!(statuses, ["409", "409", "201", "409"]);
        assert_eq!(app.get_ok("/Groups").await["totalResults"], 0);

        for bad in [
            json!({"Operations": []}),
            json!({"schemas": [BULK_REQUEST]}),
            json!({"schemas": [BULK_REQUEST], "failOnErrors": 0, "Operations": []}),
            json!({"schemas": [BULK_REQUEST], "Operations": [{"method": "POST", "path": "/Users", "data": {"userName": "x"}}]}),
            json!({"schemas": [BULK_REQUEST], "Operations": [{"method": "GET", "path": "/Users"}]}),
            json!({"schemas": [BULK_REQUEST], "Operations": [{"method": "PUT", "path": "/Widgets/1", "data": {}}]}),
            json!({"schemas": [BULK_REQUEST], "Operations": [user_op(1), user_op(1)]}),
        ] {
            let r = app.post("/Bulk", &bad).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text);
        }
        let spc = app.get_ok("/ServiceProviderConfig").await;
        assert_eq!(spc["bulk"]["supported"], true);
        assert_eq!(spc["bulk"]["maxOperations"], 1000);
    }
);

backend_test!(
    async fn paths_route_as_clients_send_them(app = TestApp::scim_api) {
        let u = app.create_user("door@example.com").await;
        let id = id_of(&u);
        let filter = enc("userName eq \"door@example.com\"");
        for path in ["/Users/".to_string(), format!("/Users/?filter={filter}"), "//Users".into(), "/users".into()] {
            let r = app.send(Method::GET, &path, None).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            assert!(r.body["totalResults"].as_i64().unwrap() >= 1, "{path}");
        }
        for path in [format!("/users/{id}"), format!("/Users/{id}/"), format!("//Users//{id}")] {
            let r = app.send(Method::GET, &path, None).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            // The location stays canonical.
            assert!(r.body["meta"]["location"].as_str().unwrap().ends_with(&format!("/v1/auth/scim/v2/Users/{id}")));
        }
        assert_eq!(app.send(Method::GET, "/groups", None).await.status, 200);
        assert_eq!(app.send(Method::GET, "/serviceproviderconfig", None).await.status, 200);
        assert_eq!(app.send(Method::GET, "/Widgets", None).await.status, 404);
    }
);

backend_test!(
    async fn operations_on_one_resource_or_name_keep_request_order(app = TestApp::scim_api) {
        let bob = app.create_user("bob@example.com").await;
        let ops = json!([
            // A delete, then a create of the same name: the create must see the delete.
            {"method": "DELETE", "path": format!("/Users/{}", id_of(&bob))},
            {"method": "POST", "path": "/Users", "bulkId": "bob", "data": {"schemas": [USER_URN], "userName": "bob@example.com"}},
            // A replace then a patch of the new user: the patch comes last.
            {"method": "PUT", "path": "/Users/bulkId:bob", "data": {"schemas": [USER_URN], "userName": "bob@example.com", "displayName": "Put"}},
            {"method": "PATCH", "path": "/Users/bulkId:bob", "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "Patched"}]}},
            // Two creates of one name: the first in request order wins.
            {"method": "POST", "path": "/Users", "bulkId": "x1", "data": {"schemas": [USER_URN], "userName": "twin@example.com", "title": "first"}},
            {"method": "POST", "path": "/Users", "bulkId": "x2", "data": {"schemas": [USER_URN], "userName": "twin@example.com", "title": "second"}},
            // Its own bulkId: that operation fails alone; text mentioning bulkId: is not a reference.
            {"method": "POST", "path": "/Groups", "bulkId": "self", "data": {"schemas": [GROUP_URN], "displayName": "Self", "members": [{"value": "bulkId:self"}]}},
            {"method": "POST", "path": "/Users", "bulkId": "t", "data": {"schemas": [USER_URN], "userName": "t@example.com", "title": "see bulkId: docs"}},
        ]);
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "Operations": ops})).await;
        let statuses: Vec<String> =
            ops_of(r.expect(200)).iter().map(|o| o["status"].as_str().unwrap().to_string()).collect();
        assert_eq!(statuses, ["204", "201", "200", "200", "201", "409", "409", "201"]);
        let found = app.get_ok(&format!("/Users?filter={}", enc("userName eq \"bob@example.com\""))).await;
        assert_eq!(found["Resources"][0]["displayName"], "Patched");
        let twin = app.get_ok(&format!("/Users?filter={}", enc("userName eq \"twin@example.com\""))).await;
        assert_eq!(twin["Resources"][0]["title"], "first");
        // A members value that is not an array is refused, not read as "no members".
        let g = app.create_group("Keep", &[&id_of(&twin["Resources"][0])]).await;
        app.put(&group_path(&g), &json!({"schemas": [GROUP_URN], "displayName": "Keep", "members": {"value": "x"}}))
            .await
            .expect_error(400, Some("invalidValue"));
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await).len(), 1);
    }
);

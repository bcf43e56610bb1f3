//! Lists and searches: paging, ordering, projection, `.search`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

async fn max_results(app: &TestApp) -> i64 {
    app.get_ok("/ServiceProviderConfig").await["filter"]["maxResults"].as_i64().expect("filter.maxResults")
}

/// Pages through `/Users` with `count`, startIndex += count, until a short page; the ids in order.
async fn page_all(app: &TestApp, extra: &str, count: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut start = 1;
    loop {
        let page = app.get_ok(&format!("/Users?startIndex={start}&count={count}{extra}")).await;
        assert_eq!(page["startIndex"], start);
        let got = ids(&page);
        assert_eq!(page["itemsPerPage"], got.len());
        all.extend(got.iter().cloned());
        if got.len() < count {
            break;
        }
        start += count;
        assert!(start < 10_000, "runaway paging");
    }
    all
}

fn assert_each_once(got: &[String], expected: &[String]) {
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "pages overlap: a resource was listed twice");
    assert_eq!(unique, expected.iter().collect::<BTreeSet<_>>(), "pages skipped or invented resources");
}

backend_test!(
    async fn an_empty_list_has_the_full_shape(app = TestApp::scim_api) {
        for path in ["/Users", "/Groups", "/Users?startIndex=1&count=100"] {
            let body = app.get_ok(path).await;
            assert_eq!(
                body,
                json!({"schemas": [LIST_URN], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []}),
                "{path}"
            );
        }
    }
);

backend_test!(
    async fn start_index_and_count_are_one_based(app = TestApp::scim_api) {
        let all = app.seed_users("p", 5).await;
        let whole = app.get_ok("/Users").await;
        assert_eq!(whole["totalResults"], 5);
        let order = ids(&whole);
        assert_eq!(order.iter().collect::<BTreeSet<_>>(), all.iter().collect::<BTreeSet<_>>());
        let page = app.get_ok("/Users?startIndex=2&count=2").await;
        assert_eq!(page["totalResults"], 5);
        assert_eq!(page["startIndex"], 2);
        assert_eq!(page["itemsPerPage"], 2);
        assert_eq!(ids(&page), order[1..3].to_vec());
        let tail = app.get_ok("/Users?startIndex=5&count=10").await;
        assert_eq!(ids(&tail), order[4..].to_vec());
        let past = app.get_ok("/Users?startIndex=6&count=10").await;
        assert_eq!(past["totalResults"], 5);
        assert_eq!(past["Resources"], json!([]));
        assert_eq!(past["itemsPerPage"], 0);
    }
);

backend_test!(
    async fn start_index_below_one_is_treated_as_one(app = TestApp::scim_api) {
        app.seed_users("z", 3).await;
        let first = app.get_ok("/Users?startIndex=1&count=2").await;
        for s in ["0", "-1", "-100"] {
            let page = app.get_ok(&format!("/Users?startIndex={s}&count=2")).await;
            assert_eq!(page["startIndex"], 1, "startIndex={s}");
            assert_eq!(ids(&page), ids(&first), "startIndex={s}");
        }
    }
);

backend_test!(
    async fn count_zero_gives_totals_only(app = TestApp::scim_api) {
        app.seed_users("c", 4).await;
        let body = app.get_ok("/Users?count=0").await;
        assert_eq!(body["totalResults"], 4);
        assert_eq!(body["itemsPerPage"], 0);
        assert_eq!(body["Resources"], json!([]));
        let groups = app.get_ok("/Groups?count=0").await;
        assert_eq!(groups["totalResults"], 0);
        assert_eq!(groups["Resources"], json!([]));
    }
);

backend_test!(
    async fn count_above_the_advertised_maximum_is_capped(app = TestApp::scim_api) {
        let max = max_results(&app).await;
        assert!(max > 0 && max <= 5000, "maxResults {max} is not a sane page size");
        app.seed_users("m", max as usize + 1).await;
        let body = app.get_ok(&format!("/Users?count={}", max * 10)).await;
        assert_eq!(body["totalResults"], max + 1);
        assert_eq!(body["itemsPerPage"], max);
        assert_eq!(body["Resources"].as_array().unwrap().len() as i64, max);
    }
);

backend_test!(
    async fn paging_250_users_with_count_100_lists_each_exactly_once(app = TestApp::scim_api) {
        let all = app.seed_users("okta", 250).await;
        let got = page_all(&app, "", 100).await;
        assert_eq!(got.len(), 250);
        assert_each_once(&got, &all);
    }
);

backend_test!(
    async fn paging_250_users_with_count_7_lists_each_exactly_once(app = TestApp::scim_api) {
        let all = app.seed_users("seven", 250).await;
        let got = page_all(&app, "", 7).await;
        assert_each_once(&got, &all);
    }
);

backend_test!(
    async fn paging_sorted_by_a_non_unique_attribute_neither_overlaps_nor_skips(app = TestApp::scim_api) {
        let all = app.seed_users("dup", 60).await;
        let got = page_all(&app, "&sortBy=title", 7).await;
        assert_each_once(&got, &all);
        let got = page_all(&app, "&sortBy=title&sortOrder=descending", 9).await;
        assert_each_once(&got, &all);
    }
);

backend_test!(
    async fn sort_by_user_name_ascending_and_descending(app = TestApp::scim_api) {
        for n in ["charlie@example.com", "Alpha@example.com", "bravo@example.com"] {
            app.create_user(n).await;
        }
        let names = |v: &Value| -> Vec<String> {
            v["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap().to_string()).collect()
        };
        let asc = app.get_ok("/Users?sortBy=userName").await;
        assert_eq!(names(&asc), ["Alpha@example.com", "bravo@example.com", "charlie@example.com"]);
        let asc2 = app.get_ok("/Users?sortBy=userName&sortOrder=ascending").await;
        assert_eq!(names(&asc2), names(&asc));
        let desc = app.get_ok("/Users?sortBy=userName&sortOrder=descending").await;
        assert_eq!(names(&desc), ["charlie@example.com", "bravo@example.com", "Alpha@example.com"]);
    }
);

backend_test!(
    async fn sort_by_a_non_indexed_attribute(app = TestApp::scim_api) {
        for (n, t) in [("a@example.com", "Pilot"), ("b@example.com", "analyst"), ("c@example.com", "Manager")] {
            app.create_user_with(json!({"schemas": [USER_URN], "userName": n, "title": t})).await;
        }
        let titles = |v: &Value| -> Vec<String> {
            v["Resources"].as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(titles(&app.get_ok("/Users?sortBy=title").await), ["analyst", "Manager", "Pilot"]);
        assert_eq!(
            titles(&app.get_ok("/Users?sortBy=title&sortOrder=descending").await),
            ["Pilot", "Manager", "analyst"]
        );
        // Sorting and paging together.
        assert_eq!(titles(&app.get_ok("/Users?sortBy=title&startIndex=2&count=1").await), ["Manager"]);
    }
);

fn rich_user() -> Value {
    json!({
        "schemas": [USER_URN, ENTERPRISE],
        "userName": "proj@example.com",
        "name": {"givenName": "Pro", "familyName": "Jection"},
        "displayName": "Pro Jection",
        "title": "Tester",
        "emails": [
            {"value": "proj@example.com", "type": "work", "primary": true},
            {"value": "proj@home.example", "type": "home"}
        ],
        ENTERPRISE: {"employeeNumber": "42", "department": "QA"}
    })
}

backend_test!(
    async fn attributes_on_a_list_returns_only_those_plus_id(app = TestApp::scim_api) {
        app.create_user_with(rich_user()).await;
        let body = app.get_ok("/Users?attributes=userName").await;
        let r = &body["Resources"][0];
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.contains("id") && keys.contains("userName"), "{r}");
        for k in ["name", "emails", "title", "displayName", ENTERPRISE] {
            assert!(!keys.contains(k), "{k} was not asked for: {r}");
        }
    }
);

backend_test!(
    async fn excluded_attributes_on_a_list_drops_only_those(app = TestApp::scim_api) {
        app.create_user_with(rich_user()).await;
        let body = app.get_ok("/Users?excludedAttributes=emails,name").await;
        let r = &body["Resources"][0];
        assert!(r.get("emails").is_none() && r.get("name").is_none(), "{r}");
        assert_eq!(r["userName"], "proj@example.com");
        assert_eq!(r["title"], "Tester");
        assert!(r["id"].is_string());
    }
);

backend_test!(
    async fn attributes_with_a_sub_attribute_on_get(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let body = app.get_ok(&format!("{}?attributes=name.givenName", user_path(&u))).await;
        assert_eq!(body["name"], json!({"givenName": "Pro"}));
        assert_eq!(body["id"], u["id"]);
        assert!(body.get("userName").is_none(), "{body}");
    }
);

backend_test!(
    async fn attributes_with_a_multi_valued_sub_attribute_on_get(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let body = app.get_ok(&format!("{}?attributes=emails.value", user_path(&u))).await;
        assert_eq!(body["emails"], json!([{"value": "proj@example.com"}, {"value": "proj@home.example"}]));
    }
);

backend_test!(
    async fn attributes_with_a_whole_extension_urn_on_get(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let body = app.get_ok(&format!("{}?attributes={}", user_path(&u), enc(ENTERPRISE))).await;
        assert_eq!(body[ENTERPRISE], json!({"employeeNumber": "42", "department": "QA"}));
        assert!(body.get("name").is_none(), "{body}");
    }
);

backend_test!(
    async fn attributes_with_an_extension_attribute_path_on_get(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let attr = format!("{ENTERPRISE}:employeeNumber");
        let body = app.get_ok(&format!("{}?attributes={}", user_path(&u), enc(&attr))).await;
        assert_eq!(body[ENTERPRISE], json!({"employeeNumber": "42"}), "{body}");
        assert!(body.get("name").is_none(), "{body}");
        let list = app.get_ok(&format!("/Users?attributes={}", enc(&attr))).await;
        assert_eq!(list["Resources"][0][ENTERPRISE], json!({"employeeNumber": "42"}), "{list}");
    }
);

backend_test!(
    async fn excluded_attributes_with_a_sub_attribute_on_get(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let body = app.get_ok(&format!("{}?excludedAttributes=name.givenName", user_path(&u))).await;
        assert_eq!(body["name"], json!({"familyName": "Jection"}));
        assert_eq!(body["userName"], "proj@example.com");
    }
);

backend_test!(
    async fn excluded_attributes_with_an_extension_attribute_path_on_get(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let body = app
            .get_ok(&format!("{}?excludedAttributes={}", user_path(&u), enc(&format!("{ENTERPRISE}:department"))))
            .await;
        assert_eq!(body[ENTERPRISE], json!({"employeeNumber": "42"}), "{body}");
        assert_eq!(body["userName"], "proj@example.com");
    }
);

backend_test!(
    async fn id_is_always_returned_even_when_excluded(app = TestApp::scim_api) {
        let u = app.create_user_with(rich_user()).await;
        let body = app.get_ok(&format!("{}?excludedAttributes=id", user_path(&u))).await;
        assert_eq!(body["id"], u["id"]);
    }
);

backend_test!(
    async fn post_users_search_takes_filter_paging_and_attributes_from_the_body(app = TestApp::scim_api) {
        for n in ["s1@example.com", "s2@example.com", "s3@example.com", "other@example.org"] {
            app.create_user(n).await;
        }
        let body = app
            .post(
                "/Users/.search",
                &json!({
                    "schemas": [SEARCH_URN],
                    "filter": "userName ew \"@example.com\"",
                    "startIndex": 2,
                    "count": 1,
                    "attributes": ["userName"],
                    "sortBy": "userName"
                }),
            )
            .await
            .ok(200);
        assert_eq!(body["totalResults"], 3);
        assert_eq!(body["startIndex"], 2);
        assert_eq!(body["itemsPerPage"], 1);
        let r = &body["Resources"][0];
        assert_eq!(r["userName"], "s2@example.com");
        assert!(r.get("emails").is_none(), "{r}");
    }
);

backend_test!(
    async fn post_groups_search(app = TestApp::scim_api) {
        app.create_group("Engineering", &[]).await;
        app.create_group("Sales", &[]).await;
        let body = app
            .post(
                "/Groups/.search",
                &json!({"schemas": [SEARCH_URN], "filter": "displayName sw \"eng\"", "excludedAttributes": ["members"]}),
            )
            .await
            .ok(200);
        assert_eq!(body["totalResults"], 1);
        assert_eq!(body["Resources"][0]["displayName"], "Engineering");
        assert!(body["Resources"][0].get("members").is_none());
    }
);

backend_test!(
    async fn root_search_lists_users_and_groups_together(app = TestApp::scim_api) {
        let u1 = app.create_user("r1@example.com").await;
        let u2 = app.create_user("r2@example.com").await;
        let g1 = app.create_group("G1", &[]).await;
        let g2 = app.create_group("G2", &[]).await;
        let all = app.post("/.search", &json!({"schemas": [SEARCH_URN]})).await.ok(200);
        assert_eq!(all["totalResults"], 4);
        assert_eq!(
            ids(&all).into_iter().collect::<BTreeSet<_>>(),
            set([id_of(&u1), id_of(&u2), id_of(&g1), id_of(&g2)])
        );
        let types: BTreeSet<String> = all["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["meta"]["resourceType"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(types, set(["User", "Group"]));
        // Pages across the users/groups boundary neither overlap nor skip.
        let mut paged = Vec::new();
        for start in [1, 4] {
            let p = app
                .post("/.search", &json!({"schemas": [SEARCH_URN], "startIndex": start, "count": 3}))
                .await
                .ok(200);
            assert_eq!(p["totalResults"], 4);
            paged.extend(ids(&p));
        }
        assert_each_once(&paged, &ids(&all));
        // A filter and attributes apply to both kinds.
        let f = app
            .post(
                "/.search",
                &json!({"schemas": [SEARCH_URN], "filter": format!("id eq \"{}\"", id_of(&g2)), "attributes": ["displayName"]}),
            )
            .await
            .ok(200);
        assert_eq!(f["totalResults"], 1);
        assert_eq!(f["Resources"][0]["displayName"], "G2");
    }
);

backend_test!(
    async fn a_search_body_that_is_not_a_search_request_is_400(app = TestApp::scim_api) {
        app.post("/Users/.search", &json!([1, 2])).await.expect_error(400, Some("invalidSyntax"));
        app.post("/Users/.search", &json!({"schemas": ["urn:wrong"], "filter": "userName pr"}))
            .await
            .expect_error(400, Some("invalidSyntax"));
        app.post("/Users/.search", &json!({"schemas": [SEARCH_URN], "startIndex": "abc"}))
            .await
            .expect_error(400, Some("invalidValue"));
    }
);

backend_test!(
    async fn paging_in_order_after_a_write_still_pages_by_position(app = TestApp::scim_api) {
        // Pages read in order seek past the previous page's last row while nothing changes;
        // a write in between must give what positional paging gives: every later page shifts.
        app.seed_users("k", 130).await;
        let before = ids(&app.get_ok("/Users?count=1000").await);
        assert_eq!(page_all(&app, "", 20).await, before, "paging in order changed the order");
        let p1 = app.get_ok("/Users?startIndex=1&count=20").await;
        let p2 = app.get_ok("/Users?startIndex=21&count=20").await;
        assert_eq!(p2["totalResults"], 130);
        assert_eq!(ids(&p2), before[20..40]);
        // Delete the first user of page 1; page 3 now starts one row later than it would have.
        app.delete(&format!("/Users/{}", ids(&p1)[0])).await.expect(204);
        let after = ids(&app.get_ok("/Users?count=1000").await);
        let p3 = app.get_ok("/Users?startIndex=41&count=20").await;
        assert_eq!(p3["totalResults"], 129, "the total after the delete");
        assert_eq!(ids(&p3), after[40..60], "page 3 after a delete on page 1");
        assert_eq!(ids(&p3)[0], before[41]);
        // A create (at the end) changes the total the next page reports.
        app.create_user("late@example.com").await;
        let p4 = app.get_ok("/Users?startIndex=61&count=20").await;
        assert_eq!(p4["totalResults"], 130);
        let now = ids(&app.get_ok("/Users?count=1000").await);
        assert_eq!(ids(&p4), now[60..80]);
        // A listing filtered in SQL (a group's members) pages the same way with a total of its
        // own, and a member-only PATCH (the batch writer's path) moves its later pages too.
        let members: Vec<String> = now.iter().step_by(3).cloned().collect();
        let g = app.create_group("Paged", &members.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let filter = format!("&filter=groups.value%20eq%20%22{}%22", id_of(&g));
        let whole = ids(&app.get_ok(&format!("/Users?count=1000{filter}")).await);
        assert_eq!(whole.len(), members.len());
        assert_eq!(page_all(&app, &filter, 7).await, whole);
        let f1 = app.get_ok(&format!("/Users?startIndex=1&count=7{filter}")).await;
        let f2 = app.get_ok(&format!("/Users?startIndex=8&count=7{filter}")).await;
        assert_eq!(f2["totalResults"], whole.len());
        assert_eq!(ids(&f2), whole[7..14]);
        let gone = ids(&f1)[0].clone();
        app.patch_ops(&group_path(&g), json!([{"op": "remove", "path": format!("members[value eq \"{gone}\"]")}]))
            .await
            .expect(204);
        let f3 = app.get_ok(&format!("/Users?startIndex=15&count=7{filter}")).await;
        assert_eq!(f3["totalResults"], whole.len() - 1, "the group's total after a member left");
        assert_eq!(ids(&f3), whole[15..22], "page 3 of the group after a member of page 1 left");
    }
);

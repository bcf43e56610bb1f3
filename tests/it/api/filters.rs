//! Filters (RFC 7644 §3.4.2.2): every operator, logic, value paths, extension paths, case rules,
//! and malformed filters.

use std::collections::BTreeMap;

use serde_json::json;

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

/// Three users with known attributes; their ids by short name.
struct Fixture {
    ids: BTreeMap<&'static str, String>,
}

impl Fixture {
    fn id(&self, who: &str) -> String {
        self.ids[who].clone()
    }
    /// Turns result ids back into short names, sorted.
    fn names(&self, got: &[String]) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = got
            .iter()
            .map(|id| *self.ids.iter().find(|(_, v)| *v == id).unwrap_or_else(|| panic!("unknown id {id}")).0)
            .collect();
        out.sort_unstable();
        out
    }
}

async fn fixture(app: &TestApp) -> Fixture {
    let people = [
        (
            "alice",
            json!({
                "schemas": [USER_URN, ENTERPRISE],
                "userName": "Alice@Acme.com",
                "externalId": "EXT-Alice",
                "displayName": "Alice Anders",
                "nickName": "al",
                "title": "Engineer",
                "active": true,
                "emails": [
                    {"value": "alice@acme.com", "type": "work", "primary": true},
                    {"value": "alice@home.example", "type": "home"}
                ],
                ENTERPRISE: {"employeeNumber": "1001", "manager": {"value": "mgr-1"}}
            }),
        ),
        (
            "bob",
            json!({
                "schemas": [USER_URN, ENTERPRISE],
                "userName": "bob@acme.com",
                "externalId": "ext-bob",
                "displayName": "Bob Brown",
                "title": "Manager",
                "active": false,
                "emails": [{"value": "bob@other.example", "type": "work"}],
                ENTERPRISE: {"employeeNumber": "1002"}
            }),
        ),
        (
            "carol",
            json!({
                "schemas": [USER_URN, ENTERPRISE],
                "userName": "carol@example.org",
                "displayName": "Carol Chen",
                "title": "Engineer",
                "active": true,
                "emails": [{"value": "Carol@Acme.com", "type": "work"}],
                ENTERPRISE: {"employeeNumber": "2001", "manager": "mgr-2"}
            }),
        ),
    ];
    let mut ids = BTreeMap::new();
    for (k, body) in people {
        ids.insert(k, id_of(&app.create_user_with(body).await));
    }
    Fixture { ids }
}

async fn check(app: &TestApp, fx: &Fixture, filter: &str, expected: &[&str]) {
    let got = app.filter_users(filter).await;
    assert_eq!(fx.names(&got), expected, "filter {filter}");
    // The same through POST /Users/.search.
    let body = app.post("/Users/.search", &json!({"schemas": [SEARCH_URN], "filter": filter})).await.ok(200);
    assert_eq!(fx.names(&ids(&body)), expected, ".search filter {filter}");
    assert_eq!(body["totalResults"], expected.len(), "totalResults for {filter}");
}

backend_test!(
    async fn eq(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName eq "alice@acme.com""#, &["alice"]).await;
        check(&app, &fx, r#"title eq "Engineer""#, &["alice", "carol"]).await;
        check(&app, &fx, r#"userName eq "nobody@acme.com""#, &[]).await;
    }
);

backend_test!(
    async fn ne(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"title ne "Engineer""#, &["bob"]).await;
        check(&app, &fx, r#"nickName ne "al""#, &["bob", "carol"]).await;
    }
);

backend_test!(
    async fn co(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName co "ACME""#, &["alice", "bob"]).await;
        check(&app, &fx, r#"displayName co "n""#, &["alice", "bob", "carol"]).await;
    }
);

backend_test!(
    async fn sw(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName sw "CAR""#, &["carol"]).await;
        check(&app, &fx, r#"displayName sw "b""#, &["bob"]).await;
    }
);

backend_test!(
    async fn ew(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName ew ".org""#, &["carol"]).await;
        check(&app, &fx, r#"userName ew "@ACME.COM""#, &["alice", "bob"]).await;
    }
);

backend_test!(
    async fn pr(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, "externalId pr", &["alice", "bob"]).await;
        check(&app, &fx, "nickName pr", &["alice"]).await;
        check(&app, &fx, "title pr", &["alice", "bob", "carol"]).await;
        check(&app, &fx, "phoneNumbers pr", &[]).await;
    }
);

backend_test!(
    async fn gt_ge_lt_le(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        let en = format!("{ENTERPRISE}:employeeNumber");
        check(&app, &fx, &format!(r#"{en} gt "1001""#), &["bob", "carol"]).await;
        check(&app, &fx, &format!(r#"{en} ge "1002""#), &["bob", "carol"]).await;
        check(&app, &fx, &format!(r#"{en} lt "1002""#), &["alice"]).await;
        check(&app, &fx, &format!(r#"{en} le "1002""#), &["alice", "bob"]).await;
        check(&app, &fx, r#"userName gt "B""#, &["bob", "carol"]).await;
        check(&app, &fx, r#"userName le "bob@acme.com""#, &["alice", "bob"]).await;
    }
);

backend_test!(
    async fn and_or_not(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"title eq "Engineer" and active eq true"#, &["alice", "carol"]).await;
        check(&app, &fx, r#"userName eq "bob@acme.com" or externalId eq "EXT-Alice""#, &["alice", "bob"]).await;
        check(&app, &fx, r#"not (title eq "Engineer")"#, &["bob"]).await;
        check(&app, &fx, r#"userName sw "a" and not (active eq false)"#, &["alice"]).await;
    }
);

backend_test!(
    async fn and_binds_tighter_than_or_and_parentheses_override(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName sw "bob" or userName sw "carol" and active eq true"#, &["bob", "carol"]).await;
        check(&app, &fx, r#"(userName sw "bob" or userName sw "carol") and active eq true"#, &["carol"]).await;
        check(&app, &fx, r#"((title eq "Manager") or (title eq "Engineer" and nickName pr))"#, &["alice", "bob"]).await;
    }
);

backend_test!(
    async fn complex_value_filter(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"emails[type eq "work" and value co "@acme"]"#, &["alice", "carol"]).await;
        check(&app, &fx, r#"emails[type eq "home"]"#, &["alice"]).await;
        check(&app, &fx, r#"emails[type eq "home" and value co "@acme"]"#, &[]).await;
        check(&app, &fx, r#"emails[value eq "BOB@other.example"]"#, &["bob"]).await;
    }
);

backend_test!(
    async fn entra_value_path_then_sub_attribute_filter(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"emails[type eq "work"].value eq "carol@acme.com""#, &["carol"]).await;
        check(&app, &fx, r#"emails[type eq "work"].value eq "alice@home.example""#, &[]).await;
        check(
            &app,
            &fx,
            r#"emails[type eq "work"].value eq "alice@acme.com" and userName eq "Alice@Acme.com""#,
            &["alice"],
        )
        .await;
    }
);

backend_test!(
    async fn emails_value_compares_case_insensitively(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"emails.value eq "ALICE@ACME.COM""#, &["alice"]).await;
        check(&app, &fx, r#"emails eq "alice@home.example""#, &["alice"]).await;
        check(&app, &fx, r#"emails.value co "home""#, &["alice"]).await;
    }
);

backend_test!(
    async fn enterprise_extension_paths(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, &format!(r#"{ENTERPRISE}:employeeNumber eq "2001""#), &["carol"]).await;
        check(&app, &fx, &format!(r#"{ENTERPRISE}:manager.value eq "mgr-1""#), &["alice"]).await;
        // The manager sent as a plain string is found like any other.
        check(&app, &fx, &format!(r#"{ENTERPRISE}:manager.value eq "mgr-2""#), &["carol"]).await;
        check(&app, &fx, &format!("{ENTERPRISE}:manager pr"), &["alice", "carol"]).await;
    }
);

backend_test!(
    async fn core_urn_qualified_paths(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, &format!(r#"{USER_URN}:userName eq "bob@acme.com""#), &["bob"]).await;
    }
);

backend_test!(
    async fn user_name_is_case_insensitive_external_id_and_id_are_case_exact(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName eq "ALICE@ACME.COM""#, &["alice"]).await;
        check(&app, &fx, r#"externalId eq "EXT-Alice""#, &["alice"]).await;
        check(&app, &fx, r#"externalId eq "ext-alice""#, &[]).await;
        check(&app, &fx, r#"externalId eq "EXT-BOB""#, &[]).await;
        let id = fx.id("bob");
        check(&app, &fx, &format!(r#"id eq "{id}""#), &["bob"]).await;
        let upper = id.to_uppercase();
        assert_ne!(upper, id, "ids must contain letters for this check");
        check(&app, &fx, &format!(r#"id eq "{upper}""#), &[]).await;
        check(&app, &fx, r#"externalId sw "EXT""#, &["alice"]).await;
    }
);

backend_test!(
    async fn meta_last_modified_gt_and_lt(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let bob = app.get_ok(&format!("/Users/{}", fx.id("bob"))).await;
        app.put(&format!("/Users/{}", fx.id("bob")), &bob).await.expect(200);
        check(&app, &fx, &format!(r#"meta.lastModified gt "{t}""#), &["bob"]).await;
        check(&app, &fx, &format!(r#"meta.lastModified lt "{t}""#), &["alice", "carol"]).await;
        check(&app, &fx, r#"meta.created gt "2000-01-01T00:00:00Z""#, &["alice", "bob", "carol"]).await;
    }
);

backend_test!(
    async fn active_eq_false(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, "active eq false", &["bob"]).await;
        check(&app, &fx, "active eq true", &["alice", "carol"]).await;
    }
);

backend_test!(
    async fn groups_display_name_eq_is_case_insensitive(app = TestApp::scim_api) {
        let g = app.create_group("Engineering", &[]).await;
        app.create_group("Sales", &[]).await;
        assert_eq!(app.filter_groups(r#"displayName eq "engineering""#).await, vec![id_of(&g)]);
        assert_eq!(app.filter_groups(r#"displayName co "NEER""#).await, vec![id_of(&g)]);
    }
);

backend_test!(
    async fn groups_members_value_eq(app = TestApp::scim_api) {
        let u = app.create_user("in@example.com").await;
        let v = app.create_user("out@example.com").await;
        let a = app.create_group("A", &[&id_of(&u)]).await;
        let b = app.create_group("B", &[&id_of(&u), &id_of(&v)]).await;
        app.create_group("C", &[]).await;
        let mut got = app.filter_groups(&format!(r#"members.value eq "{}""#, id_of(&u))).await;
        got.sort();
        let mut want = vec![id_of(&a), id_of(&b)];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(app.filter_groups(&format!(r#"members[value eq "{}"]"#, id_of(&v))).await, vec![id_of(&b)]);
    }
);

backend_test!(
    async fn groups_members_value_combined_with_a_non_indexed_condition(app = TestApp::scim_api) {
        let u = app.create_user("in@example.com").await;
        app.create_group("Alpha", &[&id_of(&u)]).await;
        let b = app.create_group("Beta", &[&id_of(&u)]).await;
        assert_eq!(
            app.filter_groups(&format!(r#"members.value eq "{}" and displayName sw "Be""#, id_of(&u))).await,
            vec![id_of(&b)]
        );
    }
);

backend_test!(
    async fn users_groups_value_combined_with_a_non_indexed_condition(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        let g = app.create_group("Team", &[&fx.id("alice"), &fx.id("bob")]).await;
        check(&app, &fx, &format!(r#"groups.value eq "{}""#, id_of(&g)), &["alice", "bob"]).await;
        check(&app, &fx, &format!(r#"groups.value eq "{}" and active eq true"#, id_of(&g)), &["alice"]).await;
    }
);

const MALFORMED: &[&str] = &[
    "userName eq",
    r#"userName xx "a""#,
    r#"(userName eq "a""#,
    r#"userName eq "a")"#,
    r#"emails[type eq "work""#,
    r#"emails[type eq "work"]]"#,
    "userName eq a",
    r#"title pr "x""#,
    "and",
    r#"userName eq "a" and"#,
    r#"userName eq "unterminated"#,
    r#"not userName eq "a""#,
    r#"userName co 5"#,
    r#"userName eq "a" userName eq "b""#,
    "   ",
];

backend_test!(
    async fn malformed_filters_are_400_invalid_filter_and_change_nothing(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        let g = app.create_group("G", &[&fx.id("alice")]).await;
        let users_before = app.get_ok("/Users").await;
        let groups_before = app.get_ok("/Groups").await;
        let journal_before = app.journal().await.len();
        for f in MALFORMED {
            app.get(&format!("/Users?{}", filter_q(f))).await.expect_error(400, Some("invalidFilter"));
            app.get(&format!("/Groups?{}", filter_q(f))).await.expect_error(400, Some("invalidFilter"));
            app.post("/Users/.search", &json!({"schemas": [SEARCH_URN], "filter": f}))
                .await
                .expect_error(400, Some("invalidFilter"));
            app.post("/.search", &json!({"schemas": [SEARCH_URN], "filter": f}))
                .await
                .expect_error(400, Some("invalidFilter"));
        }
        assert_eq!(app.get_ok("/Users").await, users_before);
        assert_eq!(app.get_ok("/Groups").await, groups_before);
        assert_eq!(app.journal().await.len(), journal_before);
        assert_eq!(member_ids(&app.get_ok(&group_path(&g)).await), set([fx.id("alice")]));
    }
);

backend_test!(
    async fn filter_values_are_never_sql(app = TestApp::scim_api) {
        let fx = fixture(&app).await;
        check(&app, &fx, r#"userName eq "x' OR '1'='1""#, &[]).await;
        check(&app, &fx, r#"externalId eq "\" OR 1=1 --""#, &[]).await;
        assert_eq!(app.get_ok("/Users").await["totalResults"], 3);
    }
);

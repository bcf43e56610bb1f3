//! Discovery (RFC 7644 §4): ServiceProviderConfig, ResourceTypes, Schemas.

use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;

backend_test!(
    async fn service_provider_config_tells_what_is_supported(app = TestApp::scim_api) {
        let r = app.get("/ServiceProviderConfig").await;
        let c = r.expect(200).clone();
        assert_eq!(c["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]));
        assert_eq!(c["patch"]["supported"], true);
        assert_eq!(c["filter"]["supported"], true);
        assert!(c["filter"]["maxResults"].as_i64().is_some_and(|n| n > 0), "{c}");
        assert_eq!(c["etag"]["supported"], true);
        assert_eq!(c["bulk"]["supported"], true);
        assert_eq!(c["bulk"]["maxOperations"], 1000);
        assert_eq!(c["bulk"]["maxPayloadSize"], 16 * 1024 * 1024);
        assert_eq!(
            c["pagination"],
            json!({"cursor": true, "index": true, "defaultPaginationMethod": "index", "defaultPageSize": 100,
                   "maxPageSize": 1000, "cursorTimeout": 3600})
        );
        assert_eq!(c["sort"]["supported"], true);
        assert_eq!(c["changePassword"]["supported"], false);
        let schemes = c["authenticationSchemes"].as_array().expect("authenticationSchemes");
        assert!(!schemes.is_empty());
        assert_eq!(schemes[0]["type"], "oauthbearertoken");
        assert!(schemes[0]["name"].is_string() && schemes[0]["description"].is_string());
        assert_eq!(r.header("content-type").as_deref(), Some("application/scim+json"));
    }
);

backend_test!(
    async fn resource_types_list_user_and_group(app = TestApp::scim_api) {
        let list = app.get_ok("/ResourceTypes").await;
        assert_eq!(list["totalResults"], 2);
        let types = list["Resources"].as_array().unwrap();
        let user = types.iter().find(|t| t["id"] == "User").expect("User type");
        assert_eq!(user["endpoint"], "/Users");
        assert_eq!(user["schema"], USER_URN);
        assert_eq!(user["schemaExtensions"], json!([{"schema": ENTERPRISE, "required": false}]));
        let group = types.iter().find(|t| t["id"] == "Group").expect("Group type");
        assert_eq!(group["endpoint"], "/Groups");
        assert_eq!(group["schema"], GROUP_URN);
        assert_eq!(&app.get_ok("/ResourceTypes/User").await, user);
        assert_eq!(&app.get_ok("/ResourceTypes/Group").await, group);
        app.get("/ResourceTypes/Printer").await.expect_error(404, None);
    }
);

backend_test!(
    async fn schemas_list_and_fetch_by_urn(app = TestApp::scim_api) {
        let list = app.get_ok("/Schemas").await;
        let ids: Vec<&str> = list["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        for urn in [USER_URN, ENTERPRISE, GROUP_URN] {
            assert!(ids.contains(&urn), "{urn} in {ids:?}");
            let s = app.get_ok(&format!("/Schemas/{urn}")).await;
            assert_eq!(s["id"], urn);
            assert!(s["attributes"].as_array().is_some_and(|a| !a.is_empty()));
        }
        app.get("/Schemas/urn:example:nope").await.expect_error(404, None);
    }
);

fn walk<'a>(attrs: &'a Value, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    for a in attrs.as_array().unwrap() {
        let name = format!("{prefix}{}", a["name"].as_str().unwrap());
        out.push((name.clone(), a));
        if let Some(sub) = a.get("subAttributes") {
            walk(sub, &format!("{name}."), out);
        }
    }
}

backend_test!(
    async fn every_attribute_carries_its_characteristics(app = TestApp::scim_api) {
        for urn in [USER_URN, ENTERPRISE, GROUP_URN] {
            let s = app.get_ok(&format!("/Schemas/{urn}")).await;
            let mut all = Vec::new();
            walk(&s["attributes"], "", &mut all);
            for (name, a) in all {
                for k in ["type", "multiValued", "required", "mutability", "returned"] {
                    assert!(a.get(k).is_some(), "{urn} {name} lacks {k}: {a}");
                }
                if matches!(a["type"].as_str(), Some("string" | "reference" | "binary")) {
                    assert!(a["caseExact"].is_boolean(), "{urn} {name} lacks caseExact: {a}");
                    assert!(a["uniqueness"].is_string(), "{urn} {name} lacks uniqueness: {a}");
                }
            }
        }
    }
);

backend_test!(
    async fn schema_attributes_say_what_the_server_does(app = TestApp::scim_api) {
        let user = app.get_ok(&format!("/Schemas/{USER_URN}")).await;
        let mut all = Vec::new();
        walk(&user["attributes"], "", &mut all);
        let get = |n: &str| all.iter().find(|(k, _)| k == n).unwrap_or_else(|| panic!("no {n}")).1.clone();
        let un = get("userName");
        assert_eq!((un["required"].clone(), un["caseExact"].clone(), un["uniqueness"].clone()), (json!(true), json!(false), json!("server")));
        let pw = get("password");
        assert_eq!((pw["mutability"].clone(), pw["returned"].clone()), (json!("writeOnly"), json!("never")));
        assert_eq!(get("groups")["mutability"], "readOnly");
        assert_eq!(get("emails")["multiValued"], true);
        let group = app.get_ok(&format!("/Schemas/{GROUP_URN}")).await;
        let mut g = Vec::new();
        walk(&group["attributes"], "", &mut g);
        let dn = g.iter().find(|(k, _)| k == "displayName").unwrap().1;
        assert_eq!(dn["uniqueness"], "server");
        assert!(g.iter().any(|(k, _)| k == "members.value"));
        let ent = app.get_ok(&format!("/Schemas/{ENTERPRISE}")).await;
        let mut e = Vec::new();
        walk(&ent["attributes"], "", &mut e);
        for n in ["employeeNumber", "department", "manager", "manager.value"] {
            assert!(e.iter().any(|(k, _)| k == n), "{n}");
        }
    }
);

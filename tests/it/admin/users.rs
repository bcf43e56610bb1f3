//! Moonborn users through the admin API: the listing, and the hand actions (manual invite,
//! sign-in, role edit, profile/status edit) with their validation, conflicts and audit rows.

use serde_json::{json, Value};

use crate::backend_test;
use crate::common::app::TestApp;

const USER_KEYS: &[&str] = &[
    "active_sessions",
    "contact_email",
    "display_name",
    "email",
    "id",
    "managed_by",
    "purge_after",
    "roles",
    "scim_id",
    "status",
];

async fn invite(app: &TestApp, email: &str, roles: Option<&[&str]>) -> Value {
    let mut body = json!({"email": email, "display_name": "Manual Person"});
    if let Some(r) = roles {
        body["roles"] = json!(r);
    }
    app.admin_post("/tenants/acme/users", &body).await.expect(201).clone()
}

fn path(u: &Value) -> String {
    format!("/tenants/acme/users/{}", u["id"].as_str().unwrap())
}

backend_test!(
    async fn a_manual_invite(app = TestApp::admin_api) {
        let u = invite(&app, "Mia@Acme.com", None).await;
        for k in USER_KEYS {
            assert!(u.get(*k).is_some(), "{k} missing in {u}");
        }
        assert_eq!(u["email"], "Mia@Acme.com");
        assert_eq!(u["display_name"], "Manual Person");
        assert_eq!(u["contact_email"], Value::Null);
        assert_eq!(u["status"], "active");
        assert_eq!(u["managed_by"], "manual");
        assert_eq!(u["scim_id"], Value::Null);
        assert_eq!(u["purge_after"], Value::Null);
        assert_eq!(u["active_sessions"], 0);
        // No roles given: the tenant's default role.
        assert_eq!(u["roles"], json!(["viewer"]));
        let v = invite(&app, "ops@acme.com", Some(&["billing", "admin", "billing"])).await;
        assert_eq!(v["roles"], json!(["admin", "billing"]));
        let w = app.admin_post("/tenants/acme/users", &json!({"email": "x@acme.com", "roles": [], "contact_email": "x@home.example"})).await;
        let w = w.expect(201);
        assert_eq!(w["roles"], json!([]));
        assert_eq!(w["contact_email"], "x@home.example");
        assert_eq!(app.admin_get(&path(&u)).await.expect(200), &u);
        // The audit trail records it, by the admin.
        let audit = app.admin_get(&format!("/tenants/acme/audit?user_id={}", u["id"].as_str().unwrap())).await;
        let entries = audit.expect(200)["entries"].as_array().unwrap().clone();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["actor"], "admin");
        assert_eq!(entries[0]["action"], "invite");
        assert_eq!(entries[0]["after"]["email"], "Mia@Acme.com");
    }
);

backend_test!(
    async fn invite_errors(app = TestApp::admin_api) {
        invite(&app, "mia@acme.com", None).await;
        let msg = app.admin_post("/tenants/acme/users", &json!({"email": "MIA@acme.COM"})).await.expect_admin_error(409);
        assert!(msg.contains("MIA@acme.COM"), "{msg}");
        for (body, needle) in [
            (json!({"email": "not-an-email"}), "email"),
            (json!({"email": ""}), "email"),
            (json!({"email": "a b@acme.com"}), "email"),
            (json!({"display_name": "No Email"}), "email"),
            (json!({"email": "r@acme.com", "roles": ["root"]}), "root"),
            (json!({"email": "r@acme.com", "roles": "admin"}), "invalid"),
            (json!({"email": "r@acme.com", "contact_email": "nope"}), "contact_email"),
            (json!({"email": "r@acme.com", "display_name": ""}), "display_name"),
            (json!({"email": "r@acme.com", "emial": "typo"}), "emial"),
        ] {
            let msg = app.admin_post("/tenants/acme/users", &body).await.expect_admin_error(400);
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        app.admin_post("/tenants/nope/users", &json!({"email": "a@b.c"})).await.expect_admin_error(404);
        let users = app.admin_get("/tenants/acme/users").await.expect(200)["users"].as_array().unwrap().len();
        assert_eq!(users, 1, "nothing stored by a refused request");
    }
);

backend_test!(
    async fn the_listing_is_ordered_by_email_and_filters_by_email(app = TestApp::admin_api) {
        for e in ["carol@acme.com", "Alice@acme.com", "bob@acme.com"] {
            invite(&app, e, None).await;
        }
        let list = app.admin_get("/tenants/acme/users").await.expect(200).clone();
        let emails: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
        assert_eq!(emails, ["Alice@acme.com", "bob@acme.com", "carol@acme.com"]);
        let one = app.user_by_email("ALICE@ACME.COM").await.expect("found case-insensitively");
        assert_eq!(one["email"], "Alice@acme.com");
        assert!(app.user_by_email("nobody@acme.com").await.is_none());
        app.admin_get("/tenants/acme/users/usr_nope").await.expect_admin_error(404);
        app.admin_get("/tenants/nope/users").await.expect_admin_error(404);
    }
);

backend_test!(
    async fn users_of_another_tenant_are_invisible(app = TestApp::admin_api) {
        app.admin_post("/tenants", &json!({"slug": "globex", "tier": "enterprise"})).await.expect(201);
        let g = app.admin_post("/tenants/globex/users", &json!({"email": "hank@globex.com"})).await.expect(201).clone();
        let id = g["id"].as_str().unwrap();
        app.admin_get(&format!("/tenants/acme/users/{id}")).await.expect_admin_error(404);
        app.admin_post_empty(&format!("/tenants/acme/users/{id}/sessions")).await.expect_admin_error(404);
        app.admin_put(&format!("/tenants/acme/users/{id}/roles"), &json!({"roles": []})).await.expect_admin_error(404);
        app.admin_patch(&format!("/tenants/acme/users/{id}"), &json!({"display_name": "X"})).await.expect_admin_error(404);
        assert!(app.admin_get("/tenants/acme/users").await.expect(200)["users"].as_array().unwrap().is_empty());
        // The same email may exist in two tenants.
        app.admin_post("/tenants/acme/users", &json!({"email": "hank@globex.com"})).await.expect(201);
    }
);

backend_test!(
    async fn sign_ins_count_as_active_sessions(app = TestApp::admin_api) {
        let u = invite(&app, "mia@acme.com", None).await;
        let s = app.admin_post_empty(&format!("{}/sessions", path(&u))).await.expect(201).clone();
        assert_eq!(s["user_id"], u["id"]);
        assert!(s["id"].is_string() && s["created_at"].is_string(), "{s}");
        app.admin_post_empty(&format!("{}/sessions", path(&u))).await.expect(201);
        let now = app.admin_get(&path(&u)).await.expect(200).clone();
        assert_eq!(now["active_sessions"], 2);
        assert!(now["version"].as_i64() > u["version"].as_i64(), "a sign-in bumps the version");
        let list = app.admin_get(&format!("{}/sessions", path(&u))).await.expect(200).clone();
        assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
        app.admin_post_empty("/tenants/acme/users/usr_nope/sessions").await.expect_admin_error(404);
        // A disabled user cannot sign in.
        app.admin_patch(&path(&u), &json!({"status": "disabled"})).await.expect(200);
        let msg = app.admin_post_empty(&format!("{}/sessions", path(&u))).await.expect_admin_error(409);
        assert!(msg.contains("disabled"), "{msg}");
    }
);

backend_test!(
    async fn role_edits(app = TestApp::admin_api) {
        let u = invite(&app, "mia@acme.com", None).await;
        let r = app.admin_put(&format!("{}/roles", path(&u)), &json!({"roles": ["editor", "admin"]})).await;
        let r = r.expect(200).clone();
        assert_eq!(r["roles"], json!(["admin", "editor"]));
        assert!(r["version"].as_i64() > u["version"].as_i64());
        let r = app.admin_put(&format!("{}/roles", path(&u)), &json!({"roles": []})).await;
        assert_eq!(r.expect(200)["roles"], json!([]));
        for (body, needle) in [
            (json!({"roles": ["god"]}), "god"),
            (json!({"roles": "admin"}), "invalid"),
            (json!({}), "roles"),
            (json!({"roles": [], "x": 1}), "x"),
        ] {
            let msg = app.admin_put(&format!("{}/roles", path(&u)), &body).await.expect_admin_error(400);
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        app.admin_put("/tenants/acme/users/usr_nope/roles", &json!({"roles": []})).await.expect_admin_error(404);
        let audit = app.admin_get(&format!("/tenants/acme/audit?user_id={}", u["id"].as_str().unwrap())).await;
        let entries = audit.expect(200)["entries"].as_array().unwrap().clone();
        let edits: Vec<&Value> = entries.iter().filter(|e| e["action"] == "set_roles").collect();
        assert_eq!(edits.len(), 2);
        assert_eq!(edits[0]["before"], json!({"roles": ["viewer"]}));
        assert_eq!(edits[0]["after"], json!({"roles": ["admin", "editor"]}));
        assert_eq!(edits[0]["actor"], "admin");
    }
);

backend_test!(
    async fn profile_and_status_edits(app = TestApp::admin_api) {
        let u = invite(&app, "mia@acme.com", None).await;
        let p = path(&u);
        let r = app.admin_patch(&p, &json!({"display_name": "Mia M.", "contact_email": "mia@home.example"})).await;
        let r = r.expect(200).clone();
        assert_eq!((r["display_name"].as_str(), r["contact_email"].as_str()), (Some("Mia M."), Some("mia@home.example")));
        assert_eq!(r["status"], "active");
        let r = app.admin_patch(&p, &json!({"contact_email": null})).await.expect(200).clone();
        assert_eq!(r["contact_email"], Value::Null);
        assert_eq!(r["display_name"], "Mia M.", "absent fields stay");
        // Disabling signs the user out; enabling again keeps old sessions revoked.
        app.admin_post_empty(&format!("{p}/sessions")).await.expect(201);
        let r = app.admin_patch(&p, &json!({"status": "disabled"})).await.expect(200).clone();
        assert_eq!((r["status"].as_str(), r["active_sessions"].as_i64()), (Some("disabled"), Some(0)));
        let r = app.admin_patch(&p, &json!({"status": "active"})).await.expect(200).clone();
        assert_eq!((r["status"].as_str(), r["active_sessions"].as_i64()), (Some("active"), Some(0)));
        for (body, needle) in [
            (json!({"status": "deleted"}), "status"),
            (json!({"status": "purged"}), "status"),
            (json!({"status": true}), "invalid"),
            (json!({"display_name": ""}), "display_name"),
            (json!({"contact_email": "not mail"}), "contact_email"),
            (json!({"email": "new@acme.com"}), "email"),
            (json!({}), "nothing to change"),
        ] {
            let msg = app.admin_patch(&p, &body).await.expect_admin_error(400);
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        app.admin_patch("/tenants/acme/users/usr_nope", &json!({"display_name": "X"})).await.expect_admin_error(404);
        let audit = app.admin_get(&format!("/tenants/acme/audit?user_id={}", u["id"].as_str().unwrap())).await;
        let edits = audit.expect(200)["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "edit").count();
        assert_eq!(edits, 4);
    }
);

backend_test!(
    async fn the_listing_pages_in_email_order(app = TestApp::admin_api) {
        // Byte order of the lower-cased email, whatever the database's collation: "a-b" sorts
        // before "ab" ('-' < 'b'), which a locale collation that skips punctuation would not do.
        for e in ["ab@acme.com", "A-B@acme.com", "zed@acme.com", "Mid@acme.com", "a.b@acme.com"] {
            invite(&app, e, None).await;
        }
        let all = app.admin_get("/tenants/acme/users").await.expect(200).clone();
        let emails = |v: &Value| -> Vec<String> {
            v["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(emails(&all), ["A-B@acme.com", "a.b@acme.com", "ab@acme.com", "Mid@acme.com", "zed@acme.com"]);
        assert_eq!(all["next"], Value::Null, "a page that is not full is the last");
        // Pages of two, each starting after the previous page's `next`.
        let mut paged: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let page = app.admin_get(&format!("/tenants/acme/users?limit=2{q}")).await.expect(200).clone();
            pages += 1;
            let got = emails(&page);
            assert!(got.len() <= 2, "{page}");
            paged.extend(got);
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(paged, emails(&all));
        assert_eq!(pages, 3);
        // A full page has a next even when nothing follows: the next page is then empty.
        let first = app.admin_get("/tenants/acme/users?limit=1").await.expect(200).clone();
        let after_first = first["next"].as_str().unwrap().to_string();
        let rest = app.admin_get(&format!("/tenants/acme/users?limit=4&after={after_first}")).await.expect(200).clone();
        assert_eq!(emails(&rest), emails(&all)[1..]);
        let n = rest["next"].as_str().unwrap().to_string();
        let empty = app.admin_get(&format!("/tenants/acme/users?after={n}")).await.expect(200).clone();
        assert_eq!(empty, json!({"users": [], "next": null}));
        // The email filter pages too, with a cursor.
        let one = app.admin_get("/tenants/acme/users?email=MID@ACME.COM&limit=1").await.expect(200).clone();
        assert_eq!(emails(&one), ["Mid@acme.com"]);
        let one_next = one["next"].as_str().unwrap();
        let past = app.admin_get(&format!("/tenants/acme/users?email=mid@acme.com&after={one_next}")).await.expect(200).clone();
        assert_eq!(past, json!({"users": [], "next": null}));
        for bad in ["limit=0", "limit=10001", "limit=x", "after=usr_nope", "after=%2F%2F", "after="] {
            app.admin_get(&format!("/tenants/acme/users?{bad}")).await.expect_admin_error(400);
        }
        // A cursor is a position: users added before it are not listed after it, those added
        // after it are.
        invite(&app, "a+@acme.com", None).await;
        invite(&app, "aa@acme.com", None).await;
        let later = app.admin_get(&format!("/tenants/acme/users?after={after_first}")).await.expect(200).clone();
        assert_eq!(emails(&later), ["a.b@acme.com", "aa@acme.com", "ab@acme.com", "Mid@acme.com", "zed@acme.com"]);
    }
);

backend_test!(
    async fn hostile_emails_are_refused_as_the_scim_api_refuses_them(app = TestApp::admin_api) {
        let u = invite(&app, "jos\u{E9}@acme.com", None).await;
        let hostile = [
            "u@acme.example\nBcc: x@evil.example".to_string(),
            "u@acme\t.example".to_string(),
            "u@acme.example\u{202E}lpmaxe".to_string(),
            "u\u{200B}@acme.example".to_string(),
            " u@acme.example ".to_string(),
            format!("{}@acme.example", "u".repeat(1_000_000)),
        ];
        for v in &hostile {
            let msg = app.admin_post("/tenants/acme/users", &json!({"email": v})).await.expect_admin_error(400);
            assert!(msg.starts_with("email ") && msg.len() < 200, "{msg}");
            let body = json!({"email": "ok@acme.com", "contact_email": v});
            let msg = app.admin_post("/tenants/acme/users", &body).await.expect_admin_error(400);
            assert!(msg.contains("contact_email"), "{msg}");
            let msg = app.admin_patch(&path(&u), &json!({"contact_email": v})).await.expect_admin_error(400);
            assert!(msg.contains("contact_email"), "{msg}");
        }
        // The NFD twin of a sign-in email is the same sign-in email.
        app.admin_post("/tenants/acme/users", &json!({"email": "JOSE\u{301}@acme.com"})).await.expect_admin_error(409);
        let found = app.user_by_email("jose\u{301}@ACME.com").await.expect("found by the NFD form");
        assert_eq!(found["id"], u["id"]);
        let users = app.admin_get("/tenants/acme/users").await.expect(200)["users"].as_array().unwrap().len();
        assert_eq!(users, 1, "nothing stored by a refused request");
        assert_eq!(app.admin_get(&path(&u)).await.expect(200)["contact_email"], u["contact_email"]);
    }
);

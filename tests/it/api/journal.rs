//! The desired-state record: every acknowledged write appends one intent-journal row and bumps the
//! tenant's generation, in the same transaction; failed writes leave no trace.

use moonborn_scim::store::JournalEntry;
use reqwest::Method;
use serde_json::json;

use super::support::*;
use crate::backend_test;
use crate::common::app::TestApp;

fn rows(j: &[JournalEntry]) -> Vec<(String, String, String)> {
    j.iter().map(|e| (e.resource_type.clone(), e.resource_id.clone(), e.op.clone())).collect()
}

fn row(t: &str, id: &str, op: &str) -> (String, String, String) {
    (t.to_string(), id.to_string(), op.to_string())
}

/// Asserts that `f` leaves the journal and generation as they were.
async fn unchanged(app: &TestApp, before: (usize, i64), what: &str) {
    assert_eq!(app.journal().await.len(), before.0, "journal after {what}");
    assert_eq!(app.generation().await, before.1, "generation after {what}");
}

backend_test!(
    async fn user_writes_are_journaled_and_bump_the_generation(app = TestApp::scim_api) {
        let g0 = app.generation().await;
        let u = app.create_user("j@example.com").await;
        let id = id_of(&u);
        app.put(&user_path(&u), &json!({"schemas": [USER_URN], "userName": "j@example.com"})).await.expect(200);
        app.patch_ops(&user_path(&u), json!([{"op": "replace", "path": "title", "value": "t"}])).await.expect(200);
        app.delete(&user_path(&u)).await.expect(204);
        let j = app.journal().await;
        assert_eq!(
            rows(&j),
            vec![row("User", &id, "create"), row("User", &id, "replace"), row("User", &id, "patch"), row("User", &id, "delete")]
        );
        assert_eq!(app.generation().await, g0 + 4);
        for e in &j {
            assert!(chrono::DateTime::parse_from_rfc3339(&e.at).is_ok(), "at: {}", e.at);
            assert!(!e.request_id.is_empty());
        }
        assert!(j.windows(2).all(|w| w[0].seq < w[1].seq));
    }
);

backend_test!(
    async fn group_writes_are_journaled_and_bump_the_generation(app = TestApp::scim_api) {
        let u = app.create_user("m@example.com").await;
        let g0 = app.generation().await;
        let n0 = app.journal().await.len();
        let g = app.create_group("J", &[]).await;
        let id = id_of(&g);
        app.put(&group_path(&g), &json!({"schemas": [GROUP_URN], "displayName": "J2"})).await.expect(200);
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": id_of(&u)}]}]))
            .await
            .expect(204);
        app.delete(&group_path(&g)).await.expect(204);
        let j = app.journal().await;
        let group_rows: Vec<_> = rows(&j[n0..]).into_iter().filter(|r| r.0 == "Group").collect();
        assert_eq!(
            group_rows,
            // A PUT that changes displayName is journaled as a rename: it re-evaluates every member.
            vec![row("Group", &id, "create"), row("Group", &id, "rename"), row("Group", &id, "patch"), row("Group", &id, "delete")]
        );
        assert_eq!(app.generation().await, g0 + 4, "one generation per acknowledged write");
    }
);

backend_test!(
    /// A group whose name binds a role (the bundled bindings); a member change of an unbound
    /// group journals only the group on SQLite (tests/it/journal.rs).
    async fn a_membership_change_also_journals_the_member(app = TestApp::scim_api) {
        let u = app.create_user("m@example.com").await;
        let uid = id_of(&u);
        let g = app.create_group("moonborn-editor", &[]).await;
        let n0 = app.journal().await.len();
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]))
            .await
            .expect(204);
        let j = app.journal().await;
        let mut new = rows(&j[n0..]);
        new.sort();
        assert_eq!(new, vec![row("Group", &id_of(&g), "patch"), row("User", &uid, "membership")]);
        assert!(j[n0..].iter().all(|e| e.request_id == j[n0].request_id), "one request, one request id");
        // Removing the group removes the membership: the member is journaled again.
        let n1 = j.len();
        app.delete(&group_path(&g)).await.expect(204);
        let mut new = rows(&app.journal().await[n1..]);
        new.sort();
        assert_eq!(new, vec![row("Group", &id_of(&g), "delete"), row("User", &uid, "membership")]);
    }
);

backend_test!(
    async fn the_request_id_is_journaled(app = TestApp::scim_api) {
        let r = app
            .send_as(
                &app.token,
                Method::POST,
                "/Users",
                Some(&json!({"schemas": [USER_URN], "userName": "rid@example.com"})),
                &[("x-request-id", "req-abc-123")],
            )
            .await;
        r.expect(201);
        assert_eq!(r.header("x-request-id").as_deref(), Some("req-abc-123"));
        assert_eq!(app.journal().await.last().unwrap().request_id, "req-abc-123");
    }
);

backend_test!(
    async fn reads_are_not_journaled(app = TestApp::scim_api) {
        let u = app.create_user("r@example.com").await;
        let before = (app.journal().await.len(), app.generation().await);
        app.get(&user_path(&u)).await.expect(200);
        app.get("/Users").await.expect(200);
        app.post("/.search", &json!({"schemas": [SEARCH_URN]})).await.expect(200);
        unchanged(&app, before, "reads").await;
    }
);

backend_test!(
    async fn failed_writes_append_nothing(app = TestApp::scim_api) {
        let u = app.create_user("taken@example.com").await;
        let other = app.create_user("other@example.com").await;
        let g = app.create_group("Taken", &[]).await;
        let g2 = app.create_group("Other", &[]).await;
        let before = (app.journal().await.len(), app.generation().await);
        // 409
        app.post("/Users", &json!({"schemas": [USER_URN], "userName": "TAKEN@example.com"})).await.expect(409);
        app.put(&user_path(&other), &json!({"schemas": [USER_URN], "userName": "taken@example.com"})).await.expect(409);
        app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": "taken"})).await.expect(409);
        app.put(&group_path(&g2), &json!({"schemas": [GROUP_URN], "displayName": "TAKEN"})).await.expect(409);
        unchanged(&app, before, "409s").await;
        // 400
        app.post("/Users", &json!({"schemas": [USER_URN]})).await.expect(400);
        app.post("/Users", &json!({"schemas": [USER_URN], "userName": "x@example.com", "active": "maybe"})).await.expect(400);
        app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": "G", "members": [{"value": 7}]}))
            .await
            .expect(400);
        app.patch_ops(&user_path(&u), json!([{"op": "remove"}])).await.expect(400);
        app.patch_ops(&group_path(&g), json!([{"op": "add", "path": "members", "value": [{"display": "no value"}]}]))
            .await
            .expect(400);
        unchanged(&app, before, "400s").await;
        // 412
        let stale = [("if-match", "W/\"999\"")];
        let put = json!({"schemas": [USER_URN], "userName": "taken@example.com", "title": "x"});
        app.send_as(&app.token, Method::PUT, &user_path(&u), Some(&put), &stale).await.expect(412);
        app.send_as(&app.token, Method::DELETE, &user_path(&u), None, &stale).await.expect(412);
        app.send_as(&app.token, Method::DELETE, &group_path(&g), None, &stale).await.expect(412);
        unchanged(&app, before, "412s").await;
        // 404
        app.delete("/Users/ghost").await.expect(404);
        app.put("/Groups/ghost", &json!({"schemas": [GROUP_URN], "displayName": "x"})).await.expect(404);
        unchanged(&app, before, "404s").await;
    }
);

backend_test!(
    /// The controller reads the journal after its cursor, so a row must never become visible
    /// behind a position a reader has already seen. Creates (group-committed in batches) and
    /// replaces and deletes (a transaction each) race while a reader follows the journal the
    /// controller's way; every row must reach it.
    async fn a_reader_following_the_journal_misses_no_row_under_concurrent_writes(app = TestApp::scim_api) {
        let tenant = app.acme_id().await;
        let mut existing = Vec::new();
        for i in 0..40 {
            existing.push(app.create_user(&format!("old{i}@example.com")).await);
        }
        let start = app.journal().await.last().map_or(0, |e| e.seq);
        let done = std::sync::atomic::AtomicBool::new(false);
        let writes = async {
            let creates = (0..160).map(|i| {
                let body = json!({"schemas": [USER_URN], "userName": format!("new{i}@example.com")});
                let app = &app;
                async move { app.post("/Users", &body).await.expect(201).clone() }
            });
            let others = existing.iter().enumerate().map(|(i, u)| {
                let app = &app;
                async move {
                    if i % 2 == 0 {
                        let body = json!({"schemas": [USER_URN], "userName": format!("old{i}@example.com"), "title": "t"});
                        app.put(&user_path(u), &body).await.expect(200);
                    } else {
                        app.delete(&user_path(u)).await.expect(204);
                    }
                }
            });
            futures_util::future::join(futures_util::future::join_all(creates), futures_util::future::join_all(others))
                .await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let follow = async {
            let (mut cursor, mut seen) = (start, Vec::new());
            loop {
                let last_round = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = app.store.journal(tenant, cursor, 50).await.expect("journal");
                if let Some(e) = page.last() {
                    cursor = e.seq;
                }
                let empty = page.is_empty();
                seen.extend(page.into_iter().map(|e| e.seq));
                if last_round && empty {
                    return seen;
                }
                if empty {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        };
        let ((), seen) = futures_util::future::join(writes, follow).await;
        let all: Vec<i64> = app.journal().await.into_iter().map(|e| e.seq).filter(|&s| s > start).collect();
        assert_eq!(all.len(), 200, "one row per write");
        assert_eq!(seen, all, "the reader missed rows that landed behind its cursor");
    }
);

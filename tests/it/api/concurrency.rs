//! Races: the database decides uniqueness, and concurrent member changes all land.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use serde_json::json;

use super::support::*;
use crate::backend_test;
use crate::common::app::Backend;

backend_test!(
    async fn twenty_concurrent_creates_of_one_user_name_give_one_201_and_nineteen_409s(app = TestApp::scim_api) {
        let reqs = (0..20).map(|i| {
            // Same userName in different cases: uniqueness is case-insensitive.
            let name = if i % 2 == 0 { "Race@Example.com" } else { "race@example.COM" };
            let body = json!({"schemas": [USER_URN], "userName": name});
            let app = &app;
            async move { app.post("/Users", &body).await }
        });
        let results = join_all(reqs).await;
        let mut created = 0;
        for r in &results {
            match r.status.as_u16() {
                201 => created += 1,
                409 => r.expect_error(409, Some("uniqueness")),
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        assert_eq!(created, 1);
        assert_eq!(app.get_ok("/Users").await["totalResults"], 1);
    }
);

backend_test!(
    async fn concurrent_creates_of_one_group_name_give_one_201(app = TestApp::scim_api) {
        let reqs = (0..10).map(|_| {
            let app = &app;
            async move { app.post("/Groups", &json!({"schemas": [GROUP_URN], "displayName": "Racers"})).await }
        });
        let results = join_all(reqs).await;
        let codes: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!(codes.iter().filter(|&&c| c == 201).count(), 1, "{codes:?}");
        assert!(codes.iter().all(|&c| c == 201 || c == 409), "{codes:?}");
    }
);

backend_test!(
    async fn fifty_concurrent_member_adds_all_land(app = TestApp::scim_api) {
        let g = app.create_group("Crowd", &[]).await;
        let mut users = Vec::new();
        for i in 0..50 {
            users.push(id_of(&app.create_user(&format!("m{i}@example.com")).await));
        }
        let gp = group_path(&g);
        let reqs = users.iter().map(|uid| {
            let (app, gp) = (&app, &gp);
            async move { app.patch_ops(gp, json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])).await }
        });
        for r in join_all(reqs).await {
            r.expect(204);
        }
        assert_eq!(member_ids(&app.get_ok(&gp).await), users.iter().cloned().collect());
    }
);

backend_test!(
    async fn concurrent_removes_and_adds_all_land(app = TestApp::scim_api) {
        let mut users = Vec::new();
        for i in 0..20 {
            users.push(id_of(&app.create_user(&format!("m{i}@example.com")).await));
        }
        let initial: Vec<&str> = users[..10].iter().map(String::as_str).collect();
        let g = app.create_group("Churn", &initial).await;
        let gp = group_path(&g);
        let reqs = users.iter().enumerate().map(|(i, uid)| {
            let (app, gp) = (&app, &gp);
            let ops = if i < 10 {
                json!([{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}])
            } else {
                json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])
            };
            async move { app.patch_ops(gp, ops).await }
        });
        for r in join_all(reqs).await {
            r.expect(204);
        }
        assert_eq!(member_ids(&app.get_ok(&gp).await), users[10..].iter().cloned().collect());
    }
);

backend_test!(
    async fn a_concurrent_rename_and_member_adds_both_land(app = TestApp::scim_api) {
        let g = app.create_group("Before", &[]).await;
        let mut users = Vec::new();
        for i in 0..10 {
            users.push(id_of(&app.create_user(&format!("r{i}@example.com")).await));
        }
        let gp = group_path(&g);
        let mut reqs: Vec<_> = users
            .iter()
            .map(|uid| json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]))
            .collect();
        reqs.insert(5, json!([{"op": "replace", "value": {"id": id_of(&g), "displayName": "After"}}]));
        let futs = reqs.into_iter().map(|ops| {
            let (app, gp) = (&app, &gp);
            async move { app.patch_ops(gp, ops).await }
        });
        for r in join_all(futs).await {
            r.expect(204);
        }
        let got = app.get_ok(&gp).await;
        assert_eq!(got["displayName"], "After");
        assert_eq!(member_ids(&got), users.iter().cloned().collect());
    }
);

backend_test!(
    async fn concurrent_patches_of_one_user_are_all_applied(app = TestApp::scim_api) {
        let u = app.create_user("busy@example.com").await;
        let up = user_path(&u);
        let attrs = ["title", "nickName", "displayName", "locale", "timezone", "userType", "preferredLanguage"];
        let futs = attrs.iter().map(|a| {
            let (app, up) = (&app, &up);
            async move { app.patch_ops(up, json!([{"op": "add", "path": a, "value": format!("v-{a}")}])).await }
        });
        for r in join_all(futs).await {
            r.expect(200);
        }
        let got = app.get_ok(&up).await;
        for a in attrs {
            assert_eq!(got[a], format!("v-{a}"), "{a}");
        }
    }
);

backend_test!(
    async fn concurrent_creates_mixing_duplicates_and_new_names_lose_nothing(app = TestApp::scim_api) {
        // On SQLite these land in shared group-commit batches: a duplicate in a batch must be
        // answered 409 and roll back alone, without disturbing the creates around it.
        let reqs = (0..64).map(|i| {
            let body = json!({"schemas": [USER_URN], "userName": format!("mix{}@example.com", i / 2),
                "emails": [{"value": format!("mix{}@example.com", i / 2), "primary": true}]});
            let app = &app;
            async move { app.post("/Users", &body).await }
        });
        let results = join_all(reqs).await;
        let mut created = Vec::new();
        for r in &results {
            match r.status.as_u16() {
                201 => created.push(r.body["userName"].as_str().expect("userName").to_string()),
                409 => r.expect_error(409, Some("uniqueness")),
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        created.sort();
        let expected: Vec<String> = {
            let mut v: Vec<String> = (0..32).map(|i| format!("mix{i}@example.com")).collect();
            v.sort();
            v
        };
        assert_eq!(created, expected, "one 201 per distinct userName");
        assert_eq!(app.get_ok("/Users?count=0").await["totalResults"], 32);
        // Each created user is findable by its email and has exactly one journal row.
        let found = app.get_ok("/Users?filter=emails.value%20eq%20%22mix7@example.com%22").await;
        assert_eq!(found["totalResults"], 1);
        let creates = app.journal().await.iter().filter(|e| e.op == "create").count();
        assert_eq!(creates, 32);
    }
);

backend_test!(
    async fn concurrent_member_patches_naming_unknown_members_apply_the_known_ones(app = TestApp::scim_api) {
        // Batched with the other PATCHes around them (group commit on both backends): a PATCH
        // naming an unknown member after a valid one adds the valid one and drops the other,
        // journaled on its group; the others all land too.
        let groups = [app.create_group("moonborn-editor", &[]).await, app.create_group("Plain", &[]).await];
        let mut users = Vec::new();
        for i in 0..24 {
            users.push(id_of(&app.create_user(&format!("p{i}@example.com")).await));
        }
        let (n0, g0) = (app.journal().await.len(), app.generation().await);
        let reqs = users.iter().enumerate().map(|(i, uid)| {
            let gp = group_path(&groups[i % 2]);
            let mut value = vec![json!({"value": uid})];
            if i % 3 == 0 {
                value.push(json!({"value": format!("ghost-{i}")}));
            }
            let app = &app;
            async move { app.patch_ops(&gp, json!([{"op": "add", "path": "members", "value": value}])).await }
        });
        let results = join_all(reqs).await;
        let mut want: [BTreeSet<String>; 2] = Default::default();
        for (i, r) in results.iter().enumerate() {
            r.expect(204);
            want[i % 2].insert(users[i].clone());
        }
        for (g, want) in groups.iter().zip(&want) {
            assert_eq!(&member_ids(&app.get_ok(&group_path(g)).await), want);
        }
        assert_eq!(app.generation().await, g0 + 24, "one generation per PATCH");
        let j = app.journal().await;
        let patches = j[n0..].iter().filter(|e| e.resource_type == "Group" && e.op == "patch").count();
        assert_eq!(patches, 24, "one journal row per PATCH");
        let dropped: BTreeSet<String> =
            j[n0..].iter().filter_map(|e| e.op.strip_prefix("dropped_member ").map(str::to_string)).collect();
        let ghosts: BTreeSet<String> = (0..24).filter(|i| i % 3 == 0).map(|i| format!("ghost-{i}")).collect();
        assert_eq!(dropped, ghosts);
        // Members are journaled (for the bound group always; on PostgreSQL for both).
        let journaled: BTreeSet<String> =
            j[n0..].iter().filter(|e| e.op == "membership").map(|e| e.resource_id.clone()).collect();
        assert!(want[0].is_subset(&journaled), "{journaled:?}");
    }
);

backend_test!(
    async fn a_member_deleted_while_a_patch_adds_it_leaves_no_membership_behind(app = TestApp::scim_api) {
        // The PATCH checks that the member exists; a concurrent DELETE of that member must
        // either be seen by the check (400) or remove the membership with it (the PATCH's 204
        // then came first). Neither may fail, and no group may keep a member that is gone. The
        // PATCHes share batches with unrelated creates, which must all land.
        for round in 0..25 {
            let child = app.create_group(&format!("child{round}"), &[]).await;
            let user = app.create_user(&format!("gone{round}@example.com")).await;
            let parent = app.create_group(&format!("parent{round}"), &[&id_of(&child), &id_of(&user)]).await;
            let other = app.create_group(&format!("other{round}"), &[]).await;
            let stays = [
                app.create_user(&format!("stays{round}a@example.com")).await,
                app.create_user(&format!("stays{round}b@example.com")).await,
            ];
            let add = |g: &serde_json::Value, member: &serde_json::Value| {
                let (path, body) = (
                    group_path(g),
                    json!([{"op": "add", "path": "members", "value": [{"value": id_of(member)}]}]),
                );
                let app = &app;
                async move { app.patch_ops(&path, body).await }
            };
            let parent_path = group_path(&parent);
            let remove = app.patch_ops(
                &parent_path,
                json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", id_of(&child))}]),
            );
            let creates = join_all((0..20).map(|i| {
                let body = json!({"schemas": [USER_URN], "userName": format!("bystander{round}-{i}@example.com")});
                let app = &app;
                async move { app.post("/Users", &body).await }
            }));
            let deletes = async {
                tokio::time::sleep(std::time::Duration::from_micros(200 * (round % 8))).await;
                let g = app.delete(&group_path(&child)).await;
                let u = app.delete(&user_path(&user)).await;
                (g, u)
            };
            // Member adds to both groups around the deletes, so batches lock both of them.
            let (add_group, add_user, removed, stay_a, stay_b, created, (del_g, del_u)) = tokio::join!(
                add(&other, &child),
                add(&other, &user),
                remove,
                add(&parent, &stays[0]),
                add(&other, &stays[1]),
                creates,
                deletes
            );
            stay_a.expect(204);
            stay_b.expect(204);
            for r in [&add_group, &add_user] {
                match r.status.as_u16() {
                    204 => {}
                    400 => r.expect_error(400, Some("invalidValue")),
                    s => panic!("a member add answered {s}: {}", r.body),
                }
            }
            removed.expect(204);
            del_g.expect(204);
            del_u.expect(204);
            for c in &created {
                c.expect(201);
            }
            let members = member_ids(&app.get_ok(&group_path(&other)).await);
            assert_eq!(members, set([id_of(&stays[1])]), "round {round}: a deleted member is still listed");
            let members = member_ids(&app.get_ok(&group_path(&parent)).await);
            assert_eq!(members, set([id_of(&stays[0])]), "round {round}: a deleted member is still listed");
        }
    }
);

backend_test!(
    async fn reads_that_lose_their_connection_are_read_again_never_a_500(app = TestApp::scim_api) {
        // PostgreSQL only: its backends terminated (pg_terminate_backend) under the reads.
        if app.backend == Backend::Sqlite {
            return;
        }
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(id_of(&app.create_user(&format!("r{i}@acme.example")).await));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = {
            let (url, stop) = (app.db_url.clone(), stop.clone());
            tokio::spawn(async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
                let mut killed = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = sqlx::query_scalar::<_, i64>(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .fetch_one(&mut c)
                    .await;
                    let Ok(n) = n else { break };
                    killed += n;
                    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
                }
                killed
            })
        };
        let mut counts = std::collections::BTreeMap::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut i = 0;
        while std::time::Instant::now() < until {
            let id = &ids[i % ids.len()];
            let path = match i % 3 {
                0 => format!("/Users/{id}"),
                1 => format!("/Users?{}", filter_q(&format!("userName eq \"r{}@acme.example\"", i % 10))),
                _ => "/Users?count=5".to_string(),
            };
            let r = app.get(&path).await;
            *counts.entry(r.status.as_u16()).or_insert(0) += 1;
            assert!(matches!(r.status.as_u16(), 200 | 503), "GET {path}: {} {}", r.status, r.body);
            i += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let killed = killer.await.expect("killer");
        eprintln!("answers {counts:?}; backends terminated: {killed}");
        assert!(killed > 0, "no backend was terminated");
        assert!(counts.get(&200).copied().unwrap_or(0) > 0, "{counts:?}");
    }
);

//! RFC 9865 cursor paging on `/Users`, `/Groups` and `.search`.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use super::support::*;
use crate::backend_test;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

/// Creates `n` users `{prefix}{i}@example.com` through /Bulk; their ids.
async fn seed(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"),
                            "data": {"schemas": [USER_URN], "userName": format!("{prefix}{i}@example.com")}})
            })
            .collect();
        let r = app.post("/Bulk", &json!({"schemas": [BULK_REQUEST], "Operations": ops})).await;
        for op in r.expect(200)["Operations"].as_array().unwrap() {
            assert_eq!(op["status"], "201", "{op}");
            ids.push(op["location"].as_str().unwrap().rsplit('/').next().unwrap().to_string());
        }
    }
    ids
}

/// Walks `path` (with `?` or `&` for more parameters) by cursor, `count` a page: the ids in
/// walk order.
async fn walk(app: &TestApp, path: &str, count: usize) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    for _ in 0..100_000 {
        let r = app.send(Method::GET, &format!("{path}{sep}count={count}&cursor={}", enc(&cursor)), None).await;
        let body = r.expect(200);
        assert!(body.get("startIndex").is_none(), "a cursor page has no startIndex: {body}");
        let page = body["Resources"].as_array().unwrap();
        assert!(page.len() <= count);
        seen.extend(page.iter().map(id_of));
        match body["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return seen,
        }
    }
    panic!("the walk did not end");
}

backend_test!(
    async fn a_walk_sees_every_user_present_throughout_exactly_once(app = TestApp::scim_api) {
        let originals = seed(&app, "walk", 10_000).await;
        // Another client creates and deletes while the walk goes on: new users, and every
        // 50th original.
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (c, base, token) = (app.client.clone(), app.base.clone(), app.token.clone());
            let (stop, originals) = (stop.clone(), originals.clone());
            tokio::spawn(async move {
                let send = |m: Method, path: String, body: Option<Value>| {
                    let mut rb = c.request(m, format!("{base}{path}")).bearer_auth(&token);
                    if let Some(b) = body {
                        rb = rb.header("content-type", "application/scim+json").body(b.to_string());
                    }
                    rb.send()
                };
                let mut deleted = HashSet::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let u = json!({"schemas": [USER_URN], "userName": format!("churn{n}@example.com")});
                    let r = send(Method::POST, "/Users".into(), Some(u)).await.unwrap();
                    assert_eq!(r.status(), 201);
                    let created: Value = r.json().await.unwrap();
                    if n % 2 == 0 {
                        let r = send(Method::DELETE, format!("/Users/{}", id_of(&created)), None).await.unwrap();
                        assert_eq!(r.status(), 204);
                    }
                    if let Some(id) = originals.get(n * 50) {
                        let r = send(Method::DELETE, format!("/Users/{id}"), None).await.unwrap();
                        assert_eq!(r.status(), 204);
                        deleted.insert(id.clone());
                    }
                    n += 1;
                }
                deleted
            })
        };
        let seen = walk(&app, "/Users?attributes=userName", 700).await;
        stop.store(true, Ordering::Relaxed);
        let deleted = churn.await.unwrap();
        assert!(!deleted.is_empty(), "the churn ran during the walk");
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no resource repeated");
        let missing: Vec<&String> = originals.iter().filter(|id| !deleted.contains(*id) && !unique.contains(id)).collect();
        assert!(missing.is_empty(), "{} users present throughout were skipped", missing.len());
    }
);

backend_test!(
    async fn cursors_are_tamper_evident_bound_to_their_query_and_cover_search(app = TestApp::scim_api) {
        let users: BTreeSet<String> = seed(&app, "c", 25).await.into_iter().collect();
        let g1 = app.create_group("One", &[]).await;
        let g2 = app.create_group("Two", &[]).await;
        let r = app.send(Method::GET, "/Users?count=10&cursor=", None).await;
        let body = r.expect(200).clone();
        assert_eq!(body["totalResults"], 25);
        assert_eq!(body["itemsPerPage"], 10);
        let next = body["nextCursor"].as_str().unwrap().to_string();

        // A forged or altered cursor, and one used with another filter.
        for bad in ["bm90LWEtY3Vyc29y.AAAA".to_string(), format!("{next}x"), next.replacen('.', "A.", 1)] {
            let r = app.send(Method::GET, &format!("/Users?count=10&cursor={}", enc(&bad)), None).await;
            r.expect_error(400, Some("invalidCursor"));
        }
        let other = enc("userName sw \"c1\"");
        let r = app.send(Method::GET, &format!("/Users?filter={other}&cursor={}", enc(&next)), None).await;
        r.expect_error(400, Some("invalidCursor"));
        let r = app.send(Method::GET, &format!("/Groups?cursor={}", enc(&next)), None).await;
        r.expect_error(400, Some("invalidCursor"));
        app.send(Method::GET, "/Users?cursor=&startIndex=2", None).await.expect_error(400, Some("invalidValue"));

        // A filtered walk, /Users/.search, /Groups and the root .search (Users, then Groups).
        let f = enc("userName sw \"c1\"");
        let seen: BTreeSet<String> = walk(&app, &format!("/Users?filter={f}"), 3).await.into_iter().collect();
        assert_eq!(seen.len(), 11, "c1 and c10..c19");
        let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 20, "cursor": ""});
        let page = app.post("/Users/.search", &search).await.expect(200).clone();
        assert_eq!(page["Resources"].as_array().unwrap().len(), 20);
        assert!(page["nextCursor"].is_string());
        let groups: BTreeSet<String> = walk(&app, "/Groups", 1).await.into_iter().collect();
        assert_eq!(groups, [id_of(&g1), id_of(&g2)].into_iter().collect());
        let (mut all, mut cursor) = (Vec::new(), String::new());
        loop {
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 7, "cursor": cursor});
            let page = app.post("/.search", &body).await.expect(200).clone();
            assert_eq!(page["totalResults"], 27);
            all.extend(page["Resources"].as_array().unwrap().iter().map(id_of));
            match page["nextCursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        let expected: BTreeSet<String> = users.iter().cloned().chain([id_of(&g1), id_of(&g2)]).collect();
        assert_eq!(all.len(), 27, "{all:?}");
        assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), expected);

        let spc = app.get_ok("/ServiceProviderConfig").await;
        assert_eq!(spc["pagination"]["cursor"], true);
        assert_eq!(spc["pagination"]["index"], true);
    }
);

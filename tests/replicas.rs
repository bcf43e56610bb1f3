//! Two replicas on one PostgreSQL database, 32 concurrent clients split across them, one replica
//! SIGKILLed mid-run: no acknowledged push is lost, no user is duplicated, every member is
//! present, Moonborn converges, and every user gets exactly one welcome email.
//!
//! Runs when the tests are built with `MOONBORN_TEST_POSTGRES_URL` set (it is in `.ci/run`);
//! reported as ignored otherwise.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moonborn_scim::controller::{Controller, Target};
use moonborn_scim::Tier;
use serde_json::{json, Value};

use common::fresh_db::{Backend, FreshDb};

const BIN: &str = env!("CARGO_BIN_EXE_moonborn-scim");
const CLIENTS: usize = 32;
const OPS_PER_CLIENT: usize = 24;

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    /// A failing test never leaves a replica running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db: &str) -> Replica {
    let mut child = Command::new(BIN)
        .args(["--database-url", db, "serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a replica");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let line = lines.next().expect("replica log").expect("read log");
        if let Some(i) = line.find("serving SCIM at http://") {
            break line[i + "serving SCIM at http://".len()..].split('/').next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "replica did not start");
    };
    // Keep draining the log so the replica never blocks on a full pipe; its warnings and errors
    // go to the test's output (shown when the test fails).
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("panicked") {
                eprintln!("replica: {line}");
            }
        }
    });
    Replica { child, base: format!("http://{addr}/v1/auth/scim/v2") }
}

/// What the clients were told succeeded.
#[derive(Default)]
struct Acks {
    users: HashMap<String, String>, // scim id -> userName
    members: HashSet<String>,       // scim ids acknowledged as added to the group
    deactivated: HashSet<String>,
    dup_wins: HashMap<String, usize>, // contested userName -> number of 201s
}

async fn send(
    client: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let r = client
        .request(method, url)
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let text = r.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn two_replicas_one_killed_mid_run() {
    // Dropped (with the database) when the test ends.
    let mut fresh = FreshDb::new(Backend::Postgres, "replicas").await;
    let db = fresh.url.clone();

    let store = fresh.open_store().await;
    let tenant = store.create_tenant("acme", Tier::Enterprise).await.unwrap();
    let token = store.create_token("acme").await.unwrap().1;
    // A quarter of the users are deactivated on purpose: the safety valve must not hold that.
    let off = moonborn_scim::domain::Safety { enabled: false, ..Default::default() };
    store.set_safety(tenant.id, off, "test").await.unwrap();
    let a = start(&db);
    let mut b = start(&db);
    let bases = [a.base.clone(), b.base.clone()];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let group = send(&client, &token, reqwest::Method::POST, &format!("{}/Groups", bases[0]),
        &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "moonborn-editor", "members": []}))
        .await
        .expect("group create");
    assert_eq!(group.0, 201);
    let gid = group.1["id"].as_str().unwrap().to_string();

    let acks = Arc::new(Mutex::new(Acks::default()));
    let b_dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (client, token, bases, gid, acks, b_dead) =
            (client.clone(), token.clone(), bases.clone(), gid.clone(), acks.clone(), b_dead.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..OPS_PER_CLIENT {
                // Half the clients start on each replica; once B is dead, everyone uses A.
                let pick = |n: usize| if b_dead.load(std::sync::atomic::Ordering::SeqCst) { 0 } else { n % 2 };
                let base = &bases[pick(i + k)];
                // Pairs of clients race to create the same userName every 6th op.
                let user_name =
                    if k % 6 == 0 { format!("dup-{}-{k}@acme.com", i / 2) } else { format!("u{i}-{k}@acme.com") };
                let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name,
                    "name": {"givenName": "U", "familyName": format!("{i}-{k}")}, "active": true});
                let Some((status, created)) =
                    send(&client, &token, reqwest::Method::POST, &format!("{base}/Users"), &body).await
                else {
                    continue; // not acknowledged (the replica died under it)
                };
                assert!(status == 201 || status == 409, "create answered {status}: {created}");
                if k % 6 == 0 {
                    *acks.lock().unwrap().dup_wins.entry(user_name.clone()).or_default() += usize::from(status == 201);
                }
                if status != 201 {
                    continue;
                }
                let id = created["id"].as_str().unwrap().to_string();
                acks.lock().unwrap().users.insert(id.clone(), user_name);
                // Add it to the shared group through the other replica.
                let other = &bases[pick(i + k + 1)];
                let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
                if let Some((s, body)) =
                    send(&client, &token, reqwest::Method::PATCH, &format!("{other}/Groups/{gid}"), &add).await
                {
                    assert_eq!(s, 204, "member add: {body}");
                    acks.lock().unwrap().members.insert(id.clone());
                }
                if k % 4 == 3 {
                    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "value": {"active": false}}]});
                    if let Some((s, body)) =
                        send(&client, &token, reqwest::Method::PATCH, &format!("{base}/Users/{id}"), &off).await
                    {
                        assert_eq!(s, 200, "deactivate: {body}");
                        acks.lock().unwrap().deactivated.insert(id);
                    }
                }
            }
        }));
    }
    // Kill B once a third of the work is acknowledged.
    let target = CLIENTS * OPS_PER_CLIENT / 3;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acks.lock().unwrap().users.len() < target {
        assert!(Instant::now() < deadline, "clients made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.child.kill().expect("SIGKILL replica B");
    b.child.wait().ok();
    b_dead.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client task");
    }
    let acks = Arc::try_unwrap(acks).ok().unwrap().into_inner().unwrap();
    assert!(acks.users.len() > target, "work continued after the kill");

    // Every acknowledged push is there.
    for (id, user_name) in &acks.users {
        let doc = store.get_user(tenant.id, id).await.unwrap_or_else(|_| panic!("acknowledged user {user_name} lost"));
        assert_eq!(doc.doc_value().unwrap()["userName"], user_name.as_str());
    }
    for (name, wins) in &acks.dup_wins {
        assert!(*wins <= 1, "{name} created {wins} times");
    }
    let members: HashSet<String> = store.group_member_ids(tenant.id, &gid).await.unwrap().into_iter().collect();
    for id in &acks.members {
        assert!(members.contains(id), "acknowledged member {id} missing");
    }

    // Replica A converges the Moonborn state (after B's lease expires).
    let controller = Controller::new(store.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = controller.plan(&tenant, Target::Full).await.expect("plan");
        if p.changes.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not converged: {}", p.summary.line());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scim_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scim_users WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, email_lc, status FROM users WHERE tenant_id = $1")
            .bind(tenant.id)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len() as i64, scim_users, "one Moonborn user per SCIM user");
    let emails: HashSet<&String> = rows.iter().map(|r| &r.1).collect();
    assert_eq!(emails.len(), rows.len(), "no duplicate user");
    let roles: Vec<(String, String)> = sqlx::query_as("SELECT user_id, role FROM user_roles WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_all(store.pool())
        .await
        .unwrap();
    let editors: HashSet<&String> = roles.iter().filter(|r| r.1 == "editor").map(|r| &r.0).collect();
    assert_eq!(editors.len(), members.len(), "every group member holds the bound role");
    let status: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT scim_id, status FROM users WHERE tenant_id = $1 AND scim_id IS NOT NULL",
    )
    .bind(tenant.id)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    for id in &acks.deactivated {
        assert_eq!(status.get(id).map(String::as_str), Some("disabled"), "acknowledged deactivation of {id}");
    }
    let events = store.list_outbox(tenant.id).await.unwrap();
    let mut welcomes: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.event_type == "user.provisioned") {
        *welcomes.entry(e.user_id.as_str()).or_default() += 1;
    }
    assert!(welcomes.values().all(|n| *n == 1), "a user welcomed twice");
    for r in rows.iter().filter(|r| r.2 == "active") {
        assert_eq!(welcomes.get(r.0.as_str()), Some(&1), "active user {} has its welcome", r.1);
    }
    eprintln!(
        "{} users acknowledged ({} before the kill), {} members, {} deactivated; converged",
        acks.users.len(),
        target,
        acks.members.len(),
        acks.deactivated.len()
    );

    let mut a = a;
    a.child.kill().ok();
    a.child.wait().ok();
    store.close().await;
}

/// Two replicas group-commit member PATCHes of the same groups, sent in opposite orders: each
/// replica's batch locks the groups it changes, and batches of two processes that locked them
/// in different orders would deadlock (PostgreSQL then aborts one after a second: a 500). Every
/// PATCH must be answered 204 and land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn two_replicas_patching_the_same_groups_in_opposite_orders_never_deadlock() {
    let mut fresh = FreshDb::new(Backend::Postgres, "replicas").await;
    let db = fresh.url.clone();
    let store = fresh.open_store().await;
    store.create_tenant("acme", Tier::Enterprise).await.unwrap();
    let token = store.create_token("acme").await.unwrap().1;
    let (a, b) = (start(&db), start(&db));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let post = |path: &str, body: Value| {
        let (client, token, url) = (client.clone(), token.clone(), format!("{}{path}", a.base));
        async move { send(&client, &token, reqwest::Method::POST, &url, &body).await.expect("answer") }
    };
    let mut groups = Vec::new();
    for g in 0..6 {
        let (s, v) = post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": format!("g{g}")}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        groups.push(v["id"].as_str().unwrap().to_string());
    }
    let mut users = Vec::new();
    for u in 0..48 {
        let (s, v) = post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("m{u}@acme.com")}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        users.push(v["id"].as_str().unwrap().to_string());
    }
    // 24 clients per replica; on replica A client c walks the groups upwards from c, on B
    // downwards, each PATCH adding one user to one group.
    let mut tasks = Vec::new();
    for (r, base) in [a.base.clone(), b.base.clone()].into_iter().enumerate() {
        for c in 0..24 {
            let (client, token, base, groups, users) =
                (client.clone(), token.clone(), base.clone(), groups.clone(), users.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for k in 0..groups.len() {
                    let g = if r == 0 { (c + k) % groups.len() } else { (c + groups.len() * 4 - k) % groups.len() };
                    let user = &users[r * 24 + c];
                    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "add", "path": "members", "value": [{"value": user}]}]});
                    let url = format!("{base}/Groups/{}", groups[g]);
                    let (s, v) = send(&client, &token, reqwest::Method::PATCH, &url, &body).await.expect("answer");
                    out.push((s, v, g, user.clone()));
                }
                out
            }));
        }
    }
    let mut want: Vec<HashSet<String>> = vec![HashSet::new(); groups.len()];
    for t in tasks {
        for (s, v, g, user) in t.await.unwrap() {
            assert_eq!(s, 204, "PATCH of group {g} answered {s}: {v}");
            want[g].insert(user);
        }
    }
    for (g, id) in groups.iter().enumerate() {
        let got: HashSet<String> = store
            .members_of(store.tenant("acme").await.unwrap().id, &[id.as_str()])
            .await
            .unwrap()
            .into_values()
            .flatten()
            .map(|m| m.value)
            .collect();
        assert_eq!(got, want[g], "members of group {g}");
    }
    drop((a, b));
}

/// A user delete locks the user's groups before the user (the order a batch takes them in).
/// While it waits for a batch that share-locked the user to check it, that batch commits the
/// user's membership of a group the delete did not lock; then another batch locks that group
/// and waits for one the delete holds. The delete must not take the new group out of order
/// (a deadlock: one of them would fail) but start over with both locked. The two "batches"
/// are raw transactions taking the batch writer's locks, so the interleaving is forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn a_user_delete_that_waited_for_a_membership_takes_its_new_group_in_order() {
    use moonborn_scim::store::{Intent, MemberRef};
    use sqlx::Row as _;
    let mut fresh = FreshDb::new(Backend::Postgres, "replicas").await;
    let store = fresh.open_store().await;
    let t = store.create_tenant("acme", Tier::Enterprise).await.unwrap().id;
    let now = moonborn_scim::domain::now();
    let it = Intent { tenant_id: t, request_id: "test", now: &now };
    let user = |name: &str| {
        let (store, it, name) = (store.clone(), Intent { ..it }, name.to_string());
        async move {
            let id = moonborn_scim::domain::new_resource_id();
            let doc = moonborn_scim::scim::schema::normalize(
                moonborn_scim::scim::schema::Kind::User,
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}),
            )
            .unwrap();
            store.insert_user(&it, &id, &doc).await.unwrap();
            id
        }
    };
    let u = user("u@acme.com").await;
    let mut groups = Vec::new();
    for name in ["g1", "g2"] {
        let id = moonborn_scim::domain::new_resource_id();
        let doc = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name});
        store.insert_group(&it, &id, &doc, &[]).await.unwrap();
        groups.push(id);
    }
    // ga < gb in the database's order; the user starts in gb only.
    let sorted: Vec<String> = sqlx::query("SELECT id FROM scim_groups ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect();
    let (ga, gb) = (sorted[0].clone(), sorted[1].clone());
    let m = MemberRef { value: u.clone(), member_type: None, display: None };
    store
        .update_group(&it, &gb, None, None, &[moonborn_scim::store::MemberChange::Add(vec![m])], "patch")
        .await
        .unwrap();
    fn lock(ids: Vec<String>) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>> {
        let ids = serde_json::Value::from(ids).to_string();
        sqlx::query(
            "SELECT 1 AS x FROM scim_groups WHERE id IN (SELECT value FROM json_array_elements_text(CAST($1 AS json))) \
             ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(ids)
    }
    let waiting = |n: i64| lock_waiters(store.pool().clone(), n);
    // Batch A: locks ga, share-locks the user (a member check).
    let mut a = store.pool().begin().await.unwrap();
    lock(vec![ga.clone()]).fetch_all(&mut *a).await.unwrap();
    sqlx::query("SELECT 1 AS x FROM scim_users WHERE id = $1 FOR KEY SHARE").bind(&u).fetch_all(&mut *a).await.unwrap();
    // The delete locks gb, then waits for A on the user.
    let del = {
        let (store, u, now) = (store.clone(), u.clone(), now.clone());
        tokio::spawn(async move {
            store.delete_user(&Intent { tenant_id: t, request_id: "del", now: &now }, &u, None).await
        })
    };
    waiting(1).await;
    // Batch B wants ga (A holds it), then gb (the delete holds it).
    let b = {
        let (pool, ids) = (store.pool().clone(), vec![ga.clone(), gb.clone()]);
        tokio::spawn(async move {
            let mut b = pool.begin().await?;
            lock(ids).fetch_all(&mut *b).await?;
            b.commit().await
        })
    };
    waiting(2).await;
    // A adds the user to ga and commits: B takes ga and waits for gb; the delete goes on.
    sqlx::query(
        "INSERT INTO scim_group_members (tenant_id, group_id, member_id, member_type) VALUES ($1, $2, $3, 'User')",
    )
    .bind(t)
    .bind(&ga)
    .bind(&u)
    .execute(&mut *a)
    .await
    .unwrap();
    a.commit().await.unwrap();
    let (d, b) = (del.await.unwrap(), b.await.unwrap());
    assert!(d.is_ok(), "the delete failed: {d:?}");
    assert!(b.is_ok(), "the other batch failed: {b:?}");
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM scim_group_members WHERE member_id = $1")
        .bind(&u)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(left, 0, "the deleted user is still a member");
}

/// Waits (at most 10 s) until `n` sessions of this database wait for a lock.
async fn lock_waiters(pool: sqlx::AnyPool, n: i64) {
    use sqlx::Row as _;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
        if w >= n {
            return;
        }
        assert!(Instant::now() < deadline, "nobody waited for a lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A write that PostgreSQL picks as a deadlock's victim (and rolls back) is run again once the
/// other side has gone on, instead of failing the request. The other side here is a raw
/// transaction that locks the tenant's row (which the write takes last), then the user's row
/// (which the write took first); it checks for deadlocks only after 30 s, so the write, waiting
/// since before, is the one PostgreSQL aborts. PostgreSQL checks a wait for a deadlock once,
/// `deadlock_timeout` after it began; the store's sessions get 2 s here (the default is 1 s), so that the cycle is
/// closed well before the write's check even on a stalling machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn a_write_chosen_as_a_deadlock_victim_is_run_again() {
    use moonborn_scim::store::Intent;
    use sqlx::{Connection as _, Row as _};
    let mut fresh = FreshDb::new(Backend::Postgres, "replicas").await;
    let mut admin = sqlx::PgConnection::connect(&fresh.url).await.unwrap();
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET deadlock_timeout = ''2s''', current_database()); END $$",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    drop(admin);
    let store = fresh.open_store().await;
    let t = store.create_tenant("acme", Tier::Enterprise).await.unwrap().id;
    let now = moonborn_scim::domain::now();
    let it = Intent { tenant_id: t, request_id: "test", now: &now };
    let user = |title: &str| {
        moonborn_scim::scim::schema::normalize(
            moonborn_scim::scim::schema::Kind::User,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "u@acme.com", "title": title}),
        )
        .unwrap()
    };
    let id = moonborn_scim::domain::new_resource_id();
    let v1 = store.insert_user(&it, &id, &user("one")).await.unwrap().version;
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '30s'").execute(&mut *other).await.unwrap();
    sqlx::query("UPDATE tenants SET generation = generation WHERE id = $1").bind(t).execute(&mut *other).await.unwrap();
    let put = {
        let (store, id, now, doc) = (store.clone(), id.clone(), now.clone(), user("two"));
        tokio::spawn(async move {
            store.update_user(&Intent { tenant_id: t, request_id: "put", now: &now }, &id, &doc, v1, "replace").await
        })
    };
    // The write has its user row and waits for the tenant's; now wait for its user row.
    lock_waiters(store.pool().clone(), 1).await;
    let locked =
        sqlx::query("SELECT id FROM scim_users WHERE id = $1 FOR UPDATE").bind(&id).fetch_all(&mut *other).await;
    assert!(locked.is_ok(), "the raw transaction was the deadlock's victim: {:?}", locked.err());
    other.commit().await.unwrap();
    let put = put.await.unwrap();
    let stored = put.unwrap_or_else(|e| panic!("the write failed instead of being run again: {e:?}"));
    assert_eq!(stored.version, v1 + 1);
    let title: String = sqlx::query("SELECT doc FROM scim_users WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get("doc");
    assert!(title.contains("\"two\""), "the write was not stored once: {title}");
    let journaled: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM intent_journal WHERE resource_id = $1 AND op = 'replace'")
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get("n");
    assert_eq!(journaled, 1, "the write was journaled {journaled} times");
}

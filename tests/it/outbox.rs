//! Webhook delivery of the outbox to a real receiver on loopback, driven by the controller on a
//! real store: SQLite always, PostgreSQL too when `MOONBORN_TEST_POSTGRES_URL` is set (a fresh
//! database per test).
//!
//! Checks: one signed `user.provisioned` per user with an `Idempotency-Key`; retries with backoff
//! until the receiver answers 2xx, then exactly one delivery with the attempts recorded; a receiver
//! that is down leaves events pending, never dropped; no second welcome, ever; a deactivation
//! queues exactly one `user.deactivated` and revokes every session.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use moonborn_scim::controller::{Controller, RunOutcome, Target, Trigger};
use moonborn_scim::domain::user_id_for;
use moonborn_scim::outbox::{self, parse_secrets, WebhookConfig};
use moonborn_scim::scim::schema::{normalize, Kind};
use moonborn_scim::store::{Intent, OutboxEvent, Tenant};
use moonborn_scim::Store;
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::backend_test;
use crate::common::fresh_db::{Backend, FreshDb};

/// A Standard Webhooks secret (`whsec_` + base64 of 32 bytes).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/v1Ze+g9tXU=";
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A store per test, on either backend
// ---------------------------------------------------------------------------------------------

struct Db {
    store: Store,
    tenant: Tenant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Dropped last (after the tasks are stopped): closes the store, then drops the database.
    _db: FreshDb,
}

impl Db {
    async fn open(backend: Backend) -> Db {
        let (db, store, tenant) = FreshDb::with_tenant(backend, "outbox").await;
        Db { store, tenant, tasks: Vec::new(), _db: db }
    }

    fn intent<'a>(&self, now: &'a str) -> Intent<'a> {
        Intent { tenant_id: self.tenant.id, request_id: "test", now }
    }

    /// Pushes a SCIM user into the desired state; returns its SCIM id.
    async fn push_user(&self, user_name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = moonborn_scim::domain::now();
        self.store.insert_user(&self.intent(&now), &id, &user_doc(user_name, true)).await.expect("insert user");
        id
    }

    async fn set_active(&self, scim_id: &str, user_name: &str, active: bool) {
        let cur = self.store.get_user(self.tenant.id, scim_id).await.expect("get user");
        let now = moonborn_scim::domain::now();
        self.store
            .update_user(&self.intent(&now), scim_id, &user_doc(user_name, active), cur.version, "replace")
            .await
            .expect("update user");
    }

    async fn reconcile(&self) -> RunOutcome {
        Controller::new(self.store.clone())
            .reconcile(&self.tenant, Trigger::Operator, Target::Full, moonborn_scim::controller::Approval::None)
            .await
            .expect("reconcile")
    }

    async fn outbox(&self) -> Vec<OutboxEvent> {
        self.store.list_outbox(self.tenant.id).await.expect("list outbox")
    }

    async fn events(&self, ty: &str) -> Vec<OutboxEvent> {
        self.outbox().await.into_iter().filter(|e| e.event_type == ty).collect()
    }

    /// Starts the delivery worker (stopped when the test ends).
    fn start_worker(&mut self, url: &str) {
        let cfg = WebhookConfig {
            url: url.to_string(),
            secrets: parse_secrets(SECRET).expect("a valid secret"),
            extra_roots: Vec::new(),
            poll: Duration::from_millis(50),
        };
        self.tasks.push(tokio::spawn(outbox::run(self.store.clone(), cfg)));
    }

    async fn sign_in(&self, user_id: &str) {
        sqlx::query("INSERT INTO sessions (id, tenant_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(self.tenant.id)
            .bind(user_id)
            .bind(moonborn_scim::domain::now())
            .execute(self.store.pool())
            .await
            .expect("insert session");
    }

    async fn live_sessions(&self, user_id: &str) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(self.tenant.id)
            .bind(user_id)
            .fetch_one(self.store.pool())
            .await
            .expect("count sessions")
            .try_get("n")
            .expect("n")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn user_doc(user_name: &str, active: bool) -> Value {
    normalize(
        Kind::User,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "name": {"givenName": "Given", "familyName": user_name.split('@').next().unwrap_or_default()},
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "active": active
        }),
    )
    .expect("a valid user")
}

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered.
    status: StatusCode,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
}

impl Receiver {
    fn all(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
    /// The requests answered 2xx.
    fn accepted(&self) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.status.is_success()).collect()
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut got = r.got.lock().expect("lock");
    let status = if got.len() < r.fail_first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    got.push(Received { headers, body, status });
    status
}

/// Serves a receiver on `listener`; returns its URL and the server task.
fn serve(listener: tokio::net::TcpListener, r: Receiver) -> (String, tokio::task::JoinHandle<()>) {
    let url = format!("http://{}/hooks/moonborn", listener.local_addr().expect("addr"));
    let app = Router::new().route("/hooks/moonborn", post(hook)).with_state(r);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (url, task)
}

async fn receiver(fail_first: usize) -> (Receiver, String, tokio::task::JoinHandle<()>) {
    let r = Receiver { fail_first, ..Receiver::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (url, task) = serve(listener, r.clone());
    (r, url, task)
}

/// Polls `f` until it gives `Some`, at most `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Checks a delivery with the Standard Webhooks reference implementation.
fn verify(r: &Received) {
    standardwebhooks::Webhook::new(SECRET)
        .expect("secret")
        .verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("the signature does not verify: {e}; headers {:?}", r.headers));
    assert_eq!(r.header("webhook-id"), r.json()["id"], "webhook-id is the event id");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

backend_test!(
    async fn one_signed_welcome_per_user(db = Db::open) {
        let names = ["ann@acme.com", "ben@acme.com", "cat@acme.com"];
        let mut scim_ids = Vec::new();
        for n in names {
            scim_ids.push(db.push_user(n).await);
        }
        let run = db.reconcile().await;
        assert_eq!(run.status, "applied");
        assert_eq!(run.applied, 3);
        // Queued in the same transactions as the creates, before any worker runs.
        let queued = db.events("user.provisioned").await;
        assert_eq!(queued.len(), 3);
        assert!(queued.iter().all(|e| e.status == "pending" && e.attempts == 0));

        let (rx, url, _server) = receiver(0).await;
        db.start_worker(&url);
        let got = eventually("three deliveries", || {
            let rx = rx.clone();
            async move { Some(rx.accepted()).filter(|g| g.len() >= 3) }
        })
        .await;
        assert_eq!(got.len(), 3);
        let events = eventually("the outbox marked delivered", || async {
            Some(db.outbox().await).filter(|es| es.iter().all(|e| e.status == "delivered"))
        })
        .await;

        let mut seen_users = Vec::new();
        for r in &got {
            let body = r.json();
            let ev = events.iter().find(|e| e.id == body["id"]).expect("the body names its event");
            assert_eq!(body["type"], "user.provisioned");
            assert_eq!(r.header("x-moonborn-event"), "user.provisioned");
            assert_eq!(r.header("idempotency-key"), ev.idempotency_key);
            assert!(!ev.idempotency_key.is_empty());
            assert!(r.header("content-type").starts_with("application/json"));
            verify(r);
            assert_eq!(body["user_id"], ev.user_id.as_str());
            assert_eq!(body["tenant_id"], db.tenant.id);
            assert_eq!(body["data"]["user_id"], ev.user_id.as_str());
            assert_eq!(body["data"]["status"], "active");
            assert_eq!(body["data"]["roles"], json!(["viewer"]));
            assert_eq!(ev.attempts, 1);
            assert!(ev.delivered_at.is_some());
            seen_users.push((body["data"]["email"].as_str().unwrap_or_default().to_string(), ev.user_id.clone()));
        }
        seen_users.sort();
        let mut want: Vec<(String, String)> =
            names.iter().zip(&scim_ids).map(|(n, s)| (n.to_string(), user_id_for(s))).collect();
        want.sort();
        assert_eq!(seen_users, want);
        let keys: std::collections::HashSet<&str> = got.iter().map(|r| r.header("idempotency-key")).collect();
        assert_eq!(keys.len(), 3, "one key per event");

        // A tampered body does not verify; the old signature header is gone.
        let wh = standardwebhooks::Webhook::new(SECRET).expect("secret");
        assert!(wh.verify(b"{\"type\":\"user.provisioned\"}", &got[0].headers).is_err());
        assert!(got[0].headers.get("x-moonborn-signature").is_none());
    }
);

backend_test!(
    async fn failing_receiver_gets_the_event_once_it_recovers(db = Db::open) {
        db.push_user("dan@acme.com").await;
        db.reconcile().await;
        let (rx, url, _server) = receiver(3).await;
        db.start_worker(&url);
        // Backoff is 0.5–1 s, 1–2 s, 2–4 s: at most 7 s to the fourth attempt.
        let ev = eventually("delivery after three failures", || async {
            db.events("user.provisioned").await.into_iter().find(|e| e.status == "delivered")
        })
        .await;
        assert_eq!(ev.attempts, 4);
        assert_eq!(ev.last_error, None);
        let all = rx.all();
        assert_eq!(all.len(), 4, "three failures then one success");
        assert_eq!(all.iter().filter(|r| r.status.is_success()).count(), 1);
        // Every attempt carries the same key and the same signed body.
        for r in &all {
            assert_eq!(r.header("idempotency-key"), ev.idempotency_key);
            assert_eq!(r.body, all[0].body);
            assert_eq!(r.header("webhook-id"), all[0].header("webhook-id"));
            verify(r);
        }
        // Delivered exactly once: a few more poll rounds bring nothing new.
        let before = rx.all().len();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rx.all().len(), before, "redelivered after success");
        assert_eq!(db.outbox().await.len(), 1);
    }
);

backend_test!(
    async fn receiver_down_leaves_events_pending_then_delivers(db = Db::open) {
        db.push_user("eve@acme.com").await;
        db.reconcile().await;
        // A port nobody listens on (for now).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let url = format!("http://{addr}/hooks/moonborn");
        db.start_worker(&url);
        let ev = eventually("two failed attempts", || async {
            db.events("user.provisioned").await.into_iter().find(|e| e.attempts >= 2)
        })
        .await;
        assert_eq!(ev.status, "pending", "never dropped");
        assert!(ev.last_error.as_deref().is_some_and(|e| !e.is_empty()), "the failure is recorded: {ev:?}");
        assert!(ev.delivered_at.is_none());
        assert!(chrono::DateTime::parse_from_rfc3339(&ev.next_attempt_at).is_ok());

        // The receiver comes back on the same address: the event goes out.
        let rx = Receiver::default();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the receiver's port");
        let (_, _server) = serve(listener, rx.clone());
        let ev = eventually("delivery after the receiver is back", || async {
            db.events("user.provisioned").await.into_iter().find(|e| e.status == "delivered")
        })
        .await;
        assert!(ev.attempts >= 3);
        assert_eq!(rx.accepted().len(), 1);
        assert_eq!(rx.accepted()[0].header("idempotency-key"), ev.idempotency_key);
    }
);

backend_test!(
    async fn no_second_welcome_and_one_deactivation_with_sessions_revoked(db = Db::open) {
        let fay = db.push_user("fay@acme.com").await;
        let gus = db.push_user("gus@acme.com").await;
        assert_eq!(db.reconcile().await.applied, 2);
        let uid = user_id_for(&fay);
        db.sign_in(&uid).await;
        db.sign_in(&uid).await;
        db.sign_in(&user_id_for(&gus)).await;
        assert_eq!(db.live_sessions(&uid).await, 2);

        // Reconciling again changes nothing and queues nothing.
        let again = db.reconcile().await;
        assert_eq!(again.status, "noop", "{:?}", again.plan.changes);
        assert_eq!(db.outbox().await.len(), 2);

        // Deactivate fay: one user.deactivated, every session revoked; gus untouched.
        db.set_active(&fay, "fay@acme.com", false).await;
        let run = db.reconcile().await;
        assert_eq!(run.applied, 1);
        assert_eq!(db.events("user.deactivated").await.len(), 1);
        assert_eq!(db.events("user.deactivated").await[0].user_id, uid);
        assert_eq!(db.live_sessions(&uid).await, 0);
        assert_eq!(db.live_sessions(&user_id_for(&gus)).await, 1);
        assert_eq!(db.reconcile().await.status, "noop");
        assert_eq!(db.events("user.deactivated").await.len(), 1, "a rerun queues no second deactivation");

        // Reactivate: enabled again, old sessions stay revoked, and still one welcome.
        db.set_active(&fay, "fay@acme.com", true).await;
        assert_eq!(db.reconcile().await.applied, 1);
        assert_eq!(db.live_sessions(&uid).await, 0);
        let welcomes = db.events("user.provisioned").await;
        assert_eq!(welcomes.iter().filter(|e| e.user_id == uid).count(), 1, "one welcome per user, ever");

        // Deleted in the IdP, then created again with the same userName within grace: restored,
        // no second welcome.
        let now = moonborn_scim::domain::now();
        db.store.delete_user(&db.intent(&now), &fay, None).await.expect("delete");
        let run = db.reconcile().await;
        assert_eq!(run.plan.summary.delete, 1, "{}", run.plan.summary.line());
        assert_eq!(db.events("user.deleted").await.len(), 1);
        let fay2 = db.push_user("fay@acme.com").await;
        let run = db.reconcile().await;
        assert_eq!(run.plan.summary.restore, 1, "{}", run.plan.summary.line());
        assert_eq!(run.plan.changes[0].user_id, uid, "the same Moonborn user");
        assert_ne!(fay2, fay);
        assert_eq!(db.events("user.restored").await.len(), 1);
        assert_eq!(db.events("user.provisioned").await.iter().filter(|e| e.user_id == uid).count(), 1);
        assert_eq!(db.reconcile().await.status, "noop");

        // Everything queued reaches the receiver once, welcome included.
        let (rx, url, _server) = receiver(0).await;
        db.start_worker(&url);
        let total = db.outbox().await.len();
        eventually("all delivered", || async {
            Some(()).filter(|_| rx.accepted().len() >= total)
        })
        .await;
        eventually("the outbox marked delivered", || async {
            Some(db.outbox().await).filter(|es| es.iter().all(|e| e.status == "delivered"))
        })
        .await;
        let types: Vec<String> = rx.accepted().iter().map(|r| r.json()["type"].as_str().unwrap_or_default().to_string()).collect();
        let count = |t: &str| types.iter().filter(|x| *x == t).count();
        assert_eq!(count("user.provisioned"), 2, "{types:?}");
        assert_eq!(count("user.deactivated"), 1, "{types:?}");
        assert_eq!(count("user.deleted"), 1, "{types:?}");
        assert_eq!(count("user.restored"), 1, "{types:?}");
        let deact = rx.accepted().into_iter().find(|r| r.json()["type"] == "user.deactivated").expect("deactivated");
        assert_eq!(deact.json()["user_id"], uid.as_str());
        assert_eq!(deact.json()["data"]["status"], "disabled");
        verify(&deact);
    }
);

backend_test!(
    /// BUG (expected to fail): the IdP deletes bob (soft-deleted here, keeping bob@ for the 30-day
    /// grace) and renames alice to bob@. alice's update clashes with the deleted user's email on
    /// the unique index: every run reports it stale and the plan never empties (until the purge).
    async fn rename_onto_a_soft_deleted_users_email_converges(db = Db::open) {
        let alice = db.push_user("alice@acme.com").await;
        let bob = db.push_user("bob@acme.com").await;
        db.reconcile().await;
        let now = moonborn_scim::domain::now();
        db.store.delete_user(&db.intent(&now), &bob, None).await.expect("delete bob");
        db.reconcile().await;
        let cur = db.store.get_user(db.tenant.id, &alice).await.expect("alice");
        db.store
            .update_user(&db.intent(&now), &alice, &user_doc("bob@acme.com", true), cur.version, "replace")
            .await
            .expect("rename alice");
        let mut stale = Vec::new();
        for _ in 0..3 {
            stale.push(db.reconcile().await.stale);
        }
        let left = Controller::new(db.store.clone()).plan(&db.tenant, Target::Full).await.expect("plan");
        assert!(left.changes.is_empty(), "stale per run {stale:?}; still planned: {}", left.summary.line());
    }
);

backend_test!(
    async fn tenant_held_and_released_are_delivered_once_per_hold(db = Db::open) {
        let off = moonborn_scim::domain::Safety {
            percent: 0,
            min_users: 1,
            settle_ms: 0,
            max_wait_ms: 0,
            ..Default::default()
        };
        db.store.set_safety(db.tenant.id, off, "test").await.expect("safety");
        let names: Vec<String> = (0..6).map(|i| format!("h{i}@acme.com")).collect();
        let mut ids = Vec::new();
        for n in &names {
            ids.push(db.push_user(n).await);
        }
        db.reconcile().await;
        let c = Controller::new(db.store.clone());
        let tenant = db.tenant.clone();
        let push_run = || async {
            c.reconcile(&tenant, Trigger::Push, Target::Incremental, moonborn_scim::controller::Approval::None)
                .await
                .expect("push run")
        };
        // Deactivations wait (the push's run), then the settled burst is judged: held.
        db.set_active(&ids[0], &names[0], false).await;
        db.set_active(&ids[1], &names[1], false).await;
        assert_eq!(push_run().await.status, "waiting");
        assert_eq!(push_run().await.status, "held");
        // More runs and more held changes refresh the hold; no second event.
        db.set_active(&ids[2], &names[2], false).await;
        assert_eq!(push_run().await.status, "held");
        assert_eq!(db.reconcile().await.status, "held");
        assert_eq!(db.events("tenant.held").await.len(), 1);
        let (rx, url, _server) = receiver(0).await;
        db.start_worker(&url);
        let held = eventually("tenant.held delivered", || {
            let rx = rx.clone();
            async move { rx.accepted().into_iter().find(|r| r.header("x-moonborn-event") == "tenant.held") }
        })
        .await;
        let body = held.json();
        verify(&held);
        assert_eq!((body["type"].as_str(), body["user_id"].clone()), (Some("tenant.held"), Value::Null));
        assert_eq!(body["data"]["tenant"], "acme");
        assert_eq!((body["data"]["deactivate"].as_u64(), body["data"]["delete"].as_u64()), (Some(2), Some(0)));
        // The IdP reverts: the whole-tenant run ends the hold.
        for i in 0..3 {
            db.set_active(&ids[i], &names[i], true).await;
        }
        push_run().await;
        db.reconcile().await;
        assert!(db.store.controller_state(db.tenant.id).await.expect("state").held_fingerprint.is_none());
        // A second hold is a second event.
        db.set_active(&ids[4], &names[4], false).await;
        push_run().await;
        assert_eq!(push_run().await.status, "held");
        let got = eventually("the second hold delivered", || {
            let rx = rx.clone();
            async move {
                let g = rx.accepted();
                let n = |t: &str| g.iter().filter(|r| r.header("x-moonborn-event") == t).count();
                (n("tenant.held") == 2 && n("tenant.released") == 1).then_some(g)
            }
        })
        .await;
        let released = got.iter().find(|r| r.header("x-moonborn-event") == "tenant.released").expect("released");
        assert_eq!(released.json()["data"]["how"], "reverted");
        let keys: std::collections::HashSet<&str> = got.iter().map(|r| r.header("idempotency-key")).collect();
        assert_eq!(keys.len(), got.len(), "one key per event");
        assert!(db.events("user.deactivated").await.is_empty(), "nothing destructive applied");
    }
);

backend_test!(
    /// A receiver that redirects: the redirect is not followed (a 3xx is a failed delivery, kept
    /// pending), and the target of the redirect never hears of the event.
    async fn a_redirect_from_the_receiver_is_not_followed(db = Db::open) {
        db.push_user("red@acme.com").await;
        db.reconcile().await;
        let (target, target_url, _t) = receiver(0).await;
        let hits = Arc::new(Mutex::new(0usize));
        let app = Router::new().route(
            "/hooks/moonborn",
            post({
                let hits = hits.clone();
                move || async move {
                    *hits.lock().expect("lock") += 1;
                    (StatusCode::TEMPORARY_REDIRECT, [("location", target_url)])
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks/moonborn", listener.local_addr().expect("addr"));
        let _server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        db.start_worker(&url);
        let ev = eventually("two redirected attempts", || async {
            db.events("user.provisioned").await.into_iter().find(|e| e.attempts >= 2)
        })
        .await;
        assert_eq!(ev.status, "pending");
        let err = ev.last_error.unwrap_or_default();
        assert!(err.contains("307") && err.contains("redirects are not followed"), "{err}");
        assert!(*hits.lock().expect("lock") >= 2);
        assert!(target.all().is_empty(), "the redirect was followed: {:?}", target.all());
    }
);

backend_test!(
    /// Issue 20: the receiver is down while 60 users are provisioned and then deactivated. Once
    /// it is back, every user's events arrive in the order they were written (provisioned, then
    /// deactivated), each exactly once, and delivery resumes at once: the first success makes
    /// every waiting event due instead of leaving each to its own backoff. Two workers deliver.
    async fn a_users_events_arrive_in_order_after_an_outage(db = Db::open) {
        const USERS: usize = 60;
        let off = moonborn_scim::domain::Safety { enabled: false, ..Default::default() };
        db.store.set_safety(db.tenant.id, off, "test").await.expect("safety off");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        // Two workers, as two replicas run them: their claims compete for the same events.
        db.start_worker(&format!("http://{addr}/hooks/moonborn"));
        db.start_worker(&format!("http://{addr}/hooks/moonborn"));

        let names: Vec<String> = (0..USERS).map(|i| format!("o{i}@acme.com")).collect();
        let mut ids = Vec::new();
        for n in &names {
            ids.push(db.push_user(n).await);
        }
        assert_eq!(db.reconcile().await.applied, USERS as u64);
        // The welcomes fail for a while (each on its own backoff) before the deactivations are
        // written behind them.
        eventually("every welcome tried at least twice", || async {
            let w = db.events("user.provisioned").await;
            Some(()).filter(|_| w.len() == USERS && w.iter().all(|e| e.attempts >= 2))
        })
        .await;
        for (id, n) in ids.iter().zip(&names) {
            db.set_active(id, n, false).await;
        }
        assert_eq!(db.reconcile().await.applied, USERS as u64);
        // Down long enough that some welcome waits 8 s or more before its next try.
        let far = eventually("a backoff of 8 s or more", || async {
            let now = chrono::Utc::now();
            db.events("user.provisioned").await.into_iter().find(|e| {
                chrono::DateTime::parse_from_rfc3339(&e.next_attempt_at).expect("time") > now + chrono::Duration::seconds(8)
            })
        })
        .await;
        assert!(
            db.events("user.deactivated").await.iter().all(|e| e.attempts == 0),
            "a deactivation was tried while its user's welcome was still failing"
        );
        let scheduled: std::collections::HashMap<String, String> =
            db.outbox().await.into_iter().map(|e| (e.id, e.next_attempt_at)).collect();

        let rx = Receiver::default();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the receiver's port");
        let (_, _server) = serve(listener, rx.clone());
        let up = Instant::now();
        eventually("every event delivered", || async {
            Some(()).filter(|_| rx.accepted().len() >= 2 * USERS)
        })
        .await;
        let took = up.elapsed();
        let events = eventually("the outbox marked delivered", || async {
            Some(db.outbox().await).filter(|es| es.iter().all(|e| e.status == "delivered"))
        })
        .await;
        // A few more poll rounds bring nothing new.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = rx.accepted();
        assert_eq!(got.len(), 2 * USERS, "nothing skipped or duplicated");
        let mut per_user: std::collections::HashMap<String, Vec<String>> = Default::default();
        for r in &got {
            verify(r);
            let b = r.json();
            per_user
                .entry(b["user_id"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(b["type"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(per_user.len(), USERS);
        for (user, types) in &per_user {
            assert_eq!(types, &["user.provisioned", "user.deactivated"], "user {user}");
        }
        // Resumed promptly: the welcome that was to wait 8 s or more went out before its time.
        let delivered = events.iter().find(|e| e.id == far.id).expect("the event");
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time");
        assert!(
            at(delivered.delivered_at.as_deref().expect("delivered")) < at(&scheduled[&far.id]),
            "delivered at {:?}, scheduled for {}",
            delivered.delivered_at,
            scheduled[&far.id]
        );
        assert!(took < Duration::from_secs(25), "took {took:?} after the receiver came back");
    }
);

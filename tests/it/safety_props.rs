//! The safety valve as a property: however pushes (deactivations, reactivations, deletions) and
//! controller runs (a push's incremental run, a whole-tenant run) interleave, the controller
//! never applies more destructive changes on its own than the threshold allows — at most
//! `max(min_users - 1, percent% of the tenant's SCIM users)` within the window — and nothing a
//! run holds or keeps waiting is applied. Through the real store (SQLite; PostgreSQL too when
//! `MOONBORN_TEST_POSTGRES_URL` is set) and the real controller, with no workers: the test
//! decides when each run happens. Every case lies inside the 15-minute window.

use moonborn_scim::controller::{Approval, Controller, Target, Trigger};
use moonborn_scim::domain::Safety;
use moonborn_scim::scim::schema::{normalize, Kind};
use moonborn_scim::store::{Intent, Tenant};
use moonborn_scim::Store;
use proptest::prelude::*;
use serde_json::json;
use sqlx::Row as _;

use crate::common::fresh_db::{Backend, FreshDb};

#[derive(Debug, Clone)]
enum Step {
    /// Deactivate these users (indexes modulo the tenant's size), each its own push.
    Deactivate(Vec<usize>),
    Reactivate(Vec<usize>),
    Delete(Vec<usize>),
    /// The incremental run a push wakes.
    PushRun,
    /// A whole-tenant run (drift repair, an operator's reconcile).
    FullRun,
}

fn step() -> impl Strategy<Value = Step> {
    let ids = || prop::collection::vec(0usize..1000, 1..8);
    prop_oneof![
        3 => ids().prop_map(Step::Deactivate),
        1 => ids().prop_map(Step::Reactivate),
        1 => ids().prop_map(Step::Delete),
        3 => Just(Step::PushRun),
        1 => Just(Step::FullRun),
    ]
}

fn user_doc(user_name: &str, active: bool) -> serde_json::Value {
    normalize(
        Kind::User,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, "active": active}),
    )
    .expect("a valid user")
}

struct World {
    store: Store,
    tenant: Tenant,
    /// SCIM ids, by index; `None` once deleted.
    ids: Vec<Option<String>>,
    _db: FreshDb,
}

impl World {
    async fn new(backend: Backend, users: usize, safety: Safety) -> World {
        let (db, store, tenant) = FreshDb::with_tenant(backend, "valveprops").await;
        store.set_safety(tenant.id, safety, "test").await.expect("safety");
        let mut ids = Vec::new();
        let now = moonborn_scim::domain::now();
        for i in 0..users {
            let id = uuid::Uuid::new_v4().to_string();
            let intent = Intent { tenant_id: tenant.id, request_id: "t", now: &now };
            store.insert_user(&intent, &id, &user_doc(&format!("u{i}@acme.example"), true)).await.expect("user");
            ids.push(Some(id));
        }
        let w = World { store, tenant, ids, _db: db };
        w.run(Target::Incremental).await;
        assert_eq!(w.applied_destructive().await, 0);
        w
    }

    async fn run(&self, scope: Target) {
        let trigger = if matches!(scope, Target::Full) { Trigger::Cron } else { Trigger::Push };
        Controller::new(self.store.clone()).reconcile(&self.tenant, trigger, scope, Approval::None).await.expect("run");
    }

    async fn set_active(&self, i: usize, active: bool) {
        let Some(id) = self.ids[i % self.ids.len()].clone() else { return };
        let cur = self.store.get_user(self.tenant.id, &id).await.expect("user");
        let mut doc = cur.doc_value().expect("doc");
        doc["active"] = json!(active);
        let now = moonborn_scim::domain::now();
        let intent = Intent { tenant_id: self.tenant.id, request_id: "t", now: &now };
        self.store.update_user(&intent, &id, &doc, cur.version, "patch").await.expect("update");
    }

    async fn delete(&mut self, i: usize) {
        let n = self.ids.len();
        let Some(id) = self.ids[i % n].take() else { return };
        let now = moonborn_scim::domain::now();
        let intent = Intent { tenant_id: self.tenant.id, request_id: "t", now: &now };
        self.store.delete_user(&intent, &id, None).await.expect("delete");
    }

    /// Users the controller deactivated or deleted on its own (audit rows, by user: the valve counts
    /// a user deactivated, reactivated by the IdP and deactivated again once, as one user
    /// affected).
    async fn applied_destructive(&self) -> u64 {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT user_id) AS n FROM audit_log WHERE tenant_id = $1 AND actor = 'controller' \
             AND action IN ('deactivate', 'delete')",
        )
        .bind(self.tenant.id)
        .fetch_one(self.store.pool())
        .await
        .expect("count");
        row.try_get::<i64, _>("n").expect("n") as u64
    }
}

async fn check(backend: Backend, users: usize, safety: Safety, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut w = World::new(backend, users, safety).await;
    let allowed = (safety.min_users.saturating_sub(1)).max(u64::from(safety.percent) * users as u64 / 100);
    for (n, s) in steps.iter().enumerate() {
        match s {
            Step::Deactivate(is) => {
                for &i in is {
                    w.set_active(i, false).await;
                }
            }
            Step::Reactivate(is) => {
                for &i in is {
                    w.set_active(i, true).await;
                }
            }
            Step::Delete(is) => {
                for &i in is {
                    w.delete(i).await;
                }
            }
            Step::PushRun => w.run(Target::Incremental).await,
            Step::FullRun => w.run(Target::Full).await,
        }
        let applied = w.applied_destructive().await;
        prop_assert!(
            applied <= allowed,
            "after step {n} ({s:?}) the controller applied {applied} destructive changes on its own; at most \
             {allowed} allowed ({users} users, {safety:?}); steps: {steps:?}"
        );
    }
    Ok(())
}

fn safety() -> impl Strategy<Value = Safety> {
    (prop_oneof![Just(0u32), Just(10), Just(20), Just(50)], prop_oneof![Just(1u64), Just(3), Just(10)]).prop_map(
        |(percent, min_users)| {
            // Settled at once: whether a burst is judged depends only on when the test runs the
            // controller, which is what the steps interleave.
            Safety { percent, min_users, enabled: true, settle_ms: 0, max_wait_ms: 0 }
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_interleaving_applies_more_than_the_threshold_allows_sqlite(
        users in 10usize..50,
        safety in safety(),
        steps in prop::collection::vec(step(), 1..30),
    ) {
        runtime().block_on(check(Backend::Sqlite, users, safety, steps))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    #[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
    fn no_interleaving_applies_more_than_the_threshold_allows_postgres(
        users in 10usize..50,
        safety in safety(),
        steps in prop::collection::vec(step(), 1..30),
    ) {
        runtime().block_on(check(Backend::Postgres, users, safety, steps))?;
    }
}

/// A burst left waiting by a process that stopped (its judgement's timer gone with it) is judged
/// by the next process: its start-up run finds the burst open and arms the judgement.
async fn a_waiting_burst_survives_a_restart(backend: Backend) {
    let safety = Safety { settle_ms: 300, ..Safety::default() };
    let w = World::new(backend, 20, safety).await;
    w.set_active(0, false).await;
    w.set_active(1, false).await;
    // The process that deferred them "stops": its controller never runs again.
    let gone = Controller::new(w.store.clone());
    let o = gone.reconcile(&w.tenant, Trigger::Push, Target::Incremental, Approval::None).await.expect("push run");
    assert_eq!((o.status.as_str(), o.skipped_held), ("waiting", 2));
    gone.release_leases().await;
    drop(gone);
    assert!(w.store.controller_state(w.tenant.id).await.expect("state").burst.is_some());
    // A new process starts: workers, and a start-up run of every tenant.
    let next = Controller::new(w.store.clone());
    let yearly = moonborn_scim::controller::parse_schedule("0 0 0 1 1 *").expect("schedule");
    next.spawn(1, yearly.clone(), yearly);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Judged: both applied (under the threshold) and the burst closed with the run.
    while w.applied_destructive().await < 2
        || w.store.controller_state(w.tenant.id).await.expect("state").burst.is_some()
    {
        assert!(std::time::Instant::now() < deadline, "the waiting burst was never judged after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(w.applied_destructive().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_burst_survives_a_restart_sqlite() {
    a_waiting_burst_survives_a_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn a_waiting_burst_survives_a_restart_postgres() {
    a_waiting_burst_survives_a_restart(Backend::Postgres).await;
}

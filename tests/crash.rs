//! Crash safety: SIGKILL the server in the middle of applying a large plan, restart it, and
//! prove the tenant converges with exactly one welcome email per user. And the SQLite WAL (what a
//! crash replays) stays bounded under a steady write load.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moonborn_scim::controller::{Controller, Target};
use moonborn_scim::scim::schema::{normalize, Kind};
use moonborn_scim::store::Intent;
use moonborn_scim::{Store, Tier};
use serde_json::json;

use common::fresh_db::{Backend, FreshDb};

const BIN: &str = env!("CARGO_BIN_EXE_moonborn-scim");
const USERS: usize = 3000;

/// A server process that is killed when dropped, so a failing test never leaves one running.
struct Server(Child);

impl Server {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(db: &str) -> Server {
    Server(
        Command::new(BIN)
            .args(["--database-url", db, "serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server"),
    )
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn scenario(db: &str) {
    let store = Store::open(db).await.expect("open");
    let tenant = store.create_tenant("acme", Tier::Enterprise).await.expect("tenant");
    // The desired state: many SCIM users nobody has reconciled yet (the server is not running).
    for i in 0..USERS {
        let doc = normalize(
            Kind::User,
            json!({"userName": format!("user{i:05}@acme.com"), "name": {"givenName": "U", "familyName": format!("{i}")}}),
        )
        .unwrap();
        let now = moonborn_scim::domain::now();
        let intent = Intent { tenant_id: tenant.id, request_id: "seed", now: &now };
        store.insert_user(&intent, &format!("scim-{i:05}"), &doc).await.expect("insert");
    }
    let users = |store: Store, tid: i64| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
            .bind(tid)
            .fetch_one(store.pool())
            .await
            .unwrap_or(0)
    };

    // Start: the start-up run plans USERS creates. Kill it once some, not all, are applied.
    let mut server = start(db);
    wait_for("the first users to be applied", || {
        let s = store.clone();
        async move { users(s, tenant.id).await >= 50 }
    })
    .await;
    server.kill().expect("SIGKILL");
    server.wait().expect("reap");
    let applied_at_kill = users(store.clone(), tenant.id).await;
    assert!(
        (applied_at_kill as usize) < USERS,
        "the server finished before it was killed ({applied_at_kill} users); raise USERS"
    );

    // Restart: it converges.
    let mut server = start(db);
    wait_for("convergence", || {
        let s = store.clone();
        async move { users(s, tenant.id).await as usize == USERS }
    })
    .await;
    let controller = Controller::new(store.clone());
    wait_for("an empty plan", || {
        let (c, t) = (controller.clone(), tenant.clone());
        async move { c.plan(&t, Target::Full).await.map(|p| p.changes.is_empty()).unwrap_or(false) }
    })
    .await;
    server.kill().ok();
    server.wait().ok();

    let events = store.list_outbox(tenant.id).await.expect("outbox");
    let welcomes: Vec<_> = events.iter().filter(|e| e.event_type == "user.provisioned").collect();
    let distinct: std::collections::HashSet<_> = welcomes.iter().map(|e| e.user_id.clone()).collect();
    assert_eq!(welcomes.len(), USERS, "one welcome email per user");
    assert_eq!(distinct.len(), USERS, "no user welcomed twice");
    eprintln!("killed after {applied_at_kill} of {USERS} users; converged after restart");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_apply_then_restart_converges_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}", dir.path().join("crash.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
async fn sigkill_mid_apply_then_restart_converges_postgres() {
    // Dropped (with the database) when the test ends.
    let db = FreshDb::new(Backend::Postgres, "crash").await;
    scenario(&db.url).await;
}

/// Under creates that never pause, with readers that never pause, the SQLite WAL is started
/// over again and again (it grew without bound before: a PASSIVE checkpoint never catches up
/// with a busy writer, and SQLite restarts the WAL only after one did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_bounded_under_a_steady_write_load() {
    let mut db = FreshDb::new(Backend::Sqlite, "wal").await;
    let store = db.open_store().await;
    let tenant = store.create_tenant("acme", Tier::Enterprise).await.expect("tenant");
    let wal = format!("{}-wal", db.url.strip_prefix("sqlite://").expect("file URL"));
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = store.get_user(tenant.id, "u-0000-0").await;
                tokio::task::yield_now().await;
            }
        })
    };
    // 64 KiB documents (the document and its displayName): about 140 KiB of pages per user,
    // 1,600 users: well over 200 MiB through the WAL.
    let filler = "x".repeat(64 * 1024);
    let (mut written, mut max_wal) = (0usize, 0u64);
    for round in 0..50 {
        let creates = (0..32).map(|i| {
            let doc = normalize(
                Kind::User,
                json!({"userName": format!("u{round:04}-{i}@acme.com"), "displayName": filler.clone()}),
            )
            .expect("doc");
            let (store, id) = (store.clone(), format!("u-{round:04}-{i}"));
            async move {
                let now = moonborn_scim::domain::now();
                let intent = Intent { tenant_id: tenant.id, request_id: "wal", now: &now };
                store.insert_user(&intent, &id, &doc).await.expect("insert");
            }
        });
        futures_util::future::join_all(creates).await;
        written += 32 * 2 * filler.len();
        max_wal = max_wal.max(wal_len());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");
    assert!(written >= 200 << 20);
    eprintln!("WAL at most {} MiB for {} MiB written", max_wal >> 20, written >> 20);
    // Restarted past 32 MiB; a restart waits for the next checkpoint tick (half a second of
    // writes on top), and the file is cut back to 64 MiB when it starts over.
    assert!(max_wal < 160 << 20, "the WAL reached {} MiB for {} MiB written", max_wal >> 20, written >> 20);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scim_users").fetch_one(store.pool()).await.expect("count");
    assert_eq!(n, 1600);
}

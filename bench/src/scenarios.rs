//! The run: setup (fresh database, tenants, seeding), ceilings, then each scenario.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::AnyPool;

use crate::client::{closed_loop, jobs, paced, Client, Errors, Paced, Req, Sample, Target};
use crate::disk::{self, Disk};
use crate::server::{self, Server};
use crate::{db, print_table, Args, Row};

const SCIM: &str = "/v1/auth/scim/v2";
const PATCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// The IdP-paced sync's pace, in objects (users, groups, memberships) per second: 600 × the
/// fastest initial-cycle pace Microsoft documents for Entra ID (0.01 minutes per object), as if
/// 600 tenants ran their initial sync at once. No IdP documents a faster outbound pace.
const IDP_PACE: f64 = 1_000.0;

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub full: bool,
    pub users: usize,
    pub big_group: usize,
    pub patch_ops: usize,
    pub sync_users: usize,
    pub sync_groups: usize,
    pub sync_per_user: usize,
    /// Users of the IdP-paced sync (groups and memberships in the same proportions).
    pub paced_users: usize,
    pub push_rate: u64,
    pub push_secs: u64,
    pub warmup: Duration,
    pub window: Duration,
    pub insert_window: Duration,
    pub settle: Duration,
}

impl Sizes {
    fn new(a: &Args) -> Sizes {
        let full = a.full;
        let users = a.size.unwrap_or(if full { 1_000_000 } else { 10_000 }).max(100);
        let big_group = if full { 100_000 } else { 2_000 }.min(users / 2);
        // Every PATCH to the big group makes the controller re-read the whole group, so the
        // count stays modest to bound the catch-up time.
        let patch_ops = if full { 200 } else { 300 }.min((users - big_group) / 3).max(1);
        // The 100,000 users + 1,000 groups for 1,000,000 seeded users; scaled with --size.
        let sync_users = if full { (users / 10).clamp(1_000, 100_000) } else { 1_000 };
        let sync_groups = (sync_users / 100).max(10);
        Sizes {
            full,
            users,
            big_group,
            patch_ops,
            sync_users,
            sync_groups,
            sync_per_user: 5,
            paced_users: (sync_users / 20).max(500),
            push_rate: 500,
            push_secs: if full { 10 } else { 2 },
            warmup: Duration::from_millis(if full { 2_000 } else { 300 }),
            window: Duration::from_millis(if full { 10_000 } else { 1_500 }),
            insert_window: Duration::from_millis(if full { 5_000 } else { 1_000 }),
            settle: Duration::from_secs(if full { 300 } else { 30 }),
        }
    }
}

/// Everything a run holds; `cleanup` stops the servers, drops the database, removes temp files.
pub struct Env {
    pub bin: PathBuf,
    pub tmp: PathBuf,
    pub db_url: String,
    /// `(server URL without database, database name)` when a PostgreSQL database was created.
    pub pg: Option<(String, String)>,
    pub admin_token: String,
    pub errors: Arc<Errors>,
    pub servers: Vec<Server>,
    pub pool: Option<AnyPool>,
}

fn pg_split(url: &str) -> anyhow::Result<(String, String)> {
    let (base, rest) = match url.find("://").and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j)) {
        Some(slash) => (&url[..slash], &url[slash + 1..]),
        None => (url, ""),
    };
    let (db, query) = match rest.split_once('?') {
        Some((d, q)) => (d, format!("?{q}")),
        None => (rest, String::new()),
    };
    let db = if db.is_empty() { "postgres" } else { db };
    Ok((format!("{base}/{db}{query}"), format!("{base}/{{db}}{query}")))
}

impl Env {
    pub async fn prepare(a: &Args) -> anyhow::Result<Env> {
        let bin = server::binary()?;
        let tmp = std::env::temp_dir().join(format!("moonborn-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&tmp)?;
        let admin_token = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
        let mut env = Env {
            bin,
            tmp: tmp.clone(),
            db_url: format!("sqlite://{}", tmp.join("bench.db").display()),
            pg: None,
            admin_token,
            errors: Arc::new(Errors::default()),
            servers: Vec::new(),
            pool: None,
        };
        if let Some(url) = &a.database_url {
            if url.starts_with("sqlite:") {
                bail!("--database-url takes a postgres:// URL; SQLite is the default (a fresh temporary file)");
            }
            if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
                bail!("--database-url must be postgres://…/db");
            }
            let (admin_url, template) = pg_split(url)?;
            let name = format!("moonborn_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let admin = db::pool(&admin_url, 1).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .context("creating the bench database")?;
            admin.close().await;
            env.db_url = template.replace("{db}", &name);
            env.pg = Some((admin_url, name));
        }
        Ok(env)
    }

    pub async fn cleanup(&mut self) {
        for s in self.servers.drain(..) {
            s.stop().await;
        }
        if let Some(p) = self.pool.take() {
            p.close().await;
        }
        if let Some((admin_url, name)) = self.pg.take() {
            match db::pool(&admin_url, 1).await {
                Ok(admin) => {
                    if let Err(e) =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await
                    {
                        eprintln!("warning: could not drop database {name}: {e}");
                    }
                    admin.close().await;
                }
                Err(e) => eprintln!("warning: could not drop database {name}: {e:#}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }

    fn sqlite(&self) -> bool {
        self.pg.is_none()
    }

    fn target(&self, s: &Server, token: &str) -> Target {
        Target {
            addr: s.addr,
            scim_auth: format!("Bearer {token}"),
            admin_auth: format!("Bearer {}", self.admin_token),
            pid: s.pid,
        }
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {kernel}")
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

fn user_json(name: &str, i: usize) -> String {
    db::user_body(name, i).to_string()
}

fn id_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok()?.get("id")?.as_str().map(str::to_string)
}

static RUN_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Prints the server's CPU per request of a closed-loop window (and against the HTTP
/// ceiling's): the work a request costs, steadier on a shared machine than the throughput.
fn print_cpu(s: &Sample, ceiling_us: Option<f64>) {
    let Some(us) = s.server_cpu_us_per_op() else { return };
    match ceiling_us {
        Some(c) if c > 0.0 => {
            println!("    server CPU {us:.1} µs per request ({:.2} × the HTTP ceiling's {c:.1} µs)", us / c);
        }
        _ => println!("    server CPU {us:.1} µs per request"),
    }
}

fn step(what: &str) {
    let t = RUN_START.get_or_init(Instant::now).elapsed().as_secs_f64();
    println!("--> [{t:5.1} s] {what}");
}

fn wants(a: &Args, name: &str) -> bool {
    a.scenario.is_empty() || a.scenario.iter().any(|s| s == name)
}

/// Samples the server's VmRSS while `fut` runs; (its output, the highest VmRSS seen, MB).
async fn with_rss<F: std::future::Future>(pid: u32, fut: F) -> (F::Output, f64) {
    let probe = Server::probe(pid);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut max = 0f64;
        while !s2.load(Ordering::Relaxed) {
            max = max.max(probe());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        max
    });
    let out = fut.await;
    stop.store(true, Ordering::Relaxed);
    let max = sampler.await.unwrap_or(0.0);
    (out, max)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The whole run; the rows of the report.
pub async fn run(env: &mut Env, a: &Args) -> anyhow::Result<Vec<Row>> {
    let z = Sizes::new(a);
    let c = a.concurrency.max(1);
    let t_run = *RUN_START.get_or_init(Instant::now);
    println!("moonborn-bench: {} mode, {} users, {} clients", if z.full { "full" } else { "quick" }, z.users, c);
    println!("machine: {}", machine());
    println!(
        "server: {} on {}",
        env.bin.display(),
        if env.sqlite() { "SQLite (temporary file)" } else { "PostgreSQL (fresh database)" }
    );
    let mut rows: Vec<Row> = Vec::new();
    // The POST /Users rate of this run, for the bulk scenario's ratio.
    let mut single_posts: Option<f64> = None;

    // ---- setup: tenants and tokens with the binary's own CLI, then seeding -------------------
    step("creating tenants `bench` and `okta` with the CLI");
    let token = server::tenant_with_token(&env.bin, &env.db_url, "bench").await?;
    let okta_token = server::tenant_with_token(&env.bin, &env.db_url, "okta").await?;
    let pool = db::pool(&env.db_url, 8).await?;
    env.pool = Some(pool.clone());
    let tid = db::tenant_id(&pool, "bench").await?;
    let okta_tid = db::tenant_id(&pool, "okta").await?;

    let mut groups: Vec<(String, String, Vec<usize>)> = Vec::new();
    let big_gid = moonborn_scim::domain::new_resource_id();
    groups.push((big_gid.clone(), "bench-big".into(), (0..z.big_group).collect()));
    // Small groups of 10: one per measured PATCH (plus warm-up), so each stays at about 10.
    let n_small = z.patch_ops + z.patch_ops / 10;
    let mut small_gids = Vec::new();
    for g in 0..n_small {
        let id = moonborn_scim::domain::new_resource_id();
        let members = (0..10).map(|k| z.users - 1 - ((g * 10 + k) % (z.users / 2))).collect();
        groups.push((id.clone(), format!("bench-small-{g}"), members));
        small_gids.push(id);
    }
    step(&format!(
        "seeding {} users (desired + actual, in sync), a {}-member group and {} groups of 10",
        z.users, z.big_group, n_small
    ));
    let t = Instant::now();
    let ids = Arc::new(db::seed(&pool, tid, z.users, &groups).await?);
    let seed_secs = t.elapsed().as_secs_f64();
    println!("    seeded in {seed_secs:.1} s (setup, not measured)");

    // ---- storage ceilings ---------------------------------------------------------------------
    step("storage ceiling: raw inserts, one row per transaction (separate database file)");
    let ceiling_pool = if env.sqlite() {
        db::pool(&format!("sqlite://{}", env.tmp.join("ceiling.db").display()), 8).await?
    } else {
        pool.clone()
    };
    let writers = if env.sqlite() { 1 } else { c.min(8) };
    let ins = db::insert_ceiling(&ceiling_pool, writers, z.insert_window).await?;
    if env.sqlite() {
        ceiling_pool.close().await;
    }
    rows.push(Row {
        ops_per_sec: Some(ins.ops_per_sec()),
        p50_ms: Some(ins.pct_ms(50.0)),
        p99_ms: Some(ins.pct_ms(99.0)),
        ..Row::new("ceiling: raw insert (1 row/tx)", "-").param("writers", writers as u64).param(
            "pragmas",
            if env.sqlite() { "WAL, synchronous=FULL, busy_timeout=10000" } else { "PostgreSQL defaults" },
        )
    });
    step("storage ceiling: indexed point reads (same database)");
    let pr = db::point_read_ceiling(&pool, tid, ids.clone(), c, z.window).await?;
    rows.push(Row {
        ops_per_sec: Some(pr.ops_per_sec()),
        p50_ms: Some(pr.pct_ms(50.0)),
        p99_ms: Some(pr.pct_ms(99.0)),
        ..Row::new("ceiling: point read (sqlx)", "-").param("readers", c as u64).param("pool", 8u64)
    });
    step("storage ceiling: ordered full scan (desired + actual users, key order)");
    let (scan_rows, scan_secs) = db::scan_ceiling(&pool, tid).await?;
    rows.push(Row {
        ops_per_sec: Some(scan_rows as f64 / scan_secs),
        p50_ms: Some(scan_secs * 1000.0),
        ..Row::new("ceiling: ordered scan (rows/s; p50 = whole scan)", "-").param("rows", scan_rows)
    });

    // ---- HTTP ceiling ------------------------------------------------------------------------
    step("HTTP ceiling: serve --bench-ceiling, GET /Users/{id}");
    let ceil_db = format!("sqlite://{}", env.tmp.join("http-ceiling.db").display());
    let cs = Server::start(&env.bin, &ceil_db, &env.admin_token, true, env.tmp.join("ceiling.log")).await?;
    let ct = env.target(&cs, "none");
    let ids2 = ids.clone();
    let http = closed_loop(&ct, &env.errors, c, z.warmup, z.window, move |_, _| {
        let i = rand::thread_rng().gen_range(0..ids2.len());
        Req::get(format!("{SCIM}/Users/{}", ids2[i]))
    })
    .await;
    cs.stop().await;
    let http_ceiling = http.ops_per_sec();
    let ceiling_cpu = http.server_cpu_us_per_op();
    print_cpu(&http, None);
    rows.push(Row {
        ops_per_sec: Some(http_ceiling),
        p50_ms: Some(http.pct_ms(50.0)),
        p99_ms: Some(http.pct_ms(99.0)),
        ..Row::new("ceiling: HTTP (trivial handler)", "-")
            .param("concurrency", c as u64)
            .param("server_cpu_us_per_request", ceiling_cpu)
    });

    // ---- the server under test ---------------------------------------------------------------
    step("starting the server; waiting for its start-up reconcile of the seeded tenant");
    let t = Instant::now();
    let srv = Server::start(&env.bin, &env.db_url, &env.admin_token, false, env.tmp.join("server.log")).await?;
    let pid = srv.pid;
    let target = env.target(&srv, &token);
    let okta_target = env.target(&srv, &okta_token);
    env.servers.push(srv);
    let settled = db::wait_controller(&pool, tid, true, z.settle).await?
        && db::wait_controller(&pool, okta_tid, true, z.settle).await?;
    let startup_secs = t.elapsed().as_secs_f64();
    println!(
        "    start-up full reconcile of {} in-sync users: {startup_secs:.1} s{}",
        z.users,
        if settled { "" } else { " (NOT settled)" }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = server_ref(env).rss_mb();
    rows.push(Row {
        peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
        met: Some(idle_rss <= 30.0),
        ..Row::new(&format!("RSS idle ({idle_rss:.1} MB now)"), "≤ 30 MB")
            .param("rss_mb", idle_rss)
            .param("startup_reconcile_s", startup_secs)
    });

    // ---- GET /Users/{id} ---------------------------------------------------------------------
    if wants(a, "get-user") {
        step("GET /Users/{id}, random ids");
        server_ref(env).reset_peak();
        let ids2 = ids.clone();
        let (s, rss) = with_rss(
            pid,
            closed_loop(&target, &env.errors, c, z.warmup, z.window, move |_, _| {
                let i = rand::thread_rng().gen_range(0..ids2.len());
                Req::get(format!("{SCIM}/Users/{}", ids2[i]))
            }),
        )
        .await;
        let r = ratio(s.ops_per_sec(), http_ceiling);
        print_cpu(&s, ceiling_cpu);
        rows.push(Row {
            ops_per_sec: Some(s.ops_per_sec()),
            p50_ms: Some(s.pct_ms(50.0)),
            p99_ms: Some(s.pct_ms(99.0)),
            ceiling_ops_per_sec: Some(http_ceiling),
            ratio_to_ceiling: r,
            peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
            met: Some(r.unwrap_or(0.0) >= 0.5 && s.pct_ms(99.0) <= 5.0),
            ..Row::new("GET /Users/{id}", "≥ 0.5 × HTTP ceiling; p99 ≤ 5 ms")
                .param("users", z.users as u64)
                .param("concurrency", c as u64)
                .param("server_cpu_us_per_request", s.server_cpu_us_per_op())
                .param("storage_point_read_ceiling_ops_per_sec", pr.ops_per_sec())
        });
        rows.push(Row {
            peak_rss_mb: Some(rss),
            met: Some(rss <= 100.0),
            ..Row::new("RSS under the GET load (max VmRSS)", "≤ 100 MB").param("users", z.users as u64)
        });
    }

    // ---- filter userName eq ------------------------------------------------------------------
    if wants(a, "filter-username") {
        step("GET /Users?filter=userName eq \"…\", random names");
        server_ref(env).reset_peak();
        let n = z.users;
        let s = closed_loop(&target, &env.errors, c, z.warmup, z.window, move |_, _| {
            let i = rand::thread_rng().gen_range(0..n);
            let f = format!("userName eq \"{}\"", db::user_name(i));
            Req::get(format!("{SCIM}/Users?filter={}&startIndex=1&count=100", enc(&f)))
        })
        .await;
        let r = ratio(s.ops_per_sec(), http_ceiling);
        print_cpu(&s, ceiling_cpu);
        rows.push(Row {
            ops_per_sec: Some(s.ops_per_sec()),
            p50_ms: Some(s.pct_ms(50.0)),
            p99_ms: Some(s.pct_ms(99.0)),
            ceiling_ops_per_sec: Some(http_ceiling),
            ratio_to_ceiling: r,
            peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
            met: Some(r.unwrap_or(0.0) >= 0.5 && s.pct_ms(99.0) <= 5.0),
            ..Row::new("filter userName eq", "≥ 0.5 × HTTP ceiling; p99 ≤ 5 ms")
                .param("users", z.users as u64)
                .param("concurrency", c as u64)
                .param("server_cpu_us_per_request", s.server_cpu_us_per_op())
        });
    }

    // ---- POST /Users -------------------------------------------------------------------------
    if wants(a, "post-user") {
        step("POST /Users, unique userNames (durable before the 201)");
        server_ref(env).reset_peak();
        let disk0 = Disk::read(&target, &env.errors).await;
        let cpu0 = server_ref(env).cpu_secs();
        let s = closed_loop(&target, &env.errors, c, z.warmup, z.window, move |k, n| {
            let name = format!("post-{k}-{n}@bench.example");
            Req::post(format!("{SCIM}/Users"), user_json(&name, n as usize))
        })
        .await;
        let cpu = server_ref(env).cpu_secs() - cpu0;
        let disk = disk_window(&target, env, disk0.as_ref()).await;
        let t = Instant::now();
        let settled = db::wait_controller(&pool, tid, false, z.settle).await?;
        let catch_up = t.elapsed().as_secs_f64();
        let r = ratio(s.ops_per_sec(), ins.ops_per_sec());
        single_posts = Some(s.ops_per_sec());
        let row = Row::new("POST /Users", "≥ 5,000/s and ≥ 0.25 × raw insert ceiling")
            .param("concurrency", c as u64)
            .param("server_cpu_cores_during_window", cpu / (z.warmup + z.window).as_secs_f64())
            .param("controller_catch_up_s", catch_up)
            .param("controller_settled", settled);
        rows.push(Row {
            ops_per_sec: Some(s.ops_per_sec()),
            p50_ms: Some(s.pct_ms(50.0)),
            p99_ms: Some(s.pct_ms(99.0)),
            ceiling_ops_per_sec: Some(ins.ops_per_sec()),
            ratio_to_ceiling: r,
            peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
            met: Some(s.ops_per_sec() >= 5000.0 && r.unwrap_or(0.0) >= 0.25),
            ..with_disk(row, disk.as_ref())
        });
    }

    // ---- POST /Bulk: 1,000 creates a request --------------------------------------------------
    if wants(a, "bulk-create") {
        const PER: usize = 1000;
        step("POST /Bulk, 1,000 user creates a request (users created per second)");
        server_ref(env).reset_peak();
        let bc = c.clamp(1, 4);
        let s = closed_loop(&target, &env.errors, bc, z.warmup, z.window, move |k, n| {
            let ops: Vec<Value> = (0..PER)
                .map(|i| {
                    let name = format!("bulk-{k}-{n}-{i}@bench.example");
                    json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"), "data": db::user_body(&name, i)})
                })
                .collect();
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
            Req::post(format!("{SCIM}/Bulk"), body.to_string())
        })
        .await;
        let users_per_sec = s.ops_per_sec() * PER as f64;
        let settled = db::wait_controller(&pool, tid, false, z.settle).await?;
        let vs_single = single_posts.and_then(|p| ratio(users_per_sec, p));
        rows.push(Row {
            ops_per_sec: Some(users_per_sec),
            p50_ms: Some(s.pct_ms(50.0)),
            p99_ms: Some(s.pct_ms(99.0)),
            ceiling_ops_per_sec: Some(ins.ops_per_sec()),
            ratio_to_ceiling: ratio(users_per_sec, ins.ops_per_sec()),
            peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
            met: vs_single.map(|r| r > 1.0),
            ..Row::new("POST /Bulk, 1,000 creates a request (users/s)", "faster than single POSTs (ratio > 1)")
                .param("operations_per_request", PER as u64)
                .param("concurrency", bc as u64)
                .param("ratio_to_single_posts", vs_single.map_or(Value::Null, Value::from))
                .param("controller_settled", settled)
        });
    }

    // ---- PATCH add one member: big vs small --------------------------------------------------
    if wants(a, "patch-member") {
        let warm = z.patch_ops / 10;
        let total = z.patch_ops + warm;
        let mut p50s = Vec::new();
        for (label, big) in [("PATCH add member, group of 100,000", true), ("PATCH add member, group of 10", false)] {
            let label = if big { label.replace("100,000", &format!("{}", z.big_group)) } else { label.to_string() };
            step(&format!("{label} ({total} PATCHes, first {warm} not recorded)"));
            server_ref(env).reset_peak();
            let ids2 = ids.clone();
            let base = if big { z.big_group } else { z.big_group + total };
            let big_gid = big_gid.clone();
            let small = Arc::new(small_gids.clone());
            let (s, _) = jobs::<_, _, ()>(&target, &env.errors, c, total, move |mut cl: Client, j| {
                let gid = if big { big_gid.clone() } else { small[j % small.len()].clone() };
                let member = ids2[base + j].clone();
                async move {
                    let body = json!({"schemas": [PATCH_URN], "Operations": [{"op": "add", "path": "members", "value": [{"value": member}]}]});
                    let mut lat = Vec::new();
                    cl.timed(&Req::patch(format!("{SCIM}/Groups/{gid}"), body.to_string()), &mut lat).await;
                    if j < warm {
                        lat.clear();
                    }
                    (cl, lat, None)
                }
            })
            .await;
            let t = Instant::now();
            let settled = db::wait_controller(&pool, tid, false, z.settle).await?;
            let catch_up = t.elapsed().as_secs_f64();
            p50s.push(s.pct_ms(50.0));
            let ops = s.lat_us.len() as f64 / s.secs;
            rows.push(Row {
                ops_per_sec: Some(ops),
                p50_ms: Some(s.pct_ms(50.0)),
                p99_ms: Some(s.pct_ms(99.0)),
                peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
                ..Row::new(&label, "p50 ratio big/small ≤ 1.5")
                    .param("group_size", if big { z.big_group as u64 } else { 10 })
                    .param("patches", z.patch_ops as u64)
                    .param("concurrency", c as u64)
                    .param("controller_catch_up_s", catch_up)
                    .param("controller_settled", settled)
            });
        }
        let pr = ratio(p50s[0], p50s[1]);
        let n = rows.len();
        rows[n - 2].ratio_to_ceiling = pr;
        rows[n - 2].met = Some(pr.unwrap_or(f64::MAX) <= 1.5);
        rows[n - 2].params.insert("ratio_is".into(), json!("p50 big / p50 small"));
    }

    // ---- Okta-style initial sync -------------------------------------------------------------
    if wants(a, "initial-sync") {
        rows.push(initial_sync(env, &z, c, &okta_target, &pool, okta_tid).await?);
    }
    if wants(a, "paced-sync") {
        rows.push(paced_sync(env, &z, c, &okta_target, &pool, okta_tid).await?);
    }

    // ---- push → applied ----------------------------------------------------------------------
    if wants(a, "push-applied") {
        rows.push(push_applied(env, &z, &target, &pool, tid).await?);
    }

    // ---- full drift-repair run ---------------------------------------------------------------
    if wants(a, "drift-repair") {
        rows.extend(drift_repair(env, &z, &target, &pool, tid, scan_secs, scan_rows).await?);
    }

    server_mut(env).check_alive()?;
    print_table(&rows);
    println!(
        "machine: {}; seeding {seed_secs:.1} s; whole run {:.1} s; errors: {}",
        machine(),
        t_run.elapsed().as_secs_f64(),
        env.errors.count()
    );
    for r in &mut rows {
        r.params.insert("machine".into(), json!(machine()));
        r.params.insert("backend".into(), json!(if env.sqlite() { "sqlite" } else { "postgres" }));
        r.params.insert("mode".into(), json!(if z.full { "full" } else { "quick" }));
    }
    Ok(rows)
}

fn server_ref(env: &Env) -> &Server {
    &env.servers[0]
}

fn server_mut(env: &mut Env) -> &mut Server {
    &mut env.servers[0]
}

async fn initial_sync(
    env: &mut Env,
    z: &Sizes,
    c: usize,
    target: &Target,
    pool: &AnyPool,
    tid: i64,
) -> anyhow::Result<Row> {
    let (nu, ng, per) = (z.sync_users, z.sync_groups, z.sync_per_user.min(z.sync_groups));
    step(&format!(
        "Okta-style initial sync: {nu} users (lookup, then create), {ng} groups, {} memberships in PATCHes of 100",
        nu * per
    ));
    server_ref(env).reset_peak();
    let disk0 = Disk::read(target, &env.errors).await;
    let cpu0 = server_ref(env).cpu_secs();
    let client0 = server::cpu_secs(std::process::id());
    let t0 = Instant::now();
    // Users: look up by userName, create when absent.
    let (su, users) = jobs(target, &env.errors, c, nu, move |mut cl: Client, i| async move {
        let mut lat = Vec::new();
        let id = lookup_or_create(&mut cl, &format!("okta{i:07}@sync.example"), i, &mut lat).await;
        (cl, lat, id)
    })
    .await;
    let user_ids: HashMap<usize, String> = users.into_iter().collect();
    // Groups.
    let (sg, groups) = jobs(target, &env.errors, c, ng, move |mut cl: Client, g| async move {
        let mut lat = Vec::new();
        let id = cl.timed(&group_post(&format!("sync-group-{g}")), &mut lat).await.and_then(|(_, b)| id_of(&b));
        (cl, lat, id)
    })
    .await;
    let group_ids: HashMap<usize, String> = groups.into_iter().collect();
    let batches = Arc::new(member_batches(&user_ids, &group_ids, nu, ng, per));
    let memberships: usize = batches.iter().map(|b| b.1.len()).sum();
    let nb = batches.len();
    let (sm, _) = jobs::<_, _, ()>(target, &env.errors, c, nb, move |mut cl: Client, k| {
        let patch = add_members(&batches[k].0, &batches[k].1);
        async move {
            let mut lat = Vec::new();
            cl.timed(&patch, &mut lat).await;
            (cl, lat, None)
        }
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = server_ref(env).cpu_secs() - cpu0;
    let client_cpu = server::cpu_secs(std::process::id()) - client0;
    let settled = db::wait_controller(pool, tid, false, z.settle).await?;
    let applied_wall = t0.elapsed().as_secs_f64();
    let cpu_all = server_ref(env).cpu_secs() - cpu0;
    let all = Sample::merge(vec![su.lat_us.clone(), sg.lat_us.clone(), sm.lat_us.clone()], wall);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let share = cpu / wall;
    // In a closed loop the share stays near what the server can use however fast it gets (a
    // faster server just finishes sooner): CPU per request and per synced user show the work.
    // Both include the controller applying in the background; requests are the answered ones.
    let requests = all.lat_us.len().max(1) as f64;
    let cpu_us_per_request = 1e6 * cpu / requests;
    let cpu_ms_per_user = 1e3 * cpu_all / nu.max(1) as f64;
    println!(
        "    HTTP done in {wall:.1} s (users {:.1} s, groups {:.1} s, memberships {:.1} s); applied by the controller at {applied_wall:.1} s; server CPU {share:.2} cores of {cores}, this client {:.2}; server CPU (with the controller's) {cpu_us_per_request:.0} µs per request, {cpu_ms_per_user:.2} ms per user until applied",
        su.secs, sg.secs, sm.secs, client_cpu / wall
    );
    let disk = disk_window(target, env, disk0.as_ref()).await;
    let row = Row {
        ops_per_sec: Some(all.ops_per_sec()),
        p50_ms: Some(all.pct_ms(50.0)),
        p99_ms: Some(all.pct_ms(99.0)),
        peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
        met: Some(share < 0.5 * cores),
        ..Row::new(
            &format!("Okta initial sync: {:.1} s, server CPU {:.0}% of machine", wall, 100.0 * share / cores),
            "server not the bottleneck (CPU < 50% of machine)",
        )
        .param("users", nu as u64)
        .param("groups", ng as u64)
        .param("memberships", memberships as u64)
        .param("concurrency", c as u64)
        .param("wall_s", wall)
        .param("users_phase_s", su.secs)
        .param("groups_phase_s", sg.secs)
        .param("memberships_phase_s", sm.secs)
        .param("applied_by_controller_s", applied_wall)
        .param("controller_settled", settled)
        .param("server_cpu_s", cpu)
        .param("server_cpu_cores", share)
        .param("server_cpu_share_of_machine", share / cores)
        .param("client_cpu_cores", client_cpu / wall)
        .param("server_cpu_cores_until_applied", cpu_all / applied_wall)
        .param("server_cpu_us_per_request", cpu_us_per_request)
        .param("server_cpu_ms_per_user_until_applied", cpu_ms_per_user)
    };
    Ok(with_disk(row, disk.as_ref()))
}

/// The Okta-style sync again, on new users, groups and memberships, but paced the way an IdP
/// sends (open loop, `IDP_PACE` objects a second over `c` connections): does the server keep up
/// — every phase's latency from when a job fell due stays low, and the controller applies it
/// all — and what share of the machine does each phase cost it? Runs on the `okta` tenant after
/// the closed-loop sync (its users are there to be looked up), once the controller has applied
/// that; run alone, the lookups search a tenant without them.
async fn paced_sync(
    env: &mut Env,
    z: &Sizes,
    c: usize,
    target: &Target,
    pool: &AnyPool,
    tid: i64,
) -> anyhow::Result<Row> {
    let (nu, per) = (z.paced_users, z.sync_per_user);
    let ng = (nu / 100).max(per);
    // Nothing left over from the closed-loop sync may run inside this window.
    if !db::wait_controller(pool, tid, false, z.settle).await? {
        env.errors.record("IdP-paced sync: the controller had not applied the earlier sync; not measured".into());
    }
    step(&format!(
        "IdP-paced sync (open loop, {IDP_PACE:.0} objects/s over {c} connections): {nu} users (lookup, then create), {ng} groups, {} memberships in PATCHes of up to 100",
        nu * per
    ));
    server_ref(env).reset_peak();
    let disk0 = Disk::read(target, &env.errors).await;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let errors0 = env.errors.count();
    let client0 = server::cpu_secs(std::process::id());
    let t0 = Instant::now();
    let cpu0 = server_ref(env).cpu_secs();
    // The server's CPU share in every whole second of the run: "never the bottleneck" is judged
    // on the busiest second, not on an average that the long, light membership phase would
    // dilute (nor on a phase too short to measure, like the groups').
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, pid) = (stop.clone(), target.pid);
        tokio::spawn(async move {
            let mut shares = Vec::new();
            let (mut at, mut cpu) = (Instant::now(), server::cpu_secs(pid));
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until((at + Duration::from_secs(1)).into()).await;
                let (now, c) = (Instant::now(), server::cpu_secs(pid));
                shares.push((c - cpu) / (now - at).as_secs_f64() / cores);
                (at, cpu) = (now, c);
            }
            shares
        })
    };
    let Paced { sample: su, outs: users, kept: kept_u, .. } =
        paced(target, &env.errors, c, nu, IDP_PACE, move |mut cl: Client, i| async move {
            let id = lookup_or_create(&mut cl, &format!("paced{i:07}@sync.example"), i, &mut Vec::new()).await;
            (cl, id.is_some(), id)
        })
        .await;
    let cpu1 = server_ref(env).cpu_secs();
    let Paced { sample: sg, outs: groups, kept: kept_g, .. } =
        paced(target, &env.errors, c, ng, IDP_PACE, move |mut cl: Client, g| async move {
            let id = cl.send(&group_post(&format!("paced-group-{g}"))).await.and_then(|(_, b)| id_of(&b));
            if id.is_none() {
                cl.errors.record(format!("paced-group-{g}: no group id in the answer to its POST"));
            }
            (cl, id.is_some(), id)
        })
        .await;
    let cpu2 = server_ref(env).cpu_secs();
    let batches = Arc::new(member_batches(&users.into_iter().collect(), &groups.into_iter().collect(), nu, ng, per));
    let memberships: usize = batches.iter().map(|b| b.1.len()).sum();
    let nb = batches.len();
    // A PATCH carries up to 100 objects: one falls due every 100 objects' time.
    let Paced { sample: sm, kept: kept_m, .. } = paced::<_, _, ()>(target, &env.errors, c, nb, IDP_PACE / 100.0, {
        let batches = batches.clone();
        move |mut cl: Client, k| {
            let patch = add_members(&batches[k].0, &batches[k].1);
            async move {
                let ok = cl.send(&patch).await.is_some();
                (cl, ok, None)
            }
        }
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu3 = server_ref(env).cpu_secs();
    let client_cpu = server::cpu_secs(std::process::id()) - client0;
    let settled = db::wait_controller(pool, tid, false, z.settle).await?;
    let applied_wall = t0.elapsed().as_secs_f64();
    // The controller's work after the last answer, counted in the whole run's share.
    let cpu_all = server_ref(env).cpu_secs() - cpu0;
    stop.store(true, Ordering::Relaxed);
    let seconds = sampler.await.unwrap_or_default();
    let disk = disk_window(target, env, disk0.as_ref()).await;
    let objects = nu + ng + memberships;
    let phases = [
        ("users", &su, nu, cpu1 - cpu0, kept_u),
        ("groups", &sg, ng, cpu2 - cpu1, kept_g),
        ("memberships", &sm, nb, cpu3 - cpu2, kept_m),
    ];
    let share_of = |cpu: f64, secs: f64| if secs > 0.0 { cpu / secs / cores } else { 0.0 };
    // A phase's own share only when it lasted long enough for the CPU clock's ticks (10 ms).
    let phase_share = |cpu: f64, secs: f64| (secs >= 1.0).then(|| share_of(cpu, secs));
    let mut missing = 0;
    for (name, sample, jobs, _, _) in &phases {
        // Every job of a phase must have answered (a failed one is in the errors already).
        if sample.lat_us.len() != *jobs {
            missing += jobs - sample.lat_us.len().min(*jobs);
            env.errors.record(format!(
                "IdP-paced sync: {} of {jobs} {name} jobs did not complete",
                jobs - sample.lat_us.len().min(*jobs)
            ));
        }
    }
    let worst_share = seconds.iter().copied().fold(0.0, f64::max);
    if seconds.is_empty() {
        env.errors.record("IdP-paced sync: no whole second of CPU samples".into());
    }
    let worst_p99 = phases.iter().map(|p| p.1.pct_ms(99.0)).fold(0.0, f64::max);
    let share_all = share_of(cpu_all, applied_wall);
    let failed = env.errors.count() - errors0;
    let all = Sample::merge(vec![su.lat_us.clone(), sg.lat_us.clone(), sm.lat_us.clone()], wall);
    for (name, sample, _, cpu, kept) in &phases {
        println!(
            "    {name}: {:.1} s, scheduled at {kept:.1} jobs/s, server CPU {} of machine, latency from due p50 {:.1} ms, p99 {:.1} ms",
            sample.secs,
            phase_share(*cpu, sample.secs).map_or("- (under 1 s)".into(), |v| format!("{:.0}%", 100.0 * v)),
            sample.pct_ms(50.0),
            sample.pct_ms(99.0)
        );
    }
    println!(
        "    {objects} objects in {wall:.1} s ({:.0}/s); applied by the controller at {applied_wall:.1} s; server CPU over it all {:.0}% of machine (until applied), in its busiest second {:.0}%; this client {:.2} cores",
        objects as f64 / wall,
        100.0 * share_all,
        100.0 * worst_share,
        client_cpu / wall
    );
    let mut row = Row {
        ops_per_sec: Some(objects as f64 / wall),
        p50_ms: Some(all.pct_ms(50.0)),
        p99_ms: Some(worst_p99),
        peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
        met: Some(worst_share < 0.5 && worst_p99 <= 50.0 && failed == 0 && missing == 0 && settled),
        ..Row::new(
            &format!(
                "IdP-paced sync: {objects} objects at {IDP_PACE:.0}/s (ops/s = objects/s; p50 of all jobs, p99 of the worst phase, from when a job fell due), server CPU {:.0}% of machine in its busiest second",
                100.0 * worst_share
            ),
            "keeps up with 600 × Entra's documented pace: < 50% of machine in every second; every phase's p99 ≤ 50 ms; no failures; all applied",
        )
        .param("users", nu as u64)
        .param("groups", ng as u64)
        .param("memberships", memberships as u64)
        .param("patches", nb as u64)
        .param("objects", objects as u64)
        .param("pace_objects_per_s", IDP_PACE)
        .param("connections", c as u64)
        .param("wall_s", wall)
        .param("applied_by_controller_s", applied_wall)
        .param("controller_settled", settled)
        .param("failed_requests", failed)
        .param("jobs_missing", missing as u64)
        .param("server_cpu_share_of_machine_busiest_second", worst_share)
        .param("server_cpu_share_of_machine_per_second", seconds.clone())
        .param("server_cpu_share_of_machine_until_applied", share_all)
        .param("client_cpu_cores", client_cpu / wall)
    };
    row = with_disk(row, disk.as_ref());
    for (name, sample, _, cpu, kept) in &phases {
        row = row
            .param(&format!("{name}_phase_s"), sample.secs)
            .param(&format!("{name}_scheduled_jobs_per_s"), *kept)
            .param(&format!("{name}_server_cpu_share_of_machine"), phase_share(*cpu, sample.secs))
            .param(&format!("{name}_p50_ms"), sample.pct_ms(50.0))
            .param(&format!("{name}_p99_ms"), sample.pct_ms(99.0));
    }
    Ok(row)
}

/// An Okta-style user push: look the user up by `userName`, create it when absent; its id.
async fn lookup_or_create(cl: &mut Client, name: &str, i: usize, lat: &mut Vec<u64>) -> Option<String> {
    let f = format!("userName eq \"{name}\"");
    let (_, b) = cl.timed(&Req::get(format!("{SCIM}/Users?filter={}&startIndex=1&count=100", enc(&f))), lat).await?;
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let id = if v.get("totalResults").and_then(Value::as_u64) == Some(0) {
        let (_, b) = cl.timed(&Req::post(format!("{SCIM}/Users"), user_json(name, i)), lat).await?;
        id_of(&b)
    } else {
        v.pointer("/Resources/0/id").and_then(Value::as_str).map(str::to_string)
    };
    if id.is_none() {
        cl.errors.record(format!("{name}: a successful lookup or create without a user id"));
    }
    id
}

/// `POST /Groups` of an empty group.
fn group_post(name: &str) -> Req {
    let body = json!({"schemas": [GROUP_URN], "displayName": name, "members": []});
    Req::post(format!("{SCIM}/Groups"), body.to_string())
}

/// A `PATCH` adding `members` to group `gid`.
fn add_members(gid: &str, members: &[String]) -> Req {
    let value: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let body = json!({"schemas": [PATCH_URN], "Operations": [{"op": "add", "path": "members", "value": value}]});
    Req::patch(format!("{SCIM}/Groups/{gid}"), body.to_string())
}

/// The sync's memberships as `(group id, up to 100 member ids)` PATCHes: user `i` is in groups
/// `(i + j·ng/per) mod ng` for `j < per`.
fn member_batches(
    users: &HashMap<usize, String>,
    groups: &HashMap<usize, String>,
    nu: usize,
    ng: usize,
    per: usize,
) -> Vec<(String, Vec<String>)> {
    let mut members: Vec<Vec<String>> = vec![Vec::new(); ng];
    for i in 0..nu {
        if let Some(uid) = users.get(&i) {
            for j in 0..per {
                members[(i + j * (ng / per)) % ng].push(uid.clone());
            }
        }
    }
    let mut batches = Vec::new();
    for (g, ms) in members.into_iter().enumerate() {
        let Some(gid) = groups.get(&g) else { continue };
        for chunk in ms.chunks(100) {
            batches.push((gid.clone(), chunk.to_vec()));
        }
    }
    batches
}

/// The disk's window since `before` (read now), printed; `None` when the metrics could not be read.
async fn disk_window(target: &Target, env: &Env, before: Option<&Disk>) -> Option<disk::Window> {
    let w = disk::Window::of(before, Disk::read(target, &env.errors).await.as_ref())?;
    println!("    {}", w.line());
    Some(w)
}

/// `row` with the disk's window in its parameters.
fn with_disk(row: Row, disk: Option<&disk::Window>) -> Row {
    match disk {
        Some(w) => w.params(row),
        None => row,
    }
}

async fn push_applied(env: &mut Env, z: &Sizes, target: &Target, pool: &AnyPool, tid: i64) -> anyhow::Result<Row> {
    let total = (z.push_rate * z.push_secs) as usize;
    step(&format!(
        "push → applied: {total} POST /Users at {} /s (open loop), applied time read from the runs",
        z.push_rate
    ));
    server_ref(env).reset_peak();
    let disk0 = Disk::read(target, &env.errors).await;
    let (wall0, t0) = (chrono::Utc::now(), Instant::now());
    let pushed =
        paced::<_, _, ()>(target, &env.errors, 64, total, z.push_rate as f64, |mut cl: Client, k| async move {
            let name = format!("push-{k:07}@bench.example");
            let ok = cl.send(&Req::post(format!("{SCIM}/Users"), user_json(&name, k))).await.is_some();
            (cl, ok, None)
        })
        .await;
    let http = &pushed.sample;
    let achieved = total as f64 / http.secs;
    // Push k was sent when it fell due: at this wall-clock time.
    let sent_wall = |k: usize| {
        wall0 + chrono::Duration::from_std(pushed.start - t0 + pushed.interval.mul_f64(k as f64)).unwrap_or_default()
    };
    let settled = db::wait_controller(pool, tid, false, z.settle).await?;
    let disk = disk_window(target, env, disk0.as_ref()).await;
    // Audit rows from a second before the first push on (the server stamps them with its clock,
    // the same machine's).
    let since = (wall0 - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let times = db::applied_times(pool, tid, "push-", &since).await?;
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&chrono::Utc));
    let mut to_run = Vec::new();
    let mut to_apply = Vec::new();
    for (email, applied, finished) in &times {
        let Some(k) =
            email.strip_prefix("push-").and_then(|r| r.split('@').next()).and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if k >= total {
            continue;
        }
        let sent_wall = sent_wall(k);
        if let Some(t) = parse(applied) {
            to_apply.push((t - sent_wall).num_microseconds().unwrap_or(0).max(0) as u64);
        }
        if let Some(t) = finished.as_deref().and_then(parse) {
            to_run.push((t - sent_wall).num_microseconds().unwrap_or(0).max(0) as u64);
        }
    }
    let missing = total.saturating_sub(to_run.len());
    if missing > 0 {
        env.errors.record(format!("push → applied: {missing} of {total} pushed users never showed up as applied"));
    }
    let run = Sample::merge(vec![to_run], 1.0);
    let apply = Sample::merge(vec![to_apply], 1.0);
    println!(
        "    push sent → run committed p50 {:.1} ms, p99 {:.1} ms; the push's own answer p99 {:.1} ms",
        run.pct_ms(50.0),
        run.pct_ms(99.0),
        http.pct_ms(99.0)
    );
    let row = Row::new("push → applied (p50/p99 = push sent → run committed)", "p99 ≤ 50 ms at 500 pushes/s")
        .param("pushes", total as u64)
        .param("rate_per_s", z.push_rate)
        .param("http_p50_ms", http.pct_ms(50.0))
        .param("http_p99_ms", http.pct_ms(99.0))
        .param("apply_stamp_p50_ms", apply.pct_ms(50.0))
        .param("apply_stamp_p99_ms", apply.pct_ms(99.0))
        .param("missing", missing as u64)
        .param("controller_settled", settled);
    Ok(Row {
        ops_per_sec: Some(achieved),
        p50_ms: Some(run.pct_ms(50.0)),
        p99_ms: Some(run.pct_ms(99.0)),
        peak_rss_mb: Some(server_ref(env).peak_rss_mb()),
        met: Some(run.pct_ms(99.0) <= 50.0 && missing == 0),
        ..with_disk(row, disk.as_ref())
    })
}

async fn drift_repair(
    env: &mut Env,
    z: &Sizes,
    target: &Target,
    pool: &AnyPool,
    tid: i64,
    scan_secs: f64,
    scan_rows: u64,
) -> anyhow::Result<Vec<Row>> {
    step("full drift-repair run: 1% of the actual users drifted by hand");
    db::wait_controller(pool, tid, false, z.settle).await?;
    let drifted = db::drift(pool, tid).await?;
    let scim_users: i64 = {
        use sqlx::Row as _;
        sqlx::query("SELECT COUNT(*) AS n FROM scim_users WHERE tenant_id = $1")
            .bind(tid)
            .fetch_one(pool)
            .await?
            .try_get("n")?
    };
    server_ref(env).reset_peak();
    let mut cl = Client::new(target, env.errors.clone());
    let t = Instant::now();
    let plan = cl.send(&Req::get("/v1/admin/tenants/bench/plan").admin()).await;
    let plan_secs = t.elapsed().as_secs_f64();
    let planned = plan
        .as_ref()
        .and_then(|(_, b)| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| v.pointer("/summary/update").and_then(Value::as_u64))
        .unwrap_or(0);
    let plan_rss = server_ref(env).peak_rss_mb();
    server_ref(env).reset_peak();
    let t = Instant::now();
    let run = cl.send(&Req::post("/v1/admin/tenants/bench/reconcile", "{}".into()).admin()).await;
    let run_secs = t.elapsed().as_secs_f64();
    let out = run.as_ref().and_then(|(_, b)| serde_json::from_slice::<Value>(b).ok()).unwrap_or(Value::Null);
    let applied = out.get("applied").and_then(Value::as_u64).unwrap_or(0);
    let status = out.get("status").and_then(Value::as_str).unwrap_or("?").to_string();
    let run_rss = server_ref(env).peak_rss_mb();
    if applied != drifted {
        env.errors
            .record(format!("drift repair applied {applied} changes for {drifted} drifted users (status {status})"));
    }
    println!("    {drifted} drifted of {scim_users}; plan {plan_secs:.2} s ({planned} updates); run {run_secs:.2} s, {status}, {applied} applied");
    let scan_rate = scan_rows as f64 / scan_secs;
    let plan_rate = 2.0 * scim_users as f64 / plan_secs;
    Ok(vec![
        Row {
            ops_per_sec: Some(plan_rate),
            p50_ms: Some(plan_secs * 1000.0),
            ceiling_ops_per_sec: Some(scan_rate),
            ratio_to_ceiling: ratio(plan_rate, scan_rate),
            peak_rss_mb: Some(plan_rss),
            met: Some(plan_secs <= 3.0 * scan_secs * (2.0 * scim_users as f64 / scan_rows as f64)),
            ..Row::new("drift repair: plan phase (rows/s; p50 = whole plan)", "≤ 3 × ordered scan (ratio ≥ 0.33)")
                .param("scim_users", scim_users)
                .param("drifted", drifted)
                .param("planned_updates", planned)
                .param("plan_s", plan_secs)
                .param("ordered_scan_s", scan_secs)
        },
        Row {
            ops_per_sec: Some(scim_users as f64 / run_secs),
            p50_ms: Some(run_secs * 1000.0),
            peak_rss_mb: Some(run_rss),
            met: Some(run_secs <= 10.0 && run_rss <= 256.0 && applied == drifted),
            ..Row::new("drift repair: full run (users/s; p50 = whole run)", "≤ 10 s wall; peak RSS ≤ 256 MB")
                .param("scim_users", scim_users)
                .param("drifted", drifted)
                .param("applied", applied)
                .param("status", status)
                .param("run_s", run_secs)
        },
    ])
}

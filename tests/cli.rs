//! The command line, driven as a user would: the real binary on a real SQLite file.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use common::served::{db, run, Served, BIN};
use moonborn_scim::cli::Cli;

mod common;

#[test]
fn verify_cli() {
    Cli::command().debug_assert();
}

#[test]
fn tenants_and_tokens() {
    let (_dir, db) = db();
    let (ok, out, _) = run(&db, &["tenant", "create", "acme"]);
    assert!(ok, "{out}");
    assert!(out.contains("enterprise"), "{out}");
    assert!(run(&db, &["tenant", "create", "free-co", "--tier", "free"]).0);
    let (ok, _, err) = run(&db, &["tenant", "create", "acme"]);
    assert!(!ok, "a duplicate slug must fail");
    assert!(err.contains("already taken"), "{err}");
    let (_, list, _) = run(&db, &["tenant", "list"]);
    assert!(list.contains("acme") && list.contains("free-co") && list.contains("free"), "{list}");

    let (ok, out, _) = run(&db, &["token", "create", "--tenant", "acme"]);
    assert!(ok);
    let token = out.lines().last().expect("a last line").trim().to_string();
    assert!(token.starts_with("mbscim_") && token.len() >= 7 + 43, "{token}");
    let (_, listed, _) = run(&db, &["token", "list", "--tenant", "acme"]);
    assert!(!listed.contains(&token), "token list must never show a secret");
    let id = listed.lines().nth(1).and_then(|l| l.split_whitespace().next()).expect("a token row").to_string();
    // Another tenant's token is refused (and stays live).
    let (ok, _, err) = run(&db, &["token", "revoke", "--tenant", "free-co", &id]);
    assert!(!ok && err.contains("tenant free-co has no live token"), "{err}");
    let (_, listed, _) = run(&db, &["token", "list", "--tenant", "acme"]);
    assert!(listed.lines().nth(1).unwrap().trim_end().ends_with(" no"), "still live: {listed}");
    assert!(!run(&db, &["token", "revoke", &id]).0, "--tenant is required");
    assert!(run(&db, &["token", "revoke", "--tenant", "acme", &id]).0);
    let (_, listed, _) = run(&db, &["token", "list", "--tenant", "acme"]);
    assert!(!listed.lines().nth(1).unwrap().trim_end().ends_with(" no"), "{listed}");
    assert!(!run(&db, &["token", "revoke", "--tenant", "acme", &id]).0, "revoking twice fails");
    let (ok, _, err) = run(&db, &["token", "create", "--tenant", "nope"]);
    assert!(!ok && err.contains("no tenant \"nope\" in the database sqlite://"), "{err}");
}

#[test]
fn operators_are_created_listed_and_revoked() {
    let (_dir, db) = db();
    assert!(run(&db, &["tenant", "create", "acme"]).0);
    let (ok, out, err) = run(&db, &["operator", "create", "alice"]);
    assert!(ok, "{err}");
    let token = out.lines().last().expect("a last line").trim().to_string();
    assert!(token.starts_with("mbop_") && token.len() >= 5 + 43, "the token alone on the last line: {out}");
    let (ok, out, _) = run(&db, &["operator", "create", "acme-it", "--tenant", "acme"]);
    assert!(ok && out.contains("tenant acme"), "{out}");
    let (ok, _, err) = run(&db, &["operator", "create", "alice"]);
    assert!(!ok && err.contains("already taken"), "a duplicate name must fail: {err}");
    let (ok, _, err) = run(&db, &["operator", "create", "bob", "--tenant", "nope"]);
    assert!(!ok && err.contains("no tenant \"nope\""), "{err}");
    let (ok, _, err) = run(&db, &["operator", "create", "<b>"]);
    assert!(!ok && err.contains("operator name"), "{err}");
    let (_, listed, _) = run(&db, &["operator", "list"]);
    assert!(!listed.contains(&token), "a listing never shows a token");
    assert!(listed.contains("alice") && listed.contains("acme-it") && listed.contains("(all)"), "{listed}");
    assert!(run(&db, &["operator", "revoke", "alice"]).0);
    assert!(!run(&db, &["operator", "revoke", "alice"]).0, "revoking twice fails");
}

#[test]
fn plan_diffs_an_offline_snapshot() {
    let (_dir, db) = db();
    assert!(run(&db, &["tenant", "create", "acme"]).0);
    let snapshot = concat!(env!("CARGO_MANIFEST_DIR"), "/desired-state/examples/acme-okta.json");
    let (ok, out, err) = run(&db, &["plan", "--tenant", "acme", "--desired", snapshot]);
    assert!(ok, "{err}");
    let users = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(snapshot).unwrap()).unwrap()
        ["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("userName").is_some())
        .count();
    assert!(
        out.trim_end()
            .ends_with(&format!("Plan: {users} to create, 0 to update, 0 to deactivate, 0 to delete, 0 to purge.")),
        "{out}"
    );
    assert!(out.contains("will be created (welcome email queued)"), "{out}");
    // The snapshot's two inactive users are created disabled, with no welcome email.
    assert_eq!(out.matches("will be created disabled (no welcome email)").count(), 2, "{out}");
    assert!(!out.contains('\x1b'), "no colour when stdout is not a terminal");
    let (_, coloured, _) = run(&db, &["--color", "always", "plan", "--tenant", "acme", "--desired", snapshot]);
    assert!(coloured.contains("\x1b[32m+"), "--color always colours the report: {coloured}");
    let (_, plain, _) = run(&db, &["plan", "--tenant", "acme", "--desired", snapshot, "--color", "never"]);
    assert_eq!(plain, out, "--color never: the plain report");
    let (ok, json, _) = run(&db, &["plan", "--tenant", "acme", "--desired", snapshot, "--format", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(v["changes"].as_array().unwrap().len(), users);
    assert_eq!(v["summary"]["create"], users);
    // Offline: nothing was applied.
    let (_, again, _) = run(&db, &["plan", "--tenant", "acme"]);
    assert!(again.contains("Plan: 0 to create"), "{again}");
}

#[test]
fn serve_creates_the_default_tenant_and_stops_on_sigterm() {
    let (_dir, db) = db();
    let mut served = Served::start(&db, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://{}/v1/auth/scim/v2/Users?count=1", served.addr))
            .bearer_auth(&served.token)
            .send()
            .await
            .expect("request")
            .status()
    });
    assert_eq!(status.as_u16(), 200);
    let (_, list, _) = run(&db, &["tenant", "list"]);
    assert!(list.contains("default") && list.contains("enterprise"), "{list}");
    served.stop();
}

#[test]
fn plan_with_other_bindings_shows_the_role_changes_and_stores_nothing() {
    let (dir, db) = db();
    // dev in Engineering and bea in no group, pushed over SCIM and provisioned as viewers.
    let mut served = Served::start(&db, Some("cli-test-admin-token"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let base = format!("http://{}/v1/auth/scim/v2", served.addr);
        let post = |path: &str, body: serde_json::Value| {
            c.post(format!("{base}{path}")).bearer_auth(&served.token).json(&body).send()
        };
        let mut ids = Vec::new();
        for name in ["dev@acme.com", "bea@acme.com"] {
            let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
            let r = post("/Users", body).await.expect("push a user");
            assert_eq!(r.status().as_u16(), 201);
            ids.push(r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string());
        }
        let group = serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Engineering", "members": [{"value": ids[0]}]});
        assert_eq!(post("/Groups", group).await.expect("push a group").status().as_u16(), 201);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let users = c
                .get(format!("http://{}/v1/admin/tenants/default/users", served.addr))
                .bearer_auth("cli-test-admin-token")
                .send()
                .await
                .expect("list users")
                .json::<serde_json::Value>()
                .await
                .unwrap();
            let viewers =
                users["users"].as_array().unwrap().iter().filter(|u| u["roles"] == serde_json::json!(["viewer"]));
            if viewers.count() == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "users not provisioned: {users}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    served.stop();

    // Engineering bound to editor; the default role (absent) stays viewer: only dev changes.
    let file = dir.path().join("bindings.json");
    std::fs::write(&file, r#"{"bindings": [{"group": "engineering", "role": "editor"}]}"#).unwrap();
    let file = file.to_str().unwrap();
    let (ok, out, err) = run(&db, &["plan", "--tenant", "default", "--bindings", file]);
    assert!(ok, "{err}");
    assert!(out.contains("user dev@acme.com will be updated\n"), "{out}");
    assert!(out.contains("-roles: viewer\n+roles: editor\n"), "{out}");
    assert!(!out.contains("bea@acme.com"), "{out}");
    assert!(
        out.trim_end().ends_with("Plan: 0 to create, 1 to update, 0 to deactivate, 0 to delete, 0 to purge."),
        "{out}"
    );
    let (ok, json, _) = run(&db, &["plan", "--tenant", "default", "--bindings", file, "--format", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(v["changes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["changes"][0]["after"]["roles"], serde_json::json!(["editor"]));
    // The repository's file is the default bindings: nothing to change.
    let defaults = concat!(env!("CARGO_MANIFEST_DIR"), "/desired-state/group-bindings.json");
    let (ok, out, err) = run(&db, &["plan", "--tenant", "default", "--bindings", defaults]);
    assert!(ok && out.contains("No changes"), "{out}{err}");
    // Nothing was stored.
    let (ok, out, _) = run(&db, &["plan", "--tenant", "default"]);
    assert!(ok && out.contains("No changes"), "{out}");

    // A bad file: a clear error and a failing exit.
    let bad = dir.path().join("bad.json");
    for (text, needle) in [
        ("{\"bindings\": [{\"group\": \"ops\", \"role\": \"root\"}]}", "unknown role \"root\""),
        ("{\"bindngs\": []}", "unknown field `bindngs`"),
        ("[[], null]", "is not a group-bindings body"),
        ("{\"bindings\": ", "is not a group-bindings body"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let (ok, out, err) = run(&db, &["plan", "--tenant", "default", "--bindings", bad.to_str().unwrap()]);
        assert!(!ok && out.is_empty(), "{text}: {out}");
        assert!(err.contains(bad.to_str().unwrap()) && err.contains(needle), "{text}: {err}");
    }
    let (ok, _, err) = run(&db, &["plan", "--tenant", "default", "--bindings", "/nonexistent/bindings.json"]);
    assert!(!ok && err.contains("reading /nonexistent/bindings.json"), "{err}");
}

fn run_code(db: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("--database-url").arg(db).args(args).output().expect("run the binary");
    let code = out.status.code().expect("an exit code");
    (code, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Pushes users into the tenant's desired state through the store (what the SCIM API records),
/// `active` as given; their SCIM ids.
fn push_users(db: &str, active: &[(usize, bool)], ids: &mut Vec<String>) {
    use moonborn_scim::scim::schema::{normalize, Kind};
    use moonborn_scim::store::Intent;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = moonborn_scim::Store::open(db).await.expect("open");
        let t = store.tenant("acme").await.expect("acme");
        for &(i, on) in active {
            let doc = normalize(
                Kind::User,
                serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                   "userName": format!("u{i}@acme.example"), "active": on}),
            )
            .expect("user");
            let now = moonborn_scim::domain::now();
            let intent = Intent { tenant_id: t.id, request_id: "cli-test", now: &now };
            if i < ids.len() {
                let cur = store.get_user(t.id, &ids[i]).await.expect("user");
                store.update_user(&intent, &ids[i], &doc, cur.version, "patch").await.expect("update");
            } else {
                let id = uuid::Uuid::new_v4().to_string();
                store.insert_user(&intent, &id, &doc).await.expect("insert");
                ids.push(id);
            }
        }
        store.close().await;
    });
}

#[test]
fn a_held_plan_is_seen_approved_and_released_from_the_command_line() {
    let (_dir, db) = db();
    assert!(run(&db, &["tenant", "create", "acme"]).0);
    let mut ids = Vec::new();
    push_users(&db, &(0..6).map(|i| (i, true)).collect::<Vec<_>>(), &mut ids);
    let (code, _, err) = run_code(&db, &["plan", "--tenant", "acme", "--detailed-exitcode"]);
    assert_eq!(code, 2, "changes to make: {err}");
    let (code, out, err) = run_code(&db, &["reconcile", "--tenant", "acme", "--format", "json", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((run["status"].as_str(), run["applied"].as_u64()), (Some("applied"), Some(6)), "{run}");
    assert!(run["run_id"].as_str().is_some_and(|r| r.len() == 36), "{run}");
    assert_eq!(run["report"]["schema"], "moonborn-scim/plan/v1");
    assert_eq!(run_code(&db, &["plan", "--tenant", "acme", "--detailed-exitcode"]).0, 0, "nothing to do");

    // Any deactivation trips the valve.
    let (code, out, _) = run_code(&db, &["safety", "--tenant", "acme", "--percent", "0", "--min-users", "1"]);
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (s["percent"].as_u64(), s["min_users"].as_u64(), s["enabled"].as_bool()),
        (Some(0), Some(1), Some(true))
    );
    assert_ne!(run_code(&db, &["safety", "--tenant", "acme", "--percent", "101"]).0, 0);
    assert_ne!(run_code(&db, &["safety", "--tenant", "acme", "--settle-secs", "200", "--max-wait-secs", "100"]).0, 0);
    push_users(&db, &[(0, false), (1, false)], &mut ids);
    let (code, out, _) = run_code(&db, &["plan", "--tenant", "acme", "--detailed-exitcode"]);
    assert_eq!(code, 3, "held: {out}");
    assert!(out.contains("HELD: would deactivate 2 of 6 SCIM users; threshold 0% (0) and at least 1"), "{out}");
    let (code, out, _) = run_code(&db, &["reconcile", "--tenant", "acme", "--format", "json", "--detailed-exitcode"]);
    assert_eq!(code, 3);
    let run: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (run["status"].as_str(), run["held"].as_u64(), run["applied"].as_u64()),
        (Some("held"), Some(2), Some(0))
    );
    let (_, list, _) = run_code(&db, &["tenant", "list"]);
    let row = list.lines().find(|l| l.starts_with("acme")).expect("acme listed");
    assert!(row.contains(" held ") && row.contains("2 changes"), "{list}");
    let (_, s, _) = run_code(&db, &["safety", "--tenant", "acme"]);
    let s: serde_json::Value = serde_json::from_str(&s).expect("JSON");
    let fp = s["held"]["fingerprint"].as_str().expect("held").to_string();
    assert_eq!(s["held"]["approve"], format!("moonborn-scim approve --tenant acme {fp}"));

    // Approve exactly that plan; approving it again says it was applied.
    assert_ne!(run_code(&db, &["approve", "--tenant", "acme", "not-hex"]).0, 0);
    let (code, out, err) = run_code(&db, &["approve", "--tenant", "acme", &fp]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied (2 applied, 0 held"), "{out}");
    let (code, out, _) = run_code(&db, &["approve", "--tenant", "acme", &fp]);
    assert_eq!(code, 0);
    assert!(out.contains("already applied by run"), "{out}");
    let (_, runs, _) = run_code(&db, &["runs", "--tenant", "acme"]);
    assert!(runs.lines().nth(1).is_some_and(|l| l.contains("operator") && l.contains("applied")), "{runs}");
    assert!(runs.contains("hold ended: an operator approved the plan"), "{runs}");

    // Release: nothing held, nothing runs; then a held deactivation released.
    let (code, out, _) = run_code(&db, &["release", "--tenant", "acme"]);
    assert_eq!((code, out.trim()), (0, "tenant acme holds nothing; nothing was run"));
    push_users(&db, &[(2, false)], &mut ids);
    assert_eq!(run_code(&db, &["reconcile", "--tenant", "acme", "--detailed-exitcode"]).0, 3);
    let (code, out, _) = run_code(&db, &["release", "--tenant", "acme"]);
    assert_eq!(code, 0);
    assert!(out.contains("applied 1 changes (1 deactivations and deletions)"), "{out}");
    assert_eq!(run_code(&db, &["plan", "--tenant", "acme", "--detailed-exitcode"]).0, 0);
}

/// The password of these tests' database URLs: it must never be printed.
const PASSWORD: &str = "hunter2-never-printed";

fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("MOONBORN_DATABASE_URL")
        .env_remove("MOONBORN_ADMIN_TOKEN")
        .env_remove("MOONBORN_METRICS_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn secrets_are_never_printed_and_an_unreachable_database_fails_fast_saying_why() {
    let url = format!("postgres://moonborn:{PASSWORD}@127.0.0.1:1/moonborn");
    let env = [
        ("MOONBORN_DATABASE_URL", url.as_str()),
        ("MOONBORN_ADMIN_TOKEN", PASSWORD),
        ("MOONBORN_METRICS_TOKEN", PASSWORD),
    ];
    for args in [&["--help"][..], &["serve", "--help"], &["tenant", "list", "--help"]] {
        let (code, out, err) = run_env(args, &env);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "{args:?} printed the secret:\n{out}{err}");
        assert!(out.contains("MOONBORN_DATABASE_URL"), "{out}");
    }
    // Nothing listens on port 1: refused at once, said plainly, without the password.
    let (code, out, err) = run_env(&["tenant", "list"], &env);
    assert_ne!(code, 0);
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "{out}{err}");
    assert!(err.contains("cannot connect to PostgreSQL at postgres://moonborn:***@127.0.0.1:1/moonborn"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "says why: {err}");
    // A password given as a parameter is kept out too; a bad URL is refused without it.
    let q = format!("postgres://127.0.0.1:1/moonborn?user=moonborn&password={PASSWORD}");
    let (_, out, err) = run_env(&["tenant", "list"], &[("MOONBORN_DATABASE_URL", q.as_str())]);
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD) && err.contains("password=***"), "{err}");
    let bad = format!("mysql://root:{PASSWORD}@localhost/db");
    let (code, _, err) = run_env(&["tenant", "list"], &[("MOONBORN_DATABASE_URL", bad.as_str())]);
    assert!(code != 0 && !err.contains(PASSWORD) && err.contains("unsupported database URL"), "{err}");
}

#[test]
fn secrets_can_come_from_files() {
    let (dir, db) = db();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{db}\n")).unwrap();
    let f = url_file.to_str().unwrap();
    let (code, out, err) = run_env(&["tenant", "create", "filed"], &[("MOONBORN_DATABASE_URL_FILE", f)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created tenant filed"), "{out}");
    let (_, list, _) = run_env(&["--database-url", &db, "tenant", "list"], &[]);
    assert!(list.contains("filed"), "the file named the same database: {list}");
    // Both given: refused, naming both, printing neither.
    let (code, _, err) =
        run_env(&["tenant", "list"], &[("MOONBORN_DATABASE_URL_FILE", f), ("MOONBORN_DATABASE_URL", db.as_str())]);
    assert!(code != 0 && err.contains("MOONBORN_DATABASE_URL_FILE"), "{err}");
    let (code, _, err) = run_env(&["tenant", "list"], &[("MOONBORN_DATABASE_URL_FILE", "/nonexistent/x")]);
    assert!(code != 0 && err.contains("/nonexistent/x"), "{err}");
}

#[test]
fn every_refused_request_leaves_an_access_line_and_json_logs_are_json() {
    let (_dir, db) = db();
    let mut served = Served::start_with(&db, None, &["--log-format", "json"], &["--shutdown-delay", "0"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{}/v1/auth/scim/v2", served.addr);
    let statuses = rt.block_on(async {
        let c = reqwest::Client::new();
        let a = c.get(format!("{base}/Users/no-such-id")).bearer_auth(&served.token).send().await.unwrap().status();
        let b = c.get(format!("{base}/Users")).bearer_auth("mbscim_wrong").send().await.unwrap().status();
        let ok = c.get(format!("{base}/Users?count=1")).bearer_auth(&served.token).send().await.unwrap().status();
        [a.as_u16(), b.as_u16(), ok.as_u16()]
    });
    assert_eq!(statuses, [404, 401, 200]);
    served.stop();
    let mut rest = String::new();
    served._pipes.1.read_to_string(&mut rest).expect("the server's log");
    assert!(!rest.contains(&served.token), "a token in the log: {rest}");
    let lines: Vec<serde_json::Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] == "moonborn_scim::access").collect();
    let line = |status: u64| access.iter().find(|l| l["status"] == status).copied();
    let nf = line(404).unwrap_or_else(|| panic!("no line for the 404: {rest}"));
    assert_eq!(
        (nf["level"].as_str(), nf["route"].as_str(), nf["tenant"].as_str()),
        (Some("INFO"), Some("/Users/{id}"), Some("default")),
        "{nf}"
    );
    assert_eq!(nf["method"], "GET");
    assert!(nf["detail"].as_str().is_some_and(|d| !d.is_empty()) && nf["request_id"].is_string(), "{nf}");
    assert!(nf["latency_ms"].is_string() || nf["latency_ms"].is_number(), "{nf}");
    let unauth = line(401).unwrap_or_else(|| panic!("no line for the 401: {rest}"));
    assert_eq!((unauth["tenant"].as_str(), unauth["route"].as_str()), (Some("-"), Some("/Users")), "{unauth}");
    assert!(line(200).is_none(), "successful requests are logged at debug only: {rest}");
}

#[test]
fn readiness_flips_to_503_when_shutdown_begins_while_requests_are_still_served() {
    let (_dir, db) = db();
    let mut served = Served::start_with(&db, None, &[], &["--shutdown-delay", "3"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |path: &str| {
        let url = format!("http://{}{path}", served.addr);
        let token = served.token.clone();
        rt.block_on(async move {
            let r = reqwest::Client::new().get(url).bearer_auth(token).send().await.expect("request");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    assert_eq!(get("/readyz"), (200, "ready\n".to_string()));
    assert_eq!(get("/healthz").0, 200);
    assert!(Command::new("kill").args(["-TERM", &served.child.id().to_string()]).status().unwrap().success());
    // Within the shutdown delay: not ready, yet still serving (alive, and SCIM answers).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = get("/readyz");
        if status == 503 {
            assert_eq!(body, "stopping\n");
            break;
        }
        assert!(Instant::now() < deadline, "readyz did not flip after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/v1/auth/scim/v2/Users?count=1").0, 200);
    served.stop();
}

#[test]
fn a_webhook_url_needs_a_well_formed_secret_and_none_is_ever_printed() {
    let (_dir, db) = db();
    let serve =
        ["--database-url", db.as_str(), "serve", "--listen", "127.0.0.1:0", "--webhook-url", "http://127.0.0.1:9/h"];
    // No secret: refused at start, saying how to make one.
    let (code, out, err) = run_env(&serve, &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("--webhook-url is set but no webhook secret") && err.contains("whsec_"), "{err}");
    assert!(!out.contains("mbscim_"), "refused before anything started: {out}");
    // Malformed: not whsec_, not base64, too short; one of two; from the file. Never printed.
    let file_dir = tempfile::tempdir().unwrap();
    let file = file_dir.path().join("secret");
    let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/v1Ze+g9tXU=";
    for (secret, needle) in [
        ("s3cret-webhook-key-not-in-form", "does not start with whsec_"),
        ("whsec_not*base64!hunter2", "is not whsec_ followed by standard base64"),
        ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
    ] {
        for (how, env) in [
            ("flag", vec![]),
            ("env", vec![("MOONBORN_WEBHOOK_SECRET", secret)]),
            ("file", vec![("MOONBORN_WEBHOOK_SECRET_FILE", file.to_str().unwrap())]),
        ] {
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            let mut args = serve.to_vec();
            if how == "flag" {
                args.extend(["--webhook-secret", good, "--webhook-secret", secret]);
            }
            let (code, out, err) = run_env(&args, &env);
            assert_ne!(code, 0, "{how} {secret}: {out}{err}");
            assert!(err.contains(needle), "{how} {secret}: {err}");
            assert!(!err.contains(secret) && !out.contains(secret), "{how}: the secret was printed: {out}{err}");
            assert!(!err.contains(good) && !out.contains(good), "{how}: the good secret was printed: {out}{err}");
            if how == "flag" {
                assert!(err.contains("webhook secret 2 of 2"), "names which one: {err}");
            }
        }
    }
    // A CA file that is not PEM is refused too.
    std::fs::write(&file, "not a certificate").unwrap();
    let (code, _, err) = run_env(&["--ca-file", file.to_str().unwrap(), "--database-url", &db, "tenant", "list"], &[]);
    assert!(code != 0 && err.contains("--ca-file") && err.contains("PEM certificate"), "{err}");
}

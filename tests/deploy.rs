//! Deployment readiness, driven through the real binary (or the real accept loop) on loopback:
//! native TLS, slow and idle sockets, a panicking handler, per-tenant rate limits, request
//! timeouts, forwarded headers, and commands that must not create a database.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::served::{db, run, Served, BIN};

mod common;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// `GET` with a bearer token: (status, headers, body).
fn get(addr: &str, path: &str, token: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("http://{addr}{path}");
    rt().block_on(async {
        let mut req = reqwest::Client::new().get(url).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request");
        let (status, h) = (r.status().as_u16(), r.headers().clone());
        (status, h, r.text().await.unwrap_or_default())
    })
}

#[test]
fn only_serve_and_migrate_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.db");
    let url = format!("sqlite://{}", file.display());
    let (ok, out, err) = run(&url, &["tenant", "list"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains(&format!("no database at {}", file.display())) && err.contains("migrate"), "{err}");
    assert!(!file.exists(), "a command other than serve/migrate created {}", file.display());
    assert!(!run(&url, &["tenant", "create", "acme"]).0 && !file.exists());
    let (ok, out, err) = run(&url, &["migrate"]);
    assert!(ok && out.contains("migrated"), "{out}{err}");
    assert!(file.exists());
    assert!(run(&url, &["tenant", "create", "acme"]).0);
    // Tier changes need no SQL.
    let (ok, out, _) = run(&url, &["tenant", "set-tier", "acme", "pro"]);
    assert!(ok && out.contains("tenant acme is on the pro tier"), "{out}");
    let (_, list, _) = run(&url, &["tenant", "list"]);
    assert!(list.lines().any(|l| l.starts_with("acme") && l.contains(" pro ")), "{list}");
    let (ok, _, err) = run(&url, &["tenant", "set-tier", "nope", "pro"]);
    assert!(!ok && err.contains("no tenant \"nope\" in the database sqlite://"), "{err}");
    // Offboarding asks for --yes, then revokes the tenant's tokens.
    assert!(run(&url, &["token", "create", "--tenant", "acme"]).0);
    let (ok, out, _) = run(&url, &["tenant", "delete", "acme"]);
    assert!(!ok && out.contains("--yes"), "{out}");
    let (_, tokens, _) = run(&url, &["token", "list", "--tenant", "acme"]);
    assert!(tokens.lines().nth(1).unwrap().trim_end().ends_with(" no"), "still live without --yes: {tokens}");
    let (ok, out, err) = run(&url, &["tenant", "delete", "acme", "--yes"]);
    assert!(ok && out.contains("tenant acme deleted: tokens revoked"), "{out}{err}");
    let (_, tokens, _) = run(&url, &["token", "list", "--tenant", "acme"]);
    assert!(!tokens.lines().nth(1).unwrap().trim_end().ends_with(" no"), "revoked: {tokens}");
    let (_, list, _) = run(&url, &["tenant", "list"]);
    assert!(list.lines().any(|l| l.starts_with("acme") && l.contains(" deleted ")), "{list}");
    // Nor does any other command upgrade one: an older schema is refused, saying what to run.
    let older = dir.path().join("older.db");
    std::fs::copy(&file, &older).unwrap();
    let conn = rusqlite::Connection::open(&older).unwrap();
    conn.execute("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)", [])
        .unwrap();
    drop(conn);
    let (ok, _, err) = run(&format!("sqlite://{}", older.display()), &["tenant", "list"]);
    assert!(!ok && err.contains("schema version") && err.contains("moonborn-scim migrate"), "{err}");
    // `serve` creates its database, and says where.
    let fresh = dir.path().join("fresh.db");
    let mut served =
        Served::start_with(&format!("sqlite://{}", fresh.display()), None, &[], &["--shutdown-delay", "0"]);
    served.stop();
    let mut log = served.early_log.clone();
    served._pipes.1.read_to_string(&mut log).unwrap();
    assert!(fresh.exists());
    assert!(log.contains("created a new SQLite database") && log.contains("fresh.db"), "{log}");
}

#[test]
fn backup_copies_a_running_sqlite_database() {
    let (dir, db) = db();
    let mut served = Served::start(&db, None);
    let url = format!("http://{}/v1/auth/scim/v2/Users", served.addr);
    let token = served.token.clone();
    rt().block_on(async move {
        let c = reqwest::Client::new();
        for i in 0..5 {
            let body = serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": format!("b{i}@acme.example"),
            });
            assert_eq!(c.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().status().as_u16(), 201);
        }
    });
    let to = dir.path().join("copy.db");
    let (ok, out, err) = run(&db, &["backup", "--to", to.to_str().unwrap()]);
    assert!(ok && out.contains("backed up"), "{out}{err}");
    served.stop();
    // The copy is a database of its own with every acknowledged push.
    let conn = rusqlite::Connection::open(&to).unwrap();
    let users: i64 = conn.query_row("SELECT COUNT(*) FROM scim_users", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 5);
    let (ok, list, _) = run(&format!("sqlite://{}", to.display()), &["tenant", "list"]);
    assert!(ok && list.contains("default"), "{list}");
    let (ok, _, err) = run(&db, &["backup", "--to", to.to_str().unwrap()]);
    assert!(!ok && err.contains("exists"), "{err}");
}

#[test]
fn the_tier_changes_through_the_admin_api_and_gates_scim_at_once() {
    let (_dir, db) = db();
    let mut served = Served::start(&db, Some("admintoken"));
    let users = "/v1/auth/scim/v2/Users?count=1";
    assert_eq!(get(&served.addr, users, &served.token, &[]).0, 200);
    let patch = |body: &str| {
        let url = format!("http://{}/v1/admin/tenants/default", served.addr);
        let body = body.to_string();
        rt().block_on(async move {
            let r = reqwest::Client::new()
                .patch(url)
                .bearer_auth("admintoken")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        })
    };
    let (status, t) = patch(r#"{"tier":"pro"}"#);
    assert_eq!((status, t["tier"].as_str()), (200, Some("pro")), "{t}");
    let (status, _, body) = get(&served.addr, users, &served.token, &[]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Enterprise tier") && body.contains("pro tier"), "{body}");
    assert_eq!(patch(r#"{"tier":"gold"}"#).0, 400);
    assert_eq!(patch(r#"{"tier":"enterprise"}"#).0, 200);
    assert_eq!(get(&served.addr, users, &served.token, &[]).0, 200);
    served.stop();
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost: (CA PEM, cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "moonborn test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let cert = leaf.signed_by(&key, &rcgen::Issuer::new(ca, ca_key)).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn serves_https_natively_to_a_real_client() {
    let (dir, db) = db();
    let (ca, cert, key) = certificates();
    let (ca_f, cert_f, key_f) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca_f, ca).unwrap();
    std::fs::write(&cert_f, cert).unwrap();
    std::fs::write(&key_f, &key).unwrap();
    let tls = ["--shutdown-delay", "0", "--tls-cert", cert_f.to_str().unwrap(), "--tls-key", key_f.to_str().unwrap()];
    let mut served = Served::start_with(&db, None, &[], &tls);
    let curl = |extra: &[&str], url: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-H", &format!("Authorization: Bearer {}", served.token)])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl (the CI installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let base = format!("https://{}/v1/auth/scim/v2", served.addr);
    // HTTP/1.1 (a client asking for HTTP/2 is answered in HTTP/1.1 by ALPN).
    for http in ["--http1.1", "--http2"] {
        let (ok, body, err) =
            curl(&["--cacert", ca_f.to_str().unwrap(), http], &format!("{base}/ServiceProviderConfig"));
        assert!(ok, "{http}: {err}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("SCIM JSON");
        let loc = v["meta"]["location"].as_str().unwrap_or_default();
        assert!(loc.starts_with(&format!("https://{}/", served.addr)), "{http}: the base URL says https: {v}");
    }
    // A client that does not trust the CA refuses; plain HTTP to the TLS port gets no answer.
    assert!(!curl(&[], &format!("{base}/Users")).0, "an unknown CA must be refused by the client");
    let (ok, body, _) = curl(&[], &format!("http://{}/healthz", served.addr));
    assert!(!ok || body.is_empty(), "plain HTTP on the TLS port answered: {body}");
    served.stop();
    let mut log = String::new();
    served._pipes.1.read_to_string(&mut log).unwrap();
    assert!(!log.contains(key.lines().nth(1).unwrap()), "the key reached the log");
    // A key that does not match the certificate is refused at start, naming the file.
    let (_, other_cert, _) = certificates();
    std::fs::write(&cert_f, other_cert).unwrap();
    let out = Command::new(BIN)
        .args(["--database-url", &db, "serve", "--listen", "127.0.0.1:0"])
        .args(["--tls-cert", cert_f.to_str().unwrap(), "--tls-key", key_f.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("do not make a valid pair"), "{err}");
}

/// Opens `n` sockets that send half a request head, a byte at a time.
fn slow_sockets(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect()
}

#[test]
fn slow_and_idle_sockets_are_closed_while_other_requests_are_served() {
    let (_dir, db) = db();
    let mut served = Served::start_with(&db, None, &[], &["--shutdown-delay", "0", "--header-timeout", "2"]);
    let mut slow = slow_sockets(&served.addr, 300);
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(&served.addr).unwrap()).collect();
    // Normal requests keep being answered while the slow sockets trickle bytes.
    let t0 = Instant::now();
    let mut answered = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        let started = Instant::now();
        let (status, _, _) = get(&served.addr, "/v1/auth/scim/v2/Users?count=1", &served.token, &[]);
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(5), "a normal request waited behind slow sockets");
        answered += 1;
    }
    assert!(answered > 0);
    // After the header timeout every slow and idle socket has been closed by the server.
    for s in slow.iter().chain(&idle) {
        assert_closed(s);
    }
    assert_eq!(get(&served.addr, "/readyz", &served.token, &[]).0, 200);
    served.stop();
}

/// Asserts the server closed `s` (reads end or fail; a read that times out means it is open).
fn assert_closed(mut s: &TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // an answer (e.g. 400 to a garbled head) before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the server kept a slow or idle socket open past its header timeout")
            }
            Err(_) => return, // reset
        }
    }
}

#[test]
fn more_idle_sockets_than_open_files_allow_do_not_stop_the_service() {
    // A hard limit of 1,024 open files (the common default), and 1,100 idle sockets: accept must
    // not run out of descriptors for the database, the WAL or the pushes that follow.
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let (_dir, db) = db();
    let mut served = Served::start_with_wrapper(
        &["prlimit", "--nofile=1024:1024", "--"],
        &db,
        &["--shutdown-delay", "0", "--header-timeout", "3"],
    );
    let idle: Vec<TcpStream> = (0..1100).filter_map(|_| TcpStream::connect(&served.addr).ok()).collect();
    assert!(idle.len() >= 1000, "the kernel's backlog took them: {}", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    // Pushes still succeed (once the idle sockets' header timeout frees the slots they hold).
    let url = format!("http://{}/v1/auth/scim/v2/Users", served.addr);
    let token = served.token.clone();
    let created = rt().block_on(async move {
        let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut created = 0;
        for i in 0..20 {
            let body = serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("u{i}@acme.example"), "active": true,
            });
            let r = c.post(&url).bearer_auth(&token).json(&body).send().await.expect("push answered");
            assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
            created += 1;
        }
        created
    });
    assert_eq!(created, 20);
    assert!(served.child.try_wait().unwrap().is_none(), "the process died");
    drop(idle);
    served.stop();
    let mut log = served.early_log.clone();
    served._pipes.1.read_to_string(&mut log).unwrap();
    assert!(log.contains("max_connections=896"), "the cap is logged: {log}");
    assert!(!log.to_lowercase().contains("fsync"), "no WAL sync failure: {log}");
}

#[test]
fn one_tenant_over_its_rate_gets_429_while_another_is_served() {
    let (_dir, db) = db();
    let mut served = Served::start_with(
        &db,
        Some("admintoken"),
        &[],
        &["--shutdown-delay", "0", "--rate-limit", "2", "--rate-burst", "5"],
    );
    let admin = format!("http://{}/v1/admin", served.addr);
    let other = rt().block_on(async move {
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{admin}/tenants"))
            .bearer_auth("admintoken")
            .json(&serde_json::json!({"slug": "beta", "tier": "enterprise"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let r = c.post(format!("{admin}/tenants/beta/scim-tokens")).bearer_auth("admintoken").send().await.unwrap();
        r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string()
    });
    let path = "/v1/auth/scim/v2/Users?count=1";
    let mut limited = None;
    for _ in 0..30 {
        let (status, headers, body) = get(&served.addr, path, &served.token, &[]);
        if status == 429 {
            limited = Some((headers, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (headers, body) = limited.expect("the busy tenant was never limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["schemas"][0].as_str()),
        (Some("429"), Some("urn:ietf:params:scim:api:messages:2.0:Error"))
    );
    assert!(v["detail"].as_str().unwrap().contains("tenant default"), "{v}");
    // The other tenant is unaffected.
    for _ in 0..4 {
        assert_eq!(get(&served.addr, path, &other, &[]).0, 200);
    }
    served.stop();
}

#[test]
fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    // (`Served` reads the token of the tenant `serve` creates: a fresh database each time.)
    let ((_d1, db), (_d2, db2), (_d3, db3)) = (db(), db(), db());
    let fwd = [("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "https")];
    let location = |s: &Served| {
        let (_, _, body) = get(&s.addr, "/v1/auth/scim/v2/ServiceProviderConfig", &s.token, &fwd);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["meta"]["location"].as_str().unwrap().to_string()
    };
    let mut s = Served::start_with(&db, None, &[], &["--shutdown-delay", "0", "--trusted-proxy", "10.0.0.0/8"]);
    assert!(location(&s).starts_with(&format!("http://{}/v1/auth/scim/v2", s.addr)), "{}", location(&s));
    s.stop();
    let mut s =
        Served::start_with(&db2, None, &[], &["--shutdown-delay", "0", "--trusted-proxy", "10.0.0.0/8,127.0.0.1"]);
    assert!(location(&s).starts_with("https://evil.example/v1/auth/scim/v2"), "{}", location(&s));
    s.stop();
    let mut s =
        Served::start_with(&db3, None, &[], &["--shutdown-delay", "0", "--public-url", "https://scim.acme.example/"]);
    assert!(location(&s).starts_with("https://scim.acme.example/v1/auth/scim/v2/"), "{}", location(&s));
    s.stop();
    for bad in [
        &["--public-url", "scim.acme.example"][..],
        &["--public-url", "https://x.example/path"],
        &["--trusted-proxy", "nope"],
    ] {
        let out = Command::new(BIN)
            .args(["--database-url", &db, "serve", "--listen", "127.0.0.1:0"])
            .args(bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(bad[0]), "{bad:?}: {err}");
    }
}

#[test]
fn a_request_that_takes_too_long_is_answered_503_in_scim() {
    let (_dir, db) = db();
    let mut served = Served::start_with(&db, None, &[], &["--shutdown-delay", "0", "--request-timeout", "1"]);
    // A body that never finishes arriving.
    let mut s = TcpStream::connect(&served.addr).unwrap();
    write!(
        s,
        "POST /v1/auth/scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: 1000\r\n\r\n{{\"userName\":",
        served.token
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("urn:ietf:params:scim:api:messages:2.0:Error") && answer.contains("within 1 s"),
        "{answer}"
    );
    served.stop();
}

#[test]
fn a_panicking_handler_is_answered_500_and_the_server_keeps_serving() {
    use axum::routing::get as route;
    let rt = rt();
    rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/panic",
                route(|| async {
                    if std::hint::black_box(true) {
                        panic!("boom (a test panic)");
                    }
                    "unreachable"
                }),
            )
            .route("/ok", route(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(moonborn_scim::http::serve::serve(
            listener,
            app,
            moonborn_scim::http::serve::ServeOptions::default(),
            async move {
                let _ = rx.await;
            },
        ));
        let c = reqwest::Client::new();
        for _ in 0..3 {
            let r = c.get(format!("http://{addr}/panic")).send().await.expect("an answer, not a reset");
            assert_eq!(r.status().as_u16(), 500);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["status"], "500");
            assert!(!v["detail"].as_str().unwrap().contains("boom"), "the panic message leaked: {v}");
            let r = c.get(format!("http://{addr}/ok")).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "ok");
        }
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("drains").unwrap().unwrap();
    });
}

/// The value of the sample `line_start` (`name` or `name{labels}`) in a scrape.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn prometheus_scrapes_with_its_own_token_or_on_its_own_port_and_opens_nothing_else() {
    let (_dir, db) = db();
    let mut served = Served::start_with(
        &db,
        Some("admintoken"),
        &[],
        &["--shutdown-delay", "0", "--metrics-token", "metricstoken", "--metrics-listen", "127.0.0.1:0"],
    );
    let log = &served.early_log;
    let at = log.find("metrics_addr=").expect("serve reports the metrics address") + "metrics_addr=".len();
    let maddr = log[at..].split([' ', '\n']).next().unwrap().to_string();
    assert!(!log.contains("metricstoken") && !log.contains("admintoken"), "a token in the log: {log}");

    // The main listener: the metrics token reads /metrics, and nothing else.
    assert_eq!(get(&served.addr, "/metrics", "", &[]).0, 401);
    assert_eq!(get(&served.addr, "/metrics", "wrong", &[]).0, 401);
    assert_eq!(get(&served.addr, "/metrics", &served.token, &[]).0, 401, "a SCIM token is no metrics token");
    let (status, headers, text) = get(&served.addr, "/metrics", "metricstoken", &[]);
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(text.ends_with("# EOF\n"), "{text}");
    for admin in ["/v1/admin/metrics", "/v1/admin/tenants", "/v1/admin/tenants/default/outbox"] {
        assert_eq!(get(&served.addr, admin, "metricstoken", &[]).0, 401, "{admin}");
    }
    assert_eq!(get(&served.addr, "/v1/auth/scim/v2/Users", "metricstoken", &[]).0, 401);
    // The admin token still reads both paths.
    assert_eq!(get(&served.addr, "/v1/admin/metrics", "admintoken", &[]).0, 200);
    assert_eq!(get(&served.addr, "/metrics", "admintoken", &[]).0, 200);

    // The gauges.
    let version = format!("moonborn_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|l| l.starts_with(&version) && l.ends_with("} 1")), "{text}");
    for name in ["process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
        assert!(sample(&text, name).is_some_and(|v| v > 0.0), "{name}: {text}");
    }
    assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0), "{text}");
    assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
    assert_eq!(sample(&text, "moonborn_outbox_backlog"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "moonborn_outbox_oldest_undelivered_age_seconds"), Some(0.0), "{text}");

    // No webhook URL: the welcome event of a new user stays queued, and the backlog shows it.
    let (url, token) = (format!("http://{}/v1/auth/scim/v2/Users", served.addr), served.token.clone());
    rt().block_on(async move {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "metered@acme.com"
        });
        let r = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        // The separate port: no auth.
        let (status, _, text) = get(&maddr, "/metrics", "", &[]);
        assert_eq!(status, 200, "{text}");
        if sample(&text, "moonborn_outbox_backlog").is_some_and(|v| v >= 1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the backlog never rose: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(sample(&text, "moonborn_outbox_oldest_undelivered_age_seconds").is_some_and(|v| v >= 0.0), "{text}");
    assert!(text.lines().any(|l| l.starts_with(&version)), "{text}");
    // ... and nothing else on it, whatever the token.
    for path in ["/v1/auth/scim/v2/Users", "/v1/admin/tenants", "/healthz", "/"] {
        assert_eq!(get(&maddr, path, &served.token, &[]).0, 404, "{path}");
        assert_eq!(get(&maddr, path, "admintoken", &[]).0, 404, "{path}");
    }
    served.stop();
}

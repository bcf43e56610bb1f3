//! PostgreSQL over TLS: the `sslmode` of the database URL is honoured, and `--ca-file` makes a
//! private CA trusted for `sslmode=verify-full`.
//!
//! `verify_full_with_the_ca_file` needs a server with `ssl=on` and a certificate for localhost
//! and 127.0.0.1 signed by the CA in `MOONBORN_TEST_POSTGRES_TLS_CA` (`.ci/run` sets both up). It
//! is `#[ignore]`d, so a plain `cargo test` lists it as ignored with the reason rather than as
//! passed; `.ci/run` runs it with `--ignored`, where a missing variable fails it.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::fresh_db::{Backend, FreshDb};
use sqlx::Row as _;

const BIN: &str = env!("CARGO_BIN_EXE_moonborn-scim");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("MOONBORN_DATABASE_URL")
        .env_remove("MOONBORN_CA_FILE")
        .output()
        .expect("run the binary");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `url` (`postgres://user@127.0.0.1:port/db`) on `host`, with `query` appended.
fn on_host(url: &str, host: &str, query: &str) -> String {
    let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1).replacen("@localhost:", &format!("@{host}:"), 1);
    format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MOONBORN_TEST_POSTGRES_TLS_CA and a PostgreSQL with ssl=on (.ci/run sets both up and runs it)"]
async fn verify_full_with_the_ca_file() {
    let ca = std::env::var("MOONBORN_TEST_POSTGRES_TLS_CA").expect(
        "MOONBORN_TEST_POSTGRES_TLS_CA is not set: run .ci/run, or set it to the CA of the server's certificate",
    );
    assert!(std::path::Path::new(&ca).is_file(), "MOONBORN_TEST_POSTGRES_TLS_CA={ca} is not a file");
    let fresh = FreshDb::new(Backend::Postgres, "tls").await;
    for (i, host) in ["localhost", "127.0.0.1"].into_iter().enumerate() {
        let url = on_host(&fresh.url, host, "sslmode=verify-full");
        // The binary, as an operator runs it: trusted with --ca-file (or MOONBORN_CA_FILE)...
        let slug = format!("tls{i}");
        let (ok, out, err) = run(&["--ca-file", &ca, "--database-url", &url, "migrate"]);
        assert!(ok, "{host}: {out}{err}");
        let (ok, out, err) = run(&["--ca-file", &ca, "--database-url", &url, "tenant", "create", &slug]);
        assert!(ok, "{host}: {out}{err}");
        // ...and refused without it: the server's certificate is not signed by a public root.
        let (ok, _, err) = run(&["--database-url", &url, "tenant", "list"]);
        assert!(!ok, "{host}: verify-full connected without the CA");
        assert!(err.contains("cannot connect to PostgreSQL") && err.to_lowercase().contains("certificate"), "{err}");

        // The store's connections do use TLS.
        let with_ca = moonborn_scim::store::with_root_cert(&url, std::path::Path::new(&ca)).expect("url");
        let store = moonborn_scim::Store::open(&with_ca).await.expect("open over TLS");
        let row = sqlx::query("SELECT (ssl::int)::bigint AS on FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl");
        assert_eq!(row.try_get::<i64, _>("on").expect("on"), 1, "{host}: the connection is not TLS");
        assert!(store.tenant(&slug).await.is_ok());
        store.close().await;
    }
    // sslmode=disable is honoured too: a plain connection.
    let url = on_host(&fresh.url, "127.0.0.1", "sslmode=disable");
    let store = moonborn_scim::Store::open(&url).await.expect("open without TLS");
    let row = sqlx::query("SELECT (ssl::int)::bigint AS on FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl");
    assert_eq!(row.try_get::<i64, _>("on").expect("on"), 0);
    store.close().await;
}

/// A server that answers PostgreSQL's SSLRequest with 'N' (no TLS) and closes: `sslmode=require`
/// (and verify-full) must fail saying so, never fall back to a plain connection.
#[test]
fn sslmode_require_against_a_server_without_tls_fails_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut first = [0u8; 8];
            if c.read_exact(&mut first).is_ok() {
                seen.lock().expect("lock").push(first.to_vec());
                let _ = c.write_all(b"N");
                // Whatever comes next (a plain startup message would be a fallback) is read and
                // recorded, then the connection is closed.
                let mut rest = [0u8; 64];
                c.set_read_timeout(Some(std::time::Duration::from_millis(500))).ok();
                if let Ok(n) = c.read(&mut rest) {
                    if n > 0 {
                        seen.lock().expect("lock").push(rest[..n].to_vec());
                    }
                }
            }
        }
    });
    // SSLRequest: length 8, code 80877103.
    let ssl_request = [0u8, 0, 0, 8, 4, 210, 22, 47];
    for mode in ["require", "verify-full"] {
        requests.lock().expect("lock").clear();
        let url = format!("postgres://postgres@127.0.0.1:{port}/test?sslmode={mode}");
        let (ok, out, err) = run(&["--database-url", &url, "tenant", "list"]);
        assert!(!ok, "{mode}: {out}");
        assert!(
            err.contains("cannot connect to PostgreSQL") && err.contains("server does not support TLS"),
            "{mode}: {err}"
        );
        let got = requests.lock().expect("lock").clone();
        assert!(!got.is_empty() && got.iter().all(|r| r == &ssl_request), "{mode}: no plain fallback: {got:?}");
    }
}

//! The memory a maximal request costs the server: the real binary as a subprocess (memory is
//! per process), its peak resident set (`VmHWM`) reset before each request and read after it.
//! A 16 MiB body may grow the server by at most 8 times its size, whatever it holds.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_moonborn-scim");
const MIB: usize = 1024 * 1024;
/// The body size limit (`bulk.maxPayloadSize`).
const BODY: usize = 16 * MIB;

fn cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN).arg("--database-url").arg(db).args(args).output().expect("run the binary");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

struct Server {
    child: std::process::Child,
    _stderr: BufReader<std::process::ChildStderr>,
    base: String,
}

impl Server {
    fn start(db: &str) -> Server {
        let mut child = Command::new(BIN)
            .args(["--database-url", db, "serve", "--listen", "127.0.0.1:0", "--shutdown-delay", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut base = None;
        for line in stderr.by_ref().lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let addr = line[i + 7..].split('/').next().unwrap().to_string();
                base = Some(format!("http://{addr}/v1/auth/scim/v2"));
                break;
            }
            assert!(Instant::now() < deadline, "serve did not report its address");
        }
        Server { child, _stderr: stderr, base: base.expect("listening address") }
    }

    fn status_kb(&self, field: &str) -> usize {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Resets the peak resident set to the current one (`clear_refs` 5); the current size.
    fn reset_peak(&self) -> usize {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").expect("reset VmHWM");
        self.status_kb("VmRSS:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A body of exactly `BODY` bytes: `head`, then `fill` repeated, then `tail`, padded with spaces.
fn body(head: &str, fill: &str, count: usize, tail: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(BODY);
    b.extend_from_slice(head.as_bytes());
    for _ in 0..count {
        b.extend_from_slice(fill.as_bytes());
    }
    b.extend_from_slice(tail.as_bytes());
    assert!(b.len() <= BODY, "{} bytes", b.len());
    b.resize(BODY, b' ');
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_body_grows_the_server_by_at_most_8_times_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("limits.db").display());
    cli(&db, &["migrate"]);
    cli(&db, &["tenant", "create", "acme"]);
    let token = cli(&db, &["token", "create", "--tenant", "acme"]).lines().last().unwrap().trim().to_string();
    let server = Server::start(&db);
    let client = reqwest::Client::new();
    let junk = "\"urn:example:x:1.0:User:junk\"";
    let head = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"NAME","#;
    let cases = [
        // 8 million zeros in an unknown attribute: refused before parsing.
        (
            "8M tiny values",
            body(&head.replace("NAME", "a@x.example"), "", 0, &format!("{junk}:[{}0]}}", "0,".repeat(BODY / 2 - 200))),
            400,
        ),
        // Just under the value limit, in the shape that costs most parsed (one-member objects),
        // the rest of the 16 MiB in one string: accepted (the unknown attribute is dropped).
        (
            "200,000 values",
            body(
                &format!(
                    "{}{junk}:{{\"pad\":\"{}\",\"o\":[",
                    head.replace("NAME", "b@x.example"),
                    "p".repeat(15 * MIB)
                ),
                "{\"a\":0},",
                66_000,
                "{}]}}",
            ),
            201,
        ),
        // One string as large as a body may be, stored.
        (
            "16 MiB stored",
            body(
                &head.replace("NAME", "c@x.example"),
                "",
                0,
                &format!("\"nickName\":\"{}\"}}", "n".repeat(BODY - 200)),
            ),
            201,
        ),
    ];
    for (what, b, status) in cases {
        assert_eq!(b.len(), BODY);
        let base = server.reset_peak();
        let r = client
            .post(format!("{}/Users", server.base))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(b)
            .send()
            .await
            .expect("request");
        let got = r.status().as_u16();
        let text = r.text().await.expect("body");
        assert_eq!(got, status, "{what}: {}", &text[..text.len().min(300)]);
        let peak = server.status_kb("VmHWM:");
        let growth = (peak.saturating_sub(base) * 1024) as f64 / BODY as f64;
        eprintln!("{what}: answered {got}; peak {peak} kB from {base} kB: {growth:.1} times the body");
        assert!(growth <= 8.0, "{what}: the server grew by {growth:.1} times the body");
    }
}

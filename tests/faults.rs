//! Resource faults on SQLite, through the real binary on a real file: a full disk (a small
//! tmpfs filled by another file) answers pushes with a fast 503 and heals by itself once space
//! is back, losing nothing acknowledged. Needs root (to mount the tmpfs); prints `SKIPPED: …`
//! and returns without one.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::served::Served;

mod common;

/// A tmpfs mounted on a new directory, unmounted (lazily, so a file still open in it cannot
/// keep it) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when it cannot be mounted (not root, no tmpfs).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            println!("SKIPPED: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the file system is full; the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let (mut n, big, small) = (0u64, vec![0u8; 1 << 20], vec![0u8; 4096]);
    while f.write_all(&big).is_ok() {
        n += big.len() as u64;
    }
    while f.write_all(&small).is_ok() {
        n += small.len() as u64;
    }
    n
}

/// A push of a new user: (status, Retry-After, body, how long the answer took). A transport
/// failure (the server died, no answer within 10 s) is a panic.
async fn push(c: &reqwest::Client, url: &str, token: &str, user: &str) -> (u16, Option<String>, String, Duration) {
    let body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user, "active": true,
    });
    let t = Instant::now();
    let r = c.post(url).bearer_auth(token).json(&body).send().await.unwrap_or_else(|e| panic!("push {user}: {e:?}"));
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
    (status, retry, r.text().await.unwrap_or_default(), t.elapsed())
}

/// Prints the server's log when the test fails.
struct DumpOnPanic(std::sync::Arc<std::sync::Mutex<String>>);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("the server's last log lines:");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
    }
}

/// A replace (PUT) of the user `id`: a write on the store's other path (one sqlx transaction).
async fn replace(c: &reqwest::Client, url: &str, token: &str, id: &str, user: &str, round: usize) -> (u16, String) {
    let body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user, "active": true, "displayName": format!("round {round}"),
    });
    let r = c.put(format!("{url}/{id}")).bearer_auth(token).json(&body).send().await;
    let r = r.unwrap_or_else(|e| panic!("replace {user}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[test]
fn a_full_disk_answers_503_fast_and_heals_by_itself_losing_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("24m") else { return };
    let url = format!("sqlite://{}", fs.path().join("faults.db").display());
    // (No rate limit: on a full disk the 503s come fast, and this loop is not about limits.)
    let mut served = Served::start_with(&url, None, &[], &["--shutdown-delay", "0", "--rate-limit", "0"]);
    let log = served.drain_log();
    let _dump = DumpOnPanic(std::sync::Arc::clone(&log));
    let users = format!("http://{}/v1/auth/scim/v2/Users", served.addr);
    let token = served.token.clone();
    let filler = fs.path().join("filler");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let acked = rt.block_on(async {
        let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut acked = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("u{n:05}@acme.example")
        };
        let mut first = None;
        for _ in 0..200 {
            let u = next();
            let (status, _, body, _) = push(&c, &users, &token, &u).await;
            assert_eq!(status, 201, "before the disk fills: {body}");
            if first.is_none() {
                let v: serde_json::Value = serde_json::from_str(&body).expect("created user");
                first = Some((v["id"].as_str().expect("id").to_string(), u.clone()));
            }
            acked.push(u);
        }
        let (first_id, first_name) = first.expect("a user");
        // Three episodes of a full disk (the sticking was intermittent).
        for episode in 0..3 {
            let filled = fill(&filler);
            assert!(filled > 1 << 20, "the filler took {filled} bytes");
            // The disk is full: pushes (two at a time) and a replace on the other write path,
            // for 4 s. Each is answered 2xx (it fitted in space the WAL already had) or 503,
            // within a few seconds.
            let (mut unavailable, started) = (0, Instant::now());
            while started.elapsed() < Duration::from_secs(4) {
                let (a, b) = (next(), next());
                let t = Instant::now();
                let (ra, rb, (put, put_body)) = tokio::join!(
                    push(&c, &users, &token, &a),
                    push(&c, &users, &token, &b),
                    replace(&c, &users, &token, &first_id, &first_name, episode),
                );
                assert!(t.elapsed() < Duration::from_secs(5), "a replace answered {put} after {:?}", t.elapsed());
                assert!(put == 200 || put == 503, "a replace answered {put} on a full disk: {put_body}");
                for (u, (status, retry, body, took)) in [(a, ra), (b, rb)] {
                    assert!(took < Duration::from_secs(5), "{u} answered {status} after {took:?} on a full disk");
                    match status {
                        201 => acked.push(u),
                        503 => {
                            unavailable += 1;
                            assert!(retry.is_some(), "a 503 without Retry-After: {body}");
                            assert!(body.contains("disk"), "a 503 that does not say the disk is full: {body}");
                        }
                        s => panic!("{u} answered {s} on a full disk: {body}"),
                    }
                }
            }
            assert!(unavailable > 0, "no push failed while the disk was full: the test did not fill it");
            // Space is back: pushes and replaces succeed again within 10 s, without a restart.
            std::fs::remove_file(&filler).expect("remove the filler");
            let freed = Instant::now();
            loop {
                let u = next();
                let (status, _, body, _) = push(&c, &users, &token, &u).await;
                if status == 201 {
                    acked.push(u);
                    break;
                }
                assert!(status == 503, "{u} answered {status} after space was freed: {body}");
                assert!(freed.elapsed() < Duration::from_secs(10), "still {status} 10 s after space was freed: {body}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for _ in 0..20 {
                let u = next();
                let (status, _, body, _) = push(&c, &users, &token, &u).await;
                assert_eq!(status, 201, "after the disk healed (episode {episode}): {body}");
                acked.push(u);
                let (put, body) = replace(&c, &users, &token, &first_id, &first_name, episode).await;
                assert_eq!(put, 200, "a replace after the disk healed (episode {episode}): {body}");
            }
            println!("episode {episode}: healed {:?} after space was freed", freed.elapsed());
        }
        // Every acknowledged push is stored.
        for u in &acked {
            let r = c
                .get(&users)
                .bearer_auth(&token)
                .query(&[("filter", format!("userName eq \"{u}\""))])
                .send()
                .await
                .expect("list answered");
            assert_eq!(r.status().as_u16(), 200);
            let body: serde_json::Value = r.json().await.expect("list JSON");
            assert_eq!(body["totalResults"], 1, "{u} was acknowledged but is not stored: {body}");
        }
        acked
    });
    assert!(served.child.try_wait().unwrap().is_none(), "the process died: {}", log.lock().unwrap());
    served.stop();
    let wal = std::fs::metadata(fs.path().join("faults.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!("{} pushes acknowledged and stored; WAL {wal} bytes", acked.len());
}

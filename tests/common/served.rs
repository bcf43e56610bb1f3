//! The real binary, driven as a user would: one-shot commands, and a `serve` child on a
//! loopback port (`tests/cli.rs`, `tests/deploy.rs`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_moonborn-scim");

pub fn run(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("--database-url").arg(db).args(args).output().expect("run the binary");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

pub fn db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    // Only `serve` and `migrate` create a database.
    let (ok, _, err) = run(&url, &["migrate"]);
    assert!(ok, "migrate: {err}");
    (dir, url)
}

/// A `serve` child on a loopback port (the SCIM API and, with `admin_token`, the admin API).
pub struct Served {
    pub child: std::process::Child,
    /// Kept open for the whole test: the server still writes to them.
    pub _pipes: (BufReader<std::process::ChildStdout>, BufReader<std::process::ChildStderr>),
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The SCIM token of the `default` tenant that `serve` creates on an empty database.
    pub token: String,
    /// The log lines read while waiting for the address.
    pub early_log: String,
}

impl Served {
    pub fn start(db: &str, admin_token: Option<&str>) -> Served {
        Served::start_with(db, admin_token, &[], &["--shutdown-delay", "0"])
    }

    /// `start`, with more arguments before `serve` (`global`) and after it.
    pub fn start_with(db: &str, admin_token: Option<&str>, global: &[&str], serve: &[&str]) -> Served {
        Served::spawn(Command::new(BIN), db, admin_token, global, serve)
    }

    /// `start`, the binary run by another program (`wrapper[0]` with the rest of `wrapper`
    /// before the binary: `prlimit --nofile=… --`).
    pub fn start_with_wrapper(wrapper: &[&str], db: &str, serve: &[&str]) -> Served {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(BIN);
        Served::spawn(cmd, db, None, &[], serve)
    }

    fn spawn(mut cmd: Command, db: &str, admin_token: Option<&str>, global: &[&str], serve: &[&str]) -> Served {
        cmd.args(global).args(["--database-url", db, "serve", "--listen", "127.0.0.1:0"]).args(serve);
        if let Some(t) = admin_token {
            cmd.args(["--admin-token", t]);
        }
        let mut child =
            cmd.env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut token = None;
        for line in stdout.by_ref().lines().map_while(Result::ok) {
            let l = line.trim();
            if l.starts_with("mbscim_") {
                token = Some(l.to_string());
            }
            if l.starts_with("curl") {
                break;
            }
        }
        let token = token.expect("serve prints the token of the default tenant");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut addr = None;
        let mut early_log = String::new();
        for line in stderr.by_ref().lines().map_while(Result::ok) {
            early_log.push_str(&line);
            early_log.push('\n');
            assert!(!line.contains('\x1b'), "no colour in logs that are not a terminal: {line}");
            if line.contains("serving SCIM at ") {
                // The bound address: `addr=…` in text logs, `"addr":"…"` in JSON ones.
                let at = line.find("addr=").map(|i| i + 5).or_else(|| line.find("\"addr\":\"").map(|i| i + 8));
                addr = at.map(|i| line[i..].split([' ', '"']).next().unwrap_or("").to_string());
                break;
            }
            assert!(Instant::now() < deadline, "serve did not report its address");
        }
        let addr = addr.expect("listening address");
        Served { child, _pipes: (stdout, stderr), addr, token, early_log }
    }

    /// Stops it with SIGTERM; asserts a clean exit.
    pub fn stop(&mut self) {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "serve exits cleanly on SIGTERM: {st}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    /// A test that failed before `stop` leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Reads the server's log from now on in a thread of its own (a server that logs much,
    /// unread, would block on a full pipe); the returned text grows as it logs.
    pub fn drain_log(&self) -> std::sync::Arc<std::sync::Mutex<String>> {
        use std::os::fd::AsFd;
        let fd = self._pipes.1.get_ref().as_fd().try_clone_to_owned().expect("dup the log pipe");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(fd)).lines().map_while(Result::ok) {
                let mut l = out.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        log
    }
}

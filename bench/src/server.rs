//! The server under test: the real `moonborn-scim` release binary as a child process (killed
//! when its guard drops, so on errors and Ctrl-C too), its CLI, and its /proc figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

/// The `moonborn-scim` binary next to this one.
pub fn binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("moonborn-scim");
    if !bin.is_file() {
        bail!(
            "{} not found: run cargo build --release first (cargo build --release --bin moonborn-scim)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs a CLI command of the binary; its stdout.
pub async fn cli(bin: &Path, db: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--database-url")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))?;
    if !out.status.success() {
        bail!("moonborn-scim {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates a tenant and a SCIM token for it; the token.
pub async fn tenant_with_token(bin: &Path, db: &str, slug: &str) -> anyhow::Result<String> {
    // Only `serve` and `migrate` create a database. A binary older than `migrate` refuses it
    // and creates the database in `tenant create`; any other failure shows there.
    let _ = cli(bin, db, &["migrate"]).await;
    cli(bin, db, &["tenant", "create", slug]).await?;
    let out = cli(bin, db, &["token", "create", "--tenant", slug]).await?;
    let token = out.lines().last().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        bail!("token create printed no token");
    }
    Ok(token)
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    log: PathBuf,
}

impl Server {
    /// Starts `serve` on a free port and waits for `/healthz`.
    pub async fn start(bin: &Path, db: &str, admin_token: &str, ceiling: bool, log: PathBuf) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let logf = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--database-url").arg(db).arg("serve").arg("--listen").arg(addr.to_string());
        cmd.arg("--admin-token").arg(admin_token);
        if ceiling {
            cmd.arg("--bench-ceiling");
        }
        // Far-away schedules: no cron run interferes with a measurement.
        cmd.env("MOONBORN_DRIFT_REPAIR_SCHEDULE", "0 0 0 1 1 * 2099")
            .env("MOONBORN_PURGE_SCHEDULE", "0 0 0 1 1 * 2099")
            .env("RUST_LOG", "warn")
            // The benchmark measures throughput: no per-tenant rate limit (a binary that has
            // none ignores the variable).
            .env("MOONBORN_RATE_LIMIT", "0")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("server exited at once")?;
        let mut s = Server { child, addr, pid, log };
        let t0 = Instant::now();
        loop {
            if let Some(st) = s.child.try_wait()? {
                bail!("the server exited ({st}) before answering; its log:\n{}", s.log_text());
            }
            if healthy(addr).await {
                return Ok(s);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the server did not answer /healthz within 60 s; its log:\n{}", s.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops the server (SIGKILL; the bench does not need a graceful stop).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Fails when the server died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("the server died ({st}); its log:\n{}", self.log_text());
        }
        Ok(())
    }

    fn status_kb(&self, key: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = s.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Resident set size now, MB.
    pub fn rss_mb(&self) -> f64 {
        self.status_kb("VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// A reader of a process's VmRSS (MB), for sampling from another task.
    pub fn probe(pid: u32) -> impl Fn() -> f64 + Send + 'static {
        move || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                })
                .unwrap_or(0) as f64
                / 1024.0
        }
    }

    /// Peak resident set size since start or the last `reset_peak`, MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_kb("VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    /// Resets the peak RSS (Linux: `5` into /proc/PID/clear_refs); false when not possible.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// CPU seconds (user + system) the server has used.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid)
    }
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

async fn healthy(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await else {
        return false;
    };
    let req = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

//! A real headless Chromium driven over WebDriver (chromedriver + fantoccini), for the console
//! tests (`tests/console.rs`).
//!
//! [`Browser::start`] finds chromedriver (`MOONBORN_CHROMEDRIVER`, else `/usr/bin/chromedriver`,
//! else `chromedriver` on `PATH`) and Chromium (`MOONBORN_CHROMIUM`, else `/usr/bin/chromium`).
//! When one is missing it returns `None` after saying so on stderr (the test then returns early),
//! or panics when `MOONBORN_REQUIRE_BROWSER` is set (`.ci/run` sets it, so CI cannot pass by
//! skipping). Every helper panics with context on error and every wait is bounded; dropping the
//! [`Browser`] ends the session and kills chromedriver and the browser.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// How long a helper waits for an element, a dialog or a text.
pub const WAIT: Duration = Duration::from_secs(10);
/// The most one WebDriver command may take (a page load included) before the test fails.
const COMMAND: Duration = Duration::from_secs(30);
/// The desktop window every session starts with.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone-sized window (an iPhone 12-15 viewport).
pub const PHONE: (u32, u32) = (390, 844);

pub const SKIPPED: &str = "skipped: no chromium/chromedriver (install Debian chromium chromium-driver)";

pub struct Browser {
    client: Client,
    /// chromedriver, leader of its own process group (the browser it starts is in it too).
    driver: Child,
    port: u16,
    session: Option<String>,
    /// chromedriver's log, and the browser's profile directory.
    dir: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium at [`DESKTOP`] size, or `None` (after a line on stderr) when
    /// Chromium or chromedriver is not installed and `MOONBORN_REQUIRE_BROWSER` is not set.
    pub async fn start() -> Option<Browser> {
        let (driver_bin, chromium) = match (find_chromedriver(), find_chromium()) {
            (Ok(d), Ok(c)) => (d, c),
            (d, c) => {
                let why: Vec<String> = [d.err(), c.err()].into_iter().flatten().collect();
                let why = why.join("; ");
                if std::env::var_os("MOONBORN_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty() && v != "0") {
                    panic!("MOONBORN_REQUIRE_BROWSER is set but the browser tests cannot run: {why} (install Debian chromium chromium-driver)");
                }
                // Straight to the process's stderr: libtest captures `eprintln!` of a passing
                // test, and a skip must be seen.
                let _ = writeln!(std::io::stderr(), "{SKIPPED}: {why}");
                return None;
            }
        };

        let dir = tempfile::tempdir().expect("tempdir for chromedriver");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).expect("create chromedriver.log");
        let mut driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup chromedriver.log"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", driver_bin.display()))
        };

        // Until it answers GET /status (or exits, or 10 s pass).
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = driver.try_wait().expect("chromedriver status") {
                panic!("chromedriver exited before it answered ({st}); its log:\n{}", read_log(dir.path()));
            }
            if http(port, "GET", "/status", Duration::from_millis(500)).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                break;
            }
            if Instant::now() > deadline {
                kill_group(&mut driver);
                panic!(
                    "chromedriver did not answer on 127.0.0.1:{port} within {WAIT:?}; its log:\n{}",
                    read_log(dir.path())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let profile = dir.path().join("profile");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Chromium refuses to start its sandbox as root (CI and this machine run as root).
                    "--no-sandbox",
                    "--disable-gpu",
                    // /dev/shm is often 64 MB in containers, too small for Chromium: /tmp instead.
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--user-data-dir={}", profile.display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-sync",
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else { unreachable!() };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let webdriver = format!("http://127.0.0.1:{port}");
        let connect = builder.connect(&webdriver);
        let client = match tokio::time::timeout(COMMAND, connect).await {
            Ok(Ok(c)) => c,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {COMMAND:?}"),
                };
                kill_group(&mut driver);
                panic!(
                    "new WebDriver session (Chromium {}): {why}; chromedriver's log:\n{}",
                    chromium.display(),
                    read_log(dir.path())
                );
            }
        };
        let mut browser = Browser { client, driver, port, session: None, dir };
        browser.session = browser.cmd("session id", browser.client.session_id()).await;
        let timeouts =
            TimeoutConfiguration::new(Some(WAIT), Some(COMMAND - Duration::from_secs(5)), Some(Duration::ZERO));
        browser.cmd("set timeouts", browser.client.update_timeouts(timeouts)).await;
        Some(browser)
    }

    /// The fantoccini client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resizes the window (the outer window: the page's viewport is that or a little less).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(&format!("set window size {width}x{height}"), self.client.set_window_size(width, height)).await
    }

    /// A phone-sized window ([`PHONE`]).
    pub async fn phone(&self) {
        self.set_window_size(PHONE.0, PHONE.1).await
    }

    /// Back to the desktop size ([`DESKTOP`]).
    pub async fn desktop(&self) {
        self.set_window_size(DESKTOP.0, DESKTOP.1).await
    }

    /// Loads `url` and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.cmd(&format!("goto {url}"), self.client.goto(url)).await
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for one to appear.
    pub async fn find(&self, css: &str) -> Element {
        let wait = self.client.wait().at_most(WAIT).every(Duration::from_millis(50)).for_element(Locator::Css(css));
        match tokio::time::timeout(COMMAND, wait).await {
            Ok(Ok(e)) => e,
            Ok(Err(fantoccini::error::CmdError::WaitTimeout)) => {
                self.fail(&format!("wait for `{css}`"), &format!("none appeared within {WAIT:?}")).await
            }
            Ok(Err(e)) => self.fail(&format!("wait for `{css}`"), &e.to_string()).await,
            Err(_) => self.fail(&format!("wait for `{css}`"), "WebDriver did not answer").await,
        }
    }

    /// How many elements match `css` now (no waiting).
    pub async fn count(&self, css: &str) -> usize {
        self.cmd(&format!("find all `{css}`"), self.client.find_all(Locator::Css(css))).await.len()
    }

    /// Clears the field matching `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(&format!("clear `{css}`"), e.clear()).await;
        self.cmd(&format!("type into `{css}`"), e.send_keys(text)).await
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(&format!("click `{css}`"), e.click()).await
    }

    /// The rendered text of the element matching `css` (what a user sees: hidden text excluded).
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd(&format!("text of `{css}`"), e.text()).await
    }

    /// Waits up to [`WAIT`] until the text of the element matching `css` contains `needle`;
    /// returns that text.
    /// The page may still be loading (after a click that navigates): an element that is not
    /// there yet, or went stale as the next page replaced it, is looked for again.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = match tokio::time::timeout(COMMAND, self.client.find(Locator::Css(css))).await {
                Ok(Ok(e)) => {
                    tokio::time::timeout(COMMAND, e.text()).await.ok().and_then(Result::ok).unwrap_or_default()
                }
                _ => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                self.fail(&format!("wait for `{css}` to contain {needle:?}"), &format!("its text is {text:?}")).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's current DOM, serialised.
    pub async fn page_source(&self) -> String {
        self.cmd("page source", self.client.source()).await
    }

    pub async fn current_url(&self) -> String {
        self.cmd("current url", self.client.current_url()).await.to_string()
    }

    /// Writes a PNG of the window to `<target>/console-screenshots/<name>.png` (`<target>`:
    /// `CARGO_TARGET_DIR`, else `target/` of the repository) and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.cmd(&format!("screenshot {name}"), self.client.screenshot()).await;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Waits up to [`WAIT`] for a `window.confirm` (or `alert`) dialog, accepts it and returns
    /// its message.
    pub async fn accept_confirm(&self) -> String {
        let deadline = Instant::now() + WAIT;
        let text = loop {
            match tokio::time::timeout(COMMAND, self.client.get_alert_text()).await {
                Ok(Ok(text)) => break text,
                Ok(Err(e)) if e.is_no_such_alert() && Instant::now() < deadline => {}
                Ok(Err(e)) => self.fail("wait for a dialog", &e.to_string()).await,
                Err(_) => self.fail("wait for a dialog", "WebDriver did not answer").await,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.cmd("accept the dialog", self.client.accept_alert()).await;
        text
    }

    /// The cookies the browser holds for the current page, with their attributes.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.cmd("cookies", self.client.get_all_cookies()).await
    }

    /// Runs a WebDriver command within [`COMMAND`]; panics with `what` and the error.
    async fn cmd<T, E: std::fmt::Display>(&self, what: &str, f: impl std::future::Future<Output = Result<T, E>>) -> T {
        match tokio::time::timeout(COMMAND, f).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => self.fail(what, &e.to_string()).await,
            Err(_) => self.fail(what, &format!("WebDriver did not answer within {COMMAND:?}")).await,
        }
    }

    /// Panics with `what`, `why`, the page's URL and a screenshot `failure-<test name>` when one
    /// can be taken.
    async fn fail(&self, what: &str, why: &str) -> ! {
        let quick = Duration::from_secs(5);
        let url = match tokio::time::timeout(quick, self.client.current_url()).await {
            Ok(Ok(u)) => u.to_string(),
            _ => "(unknown)".into(),
        };
        let shot = match tokio::time::timeout(quick, self.client.screenshot()).await {
            Ok(Ok(png)) => {
                let name = std::thread::current().name().unwrap_or("test").replace("::", "-");
                let dir = screenshot_dir();
                let path = dir.join(format!("failure-{name}.png"));
                match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, png)) {
                    Ok(()) => format!("; screenshot: {}", path.display()),
                    Err(_) => String::new(),
                }
            }
            _ => String::new(),
        };
        panic!("browser: {what}: {why} (at {url}{shot})");
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver quits the browser), then kills chromedriver's process group
    /// (anything left of the browser with it). Plain blocking HTTP: no runtime is needed, so
    /// this also runs while a panicking test unwinds.
    fn drop(&mut self) {
        if let Some(id) = &self.session {
            let _ = http(self.port, "DELETE", &format!("/session/{id}"), Duration::from_secs(10));
        }
        kill_group(&mut self.driver);
        // Then `dir` goes: chromedriver's log and the browser's profile.
    }
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).stderr(Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}

fn find_chromedriver() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MOONBORN_CHROMEDRIVER") {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!("MOONBORN_CHROMEDRIVER={} is not an executable", p.display()))
        };
    }
    let usr = PathBuf::from("/usr/bin/chromedriver");
    if is_executable(&usr) {
        return Ok(usr);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("chromedriver")).find(|p| is_executable(p)))
        .ok_or_else(|| "no chromedriver at /usr/bin/chromedriver or on PATH (or set MOONBORN_CHROMEDRIVER)".into())
}

fn find_chromium() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MOONBORN_CHROMIUM") {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!("MOONBORN_CHROMIUM={} is not an executable", p.display()))
        };
    }
    let usr = PathBuf::from("/usr/bin/chromium");
    if is_executable(&usr) {
        Ok(usr)
    } else {
        Err("no chromium at /usr/bin/chromium (or set MOONBORN_CHROMIUM)".into())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// One HTTP/1.1 request to chromedriver without a body; the response (head and body) or `None`.
fn http(port: u16, method: &str, path: &str, timeout: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    // Up to the end of the body: chromedriver keeps the connection open whatever we ask.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
        out.extend_from_slice(&buf[..n]);
        let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
        let len =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
        if out.len() >= end + 4 + len.unwrap_or(0) {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default()
}

fn screenshot_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(|t| manifest.join(t)).unwrap_or_else(|| manifest.join("target"));
    target.join("console-screenshots")
}

//! The operator console in a real headless Chromium (tests/common/browser.rs), served by the real
//! binary on a real SQLite file, as an operator uses it. Without Chromium and chromedriver each
//! test says it is skipped on stderr and passes, unless `MOONBORN_REQUIRE_BROWSER` is set (as
//! `.ci/run` does): then it fails. Screenshots land in `target/console-screenshots/`.

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::served::{db, run, Served};
use serde_json::{json, Value};

mod common;

/// A served binary with the `default` tenant, an operator `alice` of every tenant, and the
/// safety valve holding any deactivation at once.
struct Console {
    _dir: tempfile::TempDir,
    db: String,
    served: Served,
    origin: String,
    operator_token: String,
    http: reqwest::Client,
}

impl Console {
    fn start() -> Console {
        let (dir, db) = db();
        let served = Served::start(&db, None);
        // Read the server's log as it writes it (a full pipe would stall it).
        let _ = served.drain_log();
        let origin = format!("http://{}", served.addr);
        let (ok, out, err) = run(&db, &["operator", "create", "alice"]);
        assert!(ok, "{err}");
        let operator_token = out.lines().last().expect("the token's line").trim().to_string();
        let (ok, _, err) =
            run(&db, &["safety", "--tenant", "default", "--percent", "0", "--min-users", "1", "--settle-secs", "0"]);
        assert!(ok, "{err}");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Console { _dir: dir, db, served, origin, operator_token, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// A SCIM request with `token`; the answer's status and JSON body.
    async fn scim(&self, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, self.url(&format!("/v1/auth/scim/v2{path}"))).bearer_auth(token);
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b.to_string());
        }
        let r = rb.send().await.expect("SCIM request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn create_user(&self, token: &str, email: &str, given: &str) -> String {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email, "name": {"givenName": given, "familyName": "Tester"},
            "emails": [{"value": email, "primary": true}], "active": true
        });
        let (status, b) = self.scim(token, reqwest::Method::POST, "/Users", Some(body)).await;
        assert_eq!(status, 201, "{b}");
        b["id"].as_str().expect("id").to_string()
    }

    async fn set_active(&self, token: &str, id: &str, active: bool) {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": active}]});
        let (status, b) = self.scim(token, reqwest::Method::PATCH, &format!("/Users/{id}"), Some(body)).await;
        assert_eq!(status, 200, "{b}");
    }

    /// Signs `browser` in with `token`; lands on the Tenants page.
    async fn sign_in(&self, browser: &Browser, token: &str) {
        browser.goto(&self.url("/console")).await;
        assert!(browser.current_url().await.contains("/console/sign-in"), "without a session: the sign-in page");
        browser.fill("#token", token).await;
        browser.click("form[action='/console/sign-in'] button[type=submit]").await;
        browser.wait_for_text("h1", "Tenants").await;
    }
}

/// Loads `url` until its `css` element contains `needle` (the controller works in the
/// background), up to 30 s.
async fn poll_page(browser: &Browser, url: &str, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.goto(url).await;
        let text = if browser.count(css).await > 0 { browser.text(css).await } else { String::new() };
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{url}: {css} never showed {needle:?}; last: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The harness itself: a plain page of the served binary, read and photographed in the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let Some(browser) = Browser::start().await else { return };
    let (_dir, db) = db();
    let served = Served::start(&db, None);
    let url = format!("http://{}/healthz", served.addr);

    browser.goto(&url).await;
    assert_eq!(browser.current_url().await, url);
    assert_eq!(browser.text("body").await.trim(), "ok");
    assert!(browser.cookies().await.is_empty());
}

/// Sign in; generate a token on SSO → SCIM and push with it; edit the bindings, check the
/// preview, save, and see the role land; an IdP's `<script>` stays text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_bindings_and_escaping() {
    let Some(browser) = Browser::start().await else { return };
    let c = Console::start();
    c.sign_in(&browser, &c.operator_token).await;
    let cookies = browser.cookies().await;
    let session = cookies.iter().find(|k| k.name() == "mbconsole").expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    assert!(browser.text("table.tenants").await.contains("default"));

    // Generate a named token: shown once, with a copy button.
    browser.goto(&c.url("/console/tenants/default/scim")).await;
    assert!(browser.text("#base-url").await.ends_with("/v1/auth/scim/v2"));
    browser.fill("#token-name", "Okta production").await;
    browser.click("form[action$='/scim/tokens'] button[type=submit]").await;
    let token = browser.text("#new-token").await;
    assert!(token.starts_with("mbscim_"), "{token}");
    assert!(browser.text("table.tokens").await.contains("Okta production"));
    browser.screenshot("scim-settings").await;
    // Reloaded, the token is not shown again.
    browser.goto(&c.url("/console/tenants/default/scim")).await;
    assert!(!browser.page_source().await.contains(&token), "a token is shown once");

    // Push with it: a user whose given name is markup, and a group.
    let xss = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
    let ann = c.create_user(&token, "ann@acme.com", xss).await;
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering",
        "members": [{"value": ann}]});
    assert_eq!(c.scim(&token, reqwest::Method::POST, "/Groups", Some(body)).await.0, 201);
    poll_page(&browser, &c.url("/console/tenants/default/users"), "table.users", "ann@acme.com").await;
    let users = browser.text("table.users").await;
    assert!(users.contains("<script>window.__xss=1</script>"), "the markup is shown as text: {users}");
    let ran: Value = browser
        .client()
        .execute("return window.__xss === undefined ? null : window.__xss;", vec![])
        .await
        .expect("execute");
    assert_eq!(ran, Value::Null, "no script the IdP sent ran");

    // Bindings: edit, preview (ann gains editor), save, see the role land.
    browser.goto(&c.url("/console/tenants/default/scim")).await;
    browser.fill("#bindings", "Engineering = editor").await;
    browser.click("form.bindings button[type=submit]").await;
    browser.wait_for_text("h1", "Preview").await;
    let preview = browser.text("main").await;
    assert!(
        preview.contains("1 user(s)") && preview.contains("ann@acme.com") && preview.contains("+editor"),
        "{preview}"
    );
    browser.screenshot("bindings-preview").await;
    browser.click("form[action$='/scim/bindings'] button[type=submit]").await;
    assert!(browser.accept_confirm().await.contains("Save these bindings"));
    browser.wait_for_text("h1", "SSO → SCIM").await;
    poll_page(&browser, &c.url("/console/tenants/default/users"), "table.users", "editor").await;
    let audit = poll_page(&browser, &c.url("/console/tenants/default/audit"), "table.audit", "bindings").await;
    assert!(audit.contains("operator:alice"), "{audit}");

    // A form without its CSRF token changes nothing: 403.
    let cookie = format!("mbconsole={}", session.value());
    let r = c
        .http
        .post(c.url("/console/tenants/default/scim/tokens"))
        .header("cookie", &cookie)
        .form(&[("name", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .http
        .post(c.url("/console/tenants/default/scim/tokens"))
        .header("cookie", &cookie)
        .form(&[("name", "forged"), ("csrf", "not-the-token")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    browser.goto(&c.url("/console/tenants/default/scim")).await;
    assert!(!browser.text("table.tokens").await.contains("forged"), "a refused form stores nothing");

    // Security headers.
    let r = c.http.get(c.url("/console")).header("cookie", &cookie).send().await.expect("get");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");

    // Signing out ends the session.
    browser.click("form[action='/console/sign-out'] button").await;
    browser.wait_for_text("h1", "Sign in").await;
    let r = c.http.get(c.url("/console")).header("cookie", &cookie).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 303, "the old cookie no longer signs in");
    drop(c);
}

/// Trip the valve with a burst; find the held tenant; review and approve the plan (a stale
/// approval is refused first); see the run and the audit entry naming the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_plan_is_reviewed_and_approved() {
    let Some(browser) = Browser::start().await else { return };
    let c = Console::start();
    let token = c.served.token.clone();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(c.create_user(&token, &format!("u{i}@acme.com"), &format!("User{i}")).await);
    }
    c.sign_in(&browser, &c.operator_token).await;
    poll_page(&browser, &c.url("/console/tenants/default/users"), "table.users", "u5@acme.com").await;
    // A burst of deactivations: held.
    for id in &ids[..3] {
        c.set_active(&token, id, false).await;
    }
    let row = poll_page(&browser, &c.url("/console"), "tr[data-tenant='default']", "Held").await;
    assert!(row.contains("destructive change(s) held"), "{row}");
    assert_eq!(browser.count("tr.state-held").await, 1, "a held tenant stands out");
    browser.screenshot("tenants-held").await;

    browser.click("tr[data-tenant='default'] th a").await;
    browser.wait_for_text("h1", "default").await;
    browser.click("nav.tabs a[href$='/plan']").await;
    browser.wait_for_text("h1", "Plan").await;
    let plan = browser.text("main").await;
    assert!(plan.contains("Held.") && plan.contains("3 deactivate"), "{plan}");
    let shown = browser.text("#fingerprint").await;
    browser.screenshot("plan-held").await;
    // The filter box narrows the table (script), and the server-side filter works without it.
    browser.fill("#q", "u1@").await;
    let visible: Value = browser
        .client()
        .execute(
            "return [...document.querySelectorAll('table.changes tbody tr')].filter(r => !r.hidden).length;",
            vec![],
        )
        .await
        .expect("execute");
    assert_eq!(visible, json!(1));

    // The plan changes under the operator's eyes: the approval of what they saw is refused.
    c.set_active(&token, &ids[3], false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.click("form[action$='/plan/approve'] button").await;
    assert!(browser.accept_confirm().await.contains("Approve plan"));
    let refused = browser.wait_for_text("main", "Not applied").await;
    assert!(refused.contains("the plan changed since you reviewed it"), "{refused}");
    let now_shown = browser.text("#fingerprint").await;
    assert_ne!(now_shown, shown, "the new plan is shown");
    poll_page(&browser, &c.url("/console/tenants/default/users?q=u0%40acme.com"), "table.users", "active").await;

    // Approve the plan as it stands now.
    browser.goto(&c.url("/console/tenants/default/plan")).await;
    let fp = browser.text("#fingerprint").await;
    browser.click("form[action$='/plan/approve'] button").await;
    browser.accept_confirm().await;
    let done = browser.wait_for_text("main", "Run").await;
    assert!(done.contains("applied"), "{done}");
    browser.screenshot("plan-approved").await;

    let runs = poll_page(&browser, &c.url("/console/tenants/default/runs"), "table.runs", "operator").await;
    assert!(runs.contains(&fp[..12]), "the run names the plan it applied: {runs}");
    let audit = poll_page(&browser, &c.url("/console/tenants/default/audit"), "table.audit", "approve").await;
    assert!(audit.contains("operator:alice") && audit.contains(&fp), "{audit}");
    poll_page(&browser, &c.url("/console/tenants/default/users?q=u0%40acme.com"), "table.users", "disabled").await;
    browser.phone().await;
    browser.goto(&c.url("/console")).await;
    browser.screenshot("tenants-phone").await;
    drop(c);
}

/// A tenant-scoped operator sees its tenant only: another one's pages are 404, even by URL;
/// sign-in attempts are limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_operator_sees_only_its_tenant() {
    let Some(browser) = Browser::start().await else { return };
    let c = Console::start();
    assert!(run(&c.db, &["tenant", "create", "globex"]).0);
    let (ok, out, err) = run(&c.db, &["operator", "create", "dee", "--tenant", "globex"]);
    assert!(ok, "{err}");
    let dee = out.lines().last().unwrap().trim().to_string();
    c.sign_in(&browser, &dee).await;
    let tenants = browser.text("table.tenants").await;
    assert!(tenants.contains("globex") && !tenants.contains("default"), "{tenants}");
    for path in ["", "/plan", "/scim", "/audit", "/users", "/runs", "/outbox"] {
        browser.goto(&c.url(&format!("/console/tenants/default{path}"))).await;
        assert!(browser.text("h1").await.contains("No such tenant"), "{path}");
    }
    let cookie = browser.cookies().await.into_iter().find(|k| k.name() == "mbconsole").unwrap();
    let r = c
        .http
        .get(c.url("/console/tenants/default/plan"))
        .header("cookie", format!("mbconsole={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    browser.goto(&c.url("/console/tenants/globex/scim")).await;
    browser.wait_for_text("h1", "SSO → SCIM").await;

    // Wrong tokens: refused (401), then limited (429).
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = c.http.post(c.url("/console/sign-in")).form(&[("token", "mbop_wrong")]).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&401) && statuses.last() == Some(&429), "{statuses:?}");
    drop(c);
}

/// Without a browser: what another site's page, a malformed `next` or query, and a revoked
/// operator get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_and_bad_input_are_refused() {
    let c = Console::start();
    let sign_in = |origin: Option<&str>, next: &str| {
        let mut rb =
            c.http.post(c.url("/console/sign-in")).form(&[("token", c.operator_token.as_str()), ("next", next)]);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        rb.send()
    };
    // Another site's page (or an opaque one) cannot sign a browser in.
    for o in ["https://evil.example", "null"] {
        let r = sign_in(Some(o), "/console").await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{o}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    // A `next` that would not make a safe Location goes to the console instead (never a 500).
    for next in ["/console\r\nX-Evil: 1", "https://evil.example/console", "//evil.example", "/console\\..\\x"] {
        let r = sign_in(Some(&c.origin), next).await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], "/console", "{next:?}");
    }
    let r = sign_in(None, "/console/tenants/default/plan?kind=delete").await.unwrap();
    assert_eq!(r.headers()["location"], "/console/tenants/default/plan?kind=delete");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

    // A form with the right CSRF token from another site's page is refused too.
    let page = c.http.get(c.url("/console/tenants/default/scim")).header("cookie", &cookie).send().await.unwrap();
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("a CSRF field");
    let post = |origin: &str| {
        c.http
            .post(c.url("/console/tenants/default/scim/tokens"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .form(&[("name", "from-origin"), ("csrf", csrf)])
            .send()
    };
    assert_eq!(post("https://evil.example").await.unwrap().status().as_u16(), 403);
    assert_eq!(post(&c.origin).await.unwrap().status().as_u16(), 201, "this console's own page");

    // A malformed query is a 400 page; an unknown user a 404 page.
    for (path, status) in [
        ("/console/tenants/default/audit?after=abc", 400),
        ("/console/tenants/default/users/nope", 404),
        ("/console/tenants/nope/plan", 404),
        ("/console/no/such/page", 404),
    ] {
        let r = c.http.get(c.url(path)).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
    }

    // A revoked operator's session ends at once.
    assert!(run(&c.db, &["operator", "revoke", "alice"]).0);
    let r = c.http.get(c.url("/console")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
}

//! The HTTP test harness: the real router (SCIM API, and the admin API when it has a token)
//! served over real HTTP on a random loopback port through [`App::with_store`], backed by a fresh
//! SQLite file or a fresh PostgreSQL database per test, with the tenant `acme` (Enterprise) and a
//! SCIM token for it.
//!
//! One builder for every configuration: `TestApp::builder(backend).admin_token(..).controller(..)
//! .build().await`; [`TestApp::scim_api`] and [`TestApp::admin_api`] are the two the test modules
//! use as fixtures of [`backend_test!`](crate::backend_test).

use std::future::Future;
use std::time::{Duration, Instant};

use moonborn_scim::app::{App, Config};
use moonborn_scim::domain::Safety;
use moonborn_scim::http::SCIM_BASE;
use moonborn_scim::{Store, Tier};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub use super::fresh_db::Backend;
use super::fresh_db::FreshDb;

/// The admin token of [`TestApp::admin_api`] servers.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Where the admin API lives.
pub const ADMIN_BASE: &str = "/v1/admin";

/// How a [`TestApp`] is set up; made by [`TestApp::builder`].
#[must_use]
pub struct TestAppBuilder {
    backend: Backend,
    admin_token: Option<String>,
    controller: bool,
    acme_safety: Option<Safety>,
}

impl TestAppBuilder {
    /// Turns the admin API on with this token (default: off).
    pub fn admin_token(mut self, token: Option<&str>) -> Self {
        self.admin_token = token.map(Into::into);
        self
    }

    /// Runs the controller (one worker: pushes are reconciled) or not (default: on).
    pub fn controller(mut self, on: bool) -> Self {
        self.controller = on;
        self
    }

    /// Sets `acme`'s safety valve before the server starts (default: the store's default).
    pub fn acme_safety(mut self, safety: Safety) -> Self {
        self.acme_safety = Some(safety);
        self
    }

    /// Creates the database, `acme` and its token, and starts the server. Panics when the
    /// backend cannot be used (PostgreSQL without `MOONBORN_TEST_POSTGRES_URL`, or unreachable).
    pub async fn build(self) -> TestApp {
        let mut db = FreshDb::new(self.backend, "test").await;
        let store = db.open_store().await;
        let acme = store.create_tenant("acme", Tier::Enterprise).await.expect("tenant");
        let (_, token) = store.create_token("acme").await.expect("token");
        if let Some(safety) = self.acme_safety {
            store.set_safety(acme.id, safety, "test").await.expect("safety");
        }
        let mut config = Config { admin_token: self.admin_token, ..Config::new(db.url.clone()) };
        if !self.controller {
            config.controller_workers = 0;
        }
        let app = App::with_store(store.clone(), config).expect("app");
        let addr = app.addr();
        let server = tokio::spawn(async move {
            app.run_until_stopped(std::future::pending()).await.expect("serve");
        });
        TestApp {
            origin: format!("http://{addr}"),
            base: format!("http://{addr}{SCIM_BASE}"),
            token,
            client: reqwest::Client::new(),
            store,
            backend: self.backend,
            db_url: db.url.clone(),
            server,
            _db: db,
        }
    }
}

/// A running server with the tenant `acme` (Enterprise) and a SCIM token for it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// `http://127.0.0.1:PORT/v1/auth/scim/v2`
    pub base: String,
    /// The SCIM token of `acme`.
    pub token: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub backend: Backend,
    /// The database's URL.
    pub db_url: String,
    server: tokio::task::JoinHandle<()>,
    _db: FreshDb,
}

impl TestApp {
    /// A server on a fresh database of `backend`, the admin API off and the controller on.
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder { backend, admin_token: None, controller: true, acme_safety: None }
    }

    /// The SCIM API alone: no admin API, no controller applying the pushes.
    pub async fn scim_api(backend: Backend) -> TestApp {
        Self::builder(backend).controller(false).build().await
    }

    /// The SCIM and admin APIs ([`ADMIN_TOKEN`]) with the controller reconciling the pushes (its
    /// cron schedules, once a year, never fire). `acme`'s valve does not wait for bursts of
    /// destructive pushes to settle (the valve's own tests set the defaults back).
    pub async fn admin_api(backend: Backend) -> TestApp {
        Self::builder(backend)
            .admin_token(Some(ADMIN_TOKEN))
            .acme_safety(Safety { settle_ms: 0, max_wait_ms: 0, ..Default::default() })
            .build()
            .await
    }

    // ----- SCIM API ---------------------------------------------------------------------------

    /// Creates another tenant and returns a SCIM token for it.
    pub async fn tenant(&self, slug: &str, tier: Tier) -> String {
        self.store.create_tenant(slug, tier).await.expect("tenant");
        self.store.create_token(slug).await.expect("token").1
    }

    /// Sends a SCIM request (`path` relative to the SCIM base, or a whole URL) with `acme`'s
    /// token; the body is sent as `application/scim+json`.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        self.send_as(&self.token, method, path, body, &[]).await
    }

    /// Sends a SCIM request with a given token and extra headers.
    pub async fn send_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut rb = self.client.request(method, url).bearer_auth(token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b.to_string());
        }
        Resp::read(rb, NotJson::AsString).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    /// Creates a user (asserting 201) and returns its body.
    pub async fn create_user(&self, user_name: &str) -> Value {
        let r = self
            .post(
                "/Users",
                &json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "name": {"givenName": "Given", "familyName": "Family"},
                    "emails": [{"value": user_name, "type": "work", "primary": true}],
                    "active": true
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create {user_name}: {}", r.body);
        r.body
    }

    /// Creates a group (asserting 201) and returns its body.
    pub async fn create_group(&self, name: &str, members: &[&str]) -> Value {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let r = self
            .post(
                "/Groups",
                &json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name,
                    "members": members
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create group {name}: {}", r.body);
        r.body
    }

    // ----- admin API --------------------------------------------------------------------------

    /// Sends a request. `path` is under the admin API unless it starts with `/v1/`; `token` is
    /// the bearer token (none: no Authorization header); the body is sent as JSON text.
    pub async fn request(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = if path.starts_with("/v1/") {
            format!("{}{path}", self.origin)
        } else {
            format!("{}{ADMIN_BASE}{path}", self.origin)
        };
        let mut rb = self.client.request(method, url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b.to_string());
        }
        Resp::read(rb, NotJson::AsNull).await
    }

    /// An admin request with [`ADMIN_TOKEN`].
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(Value::to_string);
        self.request(Some(ADMIN_TOKEN), method, path, b.as_deref(), &[]).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.admin(Method::GET, path, None).await
    }
    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.admin(Method::POST, path, Some(body)).await
    }
    pub async fn admin_post_empty(&self, path: &str) -> Resp {
        self.admin(Method::POST, path, None).await
    }
    pub async fn admin_put(&self, path: &str, body: &Value) -> Resp {
        self.admin(Method::PUT, path, Some(body)).await
    }
    pub async fn admin_patch(&self, path: &str, body: &Value) -> Resp {
        self.admin(Method::PATCH, path, Some(body)).await
    }
    pub async fn admin_delete(&self, path: &str) -> Resp {
        self.admin(Method::DELETE, path, None).await
    }

    /// A SCIM request with `acme`'s token (`path` relative to the SCIM base), sent as JSON text
    /// and read as the admin API's responses are (a body that is not JSON reads as `Null`).
    pub async fn scim(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(Value::to_string);
        let path = format!("{SCIM_BASE}{path}");
        self.request(Some(&self.token), method, &path, b.as_deref(), &[]).await
    }

    /// Pushes a SCIM user (asserting 201) and returns its SCIM body.
    pub async fn scim_user(&self, user_name: &str) -> Value {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "name": {"givenName": "Given", "familyName": "Family"},
            "emails": [{"value": format!("contact+{user_name}"), "type": "work", "primary": true}],
            "active": true
        });
        self.scim(Method::POST, "/Users", Some(&body)).await.expect(201).clone()
    }

    /// Pushes a SCIM group (asserting 201) and returns its SCIM body.
    pub async fn scim_group(&self, name: &str, members: &[&str]) -> Value {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members
        });
        self.scim(Method::POST, "/Groups", Some(&body)).await.expect(201).clone()
    }

    /// Sets a SCIM user's `active` with a PATCH (asserting 200).
    pub async fn scim_set_active(&self, scim_id: &str, active: bool) {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": active}]
        });
        self.scim(Method::PATCH, &format!("/Users/{scim_id}"), Some(&body)).await.expect(200);
    }

    /// Sets acme's safety valve to hold any deactivation, provisions ann@ and bob@acme.com and
    /// deactivates ann (the push run holds); answers ann's SCIM resource.
    pub async fn trip_valve_with_one_deactivation(&self) -> Value {
        self.admin_put("/tenants/acme/safety", &json!({"percent": 0, "min_users": 1})).await.expect(200);
        let a = self.scim_user("ann@acme.com").await;
        self.scim_user("bob@acme.com").await;
        for e in ["ann@acme.com", "bob@acme.com"] {
            self.wait_user(e, "provisioned", |u| u["status"] == "active").await;
        }
        self.scim_set_active(a["id"].as_str().expect("id"), false).await;
        a
    }

    /// The Moonborn user of `acme` with this sign-in email, if any.
    pub async fn user_by_email(&self, email: &str) -> Option<Value> {
        let r = self.admin_get(&format!("/tenants/acme/users?email={}", enc(email))).await;
        r.expect(200)["users"].as_array().expect("users").first().cloned()
    }

    /// Waits (polling every 20 ms, at most 10 s) until the user with this email satisfies
    /// `pred`; returns it.
    /// Then waits until the controller has reconciled every push so far, so that no queued run
    /// can revert a hand edit the test makes next.
    pub async fn wait_user(&self, email: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let u = eventually(what, || async { self.user_by_email(email).await.filter(|u| pred(u)) }).await;
        self.settle().await;
        u
    }

    /// Waits until the controller has reconciled `acme`'s intent journal up to its head.
    pub async fn settle(&self) {
        let t = self.store.tenant("acme").await.expect("acme");
        eventually("the controller to reconcile every push", || async {
            let head = self.store.journal_head(t.id).await.expect("journal head");
            let done = self.store.controller_state(t.id).await.expect("controller state").applied_journal_seq;
            (done >= head).then_some(())
        })
        .await
    }

    /// A tenant's outbox events (optionally of one type).
    pub async fn events(&self, slug: &str, ty: Option<&str>) -> Vec<Value> {
        let q = ty.map(|t| format!("?type={t}")).unwrap_or_default();
        self.admin_get(&format!("/tenants/{slug}/outbox{q}")).await.expect(200)["events"]
            .as_array()
            .expect("events")
            .clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The database goes with `_db`, which closes the store first.
        self.server.abort();
    }
}

/// Polls `f` every 20 ms until it answers `Some`, for at most 10 s (then panics naming `what`).
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after 10 s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Percent-encodes a query-string value (everything but RFC 3986 unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a response body that is not JSON is read into [`Resp::body`].
pub enum NotJson {
    /// As `Value::String(text)` (SCIM requests; an empty body is `Null`).
    AsString,
    /// As `Null` (admin requests).
    AsNull,
}

/// A response: status, headers, the raw text and the JSON body.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// Sends the request and reads its response.
    pub async fn read(rb: reqwest::RequestBuilder, not_json: NotJson) -> Resp {
        let res = rb.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = match (serde_json::from_str(&text), not_json) {
            (Ok(v), _) => v,
            (Err(_), NotJson::AsString) if !text.is_empty() => Value::String(text.clone()),
            (Err(_), _) => Value::Null,
        };
        Resp { status, headers, text, body }
    }

    /// Asserts the status, printing the body when it differs; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        &self.body
    }

    /// Asserts a SCIM error with this status and scimType (None: no scimType required).
    #[track_caller]
    pub fn expect_error(&self, status: u16, scim_type: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        assert_eq!(
            self.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "not a SCIM error: {}",
            self.body
        );
        assert_eq!(self.body["status"], status.to_string(), "status in body: {}", self.body);
        if let Some(t) = scim_type {
            assert_eq!(self.body["scimType"], t, "scimType: {}", self.body);
        }
        assert_eq!(self.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/scim+json"));
    }

    /// Asserts an admin error: this status, a JSON `{"error": "…"}` body (non-empty message)
    /// and nothing else; returns the message.
    #[track_caller]
    pub fn expect_admin_error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/json")),
            "not JSON: {:?}",
            self.header("content-type")
        );
        let obj = self.body.as_object().unwrap_or_else(|| panic!("not a JSON object: {}", self.text));
        assert_eq!(obj.len(), 1, "an error has only `error`: {}", self.text);
        let msg = obj["error"].as_str().unwrap_or_else(|| panic!("no error message: {}", self.text)).to_string();
        assert!(!msg.is_empty());
        msg
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

//! The admin-API test harness: the real router (SCIM push API and admin API) served over real
//! HTTP on a random loopback port, with the controller running (pushes are reconciled), backed by
//! a fresh SQLite file or a fresh PostgreSQL database per test. Adapted from `tests/api/helpers.rs`.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use moonborn_scim::app::{App, Config};
use moonborn_scim::http::SCIM_BASE;
use moonborn_scim::{Store, Tier};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The admin token of every test server.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Where the admin API lives.
pub const ADMIN_BASE: &str = "/v1/admin";

pub use crate::common::fresh_db::Backend;
use crate::common::fresh_db::FreshDb;

/// Defines a test once and runs it on SQLite always and on PostgreSQL when
/// `MOONBORN_TEST_POSTGRES_URL` is set. Attributes (e.g. `#[ignore]`) apply to both.
#[macro_export]
macro_rules! admin_test {
    ($(#[$m:meta])* async fn $name:ident($app:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case($app: $crate::helpers::TestApp) $body
            $(#[$m])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await.expect("sqlite");
                case(app).await
            }
            $(#[$m])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                    case(app).await
                }
            }
        }
    };
}

/// A running server with the tenant `acme` (Enterprise) and a SCIM token for it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// The SCIM token of `acme`.
    pub token: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub backend: Backend,
    server: tokio::task::JoinHandle<()>,
    _db: FreshDb,
}

impl TestApp {
    /// Starts a server with the admin API on; `None` when PostgreSQL is asked for but not configured.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, Some(ADMIN_TOKEN)).await
    }

    /// Starts a server with the given admin token (`None`: the admin API is off).
    pub async fn spawn_with(backend: Backend, admin_token: Option<&str>) -> Option<TestApp> {
        let mut db = FreshDb::new(backend, "test").await?;
        let store = db.open_store().await;
        let acme = store.create_tenant("acme", Tier::Enterprise).await.expect("tenant");
        let (_, token) = store.create_token("acme").await.expect("token");
        // Tests of everything but the valve's timing do not wait for bursts of destructive
        // pushes to settle (the valve's own tests set the defaults back).
        let quick = moonborn_scim::domain::Safety { settle_ms: 0, max_wait_ms: 0, ..Default::default() };
        store.set_safety(acme.id, quick, "test").await.expect("safety");
        // Pushes are reconciled by one worker; the cron schedules (once a year) never fire.
        let config = Config { admin_token: admin_token.map(Into::into), ..Config::new(db.url.clone()) };
        let app = App::with_store(store.clone(), config).expect("app");
        let addr = app.addr();
        let server = tokio::spawn(async move {
            app.run_until_stopped(std::future::pending()).await.expect("serve");
        });
        Some(TestApp {
            origin: format!("http://{addr}"),
            token,
            client: reqwest::Client::new(),
            store,
            backend,
            server,
            _db: db,
        })
    }

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
        let res = rb.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, body: json }
    }

    /// An admin request with the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(Value::to_string);
        self.request(Some(ADMIN_TOKEN), method, path, b.as_deref(), &[]).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.admin(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.admin(Method::POST, path, Some(body)).await
    }
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.admin(Method::POST, path, None).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.admin(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.admin(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.admin(Method::DELETE, path, None).await
    }

    /// A SCIM request with `acme`'s token (`path` relative to the SCIM base).
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

    /// The Moonborn user of `acme` with this sign-in email, if any.
    pub async fn user_by_email(&self, email: &str) -> Option<Value> {
        let r = self.get(&format!("/tenants/acme/users?email={}", enc(email))).await;
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
        self.get(&format!("/tenants/{slug}/outbox{q}")).await.expect(200)["events"].as_array().expect("events").clone()
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

/// Percent-encodes a query-string value.
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

impl Drop for TestApp {
    fn drop(&mut self) {
        // The database goes with `_db`, which closes the store first.
        self.server.abort();
    }
}

/// A response: status, headers, the raw text and the JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// Asserts the status, printing the body when it differs; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        &self.body
    }

    /// Asserts an admin error: this status, a JSON `{"error": "…"}` body (non-empty message)
    /// and nothing else; returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: u16) -> String {
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

//! The test harness: the real router served over real HTTP on a random loopback port, backed by
//! a fresh SQLite file or a fresh PostgreSQL database per test.

use moonborn_scim::app::{App, Config};
use moonborn_scim::http::SCIM_BASE;
use moonborn_scim::{Store, Tier};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use crate::common::fresh_db::Backend;
use crate::common::fresh_db::FreshDb;

/// Defines a test once and runs it on SQLite always and on PostgreSQL when
/// `MOONBORN_TEST_POSTGRES_URL` is set.
#[macro_export]
macro_rules! scim_test {
    ($(#[$m:meta])* async fn $name:ident($app:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$m])*
            async fn case($app: $crate::helpers::TestApp) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await.expect("sqlite");
                case(app).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                    case(app).await
                }
            }
        }
    };
}

/// A running server and a client with a token for the tenant `acme`.
pub struct TestApp {
    /// `http://127.0.0.1:PORT/v1/auth/scim/v2`
    pub base: String,
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
    /// Starts a server on a fresh database; `None` when PostgreSQL is asked for but not configured.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        let mut db = FreshDb::new(backend, "test").await?;
        let store = db.open_store().await;
        store.create_tenant("acme", Tier::Enterprise).await.expect("tenant");
        let (_, token) = store.create_token("acme").await.expect("token");
        // The SCIM API alone: no controller applies the pushes.
        let config = Config { controller_workers: 0, ..Config::new(db.url.clone()) };
        let app = App::with_store(store.clone(), config).expect("app");
        let addr = app.addr();
        let server = tokio::spawn(async move {
            app.run_until_stopped(std::future::pending()).await.expect("serve");
        });
        Some(TestApp {
            base: format!("http://{addr}{SCIM_BASE}"),
            token,
            client: reqwest::Client::new(),
            store,
            backend,
            db_url: db.url.clone(),
            server,
            _db: db,
        })
    }

    /// Creates another tenant and returns a token for it.
    pub async fn tenant(&self, slug: &str, tier: Tier) -> String {
        self.store.create_tenant(slug, tier).await.expect("tenant");
        self.store.create_token(slug).await.expect("token").1
    }

    /// Sends a request with this app's token; returns status, headers and the JSON body
    /// (`Value::Null` when empty).
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        self.send_as(&self.token, method, path, body, &[]).await
    }

    /// Sends a request with a given token and extra headers.
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
        let res = rb.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, headers, body: json }
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
                &serde_json::json!({
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
        let members: Vec<Value> = members.iter().map(|m| serde_json::json!({"value": m})).collect();
        let r = self
            .post(
                "/Groups",
                &serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name,
                    "members": members
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create group {name}: {}", r.body);
        r.body
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The database goes with `_db`, which closes the store first.
        self.server.abort();
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        &self.body
    }

    /// Asserts a SCIM error with this status and scimType (None: no scimType required).
    #[track_caller]
    pub fn expect_error(&self, status: u16, scim_type: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
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

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

//! Small helpers shared by the test modules: URNs, request builders, URL encoding and response
//! shortcuts. Everything panics on surprise (these are tests).

#![allow(dead_code)]

use std::collections::BTreeSet;

use moonborn_scim::scim::schema::{normalize, Kind};
use moonborn_scim::store::{Intent, JournalEntry};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::app::NotJson;
pub use crate::common::app::{enc, Resp, TestApp};

pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// `?filter=…` (encoded).
pub fn filter_q(f: &str) -> String {
    format!("filter={}", enc(f))
}

/// A PatchOp request body.
pub fn patch_body(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

/// The `id` of a resource.
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

pub fn user_path(v: &Value) -> String {
    format!("/Users/{}", id_of(v))
}

pub fn group_path(v: &Value) -> String {
    format!("/Groups/{}", id_of(v))
}

/// The ids of a ListResponse's Resources, in order.
pub fn ids(list: &Value) -> Vec<String> {
    list["Resources"].as_array().unwrap_or_else(|| panic!("no Resources in {list}")).iter().map(id_of).collect()
}

/// The `value`s of a group's `members` (sorted; empty when absent).
pub fn member_ids(group: &Value) -> BTreeSet<String> {
    group["members"]
        .as_array()
        .map(|a| a.iter().map(|m| m["value"].as_str().expect("member value").to_string()).collect())
        .unwrap_or_default()
}

/// The `value`s of a user's `groups` (sorted; empty when absent).
pub fn group_ids_of_user(user: &Value) -> BTreeSet<String> {
    user["groups"]
        .as_array()
        .map(|a| a.iter().map(|m| m["value"].as_str().expect("group value").to_string()).collect())
        .unwrap_or_default()
}

pub fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

/// The version number inside a weak ETag `W/"n"`.
pub fn version_number(etag: &str) -> i64 {
    etag.trim_start_matches("W/").trim_matches('"').parse().unwrap_or_else(|_| panic!("not a numeric ETag: {etag}"))
}

impl Resp {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn ok(self, status: u16) -> Value {
        self.expect(status);
        self.body
    }

    /// Asserts a 400 whose scimType is one of `types`.
    #[track_caller]
    pub fn expect_400_one_of(&self, types: &[&str]) {
        self.expect_error(400, None);
        let t = self.body["scimType"].as_str().unwrap_or("");
        assert!(types.contains(&t), "scimType {t:?} not one of {types:?}: {}", self.body);
    }
}

impl TestApp {
    /// `GET path` that must answer 200; the body.
    pub async fn get_ok(&self, path: &str) -> Value {
        self.get(path).await.ok(200)
    }

    /// The users a filter selects: their ids, in list order.
    pub async fn filter_users(&self, f: &str) -> Vec<String> {
        ids(&self.get_ok(&format!("/Users?{}&count=1000", filter_q(f))).await)
    }

    /// The groups a filter selects: their ids, in list order.
    pub async fn filter_groups(&self, f: &str) -> Vec<String> {
        ids(&self.get_ok(&format!("/Groups?{}&count=1000", filter_q(f))).await)
    }

    /// Creates a user from a full body (asserting 201); the response body.
    pub async fn create_user_with(&self, body: Value) -> Value {
        let r = self.post("/Users", &body).await;
        assert_eq!(r.status.as_u16(), 201, "create user: {}", r.body);
        r.body
    }

    /// PATCHes a resource with the given operations.
    pub async fn patch_ops(&self, path: &str, ops: Value) -> Resp {
        self.patch(path, &patch_body(ops)).await
    }

    /// Sends a raw request: no token unless given, a raw body with its content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let url = format!("{}{path}", self.base);
        let mut rb = self.client.request(method, url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        Resp::read(rb, NotJson::AsString).await
    }

    /// The id of tenant `acme`.
    pub async fn acme_id(&self) -> i64 {
        self.store.tenant("acme").await.expect("tenant acme").id
    }

    /// The journal of tenant `acme`.
    pub async fn journal(&self) -> Vec<JournalEntry> {
        let t = self.acme_id().await;
        self.store.journal(t, 0, 100_000).await.expect("journal")
    }

    /// The desired-state generation of tenant `acme`.
    pub async fn generation(&self) -> i64 {
        self.store.tenant("acme").await.expect("tenant acme").generation
    }

    /// Seeds `n` users straight into the store (fast; for list tests). Returns ids in creation order.
    /// userNames are `{prefix}{i:04}@example.com`; titles cycle through five values.
    pub async fn seed_users(&self, prefix: &str, n: usize) -> Vec<String> {
        let tenant_id = self.acme_id().await;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            let title = ["t-c", "t-a", "t-e", "t-b", "t-d"][i % 5];
            let doc = normalize(
                Kind::User,
                json!({
                    "schemas": [USER_URN],
                    "userName": format!("{prefix}{i:04}@example.com"),
                    "title": title,
                    "active": true
                }),
            )
            .expect("normalize");
            let now = moonborn_scim::domain::now();
            let intent = Intent { tenant_id, request_id: "seed", now: &now };
            self.store.insert_user(&intent, &id, &doc).await.expect("seed user");
            out.push(id);
        }
        out
    }
}

//! The controller's view of the world: what the IdP wants for a user (`DesiredUser`), what
//! Moonborn holds (`ActualUser`), and the Moonborn record a plan shows before → after (`Record`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A Moonborn user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Disabled,
    Deleted,
    Purged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
            Status::Deleted => "deleted",
            Status::Purged => "purged",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "active" => Status::Active,
            "disabled" => Status::Disabled,
            "deleted" => Status::Deleted,
            "purged" => Status::Purged,
            _ => return None,
        })
    }
}

/// Who manages a Moonborn user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    Scim,
    Manual,
}

impl ManagedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedBy::Scim => "scim",
            ManagedBy::Manual => "manual",
        }
    }
    pub fn parse(s: &str) -> Option<ManagedBy> {
        match s {
            "scim" => Some(ManagedBy::Scim),
            "manual" => Some(ManagedBy::Manual),
            _ => None,
        }
    }
}

/// What the IdP wants for one user: the SCIM user mapped onto Moonborn's fields, with the roles
/// its group memberships bind to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredUser {
    pub scim_id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: String,
    pub contact_email: String,
    pub active: bool,
    pub roles: BTreeSet<String>,
}

/// A Moonborn user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualUser {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub contact_email: Option<String>,
    pub status: Status,
    pub managed_by: ManagedBy,
    pub scim_id: Option<String>,
    pub external_id: Option<String>,
    pub roles: BTreeSet<String>,
    pub purge_after: Option<String>,
    /// Compare-and-set token: every write bumps it.
    pub version: i64,
}

/// The Moonborn user record a plan shows and `apply` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub email: String,
    pub display_name: Option<String>,
    pub contact_email: Option<String>,
    pub status: Status,
    pub roles: BTreeSet<String>,
    pub managed_by: ManagedBy,
    pub scim_id: Option<String>,
    pub external_id: Option<String>,
    pub purge_after: Option<String>,
}

impl ActualUser {
    /// The record this user holds now.
    pub fn record(&self) -> Record {
        Record {
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            contact_email: self.contact_email.clone(),
            status: self.status,
            roles: self.roles.clone(),
            managed_by: self.managed_by,
            scim_id: self.scim_id.clone(),
            external_id: self.external_id.clone(),
            purge_after: self.purge_after.clone(),
        }
    }
}

/// The Moonborn user id given to the user created for a SCIM user: derived from the SCIM id, so
/// that a plan is a pure function and a rerun after a crash creates the same user, not a second.
pub fn user_id_for(scim_id: &str) -> String {
    let h = Sha256::digest(scim_id.as_bytes());
    let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("usr_{hex}")
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).map(str::trim).filter(|x| !x.is_empty())
}

/// Maps a stored SCIM User document onto Moonborn's fields (DESIGN.md, Mapping). `groups` are the
/// displayNames of the user's groups; `bindings` maps a lower-cased group name to its roles.
pub fn desired_user(scim_id: &str, doc: &Value, groups: &[String], bindings: &Bindings) -> DesiredUser {
    let user_name = s(doc, "userName").unwrap_or_default().to_string();
    let name = doc.get("name").cloned().unwrap_or(Value::Null);
    let joined = [s(&name, "givenName"), s(&name, "familyName")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let display_name = Some(joined)
        .filter(|j| !j.is_empty())
        .or_else(|| s(&name, "formatted").map(str::to_string))
        .or_else(|| s(doc, "displayName").map(str::to_string))
        .unwrap_or_else(|| user_name.clone());
    let emails: Vec<&Value> =
        doc.get("emails").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let contact_email = emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .and_then(|e| s(e, "value"))
        .or_else(|| emails.iter().find_map(|e| s(e, "value")))
        .unwrap_or(&user_name)
        .to_string();
    DesiredUser {
        scim_id: scim_id.to_string(),
        external_id: s(doc, "externalId").map(str::to_string),
        display_name,
        contact_email,
        active: doc.get("active").and_then(Value::as_bool).unwrap_or(true),
        roles: bindings.roles_for(groups),
        user_name,
    }
}

/// A tenant's group → role bindings and default role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bindings {
    pub bindings: Vec<Binding>,
    /// The role of a user in no bound group; `None` for no role.
    pub default_role: Option<String>,
}

/// One group → role binding (group names match case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub group: String,
    pub role: String,
}

/// The roles Moonborn knows.
pub const ROLES: &[&str] = &["admin", "editor", "viewer", "billing", "auditor"];

impl Default for Bindings {
    /// The product page's bindings (`desired-state/group-bindings.json`).
    fn default() -> Self {
        serde_json::from_str(include_str!("../../desired-state/group-bindings.json")).expect("bundled bindings parse")
    }
}

impl Bindings {
    /// The roles a user in `groups` holds.
    pub fn roles_for(&self, groups: &[String]) -> BTreeSet<String> {
        let mut roles: BTreeSet<String> = groups
            .iter()
            .flat_map(|g| self.bindings.iter().filter(move |b| b.group.eq_ignore_ascii_case(g)))
            .map(|b| b.role.clone())
            .collect();
        if roles.is_empty() {
            roles.extend(self.default_role.clone());
        }
        roles
    }

    /// Checks roles and group names.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for b in &self.bindings {
            if b.group.trim().is_empty() {
                return Err("a binding's group must not be empty".into());
            }
            if !ROLES.contains(&b.role.as_str()) {
                return Err(format!("unknown role {:?}; roles are {}", b.role, ROLES.join(", ")));
            }
        }
        if let Some(r) = &self.default_role {
            if !ROLES.contains(&r.as_str()) {
                return Err(format!("unknown default_role {r:?}; roles are {}", ROLES.join(", ")));
            }
        }
        Ok(())
    }
}

/// Reads a SCIM ListResponse snapshot (users and groups, as an IdP holds them) into desired
/// users, with roles from `bindings`.
///
/// # Errors
/// A message when the snapshot is not a ListResponse of valid Users and Groups.
pub fn desired_from_snapshot(snapshot: &Value, bindings: &Bindings) -> Result<Vec<DesiredUser>, String> {
    use crate::scim::schema::{normalize, Kind, GROUP_URN};
    let resources = snapshot
        .get("Resources")
        .and_then(Value::as_array)
        .ok_or("the snapshot must be a SCIM ListResponse with a Resources array")?;
    let is_group = |r: &Value| {
        r.get("schemas").and_then(Value::as_array).is_some_and(|s| s.iter().any(|u| u.as_str() == Some(GROUP_URN)))
            || (r.get("members").is_some() && r.get("userName").is_none())
    };
    let mut groups_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    for g in resources.iter().filter(|r| is_group(r)) {
        let name = g.get("displayName").and_then(Value::as_str).ok_or("a group without displayName")?;
        for m in g.get("members").and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = m.get("value").and_then(Value::as_str) {
                groups_of.entry(id.to_string()).or_default().push(name.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for u in resources.iter().filter(|r| !is_group(r)) {
        let id = u.get("id").and_then(Value::as_str).ok_or("a user without id")?.to_string();
        let doc = normalize(Kind::User, u.clone()).map_err(|e| format!("user {id}: {}", e.detail))?;
        let groups = groups_of.remove(&id).unwrap_or_default();
        out.push(desired_user(&id, &doc, &groups, bindings));
    }
    out.sort_by(|a, b| a.scim_id.cmp(&b.scim_id));
    Ok(out)
}

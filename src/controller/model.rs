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
    /// The last write of this user was a hand edit in Moonborn (its profile, status or roles),
    /// not the controller's: a change that reverts it is drift repair.
    #[serde(default)]
    pub hand_edited: bool,
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
///
/// `usr_` and 24 hex digits. For a UUIDv7 SCIM id (what this server assigns) the first 12 are
/// its 48-bit millisecond timestamp and the other 12 come from SHA-256 of the id, so ids sort by
/// creation time like the SCIM ids (the user, role and outbox indexes grow at their right edge);
/// any other id (older UUIDv4 ids) maps to the first 24 hex digits of its SHA-256, as before.
pub fn user_id_for(scim_id: &str) -> String {
    let h = Sha256::digest(scim_id.as_bytes());
    let mut key = [0u8; 12];
    match uuid::Uuid::try_parse(scim_id).ok().filter(|u| u.get_version_num() == 7) {
        Some(u) => {
            key[..6].copy_from_slice(&u.as_bytes()[..6]);
            key[6..].copy_from_slice(&h[..6]);
        }
        None => key.copy_from_slice(&h[..12]),
    }
    format!("usr_{}", hex::encode(key))
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The fields of a stored SCIM User document the mapping reads (each string as stored, not yet
/// trimmed).
#[derive(Default)]
struct Fields<'a> {
    user_name: Option<&'a str>,
    external_id: Option<&'a str>,
    display_name: Option<&'a str>,
    given_name: Option<&'a str>,
    family_name: Option<&'a str>,
    formatted: Option<&'a str>,
    /// Each email's `primary` and `value`.
    emails: Vec<(Option<bool>, Option<&'a str>)>,
    active: Option<bool>,
}

impl<'a> Fields<'a> {
    fn of(doc: &'a Value) -> Fields<'a> {
        let name = doc.get("name");
        let in_name = |k: &str| name.and_then(|n| s(n, k));
        Fields {
            user_name: s(doc, "userName"),
            external_id: s(doc, "externalId"),
            display_name: s(doc, "displayName"),
            given_name: in_name("givenName"),
            family_name: in_name("familyName"),
            formatted: in_name("formatted"),
            emails: doc
                .get("emails")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|e| (e.get("primary").and_then(Value::as_bool), s(e, "value"))).collect())
                .unwrap_or_default(),
            active: doc.get("active").and_then(Value::as_bool),
        }
    }

    fn desired(self, scim_id: &str, groups: &[String], bindings: &Bindings) -> DesiredUser {
        let t = |v: Option<&'a str>| v.map(str::trim).filter(|x| !x.is_empty());
        let user_name = t(self.user_name).unwrap_or_default().to_string();
        let joined = [t(self.given_name), t(self.family_name)].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let display_name = Some(joined)
            .filter(|j| !j.is_empty())
            .or_else(|| t(self.formatted).map(str::to_string))
            .or_else(|| t(self.display_name).map(str::to_string))
            .unwrap_or_else(|| user_name.clone());
        let contact_email = self
            .emails
            .iter()
            .find(|(primary, _)| *primary == Some(true))
            .and_then(|(_, v)| t(*v))
            .or_else(|| self.emails.iter().find_map(|(_, v)| t(*v)))
            .unwrap_or(&user_name)
            .to_string();
        DesiredUser {
            scim_id: scim_id.to_string(),
            external_id: t(self.external_id).map(str::to_string),
            display_name,
            contact_email,
            active: self.active.unwrap_or(true),
            roles: bindings.roles_for(groups),
            user_name,
        }
    }
}

/// Maps a stored SCIM User document onto Moonborn's fields (DESIGN.md, Mapping). `groups` are the
/// displayNames of the user's groups; `bindings` maps a lower-cased group name to its roles.
pub fn desired_user(scim_id: &str, doc: &Value, groups: &[String], bindings: &Bindings) -> DesiredUser {
    Fields::of(doc).desired(scim_id, groups, bindings)
}

/// A JSON object only (a derived struct also reads an array, positionally).
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

/// The fields `desired_user` reads, deserialized straight from the stored text (every other
/// member of the document is skipped, not built). Strict: any other type (an array for an
/// object too), an escaped string or a repeated member fails, and `desired_user_from_str`
/// falls back to the `Value` path.
#[derive(Deserialize)]
struct TypedDoc<'a> {
    #[serde(rename = "userName", borrow, default)]
    user_name: Option<&'a str>,
    #[serde(rename = "externalId", borrow, default)]
    external_id: Option<&'a str>,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Option<&'a str>,
    #[serde(borrow, default)]
    name: Option<MapOnly<TypedName<'a>>>,
    #[serde(borrow, default)]
    emails: Option<Vec<MapOnly<TypedEmail<'a>>>>,
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Deserialize)]
struct TypedName<'a> {
    #[serde(rename = "givenName", borrow, default)]
    given_name: Option<&'a str>,
    #[serde(rename = "familyName", borrow, default)]
    family_name: Option<&'a str>,
    #[serde(borrow, default)]
    formatted: Option<&'a str>,
}

#[derive(Deserialize)]
struct TypedEmail<'a> {
    #[serde(default)]
    primary: Option<bool>,
    #[serde(borrow, default)]
    value: Option<&'a str>,
}

/// `desired_user` of a document as stored (JSON text), without building the whole document.
///
/// # Errors
/// When the text is not JSON.
pub fn desired_user_from_str(
    scim_id: &str,
    doc: &str,
    groups: &[String],
    bindings: &Bindings,
) -> Result<DesiredUser, serde_json::Error> {
    match serde_json::from_str::<MapOnly<TypedDoc<'_>>>(doc) {
        Ok(MapOnly(d)) => {
            let name = d.name.map_or(TypedName { given_name: None, family_name: None, formatted: None }, |n| n.0);
            let f = Fields {
                user_name: d.user_name,
                external_id: d.external_id,
                display_name: d.display_name,
                given_name: name.given_name,
                family_name: name.family_name,
                formatted: name.formatted,
                emails: d.emails.unwrap_or_default().into_iter().map(|MapOnly(e)| (e.primary, e.value)).collect(),
                active: d.active,
            };
            Ok(f.desired(scim_id, groups, bindings))
        }
        Err(_) => {
            let v: Value = serde_json::from_str(doc)?;
            Ok(desired_user(scim_id, &v, groups, bindings))
        }
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

/// A change of a tenant's bindings as an operator sends it: the body of `PUT
/// …/group-bindings` and the file of `plan --bindings` (`desired-state/group-bindings.json` has
/// its shape). An absent `default_role` keeps the current one; `null` sets none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingsChange {
    pub bindings: Vec<Binding>,
    #[serde(default, deserialize_with = "present")]
    pub default_role: Option<Option<String>>,
}

/// A field that is present (`Some`, `null` included) or absent (`None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl BindingsChange {
    /// Parses a change from JSON text (an object only).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn from_json(text: &str) -> Result<BindingsChange, String> {
        serde_json::from_str::<MapOnly<BindingsChange>>(text).map(|m| m.0).map_err(|e| e.to_string())
    }

    /// The bindings this change makes of `current`, validated.
    ///
    /// # Errors
    /// A message naming what is wrong (see `Bindings::validate`).
    pub fn apply_to(self, current: &Bindings) -> Result<Bindings, String> {
        let default_role = self.default_role.unwrap_or_else(|| current.default_role.clone());
        let new = Bindings { bindings: self.bindings, default_role };
        new.validate()?;
        Ok(new)
    }
}

/// The roles Moonborn knows.
pub const ROLES: &[&str] = &["admin", "editor", "viewer", "billing", "auditor"];

/// The product page's bindings (`desired-state/group-bindings.json`), parsed once.
static DEFAULT_BINDINGS: std::sync::LazyLock<Bindings> = std::sync::LazyLock::new(|| {
    serde_json::from_str(include_str!("../../desired-state/group-bindings.json")).expect("bundled bindings parse")
});

impl Default for Bindings {
    /// The product page's bindings (`desired-state/group-bindings.json`).
    fn default() -> Self {
        DEFAULT_BINDINGS.clone()
    }
}

/// Whether a binding of group name `bound` names the group called `group`: case-insensitively
/// (ASCII), the one comparison roles are granted by.
pub fn binding_names(bound: &str, group: &str) -> bool {
    bound.eq_ignore_ascii_case(group)
}

impl Binding {
    /// Whether this binding names the group called `group`.
    pub fn names(&self, group: &str) -> bool {
        binding_names(&self.group, group)
    }
}

impl Bindings {
    /// The product page's bindings, without a copy.
    pub fn default_ref() -> &'static Bindings {
        &DEFAULT_BINDINGS
    }

    /// Whether membership of the group called `group` grants any role: when not, who is in it
    /// changes no user's roles (`roles_for` looks only at bound groups).
    pub fn binds(&self, group: &str) -> bool {
        self.bindings.iter().any(|b| b.names(group))
    }

    /// The roles a user in `groups` holds.
    pub fn roles_for(&self, groups: &[String]) -> BTreeSet<String> {
        let mut roles: BTreeSet<String> = groups
            .iter()
            .flat_map(|g| self.bindings.iter().filter(move |b| b.names(g)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_of_v7_scim_ids_sort_by_creation_and_others_keep_their_old_form() {
        let old = "0b8f8a3c-6d0e-4c11-9a52-5f8e5b1d2a77";
        let h = Sha256::digest(old.as_bytes());
        let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
        assert_eq!(user_id_for(old), format!("usr_{hex}"));
        assert_eq!(user_id_for("not-a-uuid"), user_id_for("not-a-uuid"));

        let ids: Vec<String> = (0..2000).map(|_| crate::store::new_resource_id()).collect();
        let users: Vec<String> = ids.iter().map(|i| user_id_for(i)).collect();
        for (u, i) in users.iter().zip(&ids) {
            assert_eq!(u.len(), 28);
            assert!(u.starts_with("usr_") && u[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(&u[4..16], &i.replace('-', "")[..12], "the timestamp leads");
            assert_eq!(*u, user_id_for(i), "a pure function");
        }
        // Creation order is (millisecond) key order, and distinct SCIM ids give distinct users.
        assert!(users.windows(2).all(|w| w[0][..16] <= w[1][..16]));
        let distinct: BTreeSet<&String> = users.iter().collect();
        assert_eq!(distinct.len(), users.len());
    }
}

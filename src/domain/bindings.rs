//! A tenant's group → role bindings, and an operator's change of them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::mapping::MapOnly;

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

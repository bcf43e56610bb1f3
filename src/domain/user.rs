//! Moonborn users: what the IdP wants for one (`DesiredUser`), what Moonborn holds
//! (`ActualUser`), and the record a plan shows before → after (`Record`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
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

/// A new SCIM resource id: a UUIDv7, so ids sort by creation time. Every index keyed by a
/// user's id (the SCIM id, the Moonborn user id derived from it, its roles, emails and outbox
/// rows) then grows at its right edge instead of dirtying a random leaf per create.
pub fn new_resource_id() -> String {
    uuid::Uuid::now_v7().to_string()
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

        let ids: Vec<String> = (0..2000).map(|_| new_resource_id()).collect();
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

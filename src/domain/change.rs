//! A planned change of one Moonborn user, the counts of a plan by kind, and a plan's
//! fingerprint.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Record;

/// What a change does to a Moonborn user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A new SCIM user: provisioned, roles granted, a welcome email queued (an active one only).
    Create,
    /// Profile fields or roles differ from what SCIM wants.
    Update,
    /// `active` went false: disabled, every session revoked, data kept.
    Deactivate,
    /// `active` went true again: enabled; old sessions stay revoked.
    Reactivate,
    /// The SCIM user is gone: soft delete, purge due after the grace period.
    Delete,
    /// A soft-deleted user is created again (same userName or externalId) within grace.
    Restore,
    /// A manually invited user whose email an IdP creates becomes SCIM-managed.
    Adopt,
    /// The grace period is over: personal data removed, the audit trail kept.
    Purge,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Deactivate => "deactivate",
            ChangeKind::Reactivate => "reactivate",
            ChangeKind::Delete => "delete",
            ChangeKind::Restore => "restore",
            ChangeKind::Adopt => "adopt",
            ChangeKind::Purge => "purge",
        }
    }

    /// Deactivations and deletions: what the safety valve counts.
    pub fn is_destructive(self) -> bool {
        matches!(self, ChangeKind::Deactivate | ChangeKind::Delete)
    }
}

/// One planned change of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub user_id: String,
    /// The record before (None for a create) and the version it was read at.
    pub before: Option<Record>,
    pub before_version: Option<i64>,
    pub after: Record,
    /// The change reverts a hand edit made in Moonborn (drift repair), rather than carrying a
    /// change from the IdP: an update, deactivation or reactivation of a hand-edited user.
    #[serde(default)]
    pub drift: bool,
}

/// Counts of a plan's changes by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: u64,
    pub update: u64,
    pub deactivate: u64,
    pub reactivate: u64,
    pub delete: u64,
    pub restore: u64,
    pub adopt: u64,
    pub purge: u64,
}

impl Summary {
    /// Counts changes.
    pub fn of(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            s.add(c.kind);
        }
        s
    }

    /// Counts one more change.
    pub fn add(&mut self, k: ChangeKind) {
        *match k {
            ChangeKind::Create => &mut self.create,
            ChangeKind::Update => &mut self.update,
            ChangeKind::Deactivate => &mut self.deactivate,
            ChangeKind::Reactivate => &mut self.reactivate,
            ChangeKind::Delete => &mut self.delete,
            ChangeKind::Restore => &mut self.restore,
            ChangeKind::Adopt => &mut self.adopt,
            ChangeKind::Purge => &mut self.purge,
        } += 1;
    }

    /// Deactivations plus deletions.
    pub fn destructive(&self) -> u64 {
        self.deactivate + self.delete
    }

    /// The report's closing line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "Plan: {} to create, {} to update, {} to deactivate, {} to delete, {} to purge",
            self.create,
            self.update + self.reactivate + self.restore + self.adopt,
            self.deactivate,
            self.delete,
            self.purge
        );
        let extra: Vec<String> = [("reactivate", self.reactivate), ("restore", self.restore), ("adopt", self.adopt)]
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} to {k}"))
            .collect();
        if !extra.is_empty() {
            s.push_str(&format!(" (of the updates: {})", extra.join(", ")));
        }
        s.push('.');
        s
    }
}

/// A fingerprint of a tenant's plan: of the tenant, every change and the version each was
/// computed from. Applying a plan by fingerprint is refused when the state moved since (the
/// fingerprint differs).
///
/// An empty plan has no versions to name, so its fingerprint names `journal_head`, the intent
/// journal position it was computed at; a plan with changes leaves the journal out, so a push
/// that changes none of them keeps an operator's approval valid. A deletion's `purge_after` is
/// left out too: it is derived from the time of planning, and a plan shown to an operator must
/// keep its fingerprint until the state it was computed from moves.
pub fn fingerprint(tenant: &str, changes: &[Change], journal_head: i64) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(tenant).unwrap_or_default());
    h.update(b"\n");
    if changes.is_empty() {
        h.update(format!("empty at journal {journal_head}\n").as_bytes());
    }
    for c in changes {
        let mut c = c.clone();
        if c.kind == ChangeKind::Delete {
            c.after.purge_after = None;
        }
        h.update(serde_json::to_vec(&c).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..16])
}

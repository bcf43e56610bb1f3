//! `plan(desired, actual, now) -> changes`: the pure heart of the controller. No I/O, no clock:
//! the same inputs always give the same plan, which is what lets a plan shown to an operator be
//! applied exactly as shown, and a dry run never disagree with a real one.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    fmt_time, user_id_for, ActualUser, Change, ChangeKind, DesiredUser, ManagedBy, Record, Status, GRACE_DAYS,
};

/// Which actual users a plan may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// SCIM-managed users that no desired user matches and whose SCIM resource is gone are
    /// deleted (or purged when due).
    Full,
    /// Only `desired` is planned; unmatched actual users are left alone (a batch of a full run,
    /// whose deletions come from its own pass over orphans).
    Candidates,
}

fn due(purge_after: Option<&str>, now: DateTime<Utc>) -> bool {
    purge_after.and_then(|p| DateTime::parse_from_rfc3339(p).ok()).is_some_and(|p| p <= now)
}

/// The record a desired user wants its Moonborn user to hold.
pub fn wanted(d: &DesiredUser) -> Record {
    Record {
        email: d.user_name.clone(),
        display_name: Some(d.display_name.clone()),
        contact_email: Some(d.contact_email.clone()),
        status: if d.active { Status::Active } else { Status::Disabled },
        roles: d.roles.clone(),
        managed_by: ManagedBy::Scim,
        scim_id: Some(d.scim_id.clone()),
        external_id: d.external_id.clone(),
        purge_after: None,
    }
}

/// Whether `a` already holds what `d` wants — `a.record() == wanted(d)` — without building
/// either record (in a full run nearly every user is in sync).
pub fn holds(a: &ActualUser, d: &DesiredUser) -> bool {
    a.email == d.user_name
        && a.display_name.as_deref() == Some(d.display_name.as_str())
        && a.contact_email.as_deref() == Some(d.contact_email.as_str())
        && a.status == if d.active { Status::Active } else { Status::Disabled }
        && a.roles == d.roles
        && a.managed_by == ManagedBy::Scim
        && a.scim_id.as_deref() == Some(d.scim_id.as_str())
        && a.external_id == d.external_id
        && a.purge_after.is_none()
}

/// Plans one user: a desired user, the actual user it maps to, either or both.
pub fn plan_user(d: Option<&DesiredUser>, a: Option<&ActualUser>, now: DateTime<Utc>) -> Option<Change> {
    match (d, a) {
        (None, None) => None,
        (Some(d), None) => Some(Change {
            kind: ChangeKind::Create,
            user_id: user_id_for(&d.scim_id),
            before: None,
            before_version: None,
            after: wanted(d),
            drift: false,
        }),
        (d, Some(a)) if a.managed_by == ManagedBy::Manual && d.is_none() => None,
        (_, Some(a)) if a.status == Status::Purged => None,
        (Some(d), Some(a)) => {
            // (`holds` is false for a manual or soft-deleted user: those are adopted / restored.)
            if holds(a, d) {
                return None;
            }
            let before = a.record();
            let after = wanted(d);
            let kind = if a.managed_by == ManagedBy::Manual {
                ChangeKind::Adopt
            } else if a.status == Status::Deleted {
                ChangeKind::Restore
            } else if after == before {
                return None;
            } else if a.status == Status::Active && after.status == Status::Disabled {
                ChangeKind::Deactivate
            } else if a.status == Status::Disabled && after.status == Status::Active {
                ChangeKind::Reactivate
            } else {
                ChangeKind::Update
            };
            // Drift repair: a hand-edited user that stays linked to its SCIM user (a takeover by
            // another SCIM user is the IdP's change).
            let drift = a.hand_edited
                && a.scim_id.as_deref() == Some(d.scim_id.as_str())
                && matches!(kind, ChangeKind::Update | ChangeKind::Deactivate | ChangeKind::Reactivate);
            Some(Change {
                kind,
                user_id: a.id.clone(),
                before: Some(before),
                before_version: Some(a.version),
                after,
                drift,
            })
        }
        (None, Some(a)) => {
            let before = a.record();
            let (kind, after) = match a.status {
                Status::Deleted if due(a.purge_after.as_deref(), now) => (
                    ChangeKind::Purge,
                    Record {
                        email: String::new(),
                        display_name: None,
                        contact_email: None,
                        status: Status::Purged,
                        roles: Default::default(),
                        managed_by: ManagedBy::Scim,
                        scim_id: None,
                        external_id: None,
                        purge_after: None,
                    },
                ),
                Status::Deleted | Status::Purged => return None,
                Status::Active | Status::Disabled => (
                    ChangeKind::Delete,
                    Record {
                        status: Status::Deleted,
                        purge_after: Some(fmt_time(now + Duration::days(GRACE_DAYS))),
                        ..before.clone()
                    },
                ),
            };
            // A deletion (or the purge after it) is the IdP's, whatever was edited by hand.
            Some(Change {
                kind,
                user_id: a.id.clone(),
                before: Some(before),
                before_version: Some(a.version),
                after,
                drift: false,
            })
        }
    }
}

/// Plans a set of desired users against actual users.
///
/// Matching, in order: the SCIM id a Moonborn user is linked to; else the sign-in email
/// (case-insensitive) — a manual user there is adopted, a SCIM user whose SCIM resource is gone
/// is taken over (restored if soft-deleted); else a soft-deleted SCIM user with the same
/// externalId is restored. Each actual user matches at most one desired user. `live_elsewhere`
/// names SCIM ids that exist in the desired state but are not in `desired` (a batch sees only
/// part of the tenant): users linked to them are neither taken over nor deleted. With
/// `Scope::Full`, SCIM-managed users matched by nobody and linked to no live SCIM id are deleted
/// (or purged when due).
///
/// This is the matching alone, in input order; `plan` also orders the changes so that every
/// sign-in email is free when it is taken, and drops the email changes that cannot happen.
pub fn plan_raw(
    desired: &[DesiredUser],
    actual: &[ActualUser],
    live_elsewhere: &HashSet<String>,
    now: DateTime<Utc>,
    scope: Scope,
) -> Vec<Change> {
    let live = |a: &&ActualUser| a.status != Status::Purged;
    let desired_ids: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
    let mut by_scim: HashMap<&str, usize> = HashMap::new();
    let mut by_email: HashMap<String, usize> = HashMap::new();
    let mut by_ext: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, a) in actual.iter().enumerate().filter(|(_, a)| live(a)) {
        if let Some(s) = a.scim_id.as_deref().filter(|_| a.managed_by == ManagedBy::Scim) {
            by_scim.insert(s, i);
        }
        by_email.entry(crate::scim::validate::identity_key(&a.email)).or_insert(i);
        // A SCIM user whose resource is gone (soft-deleted, or about to be) is restored or taken
        // over by a new SCIM user with its externalId.
        if let (Some(e), ManagedBy::Scim) = (a.external_id.as_deref(), a.managed_by) {
            by_ext.entry(e).or_default().push(i);
        }
    }
    let mut used = vec![false; actual.len()];
    // A SCIM user linked to a SCIM id that is still desired belongs to that id.
    let orphan =
        |a: &ActualUser| a.scim_id.as_deref().is_none_or(|s| !desired_ids.contains(s) && !live_elsewhere.contains(s));
    let mut changes = Vec::new();
    // Pass 1: links by SCIM id, so the later matching by email cannot steal a linked user.
    let mut unmatched = Vec::new();
    for d in desired {
        match by_scim.get(d.scim_id.as_str()) {
            Some(&i) => {
                used[i] = true;
                changes.extend(plan_user(Some(d), Some(&actual[i]), now));
            }
            None => unmatched.push(d),
        }
    }
    // Pass 2: adopt, take over, restore, or create.
    for d in unmatched {
        let by_mail = by_email
            .get(&crate::scim::validate::identity_key(&d.user_name))
            .copied()
            .filter(|&i| !used[i] && (actual[i].managed_by == ManagedBy::Manual || orphan(&actual[i])));
        let hit = by_mail.or_else(|| {
            let same_ext = d.external_id.as_deref().and_then(|e| by_ext.get(e))?;
            same_ext.iter().copied().find(|&i| !used[i] && orphan(&actual[i]))
        });
        if let Some(i) = hit {
            used[i] = true;
        }
        changes.extend(plan_user(Some(d), hit.map(|i| &actual[i]), now));
    }
    if scope == Scope::Full {
        for (i, a) in actual.iter().enumerate() {
            if !used[i] && a.managed_by == ManagedBy::Scim && orphan(a) {
                changes.extend(plan_user(None, Some(a), now));
            }
        }
    }
    changes
}

/// A change the plan cannot make: the sign-in email a user should get is held by another user
/// that keeps it (a manual user, a soft-deleted user within grace, or a swap of two userNames).
/// The rest of that user's change is still planned; the report shows the conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The user that wants the email (for a create: the user id it would get).
    pub user_id: String,
    pub scim_id: Option<String>,
    pub email: String,
    /// The user holding it.
    pub held_by: String,
}

/// `plan`, then `order_by_email`: the plan as `apply` runs it, and its conflicts.
pub fn plan_with_conflicts(
    desired: &[DesiredUser],
    actual: &[ActualUser],
    live_elsewhere: &HashSet<String>,
    now: DateTime<Utc>,
    scope: Scope,
) -> (Vec<Change>, Vec<Conflict>) {
    let changes = plan_raw(desired, actual, live_elsewhere, now, scope);
    let holders = holders_for(&changes, actual);
    order_by_email(changes, &holders)
}

/// The plan `apply` runs: `plan_raw`'s changes, ordered so that every sign-in email is free when
/// a change takes it, without the email changes that cannot happen (see `plan_with_conflicts`).
pub fn plan(
    desired: &[DesiredUser],
    actual: &[ActualUser],
    live_elsewhere: &HashSet<String>,
    now: DateTime<Utc>,
    scope: Scope,
) -> Vec<Change> {
    plan_with_conflicts(desired, actual, live_elsewhere, now, scope).0
}

/// Who holds each email the changes want (only those: the map grows with the plan, not with
/// the tenant).
pub fn holders_for(changes: &[Change], actual: &[ActualUser]) -> HashMap<String, String> {
    let wanted: HashSet<String> = changes.iter().filter_map(wants).collect();
    actual
        .iter()
        .filter(|a| a.status != Status::Purged && wanted.contains(&lc(&a.email)))
        .map(|a| (lc(&a.email), a.id.clone()))
        .collect()
}

fn lc(s: &str) -> String {
    crate::scim::validate::identity_key(s)
}

/// The email a change takes from nobody-yet (a create, or a rename), lower-cased.
fn wants(c: &Change) -> Option<String> {
    if c.after.status == Status::Purged {
        return None;
    }
    let new = lc(&c.after.email);
    match &c.before {
        Some(b) if lc(&b.email) == new => None,
        _ => Some(new),
    }
}

/// The email a change gives up (a rename away, or a purge), lower-cased.
fn releases(c: &Change) -> Option<String> {
    let b = c.before.as_ref()?;
    (c.after.status == Status::Purged || lc(&b.email) != lc(&c.after.email)).then(|| lc(&b.email))
}

/// Orders a plan so that every sign-in email is free when a change takes it — purges and
/// renames away run before the creates and renames that need their email — and turns the
/// email changes that cannot happen (the holder keeps it, or two users swap) into conflicts:
/// the user keeps its email (a create is not made) and the conflict is reported. Sign-in
/// emails are unique among users that are not purged, so without this a rename onto a held
/// email would fail on every run and never converge.
/// `holders` maps a lower-cased email to the user holding it (see `holders_for`).
pub fn order_by_email(changes: Vec<Change>, holders: &HashMap<String, String>) -> (Vec<Change>, Vec<Conflict>) {
    let holder: HashMap<&str, &str> = holders.iter().map(|(e, h)| (e.as_str(), h.as_str())).collect();
    let by_user: HashMap<&str, usize> = changes.iter().enumerate().map(|(i, c)| (c.user_id.as_str(), i)).collect();
    let mut placed = vec![false; changes.len()];
    let mut order: Vec<usize> = Vec::with_capacity(changes.len());
    // Changes that take no new email go first (purges among them), in plan order.
    for (i, c) in changes.iter().enumerate() {
        if wants(c).is_none() {
            placed[i] = true;
            order.push(i);
        }
    }
    // Then, layer by layer, the changes whose email is free or freed by a change placed before.
    loop {
        let mut progressed = false;
        for (i, c) in changes.iter().enumerate() {
            if placed[i] {
                continue;
            }
            let Some(email) = wants(c) else { continue };
            let free = match holder.get(email.as_str()) {
                None => true,
                Some(&h) if h == c.user_id => true,
                Some(&h) => {
                    by_user.get(h).is_some_and(|&j| placed[j] && releases(&changes[j]).as_deref() == Some(&email))
                }
            };
            if free {
                placed[i] = true;
                order.push(i);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    let mut conflicts = Vec::new();
    let mut blocked: Vec<usize> = (0..changes.len()).filter(|&i| !placed[i]).collect();
    blocked.sort_unstable();
    let mut changes: Vec<Option<Change>> = changes.into_iter().map(Some).collect();
    let mut out: Vec<Change> = order.iter().filter_map(|&i| changes[i].take()).collect();
    for i in blocked {
        let Some(mut c) = changes[i].take() else { continue };
        let email = c.after.email.clone();
        conflicts.push(Conflict {
            user_id: c.user_id.clone(),
            scim_id: c.after.scim_id.clone(),
            held_by: holder.get(lc(&email).as_str()).map(|h| h.to_string()).unwrap_or_default(),
            email,
        });
        // Keep the current email; plan what else changes.
        if let Some(b) = &c.before {
            c.after.email = b.email.clone();
            if c.before.as_ref() != Some(&c.after) {
                out.push(c);
            }
        }
    }
    (out, conflicts)
}

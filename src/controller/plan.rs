//! `plan(desired, actual, now) -> changes`: the pure heart of the controller. No I/O, no clock:
//! the same inputs always give the same plan, which is what lets a plan shown to an operator be
//! applied exactly as shown, and a dry run never disagree with a real one.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{user_id_for, ActualUser, DesiredUser, ManagedBy, Record, Status};

/// How long a soft-deleted user is kept before its personal data is purged.
pub const GRACE_DAYS: i64 = 30;

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

/// The time format stored and compared.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
/// either record (in a full run nearly every user is in sync, and cloning both records, then
/// dropping them, was ~8% of the plan).
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

/// Safety-valve settings: hold destructive changes (deactivations, deletions) that would
/// deactivate or delete more than `percent` of a tenant's SCIM users, when that is also at least
/// `min_users` users. Destructive changes that pushes cause wait until the tenant's destructive
/// pushes settle (none new for `settle_ms`, at most `max_wait_ms` after the first) and are judged
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safety {
    pub percent: u32,
    pub min_users: u64,
    /// Off: every change is applied at once and nothing is ever held.
    pub enabled: bool,
    pub settle_ms: u64,
    pub max_wait_ms: u64,
}

impl Default for Safety {
    fn default() -> Self {
        Safety { percent: 20, min_users: 10, enabled: true, settle_ms: 10_000, max_wait_ms: 120_000 }
    }
}

/// A change of a tenant's safety-valve settings, as an operator asks for it (the admin API's
/// `PUT …/safety`, the CLI's `safety`): an absent field keeps its value; times in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyChange {
    pub percent: Option<i64>,
    pub min_users: Option<i64>,
    pub enabled: Option<bool>,
    pub settle_secs: Option<f64>,
    pub max_wait_secs: Option<f64>,
}

/// The longest settle time or max wait a tenant may set, in seconds: an hour.
pub const MAX_WAIT_SECS: f64 = 3600.0;

impl SafetyChange {
    /// `current` with this change.
    ///
    /// # Errors
    /// A message naming the value out of range.
    pub fn apply(&self, current: Safety) -> Result<Safety, String> {
        let percent = match self.percent {
            Some(p @ 0..=100) => p as u32,
            Some(p) => return Err(format!("percent must be between 0 and 100, not {p}")),
            None => current.percent,
        };
        let min_users = match self.min_users {
            Some(n) if n >= 0 => n as u64,
            Some(n) => return Err(format!("min_users must not be negative ({n})")),
            None => current.min_users,
        };
        let ms = |name: &str, v: Option<f64>, cur: u64| match v {
            Some(x) if x.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&x) => Ok((x * 1000.0).round() as u64),
            Some(x) => Err(format!("{name} must be between 0 and {MAX_WAIT_SECS} seconds, not {x}")),
            None => Ok(cur),
        };
        let settle_ms = ms("settle_secs", self.settle_secs, current.settle_ms)?;
        let max_wait_ms = ms("max_wait_secs", self.max_wait_secs, current.max_wait_ms)?;
        if max_wait_ms < settle_ms {
            return Err(format!(
                "max_wait_secs ({}) must not be shorter than settle_secs ({})",
                max_wait_ms as f64 / 1000.0,
                settle_ms as f64 / 1000.0
            ));
        }
        Ok(Safety { percent, min_users, enabled: self.enabled.unwrap_or(current.enabled), settle_ms, max_wait_ms })
    }
}

/// Destructive changes counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destructive {
    pub deactivate: u64,
    pub delete: u64,
}

impl Destructive {
    /// The destructive changes of a plan.
    pub fn of(s: &Summary) -> Destructive {
        Destructive { deactivate: s.deactivate, delete: s.delete }
    }

    pub fn total(&self) -> u64 {
        self.deactivate + self.delete
    }
}

/// The safety valve's verdict on destructive changes, with the numbers an operator can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Judgement {
    /// The changes being judged (not applied yet).
    pub waiting: Destructive,
    /// Destructive changes the controller applied on its own in the window (not those a person
    /// approved or released).
    pub recent: Destructive,
    /// The tenant's SCIM users as they were before the changes being judged.
    pub scim_users: u64,
    /// `percent` of `scim_users`: more than this trips the valve.
    pub threshold: u64,
    pub percent: u32,
    pub min_users: u64,
    pub trips: bool,
}

impl Safety {
    /// Whether `destructive` changes out of `scim_users` trip the valve.
    pub fn trips(&self, destructive: u64, scim_users: u64) -> bool {
        destructive >= self.min_users && destructive * 100 > u64::from(self.percent) * scim_users
    }

    /// Judges `waiting` destructive changes together with the `recent` ones applied in the
    /// window. `scim_users_now` counts the tenant's SCIM users that are not deleted: the waiting
    /// changes are not applied yet, so only the recent deletions left that count and are added
    /// back (a deactivated user is still a SCIM user).
    pub fn judge(&self, waiting: Destructive, recent: Destructive, scim_users_now: u64) -> Judgement {
        let scim_users = scim_users_now + recent.delete;
        Judgement {
            waiting,
            recent,
            scim_users,
            threshold: u64::from(self.percent) * scim_users / 100,
            percent: self.percent,
            min_users: self.min_users,
            trips: self.trips(waiting.total() + recent.total(), scim_users),
        }
    }
}

impl Judgement {
    /// The reason an operator reads, e.g. "would deactivate 60 of 200 SCIM users; threshold 20%
    /// (40) and at least 10".
    pub fn reason(&self, window_minutes: i64) -> String {
        let w = self.waiting;
        let what = match (w.deactivate, w.delete) {
            (a, 0) => format!("deactivate {a}"),
            (0, d) => format!("delete {d}"),
            (a, d) => format!("deactivate {a} and delete {d}"),
        };
        let mut s = format!("would {what} of {} SCIM users", self.scim_users);
        if self.recent.total() > 0 {
            s.push_str(&format!(
                ", after {} deactivated or deleted in the last {window_minutes} minutes ({} in all)",
                self.recent.total(),
                w.total() + self.recent.total()
            ));
        }
        s.push_str(&format!("; threshold {}% ({}) and at least {}", self.percent, self.threshold, self.min_users));
        s
    }
}

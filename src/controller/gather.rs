//! Gathering a plan: reads the desired state (the whole tenant as ordered key ranges, the
//! journal's delta, or a snapshot) and the actual users that could match it, batch by batch,
//! and plans each batch with the pure `plan` module.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use serde::Serialize;

use super::plan::{holders_for, order_by_email, plan_raw, Conflict, Scope};
use super::safety::{judge_at, Gate, Hold};
use super::{Controller, ControllerError, RunScope, Target, BATCH, INCREMENTAL_CAP, LEASE_RENEW, LINKED_PAGE};
use crate::domain::{desired_user_from_str, fingerprint, ActualUser, Change, DesiredUser, ManagedBy, Status, Summary};
use crate::store::{Burst, ControllerState, Store, StoreError, Tenant};

/// A computed plan with what a report needs.
#[derive(Debug, Clone, Serialize)]
pub struct ComputedPlan {
    pub tenant: String,
    pub fingerprint: String,
    pub summary: Summary,
    pub changes: Vec<Change>,
    /// Email changes the plan cannot make (the email is held by a user that keeps it).
    pub conflicts: Vec<Conflict>,
    /// The journal position the plan covers.
    #[serde(skip)]
    pub journal_head: i64,
    /// The journal position it starts after (an incremental plan's).
    #[serde(skip)]
    pub journal_from: i64,
    /// An incremental plan stopped short of the journal's head (`INCREMENTAL_CAP`): another run
    /// follows at once.
    #[serde(skip)]
    pub truncated: bool,
    /// Set when the safety valve holds (or would hold) the destructive changes.
    pub held: Option<Hold>,
    /// Destructive changes that wait for the tenant's burst of destructive pushes to settle
    /// (then they are judged together); 0 when none wait.
    pub waiting: u64,
    /// When the waiting burst is judged at the latest (RFC 3339), when one waits.
    pub judged_by: Option<String>,
    /// What the plan covers.
    #[serde(skip)]
    pub kind: RunScope,
}

/// One key range of a full run: a batch of desired users (SCIM id, stored document), their
/// groups' displayNames, and the users linked to a SCIM id in the same range.
pub(super) struct RangeRead {
    desired: Vec<(String, String)>,
    groups: HashMap<String, Vec<String>>,
    /// The first page of them, and where the rest of the range starts when there is more.
    linked: Vec<ActualUser>,
    linked_more: Option<String>,
    /// Where the next range starts; `None` when this one reached the end of the key space.
    more: Option<String>,
}

/// The desired users of stored rows: (SCIM id, document as stored, names of its groups).
pub(super) fn desired_users<I: AsRef<str>, D: AsRef<str>>(
    rows: impl IntoIterator<Item = (I, D, Vec<String>)>,
    bindings: &crate::domain::Bindings,
) -> Result<Vec<DesiredUser>, ControllerError> {
    rows.into_iter()
        .map(|(id, doc, groups)| desired_user_from_str(id.as_ref(), doc.as_ref(), &groups, bindings))
        .collect::<Result<_, _>>()
        .map_err(|e| ControllerError::Desired(e.to_string()))
}

/// Reads a whole tenant's key ranges in order, as a two-stage pipeline so both cores work: one
/// task reads the batches of desired users (each batch's last SCIM id is where the next starts),
/// another reads each batch's groups and linked users. Channels of two keep memory bounded to a
/// few batches; dropping the receiver stops both tasks. A short batch is the last: its range of
/// linked users is open-ended, so the users linked to SCIM ids after the last desired one are
/// read too.
pub(super) fn read_ranges(store: Store, tenant_id: i64) -> tokio::sync::mpsc::Receiver<Result<RangeRead, StoreError>> {
    type Desired = (Option<String>, Vec<(String, String)>, Option<String>);
    let (dtx, mut drx) = tokio::sync::mpsc::channel::<Result<Desired, StoreError>>(2);
    let (rtx, rrx) = tokio::sync::mpsc::channel(2);
    let s = store.clone();
    tokio::spawn(async move {
        let mut after: Option<String> = None;
        loop {
            let read = s.desired_docs_after(tenant_id, after.as_deref().unwrap_or(""), BATCH).await;
            let (item, next) = match read {
                Ok(desired) => {
                    let more = (desired.len() as i64 >= BATCH).then(|| desired.last().map(|d| d.0.clone())).flatten();
                    (Ok((after.take(), desired, more.clone())), more)
                }
                Err(e) => (Err(e), None),
            };
            if dtx.send(item).await.is_err() || next.is_none() {
                return;
            }
            after = next;
        }
    });
    tokio::spawn(async move {
        while let Some(item) = drx.recv().await {
            let read = match item {
                Ok((after, desired, more)) => read_rest(&store, tenant_id, after, desired, more).await,
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            if rtx.send(read).await.is_err() || failed {
                return;
            }
        }
    });
    rrx
}

/// The rest of a key range: the groups of its desired users and its linked users, at once.
async fn read_rest(
    store: &Store,
    tenant_id: i64,
    after: Option<String>,
    desired: Vec<(String, String)>,
    more: Option<String>,
) -> Result<RangeRead, StoreError> {
    let from = after.as_deref().unwrap_or("");
    let groups = async {
        match desired.last() {
            Some((last, _)) => store.groups_in_range(tenant_id, from, last).await,
            None => Ok(HashMap::new()),
        }
    };
    let linked = store.linked_in_range(tenant_id, after.as_deref(), more.as_deref(), LINKED_PAGE);
    let (groups, (linked, linked_more)) = tokio::try_join!(groups, linked)?;
    Ok(RangeRead { desired, groups, linked, linked_more, more })
}

impl Controller {
    /// Computes the plan for a tenant without applying anything.
    ///
    /// # Errors
    /// Database errors.
    pub async fn plan(&self, tenant: &Tenant, scope: Target) -> Result<ComputedPlan, ControllerError> {
        Ok(self.compute_plan(tenant, scope, false, false, None).await?.0)
    }

    /// The whole-tenant plan that `bindings` would cause in place of the tenant's own: a binding
    /// change previewed (nothing is stored).
    ///
    /// # Errors
    /// Database errors.
    pub async fn preview_bindings(
        &self,
        tenant: &Tenant,
        bindings: &crate::domain::Bindings,
    ) -> Result<ComputedPlan, ControllerError> {
        Ok(self.compute_plan(tenant, Target::Full, false, false, Some(bindings)).await?.0)
    }

    /// `plan`, with the controller state it read; with `renew`, the tenant's lease is renewed
    /// while a long plan is read; with `hold_now`, the plan is treated as held (a settled burst
    /// tripped the valve); with `bindings`, those instead of the tenant's.
    pub(super) async fn compute_plan(
        &self,
        tenant: &Tenant,
        scope: Target,
        renew: bool,
        hold_now: bool,
        bindings: Option<&crate::domain::Bindings>,
    ) -> Result<(ComputedPlan, ControllerState), ControllerError> {
        let mut renewed = std::time::Instant::now();
        let keep_lease = |renewed: &mut std::time::Instant| {
            let due = renew && renewed.elapsed() >= LEASE_RENEW;
            if due {
                *renewed = std::time::Instant::now();
            }
            due
        };
        let mut state = self.store.controller_state(tenant.id).await?;
        let held_before = state.held_fingerprint.is_some();
        if hold_now && state.held_fingerprint.is_none() {
            // A settled burst tripped the valve: this plan is the one held.
            state.held_fingerprint = Some(String::new());
        }
        let state = state;
        let bindings = bindings.unwrap_or(&state.bindings);
        let mut head = self.store.journal_head(tenant.id).await?;
        let mut truncated = false;
        let now = Utc::now();
        // An incremental run finds the tenant's burst of destructive pushes settled: it judges
        // the whole burst (every user its pushes named, and those since).
        let kind = match &scope {
            Target::Full => RunScope::Full,
            Target::Snapshot(_) => RunScope::Snapshot,
            Target::Incremental => match &state.burst {
                Some(b) if !state.safety.enabled || judge_at(b, &state.safety) <= now => RunScope::Burst,
                _ => RunScope::Incremental,
            },
        };
        let journal_from = match (&state.burst, kind) {
            (Some(b), RunScope::Burst) => b.from_seq.min(state.applied_journal_seq),
            _ => state.applied_journal_seq,
        };
        let mut changes: Vec<Change> = Vec::new();
        let mut holders: HashMap<String, String> = HashMap::new();
        let mut touched: HashSet<String> = HashSet::new();
        let mut push = |(cs, hs): (Vec<Change>, HashMap<String, String>), changes: &mut Vec<Change>| {
            holders.extend(hs);
            for c in cs {
                if touched.insert(c.user_id.clone()) {
                    changes.push(c);
                }
            }
        };
        match scope {
            Target::Full => {
                // A merge of ordered range reads: each batch of desired users (SCIM-id order)
                // with the users linked to SCIM ids in the same key range, read while the
                // previous batch is planned. Linked users whose SCIM id is not in the batch have
                // lost their SCIM resource: the orphans, deleted or purged after every batch's
                // changes, in user-id order (as one pass over them would).
                let mut orphans: Vec<Change> = Vec::new();
                let no_live = HashSet::new();
                let mut ranges = read_ranges(self.store.clone(), tenant.id);
                let mut reached_end = false;
                while let Some(r) = ranges.recv().await {
                    let mut r = r?;
                    reached_end = r.more.is_none();
                    let groups = &mut r.groups;
                    let desired = desired_users(
                        r.desired.iter().map(|(id, doc)| (id, doc, groups.remove(id).unwrap_or_default())),
                        bindings,
                    )?;
                    let in_batch: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
                    let mut linked: Vec<ActualUser> = Vec::new();
                    let (mut page, mut cursor) = (std::mem::take(&mut r.linked), r.linked_more.take());
                    loop {
                        let (mine, gone): (Vec<ActualUser>, Vec<ActualUser>) =
                            page.into_iter().partition(|a| a.scim_id.as_deref().is_some_and(|s| in_batch.contains(s)));
                        linked.extend(mine);
                        let gone: Vec<ActualUser> = gone
                            .into_iter()
                            .filter(|a| a.managed_by == ManagedBy::Scim && a.status != Status::Purged)
                            .collect();
                        orphans.extend(plan_raw(&[], &gone, &no_live, now, Scope::Full));
                        // More linked users in this range than a page: SCIM resources deleted
                        // in bulk (paged, so memory stays flat however many).
                        let Some(c) = cursor.take() else { break };
                        (page, cursor) =
                            self.store.linked_in_range(tenant.id, Some(&c), r.more.as_deref(), LINKED_PAGE).await?;
                        if keep_lease(&mut renewed) && self.lease(tenant.id, true).await?.is_none() {
                            return Err(ControllerError::Busy);
                        }
                    }
                    drop(in_batch);
                    if !desired.is_empty() {
                        let cs =
                            self.candidate_changes(tenant.id, &desired, linked, Scope::Candidates, now, true).await?;
                        push(cs, &mut changes);
                    }
                    if keep_lease(&mut renewed) && self.lease(tenant.id, true).await?.is_none() {
                        return Err(ControllerError::Busy);
                    }
                }
                if !reached_end {
                    // A reader task ended without its last range (it panicked, or the runtime is
                    // stopping): this is not a whole-tenant plan.
                    return Err(StoreError::Invalid("the full run's range reads stopped early".into()).into());
                }
                let unlinked = self.store.unlinked_scim_users(tenant.id).await?;
                orphans.extend(plan_raw(&[], &unlinked, &no_live, now, Scope::Full));
                orphans.sort_by(|a, b| a.user_id.cmp(&b.user_id));
                push((orphans, HashMap::new()), &mut changes);
            }
            Target::Incremental => {
                let mut ids: Vec<String> = Vec::new();
                let mut seen = HashSet::new();
                let mut after = journal_from;
                while after < head {
                    let rows = self.store.journal(tenant.id, after, 5000).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.seq;
                    for r in rows {
                        // Member changes are journaled per member; only a group's rename
                        // re-evaluates all its members (cost follows the change).
                        let named = match (r.resource_type.as_str(), r.op.as_str()) {
                            ("Group", "rename") => self.store.group_member_ids(tenant.id, &r.resource_id).await?,
                            ("Group", _) => continue,
                            _ => vec![r.resource_id],
                        };
                        ids.extend(named.into_iter().filter(|i| seen.insert(i.clone())));
                    }
                    // A long journal (an initial sync) is reconciled in runs of bounded size,
                    // so a run's memory does not grow with the backlog.
                    // (Not a burst's judgement: a burst is judged whole.)
                    if ids.len() >= INCREMENTAL_CAP && after < head && kind != RunScope::Burst {
                        head = after;
                        truncated = true;
                        break;
                    }
                }
                for chunk in ids.chunks(BATCH as usize) {
                    let rows = self.store.desired_by_ids(tenant.id, chunk).await?;
                    let desired = desired_users(rows, bindings)?;
                    let cs = self.batch_changes(tenant.id, &desired, chunk, Scope::Full, now, true).await?;
                    push(cs, &mut changes);
                    // (A burst's judgement is not capped: a long one renews the lease as it goes.)
                    if keep_lease(&mut renewed) && self.lease(tenant.id, true).await?.is_none() {
                        return Err(ControllerError::Busy);
                    }
                }
            }
            Target::Snapshot(desired) => {
                for chunk in desired.chunks(BATCH as usize) {
                    // The snapshot is the whole desired state: stored SCIM ids are not live.
                    let cs = self.batch_changes(tenant.id, chunk, &[], Scope::Candidates, now, false).await?;
                    push(cs, &mut changes);
                }
                // Everything SCIM-managed that the snapshot does not name is deleted.
                let named: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
                let mut after = String::new();
                loop {
                    let users = self.store.scim_users_after(tenant.id, &after, BATCH).await?;
                    let Some(last) = users.last() else { break };
                    after = last.id.clone();
                    let gone: Vec<_> =
                        users.into_iter().filter(|u| u.scim_id.as_deref().is_none_or(|s| !named.contains(s))).collect();
                    let cs = plan_raw(&[], &gone, &HashSet::new(), now, Scope::Full);
                    push((cs, HashMap::new()), &mut changes);
                }
            }
        }
        let (changes, conflicts) = order_by_email(changes, &holders);
        let summary = Summary::of(&changes);
        let fp = fingerprint(&tenant.slug, &changes, head);
        let gate = self.gate(tenant, &state, kind, &summary, &fp, now).await?;
        let (held, waiting) = match gate {
            Gate::Open => (None, 0),
            Gate::Wait => (None, summary.destructive()),
            Gate::Hold(h) => (Some(h), 0),
        };
        let judged_by = match (&state.burst, waiting) {
            (Some(b), _) => Some(crate::domain::fmt_time(judge_at(b, &state.safety))),
            (None, n) if n > 0 => {
                let first = Burst {
                    first_at: crate::domain::fmt_time(now),
                    last_at: crate::domain::fmt_time(now),
                    from_seq: 0,
                };
                Some(crate::domain::fmt_time(judge_at(&first, &state.safety)))
            }
            _ => None,
        };
        let plan = ComputedPlan {
            tenant: tenant.slug.clone(),
            fingerprint: fp,
            summary,
            changes,
            conflicts,
            journal_head: head,
            journal_from,
            truncated,
            held,
            waiting,
            judged_by: judged_by.filter(|_| waiting > 0),
            kind,
        };
        let mut state = state;
        if !held_before {
            // (Only this plan treated the tenant as held.)
            state.held_fingerprint = None;
        }
        Ok((plan, state))
    }

    /// Plans a batch of desired users against the actual users that could match them.
    /// `named` are SCIM ids (named by the journal) whose linked users are candidates too.
    /// `stored_is_live`: whether SCIM ids in the stored desired state count as live (not when
    /// planning against an offline snapshot).
    pub(super) async fn batch_changes(
        &self,
        tenant_id: i64,
        desired: &[DesiredUser],
        named: &[String],
        scope: Scope,
        now: chrono::DateTime<Utc>,
        stored_is_live: bool,
    ) -> Result<(Vec<Change>, HashMap<String, String>), ControllerError> {
        let mut scim_ids: Vec<String> = desired.iter().map(|d| d.scim_id.clone()).collect();
        scim_ids.extend(named.iter().cloned());
        let candidates = self.store.actual_candidates(tenant_id, &scim_ids, &[], &[]).await?;
        self.candidate_changes(tenant_id, desired, candidates, scope, now, stored_is_live).await
    }

    /// `batch_changes` with the users linked to the batch's SCIM ids (and any named) already read.
    pub(super) async fn candidate_changes(
        &self,
        tenant_id: i64,
        desired: &[DesiredUser],
        mut candidates: Vec<ActualUser>,
        scope: Scope,
        now: chrono::DateTime<Utc>,
        stored_is_live: bool,
    ) -> Result<(Vec<Change>, HashMap<String, String>), ControllerError> {
        // Users linked by SCIM id first; look up by email or externalId only the desired users
        // that are not linked yet or whose email changes (none, in the steady state).
        let linked: HashMap<&str, &str> =
            candidates.iter().filter_map(|a| a.scim_id.as_deref().map(|s| (s, a.email.as_str()))).collect();
        let (mut emails, mut exts) = (Vec::new(), Vec::new());
        for d in desired {
            match linked.get(d.scim_id.as_str()) {
                Some(email) if email.eq_ignore_ascii_case(&d.user_name) => {}
                Some(_) => emails.push(crate::scim::validate::identity_key(&d.user_name)),
                None => {
                    emails.push(crate::scim::validate::identity_key(&d.user_name));
                    exts.extend(d.external_id.clone());
                }
            }
        }
        drop(linked);
        if !emails.is_empty() || !exts.is_empty() {
            let more = self.store.actual_candidates(tenant_id, &[], &emails, &exts).await?;
            let known: HashSet<String> = candidates.iter().map(|a| a.id.clone()).collect();
            candidates.extend(more.into_iter().filter(|a| !known.contains(&a.id)));
        }
        let in_batch: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
        let others: Vec<String> =
            candidates.iter().filter_map(|a| a.scim_id.clone()).filter(|s| !in_batch.contains(s.as_str())).collect();
        let live: HashSet<String> = if stored_is_live {
            self.store.existing_scim_ids(tenant_id, &others).await?.into_iter().collect()
        } else {
            HashSet::new()
        };
        let changes = plan_raw(desired, &candidates, &live, now, scope);
        let holders = holders_for(&changes, &candidates);
        Ok((changes, holders))
    }
}

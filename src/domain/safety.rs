//! The safety valve's numbers: a tenant's settings, the destructive changes it counts, and its
//! verdict.

use serde::{Deserialize, Serialize};

use super::Summary;

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

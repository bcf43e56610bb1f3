//! Where recent list pages ended, so that a client paging through a large listing in order
//! (`startIndex` 1, 101, 201, … — an IdP's import of every user) gets each page by seeking past
//! the last one's final row instead of skipping every row before it (`OFFSET` costs grow with the
//! depth), and its `totalResults` without counting the tenant again.
//!
//! A mark holds only at the tenant's desired-state generation it was read at. Every write to
//! the tenant's users, groups or memberships bumps that generation (`record_intent`), in this
//! process or another, so after any write the next page is read by position again — exactly
//! what `OFFSET` would give. A write landing between reading the generation and reading a
//! page may make that one page as it would have been a moment earlier or later, as any read
//! racing a write may.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::query::Arg;

/// Listings remembered (by tenant, table and filter); past this all are forgotten.
const MAX_LISTINGS: usize = 1024;
/// Page ends remembered per listing; past this they are forgotten (the total is kept).
const MAX_ENDS: usize = 1024;

#[derive(Default)]
struct Listing {
    generation: i64,
    total: Option<i64>,
    /// Offset just past a page → `seq` of that page's last row.
    ends: BTreeMap<i64, i64>,
}

/// The page marks of a store.
#[derive(Default)]
pub struct PageMarks {
    listings: Mutex<HashMap<(i64, String), Listing>>,
}

impl std::fmt::Debug for PageMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageMarks").finish_non_exhaustive()
    }
}

/// What identifies a listing of a tenant: the table, the `WHERE` clause and its values.
pub fn listing(table: &str, where_sql: &str, args: &[Arg]) -> String {
    let mut key = format!("{table}\u{0}{where_sql}");
    for a in args {
        match a {
            Arg::Str(s) => {
                key.push_str("\u{0}s");
                key.push_str(s);
            }
            Arg::Int(i) => key.push_str(&format!("\u{0}i{i}")),
        }
    }
    key
}

impl PageMarks {
    fn with<R>(&self, tenant: i64, key: &str, generation: i64, f: impl FnOnce(&mut Listing) -> R) -> R {
        let id = (tenant, key.to_string());
        let mut all = self.listings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if all.len() >= MAX_LISTINGS && !all.contains_key(&id) {
            all.clear();
        }
        let l = all.entry(id).or_default();
        if l.generation != generation {
            *l = Listing { generation, ..Listing::default() };
        }
        f(l)
    }

    /// The `seq` of the row just before position `offset`, if a page that ended there was read
    /// at `generation`.
    pub fn seek(&self, tenant: i64, key: &str, generation: i64, offset: i64) -> Option<i64> {
        self.with(tenant, key, generation, |l| l.ends.get(&offset).copied())
    }

    /// Records that the page read at `generation` ending just before position `end` ended
    /// with the row `last_seq`.
    pub fn mark(&self, tenant: i64, key: &str, generation: i64, end: i64, last_seq: i64) {
        self.with(tenant, key, generation, |l| {
            if l.ends.len() >= MAX_ENDS {
                l.ends.clear();
            }
            l.ends.insert(end, last_seq);
        });
    }

    /// The listing's total, if counted at `generation`.
    pub fn total(&self, tenant: i64, key: &str, generation: i64) -> Option<i64> {
        self.with(tenant, key, generation, |l| l.total)
    }

    /// Records the listing's total as counted at `generation`.
    pub fn set_total(&self, tenant: i64, key: &str, generation: i64, total: i64) {
        self.with(tenant, key, generation, |l| l.total = Some(total));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_hold_only_at_their_generation() {
        let m = PageMarks::default();
        let k = listing("scim_users", "tenant_id = $1", &[]);
        m.mark(1, &k, 7, 100, 4242);
        m.set_total(1, &k, 7, 1000);
        assert_eq!(m.seek(1, &k, 7, 100), Some(4242));
        assert_eq!(m.total(1, &k, 7), Some(1000));
        assert_eq!(m.seek(1, &k, 7, 200), None, "no page ended there");
        assert_eq!(m.seek(2, &k, 7, 100), None, "another tenant");
        let other = listing("scim_users", "tenant_id = $1 AND (active = $2)", &[Arg::Int(1)]);
        assert_eq!(m.seek(1, &other, 7, 100), None, "another filter");
        assert_eq!(m.seek(1, &k, 8, 100), None, "a write since");
        assert_eq!(m.total(1, &k, 8), None);
        assert_eq!(m.seek(1, &k, 7, 100), None, "a newer generation forgets the older one");
    }
}

//! What the disk did during a scenario, as the server saw it: the server's own histograms of WAL
//! fsyncs, of its batch writer's commits (writing the WAL) and of WAL restarts (a restart holds
//! every writer), read from `GET /v1/admin/metrics`
//! before and after the scenario. A latency tail that a single slow fsync explains is the disk's,
//! not the server's; this puts that fact next to the figure, measured in the same run.

use std::sync::Arc;

use crate::client::{Client, Errors, Req, Target};
use crate::Row;

const FSYNC: &str = "moonborn_sqlite_wal_fsync_duration_seconds_bucket{";
const CHECKPOINT: &str = "moonborn_sqlite_wal_checkpoint_duration_seconds_bucket{";
const COMMIT: &str = "moonborn_sqlite_commit_duration_seconds_bucket{";

/// Cumulative bucket counts by upper bound (seconds; the last is +Inf).
#[derive(Debug, Clone, Default)]
struct Hist(Vec<(f64, f64)>);

impl Hist {
    fn add(&mut self, le: f64, n: f64) {
        match self.0.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += n,
            None => self.0.push((le, n)),
        }
    }

    /// Counts in `self` minus counts in `before`, bucket by bucket.
    fn minus(&self, before: &Hist) -> Hist {
        let mut out = self.clone();
        for (le, c) in &mut out.0 {
            *c -= before.0.iter().find(|(b, _)| b == le).map_or(0.0, |x| x.1);
        }
        out.0.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    fn total(&self) -> u64 {
        self.0.last().map_or(0, |x| x.1 as u64)
    }

    /// How many took longer than `secs` (a bucket bound).
    fn over(&self, secs: f64) -> u64 {
        let at = self.0.iter().find(|(b, _)| *b >= secs).map_or(0.0, |x| x.1);
        self.total().saturating_sub(at as u64)
    }

    /// The bucket the slowest one fell in: (lower, upper] in ms (upper infinite past the last).
    fn slowest_ms(&self) -> Option<(f64, f64)> {
        let total = self.total() as f64;
        if total == 0.0 {
            return None;
        }
        let i = self.0.iter().position(|(_, c)| *c >= total)?;
        let lower = if i == 0 { 0.0 } else { self.0[i - 1].0 * 1000.0 };
        Some((lower, self.0[i].0 * 1000.0))
    }
}

/// The server's disk histograms at one moment.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    fsync: Hist,
    commit: Hist,
    restart: Hist,
}

/// The `le` label's value of a bucket line (`…{le="0.05",…} 12`), and the count.
fn bucket(line: &str) -> Option<(f64, f64)> {
    let le = line.split("le=\"").nth(1)?.split('"').next()?;
    let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
    Some((le, line.rsplit(' ').next()?.parse().ok()?))
}

impl Disk {
    /// Reads the server's metrics; `None` (and an error recorded) when they cannot be read.
    pub async fn read(target: &Target, errors: &Arc<Errors>) -> Option<Disk> {
        let mut cl = Client::new(target, errors.clone());
        let (_, body) = cl.send(&Req::get("/v1/admin/metrics").admin()).await?;
        let text = String::from_utf8_lossy(&body);
        let mut d = Disk::default();
        for line in text.lines() {
            if line.starts_with(FSYNC) {
                if let Some((le, n)) = bucket(line) {
                    d.fsync.add(le, n);
                }
            } else if line.starts_with(COMMIT) {
                if let Some((le, n)) = bucket(line) {
                    d.commit.add(le, n);
                }
            } else if line.starts_with(CHECKPOINT) && line.contains("mode=\"restart\"") {
                // Summed over outcomes: a restart that waited in vain held the writers too.
                if let Some((le, n)) = bucket(line) {
                    d.restart.add(le, n);
                }
            }
        }
        Some(d)
    }

    /// What happened between `before` and this reading.
    pub fn since(&self, before: &Disk) -> Window {
        Window {
            fsync: self.fsync.minus(&before.fsync),
            commit: self.commit.minus(&before.commit),
            restart: self.restart.minus(&before.restart),
        }
    }
}

/// What the disk did between two readings.
#[derive(Debug, Clone)]
pub struct Window {
    fsync: Hist,
    commit: Hist,
    restart: Hist,
}

fn range(r: Option<(f64, f64)>) -> String {
    match r {
        None => "-".into(),
        Some((lo, hi)) if hi.is_infinite() => format!("over {lo:.0} ms"),
        Some((lo, hi)) => format!("{lo}–{hi} ms"),
    }
}

impl Window {
    /// Between two readings taken around a scenario (`None` when either is missing).
    pub fn of(before: Option<&Disk>, after: Option<&Disk>) -> Option<Window> {
        Some(after?.since(before?))
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        if self.fsync.total() == 0 && self.commit.total() == 0 {
            return "disk (server's view): no WAL fsync or commit in this window (not SQLite, or no write)".into();
        }
        format!(
            "disk (server's view): {} WAL fsyncs, {} over 50 ms, the slowest {}; {} commits (WAL writes), {} over 50 ms, the slowest {}; {} WAL restarts, {} holding the writers over 50 ms",
            self.fsync.total(),
            self.fsync.over(0.05),
            range(self.fsync.slowest_ms()),
            self.commit.total(),
            self.commit.over(0.05),
            range(self.commit.slowest_ms()),
            self.restart.total(),
            self.restart.over(0.05),
        )
    }

    /// The same as parameters of a row.
    pub fn params(&self, row: Row) -> Row {
        let slow = self.fsync.slowest_ms();
        row.param("wal_fsyncs", self.fsync.total())
            .param("wal_fsyncs_over_50ms", self.fsync.over(0.05))
            .param("wal_fsync_slowest_ms_above", slow.map(|s| s.0))
            .param("wal_fsync_slowest_ms_at_most", slow.and_then(|s| s.1.is_finite().then_some(s.1)))
            .param("commits", self.commit.total())
            .param("commits_over_50ms", self.commit.over(0.05))
            .param("commit_slowest_ms_above", self.commit.slowest_ms().map(|s| s.0))
            .param("commit_slowest_ms_at_most", self.commit.slowest_ms().and_then(|s| s.1.is_finite().then_some(s.1)))
            .param("wal_restarts", self.restart.total())
            .param("wal_restarts_over_50ms", self.restart.over(0.05))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(fsync: &[(f64, f64)]) -> Disk {
        let mut d = Disk::default();
        for (le, n) in fsync {
            d.fsync.add(*le, *n);
        }
        d
    }

    #[test]
    fn a_window_counts_what_happened_between_readings() {
        let before = disk(&[(0.001, 10.0), (0.05, 12.0), (0.1, 12.0), (0.25, 12.0), (f64::INFINITY, 12.0)]);
        let after = disk(&[(0.001, 20.0), (0.05, 23.0), (0.1, 23.0), (0.25, 24.0), (f64::INFINITY, 24.0)]);
        let w = after.since(&before);
        assert_eq!(w.fsync.total(), 12);
        assert_eq!(w.fsync.over(0.05), 1);
        assert_eq!(w.fsync.slowest_ms(), Some((100.0, 250.0)));
        assert!(w.line().contains("12 WAL fsyncs, 1 over 50 ms, the slowest 100–250 ms"), "{}", w.line());
        let none = after.since(&after);
        assert_eq!(none.fsync.slowest_ms(), None);
    }

    #[test]
    fn bucket_lines_parse_with_labels_in_any_order() {
        assert_eq!(bucket("x_bucket{le=\"0.05\"} 3"), Some((0.05, 3.0)));
        assert_eq!(bucket("x_bucket{mode=\"restart\",le=\"+Inf\",outcome=\"done\"} 7"), Some((f64::INFINITY, 7.0)));
        assert_eq!(bucket("x_count 3"), None);
    }
}

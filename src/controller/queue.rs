//! The per-tenant work queue: repeated wake-ups collapse into one pending item, a tenant being
//! reconciled is never handed out again until it is done, and a failed tenant is retried with
//! exponential backoff (never dropped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Trigger;

/// What is pending for a tenant.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub trigger: Trigger,
    pub full: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<i64>,
    dirty: HashMap<i64, Item>,
    processing: HashSet<i64>,
    failures: HashMap<i64, u32>,
}

/// The queue.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    /// Adds a wake-up; collapses with a pending one (a full run absorbs an incremental one).
    pub fn add(&self, tenant_id: i64, trigger: Trigger, full: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.dirty.get_mut(&tenant_id) {
            Some(item) => {
                item.full |= full;
                if full {
                    item.trigger = trigger;
                }
            }
            None => {
                s.dirty.insert(tenant_id, Item { trigger, full });
                if !s.processing.contains(&tenant_id) {
                    s.queue.push_back(tenant_id);
                }
            }
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Waits for the next tenant to reconcile.
    pub async fn get(&self) -> (i64, Item) {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(t) = s.queue.pop_front() {
                    if let Some(item) = s.dirty.remove(&t) {
                        s.processing.insert(t);
                        return (t, item);
                    }
                }
            }
            notified.await;
        }
    }

    /// Folds wake-ups that arrived for a tenant since it was handed out into the run about to
    /// start (it reads the journal after this, so it covers them).
    pub fn absorb(&self, tenant_id: i64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.dirty.get(&tenant_id).is_some_and(|i| !i.full) {
            s.dirty.remove(&tenant_id);
        }
    }

    /// Marks a tenant done; if it was woken meanwhile, it goes back in the queue.
    pub fn done(&self, tenant_id: i64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.processing.remove(&tenant_id);
        if s.dirty.contains_key(&tenant_id) {
            s.queue.push_back(tenant_id);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Resets a tenant's backoff.
    pub fn succeeded(&self, tenant_id: i64) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).failures.remove(&tenant_id);
    }

    /// Records a failure and schedules a retry with exponential backoff (100 ms doubling, at
    /// most `cap`); returns the delay.
    pub fn failed(self: &Arc<Self>, tenant_id: i64, item: Item, cap: Duration) -> Duration {
        let n = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let n = s.failures.entry(tenant_id).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = Duration::from_millis(100u64.saturating_mul(1u64 << n.min(12))).min(cap);
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(tenant_id, item.trigger, item.full);
        });
        delay
    }
}

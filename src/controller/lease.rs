//! Reconcile leases: one process reconciles a tenant at a time, fenced by a token every write
//! carries; a lease is kept between runs and renewed as it is used.

use super::{Controller, ControllerError, LEASE_RENEW, LEASE_SECS};

impl Controller {
    /// The fencing token of this process's lease on a tenant: the cached one while it is fresh
    /// (and `renew` is false), else taken or renewed in the database. `None`: another process
    /// holds it.
    pub(super) async fn lease(&self, tenant_id: i64, renew: bool) -> Result<Option<i64>, ControllerError> {
        if !renew {
            let cache = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((fence, at)) = cache.get(&tenant_id) {
                if at.elapsed() < LEASE_RENEW {
                    return Ok(Some(*fence));
                }
            }
        }
        let got = self.store.acquire_lease(tenant_id, &self.holder, LEASE_SECS).await?;
        let mut cache = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match got {
            Some(f) => {
                cache.insert(tenant_id, (f, std::time::Instant::now()));
            }
            None => {
                cache.remove(&tenant_id);
            }
        }
        Ok(got)
    }

    pub(super) fn forget_lease(&self, tenant_id: i64) {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(&tenant_id);
    }

    /// Gives back every lease this process holds (a command that reconciled and exits, or a
    /// server shutting down), so other processes need not wait for them to expire.
    pub async fn release_leases(&self) {
        let held: Vec<i64> = self.leases.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(t, _)| t).collect();
        for t in held {
            if let Err(e) = self.store.release_lease(t, &self.holder).await {
                let slug = self.store.tenant_by_id(t).await.map_or_else(|_| format!("#{t}"), |x| x.slug);
                tracing::warn!(tenant = %slug, error = %e, "cannot release the reconcile lease");
            }
        }
    }
}

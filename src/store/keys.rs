//! Secrets the service makes for itself and keeps in the database, so every process on it shares
//! them (the key that signs list cursors).

use sqlx::Row as _;

use super::{Store, StoreError};

impl Store {
    /// The 32-byte secret called `name`: made (random) by the first process that asks, read by
    /// every other.
    ///
    /// # Errors
    /// Database errors; `Invalid` when the stored secret is not hex.
    pub async fn service_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        sqlx::query("INSERT INTO service_keys (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&fresh)
            .execute(self.pool())
            .await?;
        let row =
            sqlx::query("SELECT secret FROM service_keys WHERE name = $1").bind(name).fetch_one(self.pool()).await?;
        let secret: String = row.try_get("secret")?;
        hex::decode(secret).map_err(|_| StoreError::Invalid(format!("the stored {name} key is not hex")))
    }
}

//! Opening the store `mfad.toml` names: the SQLite file, or a pool of PostgreSQL
//! connections after the schema is brought up to date.

use super::pool::StorePool;
use super::{Store, StoreError};
use crate::config::{Config, StoreLocation};

/// Opens the configured store for the daemon. SQLite: the file, created if needed, with its
/// key. PostgreSQL: checks the schema (migrating it under an advisory lock) and the key, then
/// a pool of up to `[postgres] pool_size` connections.
pub async fn open_pool(config: &Config) -> Result<StorePool, StoreError> {
    match &config.location {
        StoreLocation::Sqlite => {
            let (database, key) = (config.database.clone(), config.store_key.clone());
            let store =
                tokio::task::spawn_blocking(move || Store::open_with_key_file(&database, &key))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
            StorePool::single(store)
        }
        StoreLocation::Postgres(url) => Err(StoreError::Unavailable(format!(
            "{}: this mfad was built without PostgreSQL",
            crate::config::redact_urls(url)
        ))),
    }
}

/// What the configured store is, for logs (no password).
pub fn describe(config: &Config) -> String {
    match &config.location {
        StoreLocation::Sqlite => format!("database {}", config.database.display()),
        StoreLocation::Postgres(url) => {
            format!("PostgreSQL store {}", crate::config::redact_urls(url))
        }
    }
}

//! Opening the store `mfad.toml` names: the SQLite file, or a pool of PostgreSQL
//! connections after the schema is brought up to date.

use super::pool::{OpenFuture, Opener, PoolTimeouts, StorePool};
use super::postgres::{self, PgOptions};
use super::{Store, StoreError};
use crate::config::{Config, StoreLocation};
use crate::sealing::StoreKey;
use std::sync::Arc;
use std::time::Duration;

/// The PostgreSQL connection settings of `config` (for a `postgresql://` store).
pub fn pg_options(config: &Config, url: &str) -> PgOptions {
    let pg = &config.postgres;
    PgOptions {
        url: url.to_string(),
        password_file: pg.password_file.clone(),
        ca_file: pg.ca_file.clone(),
        connect_timeout: Duration::from_secs(pg.connect_timeout),
        statement_timeout: Duration::from_secs(pg.statement_timeout),
    }
}

/// Opens PostgreSQL connections for a pool.
struct PgOpener {
    opts: PgOptions,
    key: Arc<StoreKey>,
}

impl Opener for PgOpener {
    fn open(&self) -> OpenFuture {
        let (opts, key) = (self.opts.clone(), Arc::clone(&self.key));
        Box::pin(async move {
            let backend = postgres::connect(&opts).await?;
            checked(backend, key).await
        })
    }

    fn describe(&self) -> String {
        format!(
            "the PostgreSQL store {}",
            crate::config::redact_urls(&self.opts.url)
        )
    }
}

/// A store over a new connection, once the database's key check matches `key`. The check
/// is a blocking store call: it runs on a blocking thread, as every store call does (on a
/// runtime worker it would fail, and every new connection of the pool with it).
async fn checked(backend: postgres::PgBackend, key: Arc<StoreKey>) -> Result<Store, StoreError> {
    tokio::task::spawn_blocking(move || Store::from_backend(Box::new(backend), key))
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store's key check stopped: {e}")))?
}

/// Opens one connection to the configured store (for offline tools: migrate, restore).
/// PostgreSQL: the schema is brought up to date first. Run on a tokio runtime.
pub async fn open_store(config: &Config, key: StoreKey) -> Result<Store, StoreError> {
    match &config.location {
        StoreLocation::Sqlite => {
            let database = config.database.clone();
            tokio::task::spawn_blocking(move || Store::open(&database, key))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
        }
        StoreLocation::Postgres(url) => {
            let opts = pg_options(config, url);
            postgres::prepare(&opts, &key.check_value()).await?;
            let backend = postgres::connect(&opts).await?;
            checked(backend, Arc::new(key)).await
        }
    }
}

/// Opens the configured store for the daemon. SQLite: the file, created if needed, with its
/// key. PostgreSQL: checks the schema (migrating it under an advisory lock) and the key, then
/// a pool of up to `[postgres] pool_size` connections, opened as needed.
pub async fn open_pool(config: &Config) -> Result<StorePool, StoreError> {
    let key_file = config.store_key.clone();
    let key = tokio::task::spawn_blocking(move || StoreKey::load(&key_file, true))
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
    match &config.location {
        StoreLocation::Sqlite => StorePool::single(open_store(config, key).await?),
        StoreLocation::Postgres(url) => {
            let opts = pg_options(config, url);
            postgres::prepare(&opts, &key.check_value()).await?;
            let timeouts = PoolTimeouts {
                wait: opts.statement_timeout * 2,
                connect: opts.connect_timeout,
            };
            StorePool::new(
                Box::new(PgOpener {
                    opts,
                    key: Arc::new(key),
                }),
                config.postgres.pool_size as usize,
                timeouts,
            )
        }
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

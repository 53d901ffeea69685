//! The store's connections, shared by all conversations: one SQLite connection (SQLite has
//! one writer at a time anyway), or `pool_size` PostgreSQL connections. A connection that
//! broke (lost, timed out mid-statement) is dropped and a new one opened on the next use, so
//! mfad comes back by itself when the database does.
//!
//! An outage is logged once when it starts and once when it ends, not once per login: each
//! login in between only gets the fail mode (pam_mfa's, when mfad has not yet spoken).

use super::{Store, StoreError};
use deadpool::managed::{self, Metrics, Pool, PoolError, RecycleError, RecycleResult};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{error, info};

/// Opens one more connection to the store.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<Store, StoreError>> + Send>>;

/// How a pool opens its connections.
pub trait Opener: Send + Sync {
    fn open(&self) -> OpenFuture;
    /// What the store is, for logs (never a password).
    fn describe(&self) -> String;
}

/// A store opened already (SQLite, tests): handed out once; the pool never needs another,
/// because an SQLite connection does not break.
struct Given(Mutex<Option<Store>>);

impl Opener for Given {
    fn open(&self) -> OpenFuture {
        let store = self.0.lock().ok().and_then(|mut s| s.take());
        Box::pin(async move {
            store.ok_or_else(|| StoreError::Unavailable("the store connection was lost".into()))
        })
    }

    fn describe(&self) -> String {
        "the store".into()
    }
}

/// Opens, checks and drops the pool's connections.
pub struct Manager {
    opener: Box<dyn Opener>,
    /// Whether the store is out (the last attempt to use it failed for want of it).
    down: AtomicBool,
}

impl managed::Manager for Manager {
    type Type = Store;
    type Error = StoreError;

    async fn create(&self) -> Result<Store, StoreError> {
        self.opener.open().await
    }

    async fn recycle(&self, store: &mut Store, _: &Metrics) -> RecycleResult<StoreError> {
        if store.is_broken() {
            return Err(RecycleError::message("the connection broke"));
        }
        Ok(())
    }
}

/// Timeouts of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolTimeouts {
    /// How long a conversation waits for a free connection.
    pub wait: Duration,
    /// How long opening a connection may take.
    pub connect: Duration,
}

impl Default for PoolTimeouts {
    fn default() -> Self {
        PoolTimeouts {
            wait: Duration::from_secs(10),
            connect: Duration::from_secs(5),
        }
    }
}

/// The connections to the store.
pub struct StorePool {
    pool: Pool<Manager>,
}

/// A connection taken from the pool; back to it when dropped.
pub type PooledStore = managed::Object<Manager>;

impl StorePool {
    /// A pool of one store already open (SQLite; tests).
    pub fn single(store: Store) -> Result<StorePool, StoreError> {
        StorePool::new(
            Box::new(Given(Mutex::new(Some(store)))),
            1,
            PoolTimeouts::default(),
        )
    }

    /// A pool of up to `size` connections opened by `opener`.
    pub fn new(
        opener: Box<dyn Opener>,
        size: usize,
        timeouts: PoolTimeouts,
    ) -> Result<StorePool, StoreError> {
        let pool = Pool::builder(Manager {
            opener,
            down: AtomicBool::new(false),
        })
        .max_size(size.max(1))
        .wait_timeout(Some(timeouts.wait))
        .create_timeout(Some(timeouts.connect))
        .recycle_timeout(Some(timeouts.connect))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot build the store's pool: {e}")))?;
        Ok(StorePool { pool })
    }

    /// A connection, waiting for one to be free (within the wait timeout). The caller
    /// reports how using it went ([`StorePool::failed`], [`StorePool::answered`]).
    pub async fn get(&self) -> Result<PooledStore, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(t) => StoreError::Unavailable(format!(
                "no connection to the store within the time allowed ({t:?})"
            )),
            other => StoreError::Unavailable(other.to_string()),
        })
    }

    /// Notes that using the store failed with `e`: the first failure of an outage is
    /// logged (with its cause), the rest are not.
    pub fn failed(&self, e: &StoreError) {
        if e.is_outage() && !self.pool.manager().down.swap(true, Ordering::SeqCst) {
            error!(
                "{} is unavailable: {e}; logins get the fail mode until it is back \
                 (this is logged once per outage)",
                self.pool.manager().opener.describe()
            );
        }
    }

    /// Notes that the store answered: ends an outage (and says so).
    pub fn answered(&self) {
        if self.pool.manager().down.swap(false, Ordering::SeqCst) {
            info!(
                "{} answers again; logins use it",
                self.pool.manager().opener.describe()
            );
        }
    }

    /// Connections open now and the most the pool keeps.
    pub fn size(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.max_size)
    }
}

//! The store's connections, shared by all conversations: handles on one SQLite connection
//! (SQLite has one writer at a time anyway; the handles let concurrent logins share the
//! fsync of their commits), or `pool_size` PostgreSQL connections. A connection that
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

/// How many conversations may use an SQLite store at once: each gets a handle on the one
/// connection; their commits wait for the disk together ([`super::sqlite`]).
pub const SQLITE_HANDLES: usize = 64;

/// A store opened already (SQLite, tests): handed out first; then, when its backend has
/// handles (SQLite), a new handle on the same connection each time the pool wants one.
/// A store without handles is handed out once (an SQLite connection does not break).
struct Given {
    first: Mutex<Option<Store>>,
    /// A handle kept to make the others (never used for queries itself).
    more: Option<Mutex<Store>>,
}

impl Given {
    fn new(store: Store) -> Given {
        let more = store.backend.handle().map(|backend| {
            Mutex::new(Store {
                backend,
                key: store.key.clone(),
            })
        });
        Given {
            first: Mutex::new(Some(store)),
            more,
        }
    }
}

impl Opener for Given {
    fn open(&self) -> OpenFuture {
        let store = self
            .first
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .or_else(|| {
                let template = self.more.as_ref()?.lock().ok()?;
                let backend = template.backend.handle()?;
                Some(Store {
                    backend,
                    key: template.key.clone(),
                })
            });
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
    /// A pool over one store already open (SQLite; tests): handles on its connection for
    /// up to [`SQLITE_HANDLES`] conversations at once when it has them, else that one store.
    pub fn single(store: Store) -> Result<StorePool, StoreError> {
        let given = Given::new(store);
        let size = if given.more.is_some() {
            SQLITE_HANDLES
        } else {
            1
        };
        StorePool::new(Box::new(given), size, PoolTimeouts::default())
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

//! Read replicas: a pool per replica, a health check that watches each one's reachability and
//! lag, and the choice of the replica a read goes to.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;

use super::config::DatabaseConfig;
use super::database::Database;
use super::error::{Result, redact};
use super::pool::{Connector, PoolShared};

/// What a health check saw of one replica.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// `host:port/database` of the replica.
    pub target: String,
    /// Whether reads go to it now.
    pub usable: bool,
    /// Its replay lag at the last check (zero when it has replayed all it received).
    pub lag: Option<Duration>,
    /// Why it is skipped, when it is.
    pub reason: Option<String>,
}

pub(crate) struct Replica {
    pub(crate) pool: Arc<PoolShared>,
    usable: AtomicBool,
    status: Mutex<ReplicaStatus>,
}

/// The replicas of one primary pool.
pub(crate) struct ReplicaSet {
    pub(crate) replicas: Vec<Replica>,
    next: AtomicUsize,
    closed: AtomicBool,
}

/// What a replica handle knows of the replica set it belongs to.
pub(crate) struct ReplicaLink {
    primary: Arc<PoolShared>,
    set: Arc<ReplicaSet>,
    index: usize,
}

impl Database {
    /// A handle for reads that may be a little stale: on a read replica
    /// ([`DatabaseConfig::replica`]), round robin over those that are reachable and within
    /// [`max_replica_lag`](DatabaseConfig::max_replica_lag), else on the primary (this handle).
    /// Same schema, templating and `tsql!` checks as this handle, tenants included.
    ///
    /// A read that fails on a replica because the replica went away, or was cancelled by a
    /// conflict with recovery, runs again on the primary (a standby is read-only, so the failed
    /// attempt changed nothing) and the replica is skipped until its health check passes.
    /// Writes sent here fail (`cannot execute … in a read-only transaction`); keep writes, and
    /// reads that must see them, on the primary handle.
    ///
    /// ```no_run
    /// # use pgdbm_core::{Database, DatabaseConfig};
    /// # async fn demo() -> pgdbm_core::Result<()> {
    /// let db = Database::connect(
    ///     DatabaseConfig::new("postgresql://app@primary/app")
    ///         .replica("postgresql://app@replica-1/app")
    ///         .replica("postgresql://app@replica-2/app"),
    /// )
    /// .await?;
    /// let n: Option<i64> = db.replica().fetch_value("SELECT count(*) FROM {{tables.users}}", ()).await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn replica(&self) -> Database {
        if self.inner.replica.is_some() {
            return self.clone();
        }
        let Some(set) = self.inner.pool.replicas.get() else {
            return self.clone();
        };
        let Some(i) = set.pick() else {
            return self.clone();
        };
        let handles = self.inner.replica_handles.get_or_init(|| {
            (0..set.replicas.len())
                .map(|index| {
                    Database::handle_with(
                        set.replicas[index].pool.clone(),
                        self.inner.schema.clone(),
                        self.inner.tenant_of.clone(),
                        false,
                        Some(ReplicaLink {
                            primary: self.inner.pool.clone(),
                            set: set.clone(),
                            index,
                        }),
                    )
                })
                .collect()
        });
        handles[i].clone()
    }

    /// Whether this handle reads from a replica (made by [`replica`](Self::replica)).
    pub fn is_replica(&self) -> bool {
        self.inner.replica.is_some()
    }

    /// What the health checks last saw of each replica (empty without replicas).
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        let pool = match &self.inner.replica {
            Some(link) => &link.primary,
            None => &self.inner.pool,
        };
        pool.replicas.get().map(|s| s.status()).unwrap_or_default()
    }

    /// On a replica handle whose replica failed (`why`) while running on `current`: marks the
    /// replica unusable and returns the primary's pool to run on instead.
    pub(crate) fn fall_back(
        &self,
        current: &Arc<PoolShared>,
        why: &str,
    ) -> Option<&Arc<PoolShared>> {
        let link = self.inner.replica.as_ref()?;
        if Arc::ptr_eq(current, &link.primary) {
            return None;
        }
        link.set.set(
            link.index,
            false,
            None,
            Some(format!("a read failed: {why}")),
        );
        Some(&link.primary)
    }
}

/// The replica's lag: the age of the last replayed transaction while WAL it has received waits
/// to be replayed; zero when it has replayed everything (an idle primary is not lag).
const LAG_SQL: &str = "SELECT CASE WHEN NOT pg_is_in_recovery() \
     OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0::float8 \
     ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END";

impl ReplicaSet {
    /// Builds a pool per replica of `config` (opened lazily: a replica that is down does not
    /// stop the service from starting) and starts their health checks. Until a replica's first
    /// check succeeds, reads go to the primary.
    pub(crate) fn open(config: &DatabaseConfig) -> Result<Option<Arc<ReplicaSet>>> {
        if config.replicas.urls.is_empty() {
            return Ok(None);
        }
        let mut replicas = Vec::new();
        for url in &config.replicas.urls {
            let cfg = config.for_replica(url);
            let target = cfg.target();
            replicas.push(Replica {
                pool: PoolShared::open_lazy(cfg)?,
                usable: AtomicBool::new(false),
                status: Mutex::new(ReplicaStatus {
                    target,
                    usable: false,
                    lag: None,
                    reason: Some("not checked yet".into()),
                }),
            });
        }
        let set = Arc::new(ReplicaSet {
            replicas,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        for i in 0..set.replicas.len() {
            spawn_check(
                &set,
                i,
                config.replicas.max_lag,
                config.replicas.check_interval,
            );
        }
        Ok(Some(set))
    }

    /// The replica the next read goes to, round robin over the usable ones; `None` when none
    /// is usable (the read goes to the primary).
    pub(crate) fn pick(&self) -> Option<usize> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.replicas[i].usable.load(Ordering::Relaxed))
    }

    /// Records whether replica `i` is usable, logging the change once: a WARN when it is
    /// skipped (with where reads go instead), an INFO when it is taken back.
    pub(crate) fn set(
        &self,
        i: usize,
        usable: bool,
        lag: Option<Duration>,
        reason: Option<String>,
    ) {
        let r = &self.replicas[i];
        let was = r.usable.swap(usable, Ordering::SeqCst);
        let target = {
            let mut s = r.status.lock().unwrap_or_else(|e| e.into_inner());
            s.usable = usable;
            s.lag = lag.or(s.lag);
            s.reason = reason.clone();
            s.target.clone()
        };
        if was && !usable {
            let instead = if self.pick().is_some() {
                "the other replicas"
            } else {
                "the primary"
            };
            tracing::warn!(
                replica = %target,
                reason = reason.as_deref().unwrap_or(""),
                "pgdbm: replica skipped; reads go to {instead} until it is usable again"
            );
        } else if !was && usable && lag.is_some() {
            tracing::info!(replica = %target, "pgdbm: replica usable; reads go to it");
        }
    }

    /// Each replica's status.
    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for r in &self.replicas {
            r.pool.close();
        }
    }
}

/// Checks replica `i` every `every` on a connection of its own (not the pool's, whose
/// checkouts wait for a free connection), until the set is closed or dropped.
fn spawn_check(set: &Arc<ReplicaSet>, i: usize, max_lag: Option<Duration>, every: Duration) {
    let pool = &set.replicas[i].pool;
    let connector = pool.connector();
    let secret = pool.config.secret();
    let limit = pool.liveness().connect_timeout.max(every);
    let weak = Arc::downgrade(set);
    tokio::spawn(async move {
        let mut conn: Option<sqlx::PgConnection> = None;
        loop {
            let Some(set) = weak.upgrade() else { break };
            if set.closed.load(Ordering::SeqCst) {
                break;
            }
            let checked = tokio::time::timeout(limit, check(&connector, &mut conn)).await;
            let checked = checked.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
            match checked {
                Ok(lag) => match max_lag {
                    Some(max) if lag > max => set.set(
                        i,
                        false,
                        Some(lag),
                        Some(format!(
                            "lags {lag:.1?}, more than max_replica_lag ({max:?})"
                        )),
                    ),
                    _ => set.set(i, true, Some(lag), None),
                },
                Err(e) => {
                    conn = None;
                    let e = redact(&e, secret.as_deref());
                    set.set(i, false, None, Some(format!("unreachable: {e}")));
                }
            }
            drop(set);
            tokio::time::sleep(every).await;
        }
        if let Some(c) = conn {
            let _ = c.close().await;
        }
    });
}

/// One health check: the replica's lag, opening the check's connection if needed.
async fn check(
    connector: &Connector,
    conn: &mut Option<sqlx::PgConnection>,
) -> std::result::Result<Duration, String> {
    if conn.is_none() {
        *conn = Some(
            connector
                .connect()
                .await
                .map_err(|e| e.to_string())?
                .into_conn(),
        );
    }
    let c = conn.as_mut().expect("opened above");
    let row = sqlx::raw_sql(LAG_SQL)
        .fetch_one(c)
        .await
        .map_err(|e| e.to_string())?;
    let secs: f64 = sqlx::Row::try_get(&row, 0).map_err(|e| e.to_string())?;
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// Whether a read that failed on a replica with `e` is worth running again on the primary: the
/// replica went away, or cancelled the read in a conflict with recovery (40001). Not a write
/// refused as read-only: that must stay an error.
pub(crate) fn worth_the_primary(e: &sqlx::Error) -> bool {
    super::pool::is_connection_lost(e)
        || matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}

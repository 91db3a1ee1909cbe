//! The connection pool: sqlx connections handed out by deadpool.
//!
//! Why not sqlx's `PgPool`: measured on this project's machine, the same sqlx connections handed
//! out by deadpool served 2.4x the point queries per second of `PgPool` at 8 tasks (see
//! `benches/pool.rs`). deadpool is lazy, so `connect` opens `min_connections` itself, and a
//! reaper task closes idle and old connections and tops the pool back up to the minimum.
//!
//! The parts: `connector` opens one connection (host list, identity, socket options via
//! `socket`); `manager` is deadpool's manager (open through an outage, recycle, the reconnect
//! loop); `checkout` hands connections out; `watch` follows each connection's statements and
//! `liveness` asks the server about those that wait long; `pooler` wraps statements behind a
//! transaction pooler; `connection` is the connection handed to callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::Timeouts;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, SqlSafeStr};

use super::config::{DatabaseConfig, Liveness};
use super::error::{Cut, CutReason, Error, Result};
use super::observe::Observer;
use super::observe::operation::reads_only;
use super::outage::{Link, Outage};

mod checkout;
mod connection;
mod connector;
mod lanes;
mod liveness;
mod manager;
mod pooler;
mod socket;
mod watch;

pub(crate) use super::error::{is_connection_lost, session_terminated};
use super::replicas::ReplicaSet;
pub(crate) use checkout::Prepare;
pub use connection::PoolConnection;
use connector::connect_with_retry;
pub(crate) use connector::{Connector, Opened, connect_error};
use lanes::Lanes;
pub(crate) use lanes::lane_key;
use liveness::Watchdog;
use manager::ConnManager;
pub(crate) use manager::{PoolObject, PooledConn};
pub(crate) use socket::SocketHandle;
pub(crate) use watch::{ConnWatch, Deadline, watched_stream};

/// Counters the pool keeps beside deadpool's status.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) timeouts: AtomicU64,
    pub(crate) acquired: AtomicU64,
}

/// The shared state of one pool: deadpool (in lanes) plus what pgdbm needs around it.
pub(crate) struct PoolShared {
    pub(crate) pool: Lanes,
    pub(crate) config: DatabaseConfig,
    pub(crate) counters: Counters,
    pub(crate) outage: Arc<Outage<Opened>>,
    pub(crate) observer: Observer,
    /// The liveness check's view of the connections.
    watchdog: Arc<Watchdog>,
    timeouts: Timeouts,
    /// Behind a transaction pooler: `BEGIN`, `DEALLOCATE ALL` and the settings as `SET LOCAL`.
    begin_sql: Option<sqlx::SqlStr>,
    /// The read replicas of a primary's pool.
    pub(crate) replicas: std::sync::OnceLock<Arc<ReplicaSet>>,
    /// What the last `verify_checked_queries` of each schema found wrong, for `health_check`.
    verified: std::sync::Mutex<std::collections::BTreeMap<Option<String>, String>>,
    /// The listeners made from this pool's handles, for `health_check`.
    pub(crate) listeners: super::listen::Registry,
}

impl std::fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.config.target())
            .field("lanes", &self.pool.count())
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // Stops the reconnect loop of a pool dropped without `close`.
        self.outage.close();
    }
}

/// Pool statistics (serialisable, as `health_check` reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// Configured minimum size.
    pub min_size: usize,
    /// Configured maximum size.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Connections handed out.
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// Acquire attempts that timed out since the pool was created.
    pub timeouts: u64,
    /// Successful acquires since the pool was created.
    pub acquired: u64,
}

impl PoolShared {
    /// Builds the pool and opens `min_connections`, retrying the first connection with backoff.
    pub(crate) async fn open(config: DatabaseConfig) -> Result<Arc<PoolShared>> {
        let shared = PoolShared::build(config, false)?;
        let connector = &shared.pool.manager().connector;
        let config = &shared.config;
        // The first connection is opened with retries, then the schema is created once (doing
        // it per connection races: concurrent CREATE SCHEMA IF NOT EXISTS can fail).
        let mut first = connect_with_retry(config, connector).await?;
        if let (Some(schema), true) = (&config.schema, config.create_schema) {
            create_if_missing(
                &mut first,
                &format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
            )
            .await?;
        }
        // The setup runs on every connection, this one included, so a bad command fails here.
        for cmd in &connector.setup {
            sqlx::raw_sql(sqlx::AssertSqlSafe(cmd.as_str()))
                .execute(&mut first)
                .await
                .map_err(|e| Error::query(cmd.clone(), e))?;
        }
        first.close().await.ok();
        if let Some(set) = ReplicaSet::open(&shared.config)? {
            let _ = shared.replicas.set(set);
        }
        shared.fill_to_min().await?;
        shared.spawn_reaper();
        shared.spawn_gauges();
        shared.spawn_watchdog();
        Ok(shared)
    }

    /// Opens the pool without connecting: connections are opened on demand and by the reaper
    /// (a replica's pool, which must not stop the service from starting while it is down).
    pub(crate) fn open_lazy(config: DatabaseConfig) -> Result<Arc<PoolShared>> {
        let shared = PoolShared::build(config, true)?;
        shared.spawn_reaper();
        shared.spawn_gauges();
        shared.spawn_watchdog();
        Ok(shared)
    }

    fn build(config: DatabaseConfig, fail_fast: bool) -> Result<Arc<PoolShared>> {
        config.validate()?;
        let outage = Arc::new(Outage::new(config.target()));
        let observer = Observer::new(&config);
        let connector = Arc::new(Connector::new(&config)?);
        let liveness = connector.liveness;
        let watchdog = Arc::new(Watchdog::new(connector.hosts(), &liveness));
        let manager = ConnManager {
            connector,
            fail_fast,
            outage: outage.clone(),
            watchdog: watchdog.clone(),
            health_check_after: config.health_check_after,
            max_lifetime: config.max_lifetime,
            secret: config.secret(),
            metrics: observer.metrics.as_ref().map(|m| m.connections.clone()),
        };
        // `get` bounds the whole checkout by `acquire_timeout` itself: waiting for a free slot
        // and, during an outage, waiting for the server. Connects are bounded by the connector,
        // the ping of a recycled connection by the manager (`liveness_timeout`); this bound
        // only backs that up.
        let timeouts = Timeouts {
            wait: None,
            create: None,
            recycle: Some(liveness.check_timeout * 2),
        };
        let pool = Lanes::build(&manager, config.max_connections, config.lanes())
            .map_err(|e| Error::config("pool", e))?;
        // DEALLOCATE ALL in the same round trip: whatever named statements the server
        // connection this transaction landed on holds (sqlx names the statements of `prepare`
        // and `describe` whatever its cache, and other clients leave theirs) cannot collide
        // with this client's.
        let begin_sql = config.wraps_statements().then(|| {
            let settings = config.settings_sql(true).unwrap_or_default();
            sqlx::AssertSqlSafe(format!("BEGIN; DEALLOCATE ALL; {settings}")).into_sql_str()
        });
        Ok(Arc::new(PoolShared {
            pool,
            config,
            counters: Counters::default(),
            outage,
            observer,
            watchdog,
            timeouts,
            begin_sql,
            replicas: std::sync::OnceLock::new(),
            verified: Default::default(),
            listeners: Default::default(),
        }))
    }

    /// Opens connections until the pool holds `min_connections`.
    pub(crate) async fn fill_to_min(&self) -> Result<()> {
        let missing = self
            .config
            .min_connections
            .saturating_sub(self.pool.status().size);
        if missing == 0 {
            return Ok(());
        }
        let gets = (0..missing).map(|_| self.get());
        let held = futures_util::future::join_all(gets).await;
        let mut first_err = None;
        for r in held {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn spawn_reaper(self: &Arc<Self>) {
        let idle = self.config.idle_timeout;
        let lifetime = self.config.max_lifetime;
        let period = [idle, lifetime]
            .into_iter()
            .flatten()
            .min()
            .map(|d| (d / 2).clamp(Duration::from_millis(100), Duration::from_secs(30)));
        let Some(period) = period else { return };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.pool.is_closed() {
                    return;
                }
                let min = shared.config.min_connections;
                let mut kept = 0usize;
                // `retain` sees idle connections only; keep the freshest `min` of them regardless.
                shared.pool.retain(|m| {
                    let expired = lifetime.is_some_and(|l| m.age() > l);
                    let idle_too_long = idle.is_some_and(|i| m.last_used() > i);
                    let keep = !expired && (kept < min || !idle_too_long);
                    if keep {
                        kept += 1;
                    }
                    keep
                });
                // During an outage the reconnect loop is already at work.
                if shared.outage.link() != Link::Up {
                    continue;
                }
                if let Err(e) = shared.fill_to_min().await {
                    tracing::warn!(error = %e, "pgdbm: could not restore min_connections");
                }
            }
        });
    }

    /// Refreshes the pool gauges every `metrics_interval` while the pool is open.
    fn spawn_gauges(self: &Arc<Self>) {
        if self.observer.metrics.is_none() {
            return;
        }
        let period = self.config.observe.metrics_interval;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                if let Some(m) = &shared.observer.metrics {
                    m.set_pool(&shared.stats());
                }
                if shared.pool.is_closed() {
                    return;
                }
                drop(shared);
                tokio::time::sleep(period).await;
            }
        });
    }

    /// Records the outcome of verifying the checked queries in `schema`: `warning` when they no
    /// longer match, `None` when they do (which clears an earlier warning for that schema).
    pub(crate) fn note_verification(&self, schema: Option<&str>, warning: Option<String>) {
        let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match warning {
            Some(w) => v.insert(schema.map(str::to_string), w),
            None => v.remove(&schema.map(str::to_string)),
        };
    }

    /// The warnings [`note_verification`](Self::note_verification) holds, one per schema.
    pub(crate) fn verification_warnings(&self) -> Vec<String> {
        let v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        v.values().cloned().collect()
    }

    /// A new connection set up like the pool's (settings, init commands) but not part of it.
    pub(crate) async fn dedicated_connection(&self) -> Result<PgConnection> {
        match self.pool.manager().connector.connect().await {
            Ok(opened) => Ok(opened.into_conn()),
            Err(e) => Err(connect_error(&self.config, 1, e)),
        }
    }

    /// The one retry rule, for statement `sql` that failed with `e` outside a transaction on
    /// `obj`: whether to run it again on another connection (the caller counts `tries`, 1 for
    /// the first run; reruns are bounded by the pool size).
    ///
    /// - The server said it ended the session (57P01/57P02/57P03): it rolled back whatever the
    ///   session had in flight, so the statement did not take effect.
    /// - pgdbm cut the connection before the statement was handed to it: nothing was sent.
    /// - The server went silent with the statement in flight (the liveness check found it
    ///   unreachable, or the kernel's keepalive / `TCP_USER_TIMEOUT` gave up on the socket), and
    ///   the statement only reads ([`reads_only`]): running it twice changes nothing.
    ///
    /// Nothing else: a write whose connection broke in flight may have been applied (its error
    /// says the outcome is unknown), a statement deadline that passed leaves no time, and an
    /// I/O error from a server that crashed mid-statement may have been caused by the statement.
    /// Idle connections may have died the same way; they are pinged before they are handed out
    /// again (see the manager's `recycle`).
    pub(crate) fn retry_after(
        &self,
        obj: &mut PoolObject,
        e: &sqlx::Error,
        tries: usize,
        sql: &str,
    ) -> bool {
        if !is_connection_lost(e) {
            return false;
        }
        self.lost(obj);
        self.after_cut(&obj.watch, e);
        if tries > self.config.max_connections {
            return false;
        }
        let silent = || reads_only(sql).then_some("its server went silent and it only reads");
        let why = match (e, Cut::of(e)) {
            (_, Some(Cut { sent: false, .. })) => Some("it was not sent"),
            (
                _,
                Some(Cut {
                    why: CutReason::Unreachable(_),
                    ..
                }),
            ) => silent(),
            (_, Some(_)) => None,
            (sqlx::Error::Database(db), None) if session_terminated(db.code().as_deref()) => {
                Some("the server ended the session")
            }
            (sqlx::Error::Io(io), None) if io.kind() == std::io::ErrorKind::TimedOut => silent(),
            _ => None,
        };
        if let Some(why) = why {
            tracing::debug!(
                tries,
                "pgdbm: a pooled connection was lost; running the statement again on another connection ({why})"
            );
        }
        why.is_some()
    }

    /// After a statement failed with `e` on `watch`'s connection: when its deadline cut it
    /// short, asks the server to cancel it (from a connection of its own, in the background;
    /// not behind a pooler, where the process is not the connection's).
    pub(crate) fn after_cut(&self, watch: &Arc<ConnWatch>, e: &sqlx::Error) {
        let deadline = matches!(
            Cut::of(e),
            Some(Cut {
                why: CutReason::Deadline(_),
                sent: true,
                ..
            })
        );
        if !deadline || watch.pid == 0 {
            return;
        }
        let (connector, watch) = (self.connector(), watch.clone());
        let within = self.liveness().check_timeout;
        tokio::spawn(async move { connector.cancel(watch.target, watch.pid, within).await });
    }

    /// Has the liveness check look at the server now (something did not answer).
    pub(crate) fn kick_liveness_check(&self) {
        self.watchdog.kick();
    }

    /// The liveness settings in effect.
    pub(crate) fn liveness(&self) -> Liveness {
        self.pool.manager().connector.liveness
    }

    /// Drops `obj` when it is returned, and has the idle connections pinged before their next use.
    pub(crate) fn lost(&self, obj: &mut PoolObject) {
        obj.broken = true;
        self.outage.note_lost();
    }

    /// How this pool opens connections (for a health check's connection of its own).
    pub(crate) fn connector(&self) -> Arc<Connector> {
        self.pool.manager().connector.clone()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let s = self.pool.status();
        PoolStats {
            min_size: self.config.min_connections,
            max_size: s.max_size,
            size: s.size,
            idle: s.available,
            in_use: s.size.saturating_sub(s.available),
            waiting: s.waiting,
            timeouts: self.counters.timeouts.load(Ordering::Relaxed),
            acquired: self.counters.acquired.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn close(&self) {
        if let Some(set) = self.replicas.get() {
            set.close();
        }
        self.outage.close();
        self.pool.close();
        if let Some(m) = &self.observer.metrics {
            m.set_pool(&self.stats());
        }
    }
}

/// Runs a `CREATE … IF NOT EXISTS`, tolerating a concurrent creator: PostgreSQL's IF NOT EXISTS
/// is not race-free (two sessions can both pass the check, and one then fails on the catalog's
/// unique index), so a duplicate error is retried once, when the check sees the object.
pub(crate) async fn create_if_missing(conn: &mut PgConnection, sql: &str) -> Result<()> {
    for attempt in 0..2 {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(db))
                if attempt == 0
                    && matches!(
                        db.code().as_deref(),
                        Some("23505" | "42P06" | "42P07" | "42710")
                    ) => {}
            Err(e) => return Err(Error::query(sql, e)),
        }
    }
    Ok(())
}

//! The connection pool: sqlx connections handed out by deadpool.
//!
//! Why not sqlx's `PgPool`: measured on this project's machine, the same sqlx connections handed
//! out by deadpool served 2.4x the point queries per second of `PgPool` at 8 tasks (see
//! `benches/pool.rs`). deadpool is lazy, so `connect` opens `min_connections` itself, and a
//! reaper task closes idle and old connections and tops the pool back up to the minimum.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult, Timeouts};
use sqlx::postgres::{PgConnection, PgTransactionManager};
use sqlx::{Connection, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;

use super::config::DatabaseConfig;
use super::error::{Error, Result, redact};
use super::observe::Observer;
use super::observe::metrics::ConnMetrics;
use super::outage::{Link, Outage, jittered, unreachable};

mod connection;
mod connector;
mod pooler;

use super::replicas::ReplicaSet;
pub use connection::PoolConnection;
pub(crate) use connection::{is_connection_lost, session_terminated};
use connector::connect_with_retry;
pub(crate) use connector::{Connector, connect_error};

/// A sqlx connection as the pool keeps it.
pub(crate) struct PooledConn {
    pub(crate) conn: PgConnection,
    /// Set when an error showed the connection is unusable; the pool then drops it.
    pub(crate) broken: bool,
    metrics: Option<ConnMetrics>,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl PooledConn {
    fn new(conn: PgConnection, metrics: Option<ConnMetrics>) -> PooledConn {
        if let Some(m) = &metrics {
            m.opened.increment(1);
        }
        PooledConn {
            conn,
            broken: false,
            metrics,
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.closed.increment(1);
            if self.broken {
                m.broken.increment(1);
            }
        }
    }
}

pub(crate) struct ConnManager {
    connector: Arc<Connector>,
    /// A replica's pool: an unreachable server is an error at once (the read goes to the
    /// primary), not an outage to wait through.
    fail_fast: bool,
    outage: Arc<Outage>,
    health_check_after: Duration,
    max_lifetime: Option<Duration>,
    secret: Option<String>,
    metrics: Option<ConnMetrics>,
}

impl ConnManager {
    async fn open(&self) -> Result<PooledConn, sqlx::Error> {
        loop {
            if self.outage.wait_usable().await.is_err() {
                return Err(sqlx::Error::PoolClosed);
            }
            if let Some(conn) = self.outage.take_spare() {
                return Ok(PooledConn::new(conn, self.metrics.clone()));
            }
            let attempted = Instant::now();
            match self.connector.connect().await {
                Ok(conn) => {
                    self.outage.mark_up(None);
                    return Ok(PooledConn::new(conn, self.metrics.clone()));
                }
                Err(e) if unreachable(&e) && !self.fail_fast => {
                    let reason = redact(&describe(&e, &self.connector), self.secret.as_deref());
                    if self.outage.mark_down(reason, attempted) {
                        spawn_reconnect(
                            self.connector.clone(),
                            self.outage.clone(),
                            self.secret.clone(),
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl managed::Manager for ConnManager {
    type Type = PooledConn;
    type Error = sqlx::Error;

    /// Opens a connection; while the server is unreachable, waits for the reconnect loop
    /// instead of trying (the caller's `acquire_timeout` bounds the wait).
    async fn create(&self) -> Result<PooledConn, sqlx::Error> {
        // Boxed: deadpool embeds this future in every checkout's future, and with the outage
        // handling inline it made every checkout carry it; opening connections is rare.
        Box::pin(self.open()).await
    }

    async fn recycle(&self, obj: &mut PooledConn, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if obj.broken {
            return Err(RecycleError::message("connection marked broken"));
        }
        if let Some(max) = self.max_lifetime
            && metrics.age() > max
        {
            return Err(RecycleError::message("connection exceeded max_lifetime"));
        }
        // A connection used recently is healthy with near certainty; only long-idle ones pay a
        // round trip (firewalls and server restarts kill idle sockets), and so do all that sat
        // idle while another connection was found dead: after a restart or a mass
        // `pg_terminate_backend` they are dead too, and must not be handed to a statement.
        let last_checkout = metrics.recycled.unwrap_or(metrics.created);
        if (metrics.last_used() > self.health_check_after || self.outage.lost_since(last_checkout))
            && let Err(e) = obj.conn.ping().await
        {
            obj.broken = true;
            return Err(RecycleError::Backend(e));
        }
        Ok(())
    }
}

/// Backoff of the reconnect loop: it starts small because most outages are restarts of a
/// fraction of a second, and is capped well under a second so callers are served soon after the
/// server is back.
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(20);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(400);

/// The pool's one reconnect loop: probes the server until a connection opens, then ends the
/// outage and hands that connection to the first waiter.
fn spawn_reconnect(connector: Arc<Connector>, outage: Arc<Outage>, secret: Option<String>) {
    tokio::spawn(async move {
        let mut delay = RECONNECT_FIRST_DELAY;
        loop {
            tokio::time::sleep(jittered(delay)).await;
            if outage.link() != Link::Down {
                return;
            }
            match connector.connect().await {
                Ok(conn) => return outage.mark_up(Some(conn)),
                // The server answers, but with an error waiting will not fix (say, the database
                // was dropped): end the outage so callers get that error now.
                Err(e) if !unreachable(&e) => return outage.mark_up(None),
                Err(e) => outage.still_down(redact(&describe(&e, &connector), secret.as_deref())),
            }
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
        }
    });
}

fn describe(e: &sqlx::Error, connector: &Connector) -> String {
    match e {
        sqlx::Error::PoolTimedOut => {
            format!(
                "no connection within connect_timeout ({:?})",
                connector.connect_timeout
            )
        }
        e => e.to_string(),
    }
}

pub(crate) type DeadPool = managed::Pool<ConnManager>;
pub(crate) type PoolObject = managed::Object<ConnManager>;

/// Counters the pool keeps beside deadpool's status.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) timeouts: AtomicU64,
    pub(crate) acquired: AtomicU64,
}

/// The shared state of one pool: deadpool plus what pgdbm needs around it.
pub(crate) struct PoolShared {
    pub(crate) pool: DeadPool,
    pub(crate) config: DatabaseConfig,
    pub(crate) counters: Counters,
    pub(crate) outage: Arc<Outage>,
    pub(crate) observer: Observer,
    timeouts: Timeouts,
    /// Behind a transaction pooler: `BEGIN`, `DEALLOCATE ALL` and the settings as `SET LOCAL`.
    begin_sql: Option<sqlx::SqlStr>,
    /// The read replicas of a primary's pool.
    pub(crate) replicas: std::sync::OnceLock<Arc<ReplicaSet>>,
}

impl std::fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.config.target())
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

/// What a checkout runs on the connection before handing it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prepare {
    Nothing,
    /// A round trip, for connections handed to the caller (`acquire`), whose statements pgdbm
    /// cannot run again.
    Ping,
    /// `BEGIN`, for a transaction.
    Begin,
}

impl Prepare {
    fn sql(self) -> &'static str {
        match self {
            Prepare::Nothing => "",
            Prepare::Ping => "-- ping of a pooled connection",
            Prepare::Begin => "BEGIN",
        }
    }
}

enum Checkout {
    Pool(PoolError<sqlx::Error>),
    Prepare(Prepare, sqlx::Error),
}

impl From<PoolError<sqlx::Error>> for Checkout {
    fn from(e: PoolError<sqlx::Error>) -> Self {
        Checkout::Pool(e)
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
        Ok(shared)
    }

    /// Opens the pool without connecting: connections are opened on demand and by the reaper
    /// (a replica's pool, which must not stop the service from starting while it is down).
    pub(crate) fn open_lazy(config: DatabaseConfig) -> Result<Arc<PoolShared>> {
        let shared = PoolShared::build(config, true)?;
        shared.spawn_reaper();
        shared.spawn_gauges();
        Ok(shared)
    }

    fn build(config: DatabaseConfig, fail_fast: bool) -> Result<Arc<PoolShared>> {
        config.validate()?;
        let outage = Arc::new(Outage::new(config.target()));
        let observer = Observer::new(&config);
        let manager = ConnManager {
            connector: Arc::new(Connector::new(&config)?),
            fail_fast,
            outage: outage.clone(),
            health_check_after: config.health_check_after,
            max_lifetime: config.max_lifetime,
            secret: config.secret(),
            metrics: observer.metrics.as_ref().map(|m| m.connections.clone()),
        };
        // `get` bounds the whole checkout by `acquire_timeout` itself: waiting for a free slot
        // and, during an outage, waiting for the server. Connects are bounded by the connector.
        let timeouts = Timeouts {
            wait: None,
            create: None,
            recycle: Some(config.connect_timeout),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(config.max_connections)
            .timeouts(timeouts)
            .queue_mode(deadpool::managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::config("pool", e.to_string()))?;
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
            timeouts,
            begin_sql,
            replicas: std::sync::OnceLock::new(),
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
                shared.pool.retain(|_, m| {
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

    /// Checks a connection out of the pool, waiting up to `acquire_timeout` for a free slot and,
    /// while the server is unreachable, for it to come back.
    pub(crate) async fn get(&self) -> Result<PoolObject> {
        self.checkout(Prepare::Nothing).await
    }

    /// Checks a connection out and runs `prepare` on it (a ping, or `BEGIN`), taking another
    /// connection while that finds the connection dead: both change nothing, so they are safe to
    /// run again.
    pub(crate) async fn get_prepared(&self, prepare: Prepare) -> Result<PoolObject> {
        self.checkout(prepare).await
    }

    /// A checkout that takes its turn behind callers that waited through an outage; `prepare`
    /// is part of the turn, so those callers get their connections in the order they came.
    async fn checkout_in_turn(&self, prepare: Prepare) -> Result<PoolObject, Checkout> {
        self.outage
            .in_turn(|| async {
                let mut tries = 0;
                loop {
                    tries += 1;
                    let mut obj = self.pool.timeout_get(&self.timeouts).await?;
                    let r = match prepare {
                        Prepare::Nothing => return Ok(obj),
                        Prepare::Ping => obj.conn.ping().await,
                        Prepare::Begin => {
                            PgTransactionManager::begin(&mut obj.conn, self.begin_sql.clone()).await
                        }
                    };
                    let Err(e) = r else { return Ok(obj) };
                    let lost = is_connection_lost(&e);
                    if lost {
                        self.lost(&mut obj);
                    }
                    if !lost || tries > self.config.max_connections {
                        return Err(Checkout::Prepare(prepare, e));
                    }
                }
            })
            .await
    }

    async fn checkout(&self, prepare: Prepare) -> Result<PoolObject> {
        let wait = self.config.acquire_timeout;
        let metrics = self.observer.metrics.as_ref();
        let started = metrics.map(|_| Instant::now());
        let r = if prepare == Prepare::Nothing && !self.outage.queueing() {
            let get = self.pool.timeout_get(&self.timeouts);
            tokio::time::timeout(wait, get)
                .await
                .map(|r| r.map_err(Checkout::Pool))
        } else {
            // Boxed: this path's future is large, and the hot path above should not carry it.
            tokio::time::timeout(wait, Box::pin(self.checkout_in_turn(prepare))).await
        };
        match r {
            Ok(Ok(obj)) => {
                self.counters.acquired.fetch_add(1, Ordering::Relaxed);
                if let (Some(m), Some(t)) = (metrics, started) {
                    m.acquire_wait.record(t.elapsed().as_secs_f64());
                }
                Ok(obj)
            }
            Ok(Err(Checkout::Pool(PoolError::Closed)))
            | Ok(Err(Checkout::Pool(PoolError::Backend(sqlx::Error::PoolClosed)))) => {
                Err(Error::PoolClosed)
            }
            Ok(Err(Checkout::Pool(PoolError::Backend(e)))) => {
                Err(connect_error(&self.config, 1, e))
            }
            Ok(Err(Checkout::Pool(e))) => Err(Error::config("pool", e.to_string())),
            Ok(Err(Checkout::Prepare(p, e))) => Err(Error::query(p.sql(), e)),
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = metrics {
                    m.acquire_timeouts.increment(1);
                    m.set_pool(&self.stats());
                }
                Err(Error::PoolTimeout {
                    waited: wait,
                    max_size: self.config.max_connections,
                    unreachable: self.outage.down().map(|d| d.last_error),
                })
            }
        }
    }

    /// A new connection set up like the pool's (settings, init commands) but not part of it.
    pub(crate) async fn dedicated_connection(&self) -> Result<PgConnection> {
        match self.pool.manager().connector.connect().await {
            Ok(c) => Ok(c),
            Err(e) => Err(connect_error(&self.config, 1, e)),
        }
    }

    /// The one retry rule, for a statement that failed outside a transaction on `obj`: whether
    /// to run it again on another connection (the caller counts `tries`, 1 for the first run).
    ///
    /// Only when the server says it ended the session (57P01/57P02/57P03): it then rolled back
    /// whatever the session had in flight, so the statement did not take effect. Other idle
    /// connections may have died the same way; they are pinged before they are handed out
    /// again (see `recycle`), and the retries are bounded by the pool size. A connection found
    /// dead before a statement is sent never reaches the statement (the ping drops it), so that
    /// case needs no retry here. An I/O error in the middle of a statement is not retried: the
    /// statement may have run, and it may be what broke the server.
    pub(crate) fn retry_after(&self, obj: &mut PoolObject, e: &sqlx::Error, tries: usize) -> bool {
        if !is_connection_lost(e) {
            return false;
        }
        self.lost(obj);
        let ended =
            matches!(e, sqlx::Error::Database(db) if session_terminated(db.code().as_deref()));
        if ended && tries <= self.config.max_connections {
            tracing::debug!(
                tries,
                "pgdbm: the server ended a pooled connection's session; running the statement again on another connection"
            );
            return true;
        }
        false
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

//! `Database`: a pool plus a schema; renders `{{tables.x}}` and runs queries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use sqlx::FromRow;
use sqlx::postgres::{PgArguments, PgRow, Postgres};

use super::config::DatabaseConfig;
use super::copy;
use super::error::{Error, Result};
use super::observe::stats::QueryStats;
use super::observe::{SqlText, record_cut};
use super::params::{CopyRow, Params};
use super::pool::{
    Deadline, PoolConnection, PoolObject, PoolShared, PoolStats, PooledConn, Prepare,
    is_connection_lost, lane_key,
};
use super::query::{self, QueryCtx};
use super::replicas::ReplicaLink;
use super::transaction::Transaction;
use crate::compiled;
use crate::ident::{IdentifierKind, validate_identifier};
use crate::template;

/// A database manager: a connection pool, the schema its `{{tables.x}}` placeholders render
/// into, and the query API.
///
/// Cloning is cheap and shares everything. Handles made with [`with_schema`](Self::with_schema)
/// or from a [`SharedPool`] share the pool but render into their own schema; only the handle that
/// opened the pool closes it.
///
/// ```no_run
/// use pgdbm_core::{Database, DatabaseConfig};
///
/// #[derive(sqlx::FromRow)]
/// struct User { id: i64, email: String, name: Option<String> }
///
/// # async fn demo() -> pgdbm_core::Result<()> {
/// let config = DatabaseConfig::from_env()?.min_connections(5).max_connections(20);
/// let db = Database::connect(config).await?;
/// let id: i64 = db.execute_and_return_id(
///     "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)", ("alice@example.com", "Alice")).await?;
/// let user: Option<User> = db.fetch_optional("SELECT * FROM {{tables.users}} WHERE id = $1", (id,)).await?;
/// db.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<DbInner>,
    /// This handle's statement deadline (see [`Database::with_deadline`]).
    pub(crate) deadline: Option<Duration>,
}

pub(crate) struct DbInner {
    pub(crate) pool: Arc<PoolShared>,
    pub(crate) schema: Option<String>,
    /// For a tenant handle: the schema its module's `tsql!` queries were checked for, which
    /// this handle re-targets to its own.
    pub(crate) tenant_of: Option<String>,
    owner: bool,
    closed: AtomicBool,
    cache: TemplateCache,
    pub(crate) slow: Option<Duration>,
    /// For a replica handle: the primary its reads fall back to.
    pub(crate) replica: Option<ReplicaLink>,
    /// For a tenant handle: the pool lane its statements prefer (see `pool/lanes.rs`).
    pub(crate) lane: Option<u64>,
    /// This handle's replica handles, made on the first [`Database::replica`].
    pub(crate) replica_handles: OnceLock<Vec<Database>>,
}

struct TemplateCache {
    map: RwLock<HashMap<Box<str>, Arc<str>>>,
    capacity: usize,
}

impl TemplateCache {
    fn get(&self, sql: &str, schema: Option<&str>, tenant_of: Option<&str>) -> Result<Arc<str>> {
        if let Some(hit) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
            return Ok(hit.clone());
        }
        let rendered = template::render(sql, schema)?;
        let rendered: Arc<str> = match for_handle(&rendered, schema, tenant_of)? {
            Some(retargeted) => retargeted.into(),
            None => rendered.into(),
        };
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        // A bounded cache: dynamic SQL must not grow it without limit.
        if map.len() < self.capacity {
            map.insert(sql.into(), rendered.clone());
        }
        Ok(rendered)
    }
}

/// What `sql`, if `tsql!` marked it for a schema, becomes on a handle of `schema`: `None` to run it
/// as it is (unmarked, marked for this schema, or another module's query on a tenant handle), the
/// re-targeted text on a tenant handle of its module, and an error on a plain handle of another
/// schema (see [`crate::compiled`]).
pub(crate) fn for_handle(
    sql: &str,
    schema: Option<&str>,
    tenant_of: Option<&str>,
) -> Result<Option<String>> {
    if !compiled::is_marked(sql) {
        return Ok(None);
    }
    let Some(marked) = compiled::parse(sql) else {
        return Err(Error::config(
            "sql",
            "the SQL starts with a `/* pgdbm: schema=… */` marker that does not fit the text after it; pass tsql!/tsql_str! output unchanged (appending is fine)",
        ));
    };
    match (schema, tenant_of) {
        (Some(s), _) if s == marked.schema => Ok(None),
        (Some(s), Some(module)) if module == marked.schema => Ok(Some(marked.retarget(s))),
        // A tenant handle knows which module it serves: another module's query keeps the
        // schema it was checked for. A plain handle of another schema is ambiguous (it may be
        // meant as a tenant's), so it refuses.
        (_, Some(_)) => Ok(None),
        _ => Err(Error::SchemaMismatch {
            compiled_for: marked.schema.to_string(),
            handle: schema.map(str::to_string),
        }),
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("schema", &self.inner.schema)
            .field("owner", &self.inner.owner)
            .field("pool", &self.inner.pool)
            .finish()
    }
}

/// One pool shared by several [`Database`] handles, each with its own schema (pgdbm's
/// shared-pool pattern).
///
/// ```no_run
/// # use pgdbm_core::{DatabaseConfig, SharedPool};
/// # async fn demo() -> pgdbm_core::Result<()> {
/// let pool = SharedPool::connect(DatabaseConfig::from_env()?).await?;
/// let users = pool.database(Some("users"))?;
/// let billing = pool.database(Some("billing"))?;
/// users.create_schema().await?;
/// billing.create_schema().await?;
/// // `{{tables.accounts}}` is "users".accounts for one and "billing".accounts for the other.
/// pool.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SharedPool {
    owner: Database,
}

impl SharedPool {
    /// Opens the pool. The config's schema, if any, is ignored for rendering: each handle
    /// names its own.
    ///
    /// Every connection runs with `search_path` pinned to `pg_catalog` (as pgdbm does for
    /// shared pools), so a table name without a schema fails loudly instead of reaching
    /// `public` or another tenant's table; the pool refuses to open if the pin does not take.
    /// [`connect_unpinned`](Self::connect_unpinned) leaves `search_path` alone.
    ///
    /// # Errors
    ///
    /// As [`Database::connect`], and [`Error::Config`] (field `search_path`) when the server does
    /// not keep `search_path` at `pg_catalog` (a pooler or the role's settings override it); the
    /// pool is closed again.
    pub async fn connect(config: DatabaseConfig) -> Result<SharedPool> {
        let config = config
            .no_schema()
            .server_setting("search_path", "pg_catalog");
        let pool = SharedPool::open(config).await?;
        let path: Option<String> = pool.owner.fetch_value("SHOW search_path", ()).await?;
        if path.as_deref() != Some("pg_catalog") {
            pool.close().await;
            return Err(Error::config(
                "search_path",
                format!(
                    "the shared pool pins search_path to pg_catalog, but the server reports `{}` (a pooler or the role's settings override it); fix that, or use SharedPool::connect_unpinned",
                    path.unwrap_or_default()
                ),
            ));
        }
        Ok(pool)
    }

    /// Like [`connect`](Self::connect) without pinning `search_path`: unqualified table names
    /// then resolve through the server's `search_path`.
    ///
    /// # Errors
    ///
    /// As [`Database::connect`].
    pub async fn connect_unpinned(config: DatabaseConfig) -> Result<SharedPool> {
        SharedPool::open(config.no_schema()).await
    }

    async fn open(config: DatabaseConfig) -> Result<SharedPool> {
        let shared = PoolShared::open(config).await?;
        Ok(SharedPool {
            owner: Database::from_shared(shared, None, true),
        })
    }

    /// A handle rendering into `schema` (`None`: unqualified names). It does not own the pool.
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] when `schema` is not a valid identifier.
    pub fn database(&self, schema: Option<&str>) -> Result<Database> {
        self.owner.with_schema(schema)
    }

    /// Pool statistics.
    pub fn stats(&self) -> PoolStats {
        self.owner.pool_stats()
    }

    /// The pool's query statistics ([`Database::query_stats`]).
    pub fn query_stats(&self) -> Option<QueryStats> {
        self.owner.query_stats()
    }

    /// Closes the pool for every handle.
    pub async fn close(&self) {
        self.owner.close().await
    }
}

/// Runs `$body` on a pooled connection under the pool's one retry rule
/// ([`PoolShared::retry_after`]); behind a transaction pooler, in a transaction of its own.
macro_rules! with_retry {
    ($self:ident, $sql:expr, $ctx:expr, $args:expr, |$conn:ident, $a:ident| $body:expr) => {{
        let sql: &Arc<str> = $sql;
        let ctx: &QueryCtx<'_> = $ctx;
        let args: PgArguments = $args;
        let deadline = Deadline::starting_now($self.deadline);
        let mut pool = &$self.inner.pool;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut obj = $self
                .statement_checkout(&mut pool, deadline.as_ref(), sql)
                .await?;
            let r = {
                let PooledConn {
                    conn: $conn, watch, ..
                } = &mut *obj;
                let $a = args.clone();
                watch.run(deadline.as_ref(), $body).await
            };
            if let Err(e) = &r {
                record_cut(ctx, SqlText::Shared(sql), e);
            }
            match r {
                Ok(v) => match pool.end_statement(&mut obj, true).await {
                    Ok(()) => break Ok(v),
                    // Not retried: whether a failed COMMIT took effect is not known.
                    Err(e) => break Err(Error::query("COMMIT", e)),
                },
                Err(e) => match $self.rerun_on(pool, &mut obj, &e, tries, sql).await {
                    Some(next) => pool = next,
                    None => break Err(Error::statement(sql.to_string(), e, false)),
                },
            }
        }
    }};
}

impl Database {
    /// A connection for one statement from `pool` (this handle's, or the primary's after a
    /// replica failed); when a replica's pool cannot give one, the primary's does.
    pub(crate) async fn statement_checkout<'a>(
        &'a self,
        pool: &mut &'a Arc<PoolShared>,
        deadline: Option<&Deadline>,
        sql: &str,
    ) -> Result<PoolObject> {
        loop {
            match pool.get_for_statement(self.inner.lane, deadline, sql).await {
                Ok(obj) => return Ok(obj),
                Err(e) => match self.fall_back(pool, &e.to_string()) {
                    Some(primary) => *pool = primary,
                    None => return Err(e),
                },
            }
        }
    }

    /// After statement `sql` failed with `e` on `obj` (attempt `tries`, from `pool`): ends its
    /// transaction behind a transaction pooler and says where to run it again: `pool` under the
    /// retry rule ([`PoolShared::retry_after`]), the primary when a replica failed, or nowhere
    /// (always nowhere once its deadline passed).
    pub(crate) async fn rerun_on<'a>(
        &'a self,
        pool: &'a Arc<PoolShared>,
        obj: &mut PoolObject,
        e: &sqlx::Error,
        tries: usize,
        sql: &str,
    ) -> Option<&'a Arc<PoolShared>> {
        // A lost connection has no transaction left to end (and may not answer a ROLLBACK).
        if !is_connection_lost(e) {
            let _ = pool.end_statement(obj, false).await;
        }
        if pool.retry_after(obj, e, tries, sql) {
            return Some(pool);
        }
        if super::error::Cut::of(e).is_some_and(|c| c.is_deadline()) {
            return None;
        }
        if super::replicas::worth_the_primary(e) {
            return self.fall_back(pool, &e.to_string());
        }
        None
    }

    /// Validates the config, opens the pool with `min_connections` (retrying the first connection
    /// with backoff), creates the schema if missing and runs the init commands.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Identifier`] for an invalid config, before any network traffic
    /// ([`DatabaseConfig::validate`]); [`Error::Connect`] when the server cannot be reached within
    /// `retry_attempts` tries (at once for a refused login or a missing database); [`Error::Query`]
    /// when creating the schema or an init command fails.
    pub async fn connect(config: DatabaseConfig) -> Result<Database> {
        let schema = config.schema.clone();
        let shared = PoolShared::open(config).await?;
        Ok(Database::from_shared(shared, schema, true))
    }

    fn from_shared(pool: Arc<PoolShared>, schema: Option<String>, owner: bool) -> Database {
        Database::handle(pool, schema, None, owner)
    }

    fn handle(
        pool: Arc<PoolShared>,
        schema: Option<String>,
        tenant_of: Option<String>,
        owner: bool,
    ) -> Database {
        Database::handle_with(pool, schema, tenant_of, owner, None)
    }

    pub(crate) fn handle_with(
        pool: Arc<PoolShared>,
        schema: Option<String>,
        tenant_of: Option<String>,
        owner: bool,
        replica: Option<ReplicaLink>,
    ) -> Database {
        let slow = pool.config.slow_query_threshold;
        let capacity = pool.config.template_cache_capacity;
        let deadline = pool.config.get_statement_deadline();
        let lane = match (&tenant_of, &schema) {
            (Some(_), Some(s)) => Some(lane_key(s)),
            _ => None,
        };
        Database {
            deadline,
            inner: Arc::new(DbInner {
                pool,
                schema,
                tenant_of,
                owner,
                closed: AtomicBool::new(false),
                cache: TemplateCache {
                    map: RwLock::new(HashMap::new()),
                    capacity,
                },
                slow,
                replica,
                lane,
                replica_handles: OnceLock::new(),
            }),
        }
    }

    /// A handle on the same pool that renders into `schema`. It does not own the pool:
    /// [`close`](Self::close) on it does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] when `schema` is not a valid identifier.
    pub fn with_schema(&self, schema: Option<&str>) -> Result<Database> {
        if let Some(s) = schema {
            validate_identifier(s, IdentifierKind::Schema)?;
        }
        Ok(Database::from_shared(
            self.inner.pool.clone(),
            schema.map(str::to_string),
            false,
        ))
    }

    /// A handle on the same pool, schema and caches whose calls have `deadline` instead of the
    /// config's [`statement_deadline`](DatabaseConfig::statement_deadline) (`None`: no
    /// deadline). Cheap (no allocation), so it fits a single call:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// let n: Option<i64> = db
    ///     .with_deadline(Some(Duration::from_secs(2)))
    ///     .fetch_value("SELECT count(*) FROM {{tables.users}}", ())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The deadline covers the whole call: waiting for a connection, the statement and any
    /// re-run. When it passes the call returns [`Error::Timeout`]; see
    /// [`DatabaseConfig::statement_deadline`] for what happens on the server. Handles made
    /// from this one ([`with_schema`](Self::with_schema), tenants) start from the config's
    /// deadline again.
    #[must_use]
    pub fn with_deadline(&self, deadline: Option<Duration>) -> Database {
        Database {
            inner: self.inner.clone(),
            deadline,
        }
    }

    /// This handle's statement deadline.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// A tenant handle: renders into `schema`, and runs the `tsql!` queries checked for
    /// `module_schema` in `schema` instead.
    pub(crate) fn tenant_handle(&self, schema: &str, module_schema: &str) -> Result<Database> {
        validate_identifier(schema, IdentifierKind::Schema)?;
        Ok(Database::handle(
            self.inner.pool.clone(),
            Some(schema.to_string()),
            Some(module_schema.to_string()),
            false,
        ))
    }

    /// For a tenant handle, the schema whose `tsql!` queries it re-targets to its own.
    pub fn tenant_of(&self) -> Option<&str> {
        self.inner.tenant_of.as_deref()
    }

    /// The schema `{{tables.x}}` renders into.
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// Whether this handle owns (and closes) the pool.
    pub fn is_owner(&self) -> bool {
        self.inner.owner
    }

    /// Renders the placeholders of `sql` for this handle's schema (cached).
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// assert_eq!(&*db.render("SELECT * FROM {{tables.users}}")?, "SELECT * FROM \"myservice\".users");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Template`] for a malformed placeholder; for `tsql!` output checked for another
    /// schema, [`Error::SchemaMismatch`] unless this is a tenant handle of that module, and
    /// [`Error::Config`] (field `sql`) when its marker does not fit the text after it.
    pub fn render(&self, sql: &str) -> Result<Arc<str>> {
        self.inner
            .cache
            .get(sql, self.schema(), self.inner.tenant_of.as_deref())
    }

    /// `sql` as this handle must run it: unchanged unless `tsql!` marked it for another
    /// schema (then re-targeted on a tenant handle of its module, else an error). Cached like
    /// [`render`](Self::render).
    pub(crate) fn check_compiled(&self, sql: &str) -> Result<Option<Arc<str>>> {
        if !compiled::is_marked(sql) || compiled::marked_schema(sql) == self.schema() {
            return Ok(None);
        }
        let rendered = self.render(sql)?;
        Ok((*rendered != *sql).then_some(rendered))
    }

    pub(crate) fn ctx(&self) -> QueryCtx<'_> {
        QueryCtx {
            obs: &self.inner.pool.observer,
            schema: self.schema(),
            slow: self.inner.slow,
            args: None,
            persistent: !self.inner.pool.config.wraps_statements(),
        }
    }

    query_methods!(with_retry);

    /// The handle whose schema renders the SQL (for the shared query methods).
    fn schema_handle(&self) -> &Database {
        self
    }

    /// Runs a statement once per parameter set, in one transaction; returns the total rows
    /// affected. Either every set is applied or none is.
    ///
    /// # Errors
    ///
    /// The checkout errors of [`transaction`](Self::transaction), those of
    /// [`Transaction::execute_many`] (no set is applied then), and those of
    /// [`Transaction::commit`].
    pub async fn execute_many<P, I>(&self, sql: &str, params: I) -> Result<u64>
    where
        P: Params,
        I: IntoIterator<Item = P>,
    {
        let mut tx = self.transaction().await?;
        let n = tx.execute_many(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Whether a table (or view) exists: `name` in this handle's schema (`public` without one),
    /// or `schema.name`. Unquoted names fold to lower case, as in templated SQL.
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] when the schema or table part of `name` is not a valid identifier
    /// (nothing is sent), else the errors of [`fetch_value`](Self::fetch_value).
    pub async fn table_exists(&self, name: &str) -> Result<bool> {
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (s.to_string(), t),
            None => (self.schema().unwrap_or("public").to_string(), name),
        };
        validate_identifier(&schema, IdentifierKind::Schema)?;
        validate_identifier(table, IdentifierKind::Table)?;
        let v: Option<bool> = self
            .fetch_value(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)",
                (schema, table.to_ascii_lowercase()),
            )
            .await?;
        Ok(v.unwrap_or(false))
    }

    /// Creates this handle's schema if it does not exist (a no-op without a schema).
    ///
    /// # Errors
    ///
    /// The checkout errors of [`acquire`](Self::acquire), and [`Error::Query`] when `CREATE SCHEMA`
    /// fails (for example when the role may not create schemas).
    pub async fn create_schema(&self) -> Result<()> {
        let Some(schema) = self.schema() else {
            return Ok(());
        };
        // Services sharing a pool often start together: tolerate a concurrent creator.
        let mut conn = self.acquire().await?;
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            crate::ident::quote_identifier(schema)
        );
        super::pool::create_if_missing(conn.raw(), &sql).await
    }

    /// Bulk-loads rows into `table` of this schema with `COPY … FROM STDIN (FORMAT binary)`:
    /// the fast path for many rows. Returns the number of rows copied. All or nothing: an error
    /// in any row aborts the COPY.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// let rows = (0..1000_i64).map(|i| (format!("user{i}@example.com"), i));
    /// let n = db.copy_in("users", &["email", "score"], rows).await?;
    /// assert_eq!(n, 1000);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] for an invalid table or column name and [`Error::Config`] (field
    /// `columns`) for no columns, before anything is sent; the checkout errors of
    /// [`acquire`](Self::acquire); [`Error::Query`] when a row has the wrong number of values or
    /// cannot be encoded, or the server rejects the data (then no row is copied).
    pub async fn copy_in<R, I>(&self, table: &str, columns: &[&str], rows: I) -> Result<u64>
    where
        R: CopyRow,
        I: IntoIterator<Item = R>,
    {
        let stmt = copy::statement(self, table, columns)?;
        if self.inner.pool.wraps_statements() {
            // Behind a transaction pooler, so that the settings (SET LOCAL) cover the COPY.
            let mut tx = self.transaction().await?;
            let n = copy::copy_in(tx.connection(), &stmt, columns.len(), rows).await?;
            tx.commit().await?;
            return Ok(n);
        }
        let mut conn = self.acquire().await?;
        let r = copy::copy_in(conn.raw(), &stmt, columns.len(), rows).await;
        if let Err(Error::Query(q)) = &r
            && is_connection_lost(q.source_error())
        {
            conn.discard();
        }
        r
    }

    /// Pool statistics: sizes, idle, in use, waiting, timeouts.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// The pool's query statistics, shared by every handle on the pool (tenants and other
    /// schemas included): totals, failures, mean and percentiles, the recent statements and the
    /// slow ones. `None` unless the config turned them on with
    /// [`query_stats(true)`](DatabaseConfig::query_stats).
    ///
    /// ```no_run
    /// # use pgdbm_core::{Database, DatabaseConfig};
    /// # async fn demo() -> pgdbm_core::Result<()> {
    /// let db = Database::connect(DatabaseConfig::from_env()?.query_stats(true)).await?;
    /// db.fetch_value::<i32, _>("SELECT $1::int4", (7_i32,)).await?;
    /// let stats = db.query_stats().expect("switched on");
    /// assert_eq!(stats.total, 1);
    /// assert_eq!(&*stats.recent[0].args, ["INT4"]); // the type, never the value
    /// println!("p99 {:?}, slow: {}", stats.p99, stats.slow.len());
    /// # Ok(()) }
    /// ```
    pub fn query_stats(&self) -> Option<QueryStats> {
        self.inner
            .pool
            .observer
            .stats
            .as_ref()
            .map(|s| s.snapshot())
    }

    /// Clears the query statistics (a no-op when they are off).
    pub fn reset_query_stats(&self) {
        if let Some(s) = &self.inner.pool.observer.stats {
            s.reset();
        }
    }

    /// Checks out a connection, usable directly as a sqlx executor (`&mut conn`), with the same
    /// check of `tsql!` queries as this handle; `conn.raw()` is the bare sqlx connection.
    ///
    /// The connection is pinged first (one round trip): what runs on it is the caller's, and
    /// pgdbm cannot run it again if the server had ended the session, so only a connection that
    /// answers is handed out. It waits through an outage like every checkout.
    ///
    /// Behind PgBouncer in transaction mode ([`PoolerMode::Transaction`]) each statement on
    /// `&mut conn` runs in a transaction of its own, since the session is not kept between
    /// transactions (so its rows are collected before they are yielded); `conn.raw()` is not
    /// wrapped, so use [`transaction`](Self::transaction)
    /// for several statements that must share a server connection.
    ///
    /// [`PoolerMode::Transaction`]: crate::PoolerMode::Transaction
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`] when no connection is free, or the server cannot be reached, within
    /// [`acquire_timeout`](DatabaseConfig::acquire_timeout); [`Error::PoolClosed`] after
    /// [`close`](Self::close); [`Error::Connect`] when a new connection cannot be opened;
    /// [`Error::Query`] when the ping fails.
    pub async fn acquire(&self) -> Result<PoolConnection> {
        Ok(PoolConnection {
            obj: self
                .inner
                .pool
                .get_prepared(Prepare::Ping, self.inner.lane)
                .await?,
            db: self.clone(),
        })
    }

    /// Begins a transaction. It rolls back when dropped without [`Transaction::commit`].
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// let mut tx = db.transaction().await?;
    /// tx.execute("INSERT INTO {{tables.users}} (email) VALUES ($1)", ("a@example.com",)).await?;
    /// {
    ///     let mut sp = tx.transaction().await?; // SAVEPOINT
    ///     let r = sp.execute("INSERT INTO {{tables.users}} (email) VALUES ($1)", ("a@example.com",)).await;
    ///     assert!(r.is_err()); // dropped: rolls back to the savepoint only
    /// }
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The checkout errors of [`acquire`](Self::acquire), with [`Error::Query`] when `BEGIN` fails
    /// rather than the ping.
    pub async fn transaction(&self) -> Result<Transaction<'static>> {
        let obj = self
            .inner
            .pool
            .get_prepared(Prepare::Begin, self.inner.lane)
            .await?;
        Ok(Transaction::begun(self.clone(), obj))
    }

    /// Closes the pool (owner only; on other handles it does nothing). Idempotent. Connections
    /// in use are closed when they are returned.
    pub async fn close(&self) {
        if !self.inner.owner {
            tracing::debug!("pgdbm: close() on a handle that does not own the pool; ignored");
            return;
        }
        if !self.inner.closed.swap(true, Ordering::SeqCst) {
            self.inner.pool.close();
        }
    }

    /// Whether the pool is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.pool.pool.is_closed()
    }

    /// The config the pool was opened with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.inner.pool.config
    }
}

//! Test support: a fresh, migrated database per test in milliseconds.
//!
//! Each distinct migration set (with its module, schema and fixtures) is applied once to a
//! *template* database; every test then gets `CREATE DATABASE … TEMPLATE` of it, dropped when the
//! test ends, passed or panicked. Templates are shared by tests and test binaries and rebuilt
//! when a file changes. Databases left by a killed run are dropped by the next one. Only
//! databases named `pgdbm_test_…` are ever dropped.
//!
//! ```no_run
//! # async fn demo() -> pgdbm_core::Result<()> {
//! use pgdbm_core::testing::TestDatabase;
//! let t = TestDatabase::builder()
//!     .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
//!     .module("myservice")
//!     .build()
//!     .await?;
//! let id: i64 = t.execute_and_return_id("INSERT INTO {{tables.users}} (email) VALUES ($1)", ("t@example.com",)).await?;
//! assert_eq!(t.count_rows("users").await?, 1);
//! # Ok(()) }
//! ```

mod builder;
mod server;
mod template_db;

use std::future::Future;
use std::ops::Deref;
use std::sync::OnceLock;

use futures_util::FutureExt;

pub use builder::TestDatabaseBuilder;
pub use server::{ServerDiscovery, ServerSource, TestServer, stop_throwaway};

use crate::ident::{IdentifierKind, validate_identifier};
use crate::runtime::config::DatabaseConfig;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use crate::runtime::params::Params;
use crate::runtime::transaction::Transaction;

static SERVER: tokio::sync::OnceCell<TestServer> = tokio::sync::OnceCell::const_new();
static SWEPT: OnceLock<()> = OnceLock::new();

/// The server tests use (found once per process; see [`ServerDiscovery`]).
///
/// # Errors
///
/// As [`ServerDiscovery::find`]: [`Error::Config`] (field `test_server`) listing every place tried
/// when no server is found. A failure is not kept: the next call searches again.
pub async fn test_server() -> Result<&'static TestServer> {
    SERVER
        .get_or_try_init(|| async { ServerDiscovery::from_env().find().await })
        .await
}

/// A database of one test's own, migrated, dropped when this value is dropped (also when the
/// test panics). Derefs to [`Database`].
pub struct TestDatabase {
    db: Option<Database>,
    name: String,
    admin_url: String,
    template: Option<String>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish()
    }
}

impl Deref for TestDatabase {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.db.as_ref().expect("connected until dropped")
    }
}

impl TestDatabase {
    /// Options for a test database.
    pub fn builder() -> TestDatabaseBuilder {
        TestDatabaseBuilder::default()
    }

    /// An empty database of its own (no migrations).
    ///
    /// # Errors
    ///
    /// As [`TestDatabaseBuilder::build`]: no server found, or the server refuses to create or
    /// connect to the database.
    pub async fn new() -> Result<TestDatabase> {
        Self::builder().build().await
    }

    /// The connected manager (a clone shares the pool).
    pub fn database(&self) -> Database {
        (**self).clone()
    }

    /// The database's name (`pgdbm_test_…`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template database this one was cloned from (`None`: created empty).
    pub fn template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// A URL for this database (e.g. for a child process).
    pub fn url(&self) -> String {
        template_db::url_for(&self.admin_url, &self.name)
    }

    fn table(&self, table: &str) -> Result<String> {
        validate_identifier(table, IdentifierKind::Table)?;
        Ok(format!("{{{{tables.{table}}}}}"))
    }

    /// Number of rows in `table` (of the test's schema).
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] for an invalid table name (nothing is sent), [`Error::Query`] when the
    /// table does not exist, and the pool's errors.
    pub async fn count_rows(&self, table: &str) -> Result<i64> {
        let sql = format!("SELECT count(*) FROM {}", self.table(table)?);
        Ok(self.fetch_value::<i64, _>(&sql, ()).await?.unwrap_or(0))
    }

    /// Number of rows of `table` whose `column` equals `value` (the column name is validated, the
    /// value bound).
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] for an invalid table or column name (nothing is sent),
    /// [`Error::Query`] when the table or column does not exist or `value` does not fit the column,
    /// and the pool's errors.
    pub async fn count_rows_where<V>(&self, table: &str, column: &str, value: V) -> Result<i64>
    where
        (V,): Params,
    {
        validate_identifier(column, IdentifierKind::Column)?;
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {} = $1",
            self.table(table)?,
            crate::ident::quote_identifier(column)
        );
        Ok(self
            .fetch_value::<i64, _>(&sql, (value,))
            .await?
            .unwrap_or(0))
    }

    /// Empties `table` (`TRUNCATE … RESTART IDENTITY CASCADE`).
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] for an invalid table name (nothing is sent), [`Error::Query`] when the
    /// table does not exist or `TRUNCATE` fails, and the pool's errors.
    pub async fn truncate(&self, table: &str) -> Result<()> {
        let sql = format!("TRUNCATE {} RESTART IDENTITY CASCADE", self.table(table)?);
        self.execute(&sql, ()).await.map(|_| ())
    }

    /// Empties every table of the test's schema (`public` without one), except the migration
    /// history.
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when the tables cannot be listed or `TRUNCATE` fails, and the pool's
    /// errors.
    pub async fn truncate_all(&self) -> Result<()> {
        let schema = self.schema().unwrap_or("public").to_string();
        let tables: Vec<(String,)> = self
            .fetch_all(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename <> 'schema_migrations'",
                (schema.clone(),),
            )
            .await?;
        if tables.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = tables
            .iter()
            .map(|(t,)| {
                format!(
                    "{}.{}",
                    crate::ident::quote_identifier(&schema),
                    crate::ident::quote_identifier(t)
                )
            })
            .collect();
        self.execute(
            &format!("TRUNCATE {} RESTART IDENTITY CASCADE", list.join(", ")),
            (),
        )
        .await
        .map(|_| ())
    }

    /// Every row of `table` as JSON text, sorted: compare later with
    /// [`assert_unchanged`](Self::assert_unchanged).
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] for an invalid table name (nothing is sent), [`Error::Query`] when the
    /// table does not exist, and the pool's errors.
    pub async fn snapshot(&self, table: &str) -> Result<TableSnapshot> {
        let sql = format!(
            "SELECT coalesce(array_agg(r ORDER BY r), '{{}}') FROM (SELECT row_to_json(t)::text AS r FROM {} t) s",
            self.table(table)?
        );
        let rows: Vec<String> = self.fetch_value(&sql, ()).await?.unwrap_or_default();
        Ok(TableSnapshot {
            table: table.to_string(),
            rows,
        })
    }

    /// Panics, saying what was added and removed, if `table` differs from `before`.
    ///
    /// # Errors
    ///
    /// The errors of [`snapshot`](Self::snapshot); a difference panics rather than returning an
    /// error.
    pub async fn assert_unchanged(&self, before: &TableSnapshot) -> Result<()> {
        let now = self.snapshot(&before.table).await?;
        let added: Vec<&String> = now
            .rows
            .iter()
            .filter(|r| !before.rows.contains(r))
            .collect();
        let removed: Vec<&String> = before
            .rows
            .iter()
            .filter(|r| !now.rows.contains(r))
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            panic!(
                "table `{}` has changed: {} row(s) added, {} removed\n  added: {:?}\n  removed: {:?}",
                before.table,
                added.len(),
                removed.len(),
                added,
                removed
            );
        }
        Ok(())
    }

    /// Drops the database now (otherwise done when the value is dropped).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when the server cannot be reached, [`Error::Query`] when `DROP DATABASE`
    /// fails.
    pub async fn drop_database(mut self) -> Result<()> {
        if let Some(db) = self.db.take() {
            db.close().await;
        }
        let name = std::mem::take(&mut self.name);
        template_db::drop_test_db(&self.admin_url, &name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let name = std::mem::take(&mut self.name);
        let admin_url = self.admin_url.clone();
        let db = self.db.take();
        // Drop may run inside the test's runtime (or while it unwinds): do the async cleanup on
        // a thread with a runtime of its own, and wait for it.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    if let Err(e) = template_db::drop_test_db(&admin_url, &name).await {
                        tracing::warn!(database = %name, error = %e, "pgdbm: could not drop test database");
                    }
                });
            }
        })
        .join();
        // The pool belongs to the test's runtime; its sockets are already closed by the drop.
        drop(db);
    }
}

/// Rows of a table at one moment, from [`TestDatabase::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSnapshot {
    table: String,
    rows: Vec<String>,
}

impl TableSnapshot {
    /// The rows as JSON text, sorted.
    pub fn rows(&self) -> &[String] {
        &self.rows
    }
}

/// Several test databases in one test (e.g. two services); all dropped with the factory.
#[derive(Debug, Default)]
pub struct TestDatabaseFactory {
    created: Vec<TestDatabase>,
}

impl TestDatabaseFactory {
    /// An empty factory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates one more database.
    ///
    /// # Errors
    ///
    /// As [`TestDatabaseBuilder::build`].
    pub async fn create(&mut self, builder: TestDatabaseBuilder) -> Result<Database> {
        let t = builder.build().await?;
        let db = t.database();
        self.created.push(t);
        Ok(db)
    }

    /// The databases created so far.
    pub fn databases(&self) -> &[TestDatabase] {
        &self.created
    }
}

/// What a test function may return: `()` or a `Result` whose error fails the test.
pub trait TestOutcome {
    /// Panics on failure.
    fn into_outcome(self);
}

impl TestOutcome for () {
    fn into_outcome(self) {}
}

impl<E: std::fmt::Debug> TestOutcome for std::result::Result<(), E> {
    fn into_outcome(self) {
        if let Err(e) = self {
            panic!("test returned an error: {e:?}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for the test")
}

/// Runs an async test with a fresh database (what `#[pgdbm::test]` expands to). The database is
/// dropped after the test, also when it panics.
pub fn run<F, Fut, R>(options: TestDatabaseBuilder, test: F)
where
    F: FnOnce(Database) -> Fut,
    Fut: Future<Output = R>,
    R: TestOutcome,
{
    let rt = runtime();
    let outcome = rt.block_on(async move {
        let t = options
            .build()
            .await
            .unwrap_or_else(|e| panic!("pgdbm test database: {e}"));
        let r = std::panic::AssertUnwindSafe(test(t.database()))
            .catch_unwind()
            .await;
        drop(t);
        r
    });
    match outcome {
        Ok(r) => r.into_outcome(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs an async test inside a transaction that is rolled back afterwards (what
/// `#[pgdbm::test(transaction)]` expands to). The database is shared by every such test of the
/// process with the same options, so no database is created per test; a test that needs commits
/// (or runs things concurrently) should use [`run`].
pub fn run_in_transaction<F, Fut, R>(options: TestDatabaseBuilder, test: F)
where
    F: FnOnce(Transaction<'static>) -> Fut,
    Fut: Future<Output = (R, Transaction<'static>)>,
    R: TestOutcome,
{
    let rt = runtime();
    let outcome = rt.block_on(async move {
        let (url, schema) = shared_database(&options)
            .await
            .unwrap_or_else(|e| panic!("pgdbm test database: {e}"));
        let mut config = DatabaseConfig::new(url)
            .min_connections(1)
            .max_connections(2);
        if let Some(s) = &schema {
            config = config.schema(s);
        }
        let db = Database::connect(config)
            .await
            .unwrap_or_else(|e| panic!("pgdbm test database: {e}"));
        let tx = db
            .transaction()
            .await
            .unwrap_or_else(|e| panic!("pgdbm test transaction: {e}"));
        let r = std::panic::AssertUnwindSafe(test(tx)).catch_unwind().await;
        let r = match r {
            Ok((outcome, tx)) => {
                let _ = tx.rollback().await;
                Ok(outcome)
            }
            Err(p) => Err(p),
        };
        db.close().await;
        r
    });
    match outcome {
        Ok(r) => r.into_outcome(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// One database per process and option set for transactional tests, cloned from the template,
/// and the schema its `Database` uses.
async fn shared_database(options: &TestDatabaseBuilder) -> Result<(String, Option<String>)> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Shared = (String, Option<String>);
    static SHARED: OnceLock<Mutex<HashMap<String, Shared>>> = OnceLock::new();
    let key = format!("{options:?}");
    let map = SHARED.get_or_init(Default::default);
    if let Some(shared) = map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(shared.clone());
    }
    let admin_url = options.admin_url().await?;
    builder::sweep_once(&admin_url).await;
    let (template, schema) = options.template(&admin_url).await?;
    let name = template_db::create_test_db(&admin_url, template.as_deref()).await?;
    let ours = (template_db::url_for(&admin_url, &name), schema);
    // Another test may have raced us here; keep the first and drop ours.
    let existing = {
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(existing) => Some(existing.clone()),
            None => {
                map.insert(key, ours.clone());
                None
            }
        }
    };
    match existing {
        Some(existing) => {
            let _ = template_db::drop_test_db(&admin_url, &name).await;
            Ok(existing)
        }
        None => Ok(ours),
    }
}

/// Name prefix of every test database pgdbm creates (and the only names it ever drops).
pub const TEST_DATABASE_PREFIX: &str = template_db::TEST_PREFIX;

/// Drops test databases left by killed runs on the server at `admin_url`: names starting with
/// [`TEST_DATABASE_PREFIX`] whose process is gone and that are older than two minutes, or older
/// than a day. Runs by itself once per process before the first test database is made.
///
/// # Errors
///
/// [`Error::Config`] for an invalid `admin_url`, [`Error::Connect`] when the server cannot be
/// reached, [`Error::Query`] when the databases cannot be listed. A database that cannot be dropped
/// is left out of the list, not an error.
pub async fn drop_stale_test_databases(admin_url: &str) -> Result<Vec<String>> {
    template_db::drop_stale(admin_url).await
}

/// The server a local default database lives on: the one on localhost:5432, else the
/// throwaway server (started if needed).
async fn local_server(name: &str) -> Result<TestServer> {
    validate_identifier(name, IdentifierKind::Database)?;
    let mut discovery = ServerDiscovery::from_env();
    discovery.test_url = None;
    discovery.database_url = None;
    // A developer's data belongs on the local server, not in memory that an idle stop loses.
    discovery.prefer_throwaway = false;
    discovery.find().await
}

/// The URL of database `name` on the local server (the one on localhost:5432, else the
/// throwaway server the tests use), without creating it: where the CLI acts when nothing names
/// a database, the same database [`database_url_or_local`] gives the examples.
///
/// # Errors
///
/// [`Error::Identifier`] for an invalid name; a connection error when no local server is found
/// and none can be started.
pub async fn local_database_url(name: &str) -> Result<String> {
    let server = local_server(name).await?;
    Ok(template_db::url_for(&server.admin_url, name))
}

/// For examples and local development: `DATABASE_URL` when it is set; otherwise the database
/// `name` on a local server — the one on localhost:5432, or else the throwaway server the tests
/// use (in `/dev/shm` where there is one, so its data lasts until that server stops when idle;
/// else under `target/`) — created if missing. Says
/// which in one log line. A `.env` file is read first.
///
/// # Errors
///
/// None when `DATABASE_URL` is set. Otherwise [`Error::Identifier`] for an invalid `name`,
/// [`Error::Config`] (field `test_server`) when no local server is found or started, and
/// [`Error::Connect`] or [`Error::Query`] when the database cannot be looked up or created.
pub async fn database_url_or_local(name: &str) -> Result<String> {
    let _ = dotenvy::dotenv();
    if let Some(url) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Ok(url);
    }
    let server = local_server(name).await?;
    let mut conn = template_db::admin(&server.admin_url).await?;
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
    let exists: bool = sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::query(sql, e))?;
    if !exists {
        let create = format!("CREATE DATABASE {}", crate::ident::quote_identifier(name));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(create.clone()))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {}
            // Another process created it meanwhile.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(Error::query(create, e)),
        }
    }
    let _ = sqlx::Connection::close(conn).await;
    let url = template_db::url_for(&server.admin_url, name);
    let place = match &server.source {
        ServerSource::Throwaway(dir) => format!("a local server started in {}", dir.display()),
        _ => "the server on localhost".to_string(),
    };
    tracing::info!("DATABASE_URL is not set: using database `{name}` on {place} ({url})");
    Ok(url)
}

//! `Migrator`: applies `migrations/*.sql` once, in order, per (schema, module), with checksums,
//! a lock that many replicas can contend for, and `-- pgdbm:no-transaction` files.
//!
//! The history table is pgdbm's (`schema_migrations`: filename, checksum, module_name,
//! applied_at, applied_by, execution_time_ms; unique on filename + module), so a database
//! migrated by pgdbm (Python) is up to date for this runner and the other way round.
//!
//! # The lock protocol
//!
//! A run holds, on a dedicated connection of its own, two session-level advisory locks, taken
//! together or not at all ([`TRY_LOCK_BOTH`]):
//! - `(hashtext('pgdbm_migration'), hashtext('<schema>.<module>'))`: runners of this crate on the
//!   same schema and module exclude each other; other schemas go on in parallel;
//! - `hashtext('pgdbm_migration_' || '<module>')` as one bigint: pgdbm (Python) 0.5.0's key. A
//!   session lock on it excludes pgdbm's session lock and its per-file transaction lock, so a
//!   Python runner and this one never apply a module at once (pgdbm's key has no schema: runs of
//!   one module on different schemas take turns).
//!
//! The locks are polled with `pg_try_advisory_lock`, never waited for in a blocking call: a
//! blocked session holds a snapshot, and the lock holder's `CREATE INDEX CONCURRENTLY` would wait
//! for it. History is read after the locks are held; they are released when the run's
//! connection closes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgDatabaseError};
use sqlx::{AssertSqlSafe, Connection};

use super::database::Database;
use super::error::{Error, MigrationError, Result};
use super::pool::create_if_missing;
use crate::ident::{IdentifierKind, quote_identifier, validate_identifier};
use crate::migrations::{
    Migration, MigrationSet, char_position_to_byte_offset, line_col, split_statements,
};
use crate::template;

/// Where the migration files come from.
#[derive(Clone, Debug)]
enum Source {
    Dir(PathBuf),
    Embedded(&'static [(&'static str, &'static str)]),
}

/// Migration files compiled into the binary by `pgdbm::embed_migrations!("./migrations")`.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedMigrations {
    files: &'static [(&'static str, &'static str)],
}

impl EmbeddedMigrations {
    /// Used by `embed_migrations!`: `(filename, content)` pairs.
    #[doc(hidden)]
    pub const fn new(files: &'static [(&'static str, &'static str)]) -> Self {
        EmbeddedMigrations { files }
    }

    /// The embedded files as a validated, ordered set.
    pub fn to_set(&self) -> Result<MigrationSet> {
        MigrationSet::from_embedded(self.files).map_err(source_error)
    }
}

/// What [`Migrator::apply_pending`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportStatus {
    /// Nothing was pending.
    UpToDate,
    /// Pending files were applied.
    Applied,
    /// Nothing was changed: `dry_run` lists what would run.
    DryRun,
}

/// One file applied by this run.
#[derive(Clone, Debug)]
pub struct AppliedFile {
    /// The file name.
    pub filename: String,
    /// How long the file took.
    pub execution_time: Duration,
}

/// The outcome of [`Migrator::apply_pending`] or [`Migrator::dry_run`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Up to date, applied, or dry run.
    pub status: ReportStatus,
    /// Files applied now, in order.
    pub applied: Vec<AppliedFile>,
    /// Files that would be applied (dry run) — empty otherwise.
    pub pending: Vec<String>,
    /// Files that were already applied.
    pub skipped: Vec<String>,
    /// Files in the set.
    pub total: usize,
    /// Wall time of the run, lock wait included.
    pub total_time: Duration,
}

/// The state of one migration file (or history row) in [`Migrator::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileState {
    /// Applied, and the file is unchanged.
    Applied {
        /// When, as the server's `applied_at` text.
        applied_at: String,
    },
    /// Not applied yet.
    Pending,
    /// Applied, but the file changed since.
    Modified {
        /// The checksum in the history.
        recorded: String,
        /// The checksum of the file now.
        current: String,
    },
    /// Recorded as applied, but no such file exists any more.
    Missing {
        /// When it was applied.
        applied_at: String,
    },
}

/// One row of [`Migrator::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStatus {
    /// The file name.
    pub filename: String,
    /// Its state.
    pub state: FileState,
}

/// One history row, newest first, from [`Migrator::history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The file name.
    pub filename: String,
    /// Its checksum when applied.
    pub checksum: String,
    /// The module (NULL in very old pgdbm rows).
    pub module_name: Option<String>,
    /// When (server time, ISO 8601).
    pub applied_at: String,
    /// Which database role applied it.
    pub applied_by: Option<String>,
    /// How long it took.
    pub execution_time_ms: Option<i32>,
}

/// Applies migration files to a [`Database`]'s schema.
///
/// ```no_run
/// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
/// use pgdbm_core::Migrator;
/// let report = Migrator::new(&db, "./migrations", "myservice").apply_pending().await?;
/// println!("applied {} file(s)", report.applied.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Migrator {
    db: Database,
    source: Source,
    module: String,
    table: String,
    lock_timeout: Duration,
    lock_poll: Duration,
    allow_missing: bool,
}

/// Lock space for `pg_try_advisory_lock(int4, int4)`: the first key is this constant's hash,
/// the second the hash of `schema.module`.
const LOCK_NAMESPACE: &str = "pgdbm_migration";

/// Takes our lock and pgdbm (Python)'s, or neither (CASE evaluates its branches lazily, and the
/// inner ELSE releases ours when pgdbm's is taken: `NOT true` is false).
const TRY_LOCK_BOTH: &str = "SELECT CASE WHEN pg_try_advisory_lock(hashtext($1), hashtext($2)) \
     THEN CASE WHEN pg_try_advisory_lock(hashtext('pgdbm_migration_' || $3)) THEN true \
     ELSE NOT pg_advisory_unlock(hashtext($1), hashtext($2)) END ELSE false END";

impl Migrator {
    /// Migrations from the `*.sql` files of `dir`, recorded under `module`.
    pub fn new(db: &Database, dir: impl Into<PathBuf>, module: &str) -> Migrator {
        Migrator::with_source(db, Source::Dir(dir.into()), module)
    }

    /// Migrations compiled into the binary with `embed_migrations!`.
    pub fn embedded(db: &Database, files: EmbeddedMigrations, module: &str) -> Migrator {
        Migrator::with_source(db, Source::Embedded(files.files), module)
    }

    fn with_source(db: &Database, source: Source, module: &str) -> Migrator {
        Migrator {
            db: db.clone(),
            source,
            module: module.to_string(),
            table: "schema_migrations".into(),
            lock_timeout: Duration::from_secs(300),
            lock_poll: Duration::from_millis(100),
            allow_missing: false,
        }
    }

    /// The history table's name (default `schema_migrations`), in the manager's schema.
    pub fn table(mut self, name: &str) -> Self {
        self.table = name.to_string();
        self
    }

    /// How long to wait for another runner of the same (schema, module) (default 5 min).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Allow history rows whose file is gone (default: an error).
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// The module name.
    pub fn module(&self) -> &str {
        &self.module
    }

    fn check_names(&self) -> Result<()> {
        validate_identifier(&self.table, IdentifierKind::MigrationsTable)?;
        if self.module.is_empty() || self.module.len() > 100 {
            return Err(Error::config(
                "module",
                "the module name must be 1 to 100 characters (it is stored in module_name VARCHAR(100))",
            ));
        }
        Ok(())
    }

    /// The migration files, validated and ordered.
    pub fn files(&self) -> Result<MigrationSet> {
        match &self.source {
            Source::Dir(dir) => MigrationSet::from_dir(dir).map_err(source_error),
            Source::Embedded(files) => MigrationSet::from_embedded(files).map_err(source_error),
        }
    }

    fn qualified_table(&self) -> String {
        match self.db.schema() {
            Some(s) => format!("{}.{}", quote_identifier(s), quote_identifier(&self.table)),
            None => quote_identifier(&self.table),
        }
    }

    fn lock_key(&self) -> String {
        format!("{}.{}", self.db.schema().unwrap_or("public"), self.module)
    }

    /// Applies every pending file, in order, each with its history row in one transaction
    /// (`-- pgdbm:no-transaction` files statement by statement). Refuses to run (and changes
    /// nothing) when an applied file was modified or, unless allowed, is missing.
    pub async fn apply_pending(&self) -> Result<MigrationReport> {
        self.run(false).await
    }

    /// What `apply_pending` would do, without changing anything (not even creating the
    /// history table).
    pub async fn dry_run(&self) -> Result<MigrationReport> {
        self.run(true).await
    }

    async fn run(&self, dry_run: bool) -> Result<MigrationReport> {
        let started = Instant::now();
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let result = async {
            if !dry_run {
                self.lock(&mut conn).await?;
                self.ensure_table(&mut conn).await?;
            }
            let applied = self.applied(&mut conn).await?;
            self.check_drift(&set, &applied)?;
            let skipped: Vec<String> = set
                .iter()
                .filter(|m| applied.iter().any(|a| a.0 == m.filename))
                .map(|m| m.filename.clone())
                .collect();
            let pending: Vec<&Migration> = set
                .iter()
                .filter(|m| !applied.iter().any(|a| a.0 == m.filename))
                .collect();
            if dry_run || pending.is_empty() {
                return Ok(MigrationReport {
                    status: if pending.is_empty() {
                        ReportStatus::UpToDate
                    } else {
                        ReportStatus::DryRun
                    },
                    applied: Vec::new(),
                    pending: if dry_run {
                        pending.iter().map(|m| m.filename.clone()).collect()
                    } else {
                        Vec::new()
                    },
                    skipped,
                    total: set.len(),
                    total_time: started.elapsed(),
                });
            }
            // Render every pending file first: a bad placeholder in a later file must not leave
            // the earlier ones applied.
            let rendered = pending
                .iter()
                .map(|m| self.render(m))
                .collect::<Result<Vec<_>>>()?;
            let mut done = Vec::with_capacity(pending.len());
            for (m, (sql, map)) in pending.into_iter().zip(rendered) {
                let t = Instant::now();
                self.apply_one(&mut conn, m, &sql, &map).await?;
                let execution_time = t.elapsed();
                tracing::info!(
                    file = %m.filename,
                    module = %self.module,
                    schema = self.db.schema().unwrap_or(""),
                    elapsed_ms = execution_time.as_millis() as u64,
                    "pgdbm: applied migration"
                );
                done.push(AppliedFile {
                    filename: m.filename.clone(),
                    execution_time,
                });
            }
            Ok(MigrationReport {
                status: ReportStatus::Applied,
                applied: done,
                pending: Vec::new(),
                skipped,
                total: set.len(),
                total_time: started.elapsed(),
            })
        }
        .await;
        // Closing the session releases the advisory lock whatever happened; if this future is
        // dropped or panics instead, dropping the connection closes the socket, which does too.
        let _ = conn.close().await;
        result
    }

    /// Files not applied yet, in order.
    pub async fn pending(&self) -> Result<Vec<String>> {
        Ok(self.dry_run().await?.pending)
    }

    /// Every file and history row with its state.
    pub async fn status(&self) -> Result<Vec<FileStatus>> {
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let applied = self.applied(&mut conn).await;
        let _ = conn.close().await;
        let applied = applied?;
        let mut out = Vec::new();
        for m in set.iter() {
            let state = match applied.iter().find(|a| a.0 == m.filename) {
                None => FileState::Pending,
                Some((_, checksum, at)) if *checksum == m.checksum => FileState::Applied {
                    applied_at: at.clone(),
                },
                Some((_, checksum, _)) => FileState::Modified {
                    recorded: checksum.clone(),
                    current: m.checksum.clone(),
                },
            };
            out.push(FileStatus {
                filename: m.filename.clone(),
                state,
            });
        }
        for (filename, _, at) in &applied {
            if set.get(filename).is_none() {
                out.push(FileStatus {
                    filename: filename.clone(),
                    state: FileState::Missing {
                        applied_at: at.clone(),
                    },
                });
            }
        }
        Ok(out)
    }

    /// Checks the applied files' checksums (and missing files) without applying anything.
    pub async fn verify(&self) -> Result<()> {
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let applied = self.applied(&mut conn).await;
        let _ = conn.close().await;
        self.check_drift(&set, &applied?)
    }

    /// The last `limit` history rows of this module, newest first.
    pub async fn history(&self, limit: i64) -> Result<Vec<HistoryEntry>> {
        self.check_names()?;
        let mut conn = self.dedicated().await?;
        let r = async {
            if !self.table_exists(&mut conn).await? {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT filename::text, checksum::text, module_name::text, \
                 to_char(applied_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS applied_at, applied_by::text, execution_time_ms \
                 FROM {} WHERE module_name = $1 OR module_name IS NULL \
                 ORDER BY applied_at DESC, id DESC LIMIT $2",
                self.qualified_table()
            );
            type Row = (String, String, Option<String>, String, Option<String>, Option<i32>);
            let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(&self.module)
                .bind(limit)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| Error::query(sql, e))?;
            Ok(rows
                .into_iter()
                .map(|r| HistoryEntry {
                    filename: r.0,
                    checksum: r.1,
                    module_name: r.2,
                    applied_at: r.3,
                    applied_by: r.4,
                    execution_time_ms: r.5,
                })
                .collect())
        }
        .await;
        let _ = conn.close().await;
        r
    }

    /// Forgets that `filename` was applied (for development: the next run applies it again).
    /// Returns whether a row was removed. It does not undo the file's changes.
    pub async fn mark_unapplied(&self, filename: &str) -> Result<bool> {
        self.check_names()?;
        let mut conn = self.dedicated().await?;
        let r = async {
            if !self.table_exists(&mut conn).await? {
                return Ok(false);
            }
            self.lock(&mut conn).await?;
            let sql = format!(
                "DELETE FROM {} WHERE filename = $1 AND module_name = $2",
                self.qualified_table()
            );
            let n = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(filename)
                .bind(&self.module)
                .execute(&mut conn)
                .await
                .map_err(|e| Error::query(sql, e))?
                .rows_affected();
            Ok(n > 0)
        }
        .await;
        let _ = conn.close().await;
        r
    }

    /// A connection of its own, outside the pool: it holds the session lock for the whole run
    /// and is closed at the end, which releases the lock on every path.
    async fn dedicated(&self) -> Result<PgConnection> {
        self.db.inner.pool.dedicated_connection().await
    }

    async fn lock(&self, conn: &mut PgConnection) -> Result<()> {
        let key = self.lock_key();
        let waited = Instant::now();
        let mut announced = false;
        loop {
            // try-lock and poll: a blocking pg_advisory_lock would hold a snapshot while it
            // waits, and another runner's CREATE INDEX CONCURRENTLY waits for every snapshot.
            //
            // Both keys or neither: ours for (schema, module), and pgdbm (Python)'s for the
            // module, `hashtext('pgdbm_migration_' || module)` as one bigint key. Held as a
            // session lock it excludes pgdbm's session lock and its per-file transaction lock
            // alike, so the two runners never apply the same module at once.
            let got: bool = sqlx::query_scalar(TRY_LOCK_BOTH)
                .bind(LOCK_NAMESPACE)
                .bind(&key)
                .bind(&self.module)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| Error::query(TRY_LOCK_BOTH, e))?;
            if got {
                return Ok(());
            }
            if waited.elapsed() >= self.lock_timeout {
                let holder: Option<i32> = sqlx::query_scalar(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                     AND classid = hashtext($1)::oid AND objid = hashtext($2)::oid LIMIT 1",
                )
                .bind(LOCK_NAMESPACE)
                .bind(&key)
                .fetch_optional(&mut *conn)
                .await
                .ok()
                .flatten();
                return Err(Error::migration(
                    None,
                    format!(
                        "timed out after {:?} waiting for the migration lock of `{key}`; another runner ({}) holds it. If no runner is alive, end that session with pg_terminate_backend, or raise lock_timeout",
                        self.lock_timeout,
                        holder.map_or("pid unknown".to_string(), |p| format!("backend pid {p}"))
                    ),
                    None,
                ));
            }
            if !announced && waited.elapsed() > Duration::from_secs(2) {
                tracing::info!(lock = %key, "pgdbm: waiting for another migration runner");
                announced = true;
            }
            tokio::time::sleep(self.lock_poll).await;
        }
    }

    async fn table_exists(&self, conn: &mut PgConnection) -> Result<bool> {
        let name = self.qualified_table();
        let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::query("SELECT to_regclass($1)", e))?;
        Ok(found.is_some())
    }

    async fn ensure_table(&self, conn: &mut PgConnection) -> Result<()> {
        let table = self.qualified_table();
        let mut statements = Vec::new();
        if let Some(s) = self.db.schema() {
            // Usually there already (Database::connect creates it); asking first spares the
            // server's "already exists, skipping" notice on every run.
            let sql = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";
            let exists: bool = sqlx::query_scalar(sql)
                .bind(s)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| Error::query(sql, e))?;
            if !exists {
                statements.push(format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_identifier(s)
                ));
            }
        }
        // pgdbm's DDL, with the names quoted.
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
             id SERIAL PRIMARY KEY, \
             filename VARCHAR(255) NOT NULL, \
             checksum VARCHAR(64) NOT NULL, \
             module_name VARCHAR(100), \
             applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             applied_by VARCHAR(100) DEFAULT CURRENT_USER, \
             execution_time_ms INTEGER, \
             UNIQUE(filename, module_name))"
        ));
        statements.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {table} (module_name, filename)",
            quote_identifier(&format!("idx_{}_module", self.table))
        ));
        // Runners of other modules in the same schema may create these at the same moment.
        for sql in statements {
            create_if_missing(conn, &sql).await?;
        }
        Ok(())
    }

    /// (filename, checksum, applied_at) of this module's history; empty without a table.
    async fn applied(&self, conn: &mut PgConnection) -> Result<Vec<(String, String, String)>> {
        if !self.table_exists(conn).await? {
            return Ok(Vec::new());
        }
        // pgdbm counts rows without a module as belonging to every module.
        let sql = format!(
            "SELECT filename::text, checksum::text, to_char(applied_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US') \
             FROM {} WHERE module_name = $1 OR module_name IS NULL ORDER BY id",
            self.qualified_table()
        );
        sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(&self.module)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| Error::query(sql, e))
    }

    fn check_drift(&self, set: &MigrationSet, applied: &[(String, String, String)]) -> Result<()> {
        for (filename, recorded, _) in applied {
            match set.get(filename) {
                Some(m) if m.checksum != *recorded => {
                    return Err(Error::migration(
                        Some(filename),
                        format!(
                            "the file was modified after it was applied (recorded checksum {recorded}, file checksum {}); nothing was applied. Restore the file and put the change in a new migration",
                            m.checksum
                        ),
                        None,
                    ));
                }
                Some(_) => {}
                None if self.allow_missing => {
                    tracing::warn!(file = %filename, "pgdbm: applied migration is missing from the files");
                }
                None => {
                    return Err(Error::migration(
                        Some(filename),
                        format!(
                            "recorded as applied to module `{}` but there is no such file; nothing was applied. Restore it, or use allow_missing(true)",
                            self.module
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    fn render(&self, m: &Migration) -> Result<(String, template::OffsetMap)> {
        template::render_with_map(&m.content, self.db.schema()).map_err(|e| {
            Error::Migration(Box::new(MigrationError {
                file: Some(m.filename.clone()),
                position: Some(line_col(&m.content, e.offset)),
                statement: None,
                message: format!("{e}; nothing was applied"),
                source: Some(Box::new(e)),
            }))
        })
    }

    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        m: &Migration,
        rendered: &str,
        map: &template::OffsetMap,
    ) -> Result<()> {
        let insert = format!(
            "INSERT INTO {} (filename, checksum, module_name, execution_time_ms) VALUES ($1, $2, $3, $4)",
            self.qualified_table()
        );
        let started = Instant::now();
        if m.no_transaction {
            tracing::warn!(file = %m.filename, "pgdbm: running a no-transaction migration statement by statement; a failure leaves earlier statements applied");
            for stmt in split_statements(rendered) {
                if let Err(e) = sqlx::raw_sql(AssertSqlSafe(stmt.text.to_string()))
                    .execute(&mut *conn)
                    .await
                {
                    return Err(self.statement_error(m, map, stmt.offset, stmt.text, e));
                }
            }
            let ms = elapsed_ms(started);
            sqlx::query(AssertSqlSafe(insert.clone()))
                .bind(&m.filename)
                .bind(&m.checksum)
                .bind(&self.module)
                .bind(ms)
                .execute(&mut *conn)
                .await
                .map_err(|e| Error::query(insert, e))?;
            return Ok(());
        }
        exec(conn, "BEGIN").await?;
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(rendered.to_string()))
            .execute(&mut *conn)
            .await
        {
            let _ = exec(conn, "ROLLBACK").await;
            return Err(self.file_error(conn, m, rendered, map, e).await);
        }
        let ms = elapsed_ms(started);
        let r = sqlx::query(AssertSqlSafe(insert.clone()))
            .bind(&m.filename)
            .bind(&m.checksum)
            .bind(&self.module)
            .bind(ms)
            .execute(&mut *conn)
            .await;
        if let Err(e) = r {
            let _ = exec(conn, "ROLLBACK").await;
            return Err(Error::query(insert, e));
        }
        // A file written with its own BEGIN/COMMIT (as pgdbm's create_migration does) has
        // committed already; COMMIT then only warns.
        exec(conn, "COMMIT").await
    }

    /// Turns a failure of a whole file into an error naming the statement and its position.
    async fn file_error(
        &self,
        conn: &mut PgConnection,
        m: &Migration,
        rendered: &str,
        map: &template::OffsetMap,
        e: sqlx::Error,
    ) -> Error {
        if let Some(pos) = server_position(&e) {
            let offset = char_position_to_byte_offset(rendered, pos);
            let stmt = split_statements(rendered)
                .into_iter()
                .rev()
                .find(|s| s.offset <= offset);
            let text = stmt.map_or(rendered, |s| s.text);
            return self.located(m, map, offset, Some(text.to_string()), e);
        }
        // No position (a constraint violated at run time, say): find the statement by running
        // them one at a time in a transaction that is rolled back.
        let mut culprit = None;
        if exec(conn, "BEGIN").await.is_ok() {
            for stmt in split_statements(rendered) {
                if let Err(e2) = sqlx::raw_sql(AssertSqlSafe(stmt.text.to_string()))
                    .execute(&mut *conn)
                    .await
                {
                    culprit = Some((stmt.offset, stmt.text.to_string(), server_position(&e2)));
                    break;
                }
            }
            let _ = exec(conn, "ROLLBACK").await;
        }
        match culprit {
            Some((offset, text, pos)) => {
                let at = offset + pos.map_or(0, |p| char_position_to_byte_offset(&text, p));
                self.located(m, map, at, Some(text), e)
            }
            None => self.located_none(m, e),
        }
    }

    fn statement_error(
        &self,
        m: &Migration,
        map: &template::OffsetMap,
        stmt_offset: usize,
        stmt_text: &str,
        e: sqlx::Error,
    ) -> Error {
        let at = stmt_offset
            + server_position(&e).map_or(0, |p| char_position_to_byte_offset(stmt_text, p));
        let mut err = self.located(m, map, at, Some(stmt_text.to_string()), e);
        if let Error::Migration(me) = &mut err {
            me.message.push_str(
                "; this is a no-transaction file: the statements before this one stay applied and no history row was written, so make them idempotent (IF NOT EXISTS) and run again",
            );
        }
        err
    }

    fn located(
        &self,
        m: &Migration,
        map: &template::OffsetMap,
        rendered_offset: usize,
        statement: Option<String>,
        e: sqlx::Error,
    ) -> Error {
        let original = map.to_template(rendered_offset).min(m.content.len());
        let mut message = server_message(&e);
        // (statement_error completes the message for no-transaction files.)
        if !m.no_transaction {
            message.push_str("; the file was rolled back and no later file was run");
            if matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("25001")) {
                message.push_str(
                    ". Statements such as CREATE INDEX CONCURRENTLY cannot run in a transaction: put a line `-- pgdbm:no-transaction` in the file",
                );
            }
        }
        Error::Migration(Box::new(MigrationError {
            file: Some(m.filename.clone()),
            position: Some(line_col(&m.content, original)),
            statement,
            message,
            source: Some(Box::new(e)),
        }))
    }

    fn located_none(&self, m: &Migration, e: sqlx::Error) -> Error {
        Error::Migration(Box::new(MigrationError {
            file: Some(m.filename.clone()),
            position: None,
            statement: None,
            message: format!(
                "{}; the file was rolled back and no later file was run",
                server_message(&e)
            ),
            source: Some(Box::new(e)),
        }))
    }
}

async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::query(sql, e))
}

fn elapsed_ms(started: Instant) -> i32 {
    // pgdbm records at least 1 ms.
    (started.elapsed().as_millis().min(i32::MAX as u128) as i32).max(1)
}

fn server_position(e: &sqlx::Error) -> Option<usize> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    match db.try_downcast_ref::<PgDatabaseError>()?.position()? {
        sqlx::postgres::PgErrorPosition::Original(p) => Some(p),
        sqlx::postgres::PgErrorPosition::Internal { .. } => None,
    }
}

fn server_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => {
                let mut s = format!("{} (SQLSTATE {})", pg.message(), pg.code());
                if let Some(d) = pg.detail() {
                    s.push_str(&format!("; detail: {d}"));
                }
                if let Some(h) = pg.hint() {
                    s.push_str(&format!("; hint: {h}"));
                }
                s
            }
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

fn source_error(e: crate::migrations::SourceError) -> Error {
    Error::Migration(Box::new(MigrationError {
        file: None,
        position: None,
        statement: None,
        message: e.to_string(),
        source: Some(Box::new(e)),
    }))
}

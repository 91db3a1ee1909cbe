//! `Migrator`: applies `migrations/*.sql` once, in order, per (schema, module), with checksums,
//! a lock that many replicas can contend for, and `-- pgdbm:no-transaction` files.
//!
//! The history table is pgdbm's (`schema_migrations`: filename, checksum, module_name,
//! applied_at, applied_by, execution_time_ms; unique on filename + module), so a database
//! migrated by pgdbm (Python) is up to date for this runner and the other way round.
//!
//! The lock protocol is described in one place, at the top of `migrator/lock.rs`.

mod apply;
mod errors;
mod history;
mod lint;
mod lock;
mod lock_wait;
mod repeatable;
mod revert;
mod tools;

pub(crate) use repeatable::REPEATABLE_MODULE_SUFFIX;
pub use revert::{RevertReport, RevertTarget, RevertedFile};
pub use tools::{BaselineReport, Repair};

use errors::{elapsed_ms, exec, run_statements, source_error};

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::types::time::PrimitiveDateTime;

use crate::ident::{IdentifierKind, quote_identifier, validate_identifier};
use crate::migrations::MigrationSet;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};

/// The callback of [`Migrator::on_progress`].
#[derive(Clone)]
struct Progress(std::sync::Arc<ProgressFn>);

type ProgressFn = dyn Fn(usize, usize, &str) + Send + Sync;

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

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
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] (with no file of its own) carrying the
    /// [`SourceError`](crate::migrations::SourceError) that names the invalid, empty or duplicated
    /// file.
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
#[non_exhaustive]
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
    /// Repeatable files (`repeatable/*.sql`) applied now, after the versioned files, because
    /// their text changed (or they were never applied), in order.
    pub repeatable: Vec<AppliedFile>,
    /// Repeatable files that would be applied (dry run) — empty otherwise.
    pub repeatable_pending: Vec<String>,
    /// Files in the set.
    pub total: usize,
    /// Wall time of the run, lock wait included.
    pub total_time: Duration,
}

/// The state of one migration file (or history row) in [`Migrator::status`]; repeatable files
/// are `Applied`, `Pending` (never applied), `Changed` or `Missing`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileState {
    /// Applied, and the file is unchanged.
    Applied {
        /// When (the history's `applied_at`, server time without a time zone).
        applied_at: PrimitiveDateTime,
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
    /// Recorded as applied, but no such file exists any more. (A repeatable file's row is
    /// forgotten by the next run; a versioned file's stops the run.)
    Missing {
        /// When it was applied.
        applied_at: PrimitiveDateTime,
    },
    /// A repeatable file whose text changed since it was last applied: the next run applies it
    /// again. (Not an error, unlike [`Modified`](Self::Modified) for a versioned file.)
    Changed {
        /// The checksum in the history.
        recorded: String,
        /// The checksum of the file now.
        current: String,
    },
}

/// One row of [`Migrator::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStatus {
    /// The file name.
    pub filename: String,
    /// Its state.
    pub state: FileState,
}

/// One history row, newest first, from [`Migrator::history`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The file name.
    pub filename: String,
    /// Its checksum when applied.
    pub checksum: String,
    /// The module (NULL in very old pgdbm rows).
    pub module_name: Option<String>,
    /// When (server time, without a time zone, as the history table keeps it).
    pub applied_at: PrimitiveDateTime,
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
    ddl_lock_timeout: Option<Duration>,
    ddl_lock_attempts: u32,
    allow_missing: bool,
    pooler: Option<bool>,
    progress: Option<Progress>,
    lint: lint::LintSetup,
}

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
            ddl_lock_timeout: Some(Duration::from_secs(2)),
            ddl_lock_attempts: 8,
            allow_missing: false,
            pooler: None,
            progress: None,
            lint: Default::default(),
        }
    }

    /// The history table's name (default `schema_migrations`), in the manager's schema.
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn table(mut self, name: &str) -> Self {
        self.table = name.to_string();
        self
    }

    /// How long to wait for another runner of the same (schema, module) (default 5 min).
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The `lock_timeout` each migration statement runs with (default 2 s; `None` or zero waits
    /// as long as it takes).
    ///
    /// A statement that cannot get its lock in time gives up, the file's transaction rolls back
    /// and the file is tried again after a jittered pause (0.5 s, doubling up to 10 s), up to
    /// [`ddl_lock_attempts`](Self::ddl_lock_attempts) times. So an `ALTER TABLE` stuck behind a
    /// long transaction never makes the service's queries on that table wait longer than this.
    /// When every attempt fails, the error's [`MigrationError::lock_wait`] names the sessions
    /// that held the lock. A file that sets its own `lock_timeout` keeps it.
    ///
    /// [`MigrationError::lock_wait`]: crate::MigrationError::lock_wait
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn ddl_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.ddl_lock_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// How many times a file (a statement, in a `-- pgdbm:no-transaction` file) is tried when
    /// it keeps running into [`ddl_lock_timeout`](Self::ddl_lock_timeout) (default 8, about a
    /// minute in all with the default timeout; at least 1).
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn ddl_lock_attempts(mut self, attempts: u32) -> Self {
        self.ddl_lock_attempts = attempts.max(1);
        self
    }

    /// Allow history rows whose file is gone (default: an error).
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Whether the database URL leads through a pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`, Neon's `-pooler` endpoints), which does not keep a session lock.
    ///
    /// On, each file runs in a transaction of its own that first takes the locks at transaction
    /// level and reads the history again, so a run never relies on the session, and files marked
    /// `-- pgdbm:no-transaction` are refused: apply those through a direct URL. When it is not set
    /// (the default), it is on if the database's config says so
    /// ([`DatabaseConfig::pgbouncer`](crate::DatabaseConfig::pgbouncer) with
    /// [`PoolerMode::Transaction`](crate::PoolerMode::Transaction)) or if the host or URL
    /// contains `-pooler`, `pgbouncer` or `transaction-pool`, as pgdbm (Python) 0.5.0 decides.
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn transaction_pooler(mut self, on: bool) -> Self {
        self.pooler = Some(on);
        self
    }

    /// Whether this migrator runs in transaction-pooler mode (set, or detected from the URL).
    pub fn behind_transaction_pooler(&self) -> bool {
        self.pooler.unwrap_or_else(|| {
            if self.db.config().wraps_statements() {
                return true;
            }
            let target = self.db.config().target().to_lowercase();
            ["-pooler", "pgbouncer", "transaction-pool"]
                .iter()
                .any(|t| target.contains(t))
        })
    }

    /// Calls `f(n, total, file)` before the run applies each file (`n` from 1), e.g. for a
    /// progress bar. `total` is what was pending when the run began.
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn on_progress(mut self, f: impl Fn(usize, usize, &str) + Send + Sync + 'static) -> Self {
        self.progress = Some(Progress(std::sync::Arc::new(f)));
        self
    }

    pub(super) fn report_progress(&self, n: usize, total: usize, file: &str) {
        if let Some(p) = &self.progress {
            (p.0)(n, total, file);
        }
    }

    /// The module name.
    pub fn module(&self) -> &str {
        &self.module
    }

    pub(super) fn check_names(&self) -> Result<()> {
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
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] (with no file of its own) carrying the
    /// [`SourceError`](crate::migrations::SourceError) that names the directory or file that cannot
    /// be read or is invalid.
    pub fn files(&self) -> Result<MigrationSet> {
        match &self.source {
            Source::Dir(dir) => MigrationSet::from_dir(dir).map_err(source_error),
            Source::Embedded(files) => MigrationSet::from_embedded(files).map_err(source_error),
        }
    }

    pub(super) fn qualified_table(&self) -> String {
        match self.db.schema() {
            Some(s) => format!("{}.{}", quote_identifier(s), quote_identifier(&self.table)),
            None => quote_identifier(&self.table),
        }
    }

    pub(super) fn lock_key(&self) -> String {
        format!("{}.{}", self.db.schema().unwrap_or("public"), self.module)
    }

    /// A connection of its own, outside the pool: it holds the session lock for the whole run
    /// and is closed at the end, which releases the lock on every path.
    pub(super) async fn dedicated(&self) -> Result<PgConnection> {
        self.db.inner.pool.dedicated_connection().await
    }

    /// This migrator (same files, module, history table and settings) on another handle: what
    /// drift detection migrates a shadow database with. No progress callback: the caller's is
    /// for its own database.
    pub(crate) fn on(&self, db: &Database) -> Migrator {
        Migrator {
            db: db.clone(),
            progress: None,
            ..self.clone()
        }
    }

    /// The handle this migrator applies to.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The history table's name (unqualified).
    pub(crate) fn history_table(&self) -> &str {
        &self.table
    }
}

//! The one error type of pgdbm.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgDatabaseError;

use crate::ident::InvalidIdentifier;
use crate::template::TemplateError;

mod lock_wait;
mod lost;

pub use lock_wait::{BlockingSession, LockWaitError};
pub use lost::TimeoutError;
pub(crate) use lost::{Cut, CutReason, is_connection_lost, outcome_unknown, session_terminated};

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in pgdbm.
///
/// Match on the variant to tell configuration mistakes, connection failures, query failures
/// (with the rendered SQL), template and identifier problems, migration failures and pool
/// exhaustion apart. Passwords never appear in any of these messages.
///
/// ```
/// # use pgdbm_core::{DatabaseConfig, Error};
/// let err = DatabaseConfig::new("postgresql://localhost/app").schema("bad name").validate().unwrap_err();
/// assert!(matches!(err, Error::Identifier(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. `field` names the setting (or environment variable).
    #[error("invalid configuration `{field}`: {message}")]
    Config {
        /// The setting or environment variable at fault.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The server could not be reached or refused the connection.
    #[error(transparent)]
    Connect(Box<ConnectError>),

    /// A statement failed. Carries the rendered SQL and the server's diagnostics.
    #[error(transparent)]
    Query(Box<QueryError>),

    /// A malformed `{{tables.x}}` / `<<tables.x>>` placeholder or an invalid identifier in one.
    #[error(transparent)]
    Template(#[from] TemplateError),

    /// A schema, table, column or database name that is not a valid identifier.
    #[error(transparent)]
    Identifier(#[from] InvalidIdentifier),

    /// No connection could be checked out within the acquire timeout: all were in use, or the
    /// server could not be reached for that long (then `unreachable` holds the last connect
    /// error).
    #[error("{}", pool_timeout_message(*.waited, *.max_size, .unreachable.as_deref()))]
    PoolTimeout {
        /// How long the caller waited.
        waited: Duration,
        /// The pool's maximum size.
        max_size: usize,
        /// The last connect error, when the pool spent the wait reconnecting to the server.
        unreachable: Option<String>,
    },

    /// The connection was lost inside a transaction. pgdbm never re-runs a statement inside a
    /// transaction: the server rolled it back, so run the whole transaction again (unless the
    /// connection was lost during `COMMIT`, when the outcome is unknown; see
    /// [`TransactionLost::during_commit`]).
    #[error(transparent)]
    TransactionLost(Box<TransactionLost>),

    /// The pool was closed (by [`Database::close`](crate::Database::close) on the owner).
    #[error("the connection pool is closed")]
    PoolClosed,

    /// A query that `tsql!` checked for one schema was run on a handle of another schema that is
    /// not a tenant handle of that module. It was not sent: it would have read and written the
    /// compile-time schema's tables, not the handle's.
    #[error(
        "this query was checked at compile time for schema `{compiled_for}` and cannot run on a handle of {}: it would use `{compiled_for}`'s tables. Run it on a handle of `{compiled_for}`, or on a tenant handle of that module (`Tenants::get`), which runs it in the tenant's schema",
        match .handle { Some(s) => format!("schema `{s}`"), None => "no schema".to_string() }
    )]
    SchemaMismatch {
        /// The schema the query was rendered and checked for.
        compiled_for: String,
        /// The handle's schema.
        handle: Option<String>,
    },

    /// An argument was refused before anything was sent to the server (for example a statement
    /// [`Database::explain`](crate::Database::explain) cannot explain). Nothing ran.
    #[error("{message}")]
    InvalidInput {
        /// The operation that refused it (`explain`).
        operation: &'static str,
        /// What was wrong and what to do.
        message: String,
    },

    /// A tenant operation was refused: unknown tenant, one that exists already, an invalid
    /// name, or a drop without confirmation. Nothing was changed.
    #[error("tenant `{tenant}`: {message}")]
    Tenant {
        /// The tenant name as given.
        tenant: String,
        /// What kind of refusal.
        kind: TenantErrorKind,
        /// What was wrong and what to do.
        message: String,
    },

    /// A migration could not be loaded or applied.
    #[error(transparent)]
    Migration(Box<MigrationError>),

    /// A statement deadline passed ([`DatabaseConfig::statement_deadline`],
    /// [`Database::with_deadline`]): see [`TimeoutError::outcome_unknown`] for whether the
    /// statement may have taken effect.
    ///
    /// [`DatabaseConfig::statement_deadline`]: crate::DatabaseConfig::statement_deadline
    /// [`Database::with_deadline`]: crate::Database::with_deadline
    #[error(transparent)]
    Timeout(Box<TimeoutError>),
}

/// Why a tenant operation was refused ([`Error::Tenant`]). Defined here, the ground floor,
/// rather than beside `Tenants`, so that errors import nothing from above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantErrorKind {
    /// No tenant of that name is registered.
    Unknown,
    /// A tenant of that name exists already.
    Exists,
    /// The name is not a valid tenant name.
    InvalidName,
    /// `drop` was called without the tenant's name as confirmation.
    NotConfirmed,
}

/// The server could not be reached, with where and how often it was tried.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not connect to PostgreSQL at {host}:{port} (database `{database}`, user `{user}`) after {attempts} attempt(s): {reason}\n  - check that the server is running and accepts TCP connections on {host}:{port}\n  - check the database exists and the credentials are right (DATABASE_URL, DB_PASSWORD)"
)]
#[non_exhaustive]
pub struct ConnectError {
    /// Host (or socket directory) that was tried.
    pub host: String,
    /// Port that was tried.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last failure, with any password removed.
    pub reason: String,
    /// The driver's error.
    #[source]
    pub source: sqlx::Error,
}

fn pool_timeout_message(waited: Duration, max_size: usize, unreachable: Option<&str>) -> String {
    match unreachable {
        Some(last) => format!(
            "timed out after {waited:?} waiting for a connection: the database server could not be reached for all that time (last error: {last}); check that it is running, or raise acquire_timeout to wait through longer outages"
        ),
        None => format!(
            "timed out after {waited:?} waiting for a connection (pool size {max_size}); raise max_connections or acquire_timeout, or hold connections for less time"
        ),
    }
}

/// The connection of a transaction was lost (the server ended the session, or the socket
/// failed) while a statement of the transaction was in flight.
#[derive(Debug)]
pub struct TransactionLost {
    query: QueryError,
    during_commit: bool,
}

impl TransactionLost {
    pub(crate) fn new(query: QueryError, during_commit: bool) -> Self {
        TransactionLost {
            query,
            during_commit,
        }
    }

    /// The statement that was in flight, and the driver's error.
    pub fn query(&self) -> &QueryError {
        &self.query
    }

    /// `true` when the connection was lost while `COMMIT` was in flight: the server may have
    /// committed the transaction before the connection went, so check before running it again.
    /// Otherwise the server rolled the transaction back and nothing of it was committed.
    pub fn during_commit(&self) -> bool {
        self.during_commit
    }
}

impl fmt::Display for TransactionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = match self.query.db() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code()),
            None => self.query.source.to_string(),
        };
        if self.during_commit {
            write!(
                f,
                "the connection was lost while COMMIT was in flight ({cause}): the transaction may or may not have been committed; check before running it again"
            )?;
        } else {
            write!(
                f,
                "the connection was lost inside a transaction ({cause}): the server rolled the transaction back and nothing of it was committed; run the whole transaction again"
            )?;
        }
        sql_line(f, &self.query.sql)
    }
}

impl std::error::Error for TransactionLost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.query.source)
    }
}

/// A failed statement: the SQL that was sent (after templating) and the driver's error.
#[derive(Debug)]
pub struct QueryError {
    sql: String,
    source: sqlx::Error,
}

/// A failed migration: which file, which statement and where, and what the failure left
/// behind.
#[derive(Debug)]
#[non_exhaustive]
pub struct MigrationError {
    /// The migration file (or `None` for errors about the set as a whole).
    pub file: Option<String>,
    /// Line and column (1-based) in the file, when the server reported a position.
    pub position: Option<(usize, usize)>,
    /// The statement that failed, when known.
    pub statement: Option<String>,
    /// What went wrong and what to do.
    pub message: String,
    /// What the failure left in the database.
    pub aftermath: Aftermath,
    /// The underlying error, if any.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What a failed migration left in the database ([`MigrationError::aftermath`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Aftermath {
    /// Nothing of it ran (a problem found before running, or with the set as a whole).
    Unchanged,
    /// The file ran in a transaction, which was rolled back; no later file ran.
    RolledBack,
    /// A `-- pgdbm:no-transaction` file: the statements before the failing one stay applied
    /// and no history row was written.
    PartlyApplied,
    /// A down file ran in a transaction, which was rolled back: its history row is kept and
    /// no older file was reverted.
    DownRolledBack,
    /// A no-transaction down file: the statements before the failing one stay applied and its
    /// history row is kept.
    DownPartlyApplied,
}

impl Aftermath {
    /// What to tell the reader, appended to the error's message.
    fn says(self) -> &'static str {
        match self {
            Aftermath::Unchanged => "",
            Aftermath::RolledBack => "; the file was rolled back and no later file was run",
            Aftermath::PartlyApplied => {
                "; this is a no-transaction file: the statements before this one stay applied and no history row was written, so make them idempotent (IF NOT EXISTS) and run again"
            }
            Aftermath::DownRolledBack => {
                "; the down file was rolled back and its history row kept; no older file was reverted"
            }
            Aftermath::DownPartlyApplied => {
                "; this is a no-transaction file: the statements before this one stay applied and the history row was kept, so make them idempotent (IF EXISTS) and run again"
            }
        }
    }
}

impl MigrationError {
    /// Why the file gave up waiting for a lock, and which sessions held it, when that is what
    /// failed: every attempt ran into `lock_timeout` ([`Migrator::ddl_lock_timeout`],
    /// [`Migrator::ddl_lock_attempts`]).
    ///
    /// [`Migrator::ddl_lock_timeout`]: crate::Migrator::ddl_lock_timeout
    /// [`Migrator::ddl_lock_attempts`]: crate::Migrator::ddl_lock_attempts
    pub fn lock_wait(&self) -> Option<&LockWaitError> {
        self.source.as_deref()?.downcast_ref::<LockWaitError>()
    }
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "migration")?;
        if let Some(file) = &self.file {
            write!(f, " `{file}`")?;
            if let Some((line, col)) = self.position {
                write!(f, " at line {line}, column {col}")?;
            }
        }
        write!(f, " failed: {}{}", self.message, self.aftermath.says())?;
        if let Some(stmt) = &self.statement {
            write!(f, "\n  statement: {}", truncate(stmt, 500))?;
        }
        Ok(())
    }
}

impl std::error::Error for MigrationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl QueryError {
    pub(crate) fn new(sql: impl Into<String>, source: sqlx::Error) -> Self {
        QueryError {
            sql: sql.into(),
            source,
        }
    }

    pub(crate) fn into_parts(self) -> (String, sqlx::Error) {
        (self.sql, self.source)
    }

    /// The SQL sent to the server, after templating; empty when not known (an error recovered
    /// with `Error::from` from a `sqlx::Error` that pgdbm did not make).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The driver's error.
    pub fn source_error(&self) -> &sqlx::Error {
        &self.source
    }

    fn db(&self) -> Option<&PgDatabaseError> {
        match &self.source {
            sqlx::Error::Database(e) => e.try_downcast_ref::<PgDatabaseError>(),
            _ => None,
        }
    }

    /// The SQLSTATE code, e.g. `23505` for a unique violation.
    pub fn code(&self) -> Option<&str> {
        self.db().map(|e| e.code())
    }

    /// The server's primary message.
    pub fn message(&self) -> Option<&str> {
        self.db().map(|e| e.message())
    }

    /// The server's detail line.
    pub fn detail(&self) -> Option<&str> {
        self.db().and_then(|e| e.detail())
    }

    /// The server's hint.
    pub fn hint(&self) -> Option<&str> {
        self.db().and_then(|e| e.hint())
    }

    /// The constraint that was violated, if any.
    pub fn constraint(&self) -> Option<&str> {
        self.db().and_then(|e| e.constraint())
    }

    /// The 1-based character position of the error in [`sql`](Self::sql), if reported.
    pub fn position(&self) -> Option<usize> {
        match self.db()?.position()? {
            sqlx::postgres::PgErrorPosition::Original(p) => Some(p),
            sqlx::postgres::PgErrorPosition::Internal { position, .. } => Some(position),
        }
    }

    /// `true` when no row came back from a `fetch_one`.
    pub fn is_row_not_found(&self) -> bool {
        matches!(self.source, sqlx::Error::RowNotFound)
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.db() {
            Some(db) => {
                write!(f, "query failed: {} (SQLSTATE {})", db.message(), db.code())?;
                if let Some(d) = db.detail() {
                    write!(f, "\n  detail: {d}")?;
                }
                if let Some(h) = db.hint() {
                    write!(f, "\n  hint: {h}")?;
                }
            }
            None => write!(f, "query failed: {}", self.source)?,
        }
        if outcome_unknown(&self.source) {
            write!(
                f,
                "\n  the connection broke while the statement was in flight: the outcome is unknown (a write may have been applied); it was not run again"
            )?;
        }
        sql_line(f, &self.sql)
    }
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `\n  SQL: …` for `sql`, or nothing when it is not known (an error recovered from sqlx).
pub(super) fn sql_line(f: &mut fmt::Formatter<'_>, sql: &str) -> fmt::Result {
    if sql.is_empty() {
        return Ok(());
    }
    write!(f, "\n  SQL: {}", truncate(sql, 1000))
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// SQLSTATE codes a caller commonly asks about.
pub mod sqlstate {
    /// `unique_violation`
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// `foreign_key_violation`
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    /// `not_null_violation`
    pub const NOT_NULL_VIOLATION: &str = "23502";
    /// `check_violation`
    pub const CHECK_VIOLATION: &str = "23514";
    /// `undefined_table`
    pub const UNDEFINED_TABLE: &str = "42P01";
    /// `serialization_failure`
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `deadlock_detected`
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// `query_canceled` (also raised by `statement_timeout`)
    pub const QUERY_CANCELED: &str = "57014";
    /// `lock_not_available` (raised by `lock_timeout`)
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
}

impl Error {
    pub(crate) fn query(sql: impl Into<String>, source: sqlx::Error) -> Self {
        Error::Query(Box::new(QueryError::new(sql, source)))
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn migration(
        file: Option<&str>,
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Migration(Box::new(MigrationError {
            file: file.map(str::to_string),
            position: None,
            statement: None,
            message: message.into(),
            aftermath: Aftermath::Unchanged,
            source,
        }))
    }

    /// The query error, if this is one (for [`Error::TransactionLost`], the statement that was
    /// in flight).
    pub fn as_query_error(&self) -> Option<&QueryError> {
        match self {
            Error::Query(q) => Some(q),
            Error::TransactionLost(t) => Some(&t.query),
            _ => None,
        }
    }

    /// `true` when the statement failed because its connection was lost (the server ended the
    /// session, or the socket failed), inside a transaction or not.
    pub fn is_connection_lost(&self) -> bool {
        self.as_query_error()
            .is_some_and(|q| is_connection_lost(&q.source))
    }

    /// `true` when a statement may or may not have taken effect: its connection broke while it
    /// was in flight outside a transaction (the server went silent, or the socket failed),
    /// a statement deadline passed after it was sent, or the connection was lost during
    /// `COMMIT`. pgdbm never runs such a statement again by itself (reads excepted, see the
    /// README); check before you retry a write.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Error::Query(q) => outcome_unknown(&q.source),
            Error::TransactionLost(t) => t.during_commit,
            Error::Timeout(t) => t.outcome_unknown(),
            _ => false,
        }
    }

    /// `true` when a statement deadline passed ([`Error::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// The error for statement `sql` that failed with `e`: [`Error::Timeout`] when its deadline
    /// cut it short (`in_transaction` tells how to word the outcome), else a query error.
    pub(crate) fn statement(sql: impl Into<String>, e: sqlx::Error, in_transaction: bool) -> Self {
        match Cut::of(&e) {
            Some(Cut {
                why: CutReason::Deadline(d),
                waited,
                sent,
            }) => Error::Timeout(Box::new(TimeoutError::new(
                sql,
                *d,
                *waited,
                *sent,
                in_transaction,
            ))),
            _ => Error::query(sql, e),
        }
    }

    /// The SQLSTATE code of a failed query.
    pub fn code(&self) -> Option<&str> {
        self.as_query_error().and_then(QueryError::code)
    }

    /// `true` for a unique-constraint violation (SQLSTATE 23505).
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// match db.execute("INSERT INTO {{tables.users}} (email) VALUES ($1)", ("a@example.com",)).await {
    ///     Err(e) if e.is_unique_violation() => println!("already registered"),
    ///     other => { other?; }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some(sqlstate::UNIQUE_VIOLATION)
    }

    /// `true` for a foreign-key violation (SQLSTATE 23503).
    pub fn is_foreign_key_violation(&self) -> bool {
        self.code() == Some(sqlstate::FOREIGN_KEY_VIOLATION)
    }

    /// `true` when `fetch_one` found no row.
    pub fn is_row_not_found(&self) -> bool {
        self.as_query_error()
            .is_some_and(QueryError::is_row_not_found)
    }
}

impl Error {
    /// This error as a `sqlx::Error`, for the paths where pgdbm answers as a sqlx executor
    /// (`tsql!` and `sqlx::query!` through `&Database`, `&mut Transaction`,
    /// `&mut PoolConnection`); [`Error::from`] recovers it whole. A statement's own failure is
    /// the driver's error, as sqlx would return it; pgdbm's own errors travel inside
    /// `sqlx::Error::Io` (timeouts, a lost server or transaction: what sqlx users treat as
    /// connection trouble) or `sqlx::Error::Configuration` (a misuse, such as a query run on a
    /// handle of another schema).
    pub(crate) fn into_sqlx(self) -> sqlx::Error {
        use std::io::ErrorKind;
        let io = |kind: ErrorKind, e: Error| sqlx::Error::Io(std::io::Error::new(kind, e));
        match self {
            Error::PoolClosed => sqlx::Error::PoolClosed,
            Error::Query(q) => q.source,
            e @ (Error::PoolTimeout { .. } | Error::Timeout(_)) => io(ErrorKind::TimedOut, e),
            e @ Error::Connect(_) => io(ErrorKind::NotConnected, e),
            e @ Error::TransactionLost(_) => io(ErrorKind::ConnectionAborted, e),
            e => sqlx::Error::Configuration(Box::new(e)),
        }
    }
}

/// Recovers pgdbm's error from a `sqlx::Error`: the one pgdbm returned through sqlx (from
/// `tsql!`, `sqlx::query!` on `&Database`, …) comes back as it was (`SchemaMismatch`,
/// `PoolTimeout` with its cause, `TransactionLost`, `Timeout`, …); any other is
/// [`Error::Query`] with the SQL unknown. So one error type serves a handler that uses both,
/// and `?` works:
///
/// ```no_run
/// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
/// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class").fetch_one(&db).await?;
/// # Ok(()) }
/// ```
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::Configuration(boxed) => match boxed.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::query("", sqlx::Error::Configuration(other)),
            },
            sqlx::Error::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<Error>()) => {
                match io.into_inner().map(|inner| inner.downcast::<Error>()) {
                    Some(Ok(ours)) => *ours,
                    _ => unreachable!("checked to hold pgdbm's error"),
                }
            }
            sqlx::Error::PoolClosed => Error::PoolClosed,
            e if Cut::of(&e).is_some_and(Cut::is_deadline) => Error::statement("", e, false),
            e => Error::query("", e),
        }
    }
}

/// Removes every occurrence of `secret` from `text`.
pub(crate) fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "****"),
        _ => text.to_string(),
    }
}

//! Checked queries against a schema that has moved on: what sqlx recorded about a query when it
//! was compiled, compared with what the server says about the same SQL now.
//!
//! `sqlx::query!` and `tsql!` prove a query against the schema of one build. A service outlives
//! its build: in a rolling deploy the new release migrates while the old release's replicas
//! still run the old queries, and a hand-made `ALTER` changes the schema under a running binary.
//! sqlx checks neither. But what it recorded for each query (`.sqlx/query-<hash>.json`: the
//! result columns the generated code decodes by position, their types and nullability, the
//! parameter types it binds) is exactly what the compiled code relies on, so describing the
//! same SQL again and comparing the two tells whether that code still works.
//!
//! - [`RecordedQuery`] is one `.sqlx` file ([`RecordedQuery::read_dir`] reads a directory).
//! - [`describe`] asks the server to prepare a statement and describe it (nothing runs).
//! - [`compare`] lists the [`Change`]s between two [`Description`]s, each saying whether it can
//!   break the old code ([`Change::is_breaking`]).
//! - [`check`] does both for one recorded query and returns its [`QueryDifference`], if any.
//!
//! ```no_run
//! # async fn demo(conn: &mut pgdbm_core::sqlx::PgConnection) -> Result<(), Box<dyn std::error::Error>> {
//! use pgdbm_core::checked::{RecordedQuery, check};
//! for query in RecordedQuery::read_dir(".sqlx".as_ref())? {
//!     if let Some(difference) = check(&mut *conn, &query).await? {
//!         println!("{}\n{difference}", query.query);
//!     }
//! }
//! # Ok(()) }
//! ```

mod compare;
mod description;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgDatabaseError, Postgres};
use sqlx::{AssertSqlSafe, SqlSafeStr};

pub use compare::{Change, compare};
pub use description::{Column, Description, SqlType};
pub use verify::{CheckedQueries, VerifyReport};

/// The `db_name` sqlx records for PostgreSQL queries.
pub const POSTGRES: &str = "PostgreSQL";

/// One query as sqlx recorded it at compile time: the content of a `.sqlx/query-<hash>.json`
/// file (what `cargo sqlx prepare` writes, and `SQLX_OFFLINE_DIR` builds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordedQuery {
    /// The database the query was described on: [`POSTGRES`] for PostgreSQL.
    pub db_name: String,
    /// The SQL exactly as the macro saw it (for `tsql!`, rendered: marker comment, schema).
    pub query: String,
    /// What the server said about it then.
    pub describe: Description,
    /// The lowercase hex SHA-256 of `query`, which also names the file.
    pub hash: String,
}

impl RecordedQuery {
    /// Parses the content of one `.sqlx` file.
    ///
    /// # Errors
    ///
    /// The JSON error when `text` is not such a file (not JSON, or a field missing or of
    /// another shape).
    pub fn from_json(text: &str) -> Result<RecordedQuery, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads one `.sqlx` file.
    ///
    /// # Errors
    ///
    /// [`RecordError`] naming the file when it cannot be read or parsed.
    pub fn read(path: &Path) -> Result<RecordedQuery, RecordError> {
        let text = std::fs::read_to_string(path).map_err(|e| RecordError::new(path, e))?;
        RecordedQuery::from_json(&text).map_err(|e| RecordError::new(path, e))
    }

    /// Reads every `query-*.json` file of `dir` (a `.sqlx` directory), in file-name order.
    ///
    /// # Errors
    ///
    /// [`RecordError`] naming the directory when it cannot be listed, or the first file that
    /// cannot be read or parsed.
    pub fn read_dir(dir: &Path) -> Result<Vec<RecordedQuery>, RecordError> {
        let entries = std::fs::read_dir(dir).map_err(|e| RecordError::new(dir, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| RecordError::new(dir, e))?.path();
            if is_query_file(&path) {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(|p| RecordedQuery::read(p)).collect()
    }

    /// Whether it was recorded for PostgreSQL (other drivers' descriptions say nothing about a
    /// PostgreSQL schema).
    pub fn is_postgres(&self) -> bool {
        self.db_name == POSTGRES
    }

    /// Whether `hash` is the SHA-256 of `query`, as sqlx computes it (a mismatch means the file
    /// was edited by hand: sqlx would refuse it as a hash collision).
    pub fn hash_matches(&self) -> bool {
        sql_hash(&self.query) == self.hash
    }
}

/// sqlx's name for a query's SQL: the lowercase hex SHA-256 of its UTF-8 bytes (the `<hash>` of
/// `query-<hash>.json`).
pub fn sql_hash(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `path` is named like a `.sqlx` query file (`query-<hash>.json`).
fn is_query_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("query-") && n.ends_with(".json"))
}

/// A `.sqlx` file or directory that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{}`: {reason}", path.display())]
#[non_exhaustive]
pub struct RecordError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong (the I/O or JSON error).
    pub reason: String,
}

impl RecordError {
    fn new(path: &Path, reason: impl fmt::Display) -> RecordError {
        RecordError {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// The server's refusal to prepare a statement: the SQL no longer fits the schema (a table or
/// column gone, a type that no longer matches an operator, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rejection {
    /// The SQLSTATE (`42703` undefined column, `42P01` undefined table, …), when the server
    /// sent one.
    pub code: Option<String>,
    /// The server's message.
    pub message: String,
    /// Its detail line, if any.
    pub detail: Option<String>,
    /// Its hint, if any.
    pub hint: Option<String>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.code {
            write!(f, " (SQLSTATE {code})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why [`describe`] returned no description.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescribeError {
    /// The server refused to prepare the statement: it no longer fits the schema.
    #[error("the server does not prepare it: {0}")]
    Rejected(Rejection),
    /// The describe did not complete (the connection failed, a protocol error): this says
    /// nothing about the statement.
    #[error("describing the statement failed: {0}")]
    Failed(#[source] sqlx::Error),
}

impl From<sqlx::Error> for DescribeError {
    fn from(e: sqlx::Error) -> DescribeError {
        let sqlx::Error::Database(db) = &e else {
            return DescribeError::Failed(e);
        };
        let pg = db.try_downcast_ref::<PgDatabaseError>();
        DescribeError::Rejected(Rejection {
            code: db.code().map(|c| c.into_owned()),
            message: db.message().to_string(),
            detail: pg.and_then(|p| p.detail()).map(str::to_string),
            hint: pg.and_then(|p| p.hint()).map(str::to_string),
        })
    }
}

/// Asks the server to prepare `sql` and describe it (sqlx's `Executor::describe`: the result
/// columns, their nullability as sqlx infers it, the parameter types). Nothing is executed.
///
/// A connection answers from its statement cache for SQL it prepared before, even if the schema
/// changed since: describe on a fresh connection, or call
/// [`Connection::clear_cached_statements`](sqlx::Connection::clear_cached_statements) after
/// DDL. Inside a transaction, a rejected statement aborts the transaction.
///
/// # Errors
///
/// [`DescribeError::Rejected`] with the server's error (and SQLSTATE) when it refuses the
/// statement; [`DescribeError::Failed`] when the describe does not complete.
pub async fn describe<'c, E>(executor: E, sql: &str) -> Result<Description, DescribeError>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let d = executor
        .describe(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await?;
    Ok(Description::from_sqlx(&d))
}

/// How a recorded query differs from what the server says now.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DifferenceKind {
    /// The server no longer prepares it.
    Rejected(Rejection),
    /// It prepares, and what it returns or takes changed.
    Changed(Vec<Change>),
}

/// A recorded query whose live description is not the recorded one.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QueryDifference {
    /// The query's hash (its `.sqlx` file is `query-<hash>.json`).
    pub hash: String,
    /// Its SQL.
    pub query: String,
    /// What differs.
    pub kind: DifferenceKind,
}

impl QueryDifference {
    /// A difference for `query`.
    pub fn new(query: &RecordedQuery, kind: DifferenceKind) -> QueryDifference {
        QueryDifference {
            hash: query.hash.clone(),
            query: query.query.clone(),
            kind,
        }
    }

    /// Whether the code compiled against the recorded query can fail: it no longer prepares, or
    /// one of its changes [is breaking](Change::is_breaking).
    pub fn is_breaking(&self) -> bool {
        match &self.kind {
            DifferenceKind::Rejected(_) => true,
            DifferenceKind::Changed(changes) => changes.iter().any(Change::is_breaking),
        }
    }
}

/// One line per difference: the server's error, or each change (non-breaking ones marked).
impl fmt::Display for QueryDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DifferenceKind::Rejected(r) => write!(f, "does not prepare: {r}"),
            DifferenceKind::Changed(changes) => {
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{c}")?;
                    if !c.is_breaking() {
                        f.write_str(" (compatible)")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Describes `query`'s SQL on `executor` and compares it with what was recorded: `None` when
/// nothing changed, else the [`QueryDifference`] (a refusal to prepare included). The
/// recorded `db_name` is not looked at: skip queries that are not
/// [`is_postgres`](RecordedQuery::is_postgres) first. The caveats of [`describe`] apply.
///
/// # Errors
///
/// The sqlx error when the describe does not complete ([`DescribeError::Failed`]); a statement
/// the server refuses is a difference, not an error.
pub async fn check<'c, E>(
    executor: E,
    query: &RecordedQuery,
) -> Result<Option<QueryDifference>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let kind = match describe(executor, &query.query).await {
        Ok(live) => {
            let changes = compare(&query.describe, &live);
            if changes.is_empty() {
                return Ok(None);
            }
            DifferenceKind::Changed(changes)
        }
        Err(DescribeError::Rejected(r)) => DifferenceKind::Rejected(r),
        Err(DescribeError::Failed(e)) => return Err(e),
    };
    Ok(Some(QueryDifference::new(query, kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This repository's own `.sqlx/`, written by sqlx-cli.
    fn repository_sqlx() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.sqlx")
    }

    #[test]
    fn reads_the_files_sqlx_cli_writes() {
        let queries = RecordedQuery::read_dir(&repository_sqlx()).unwrap();
        assert!(!queries.is_empty());
        for q in &queries {
            assert!(q.is_postgres(), "{q:?}");
            assert!(q.hash_matches(), "{q:?}");
            assert_eq!(q.describe.nullable.len(), q.describe.columns.len());
            assert!(q.describe.parameters.is_some(), "{q:?}");
        }
        let sum = queries
            .iter()
            .find(|q| q.query.contains("sum(amount_cents)::int8"))
            .expect("the billing sum query");
        assert_eq!(sum.describe.columns[0].name, "sum");
        assert_eq!(sum.describe.columns[0].type_info.name(), "int8");
        assert_eq!(sum.describe.is_nullable(0), None);
    }

    #[test]
    fn writes_what_it_reads() {
        for q in RecordedQuery::read_dir(&repository_sqlx()).unwrap() {
            let again = RecordedQuery::from_json(&serde_json::to_string(&q).unwrap()).unwrap();
            assert_eq!(again, q);
        }
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = std::env::temp_dir().join(format!("pgdbm-checked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("query-00.json");
        std::fs::write(&bad, "{\"db_name\": \"PostgreSQL\"}").unwrap();
        std::fs::write(dir.join("README"), "not a query file").unwrap();
        let e = RecordedQuery::read_dir(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.path, bad);
        assert!(e.to_string().contains("missing field `query`"), "{e}");
    }

    #[test]
    fn differences_read_one_line_each() {
        let q = RecordedQuery::from_json(
            r#"{"db_name":"PostgreSQL","query":"SELECT 1","hash":"x",
                "describe":{"columns":[],"parameters":{"Left":[]},"nullable":[]}}"#,
        )
        .unwrap();
        assert!(!q.hash_matches());
        let rejected = QueryDifference::new(
            &q,
            DifferenceKind::Rejected(Rejection {
                code: Some("42703".into()),
                message: "column \"email\" does not exist".into(),
                detail: None,
                hint: None,
            }),
        );
        assert!(rejected.is_breaking());
        assert_eq!(
            rejected.to_string(),
            "does not prepare: column \"email\" does not exist (SQLSTATE 42703)"
        );
        let added = QueryDifference::new(
            &q,
            DifferenceKind::Changed(vec![Change::ColumnsAdded {
                recorded: 1,
                live: 2,
                names: vec!["nick".into()],
            }]),
        );
        assert!(!added.is_breaking());
        assert_eq!(
            added.to_string(),
            "columns: 1 → 2; also returned now: 2 \"nick\" (compatible)"
        );
    }
}

//! The queries a binary was compiled with, described against the database it runs on.
//!
//! A build proves its queries against one schema; the binary then runs against whatever the
//! live database is: a hand-made `ALTER`, a tenant schema that drifted, a migration of a newer
//! release. `pgdbm::checked_queries!()` embeds what sqlx recorded for every query at build time
//! (the crate's `.sqlx/` files), and [`Database::verify_checked_queries`] describes each of
//! them on the live database (on a tenant handle, re-targeted to the tenant's schema, as the
//! handle runs them) and returns every difference, so a service can refuse to start on one.
//!
//! It describes on connections of its own, opened like the pool's and closed afterwards:
//! a pool connection answers a describe from its statement cache, which still holds what the
//! statement looked like before the schema changed, and the verification would otherwise fill
//! the caches of the connections the service is about to use.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sqlx::Connection;

use super::{DescribeError, DifferenceKind, QueryDifference, RecordedQuery, compare, describe};
use crate::runtime::database::{Database, for_handle};
use crate::runtime::error::{Error, Result};

/// At most this many connections describe at once: enough to hide the round trips, few enough
/// not to crowd a server the service is starting against. Measured (`cargo bench --bench
/// verify`, 200 queries, 2 cores): 1 connection 127 ms, 2 80 ms, 4 69 ms, 8 92-100 ms, each
/// connection opened costing more than its share of the describes saves.
const MAX_WORKERS: usize = 4;

/// What sqlx recorded about the queries of a binary: `pgdbm::checked_queries!()` builds it
/// from the crate's `.sqlx/` at compile time; [`new`](Self::new) from files read at run time.
#[derive(Clone, Debug, Default)]
pub struct CheckedQueries {
    queries: Vec<RecordedQuery>,
}

impl CheckedQueries {
    /// The given recorded queries (e.g. [`RecordedQuery::read_dir`]).
    #[must_use]
    pub fn new(queries: impl IntoIterator<Item = RecordedQuery>) -> CheckedQueries {
        CheckedQueries {
            queries: queries.into_iter().collect(),
        }
    }

    /// What `checked_queries!` expands to: the `.sqlx` files' text, which the macro already
    /// parsed at compile time.
    #[doc(hidden)]
    pub fn __from_files(files: &[&str]) -> CheckedQueries {
        CheckedQueries::new(files.iter().map(|text| {
            RecordedQuery::from_json(text).expect("checked_queries! parsed this file at build time")
        }))
    }

    /// The recorded queries.
    pub fn queries(&self) -> &[RecordedQuery] {
        &self.queries
    }

    /// How many queries.
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }
}

/// What [`Database::verify_checked_queries`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The schema the queries were described in (the handle's).
    pub schema: Option<String>,
    /// Queries described.
    pub checked: usize,
    /// Queries not for this handle: marked by `tsql!` for another schema on a plain handle (it
    /// would refuse to run them), or recorded for another database than PostgreSQL.
    pub skipped: usize,
    /// Every query whose live description differs from the recorded one, in the order given.
    pub differences: Vec<QueryDifference>,
    /// How long the verification took.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Whether every query still works as compiled: no difference
    /// [breaks](QueryDifference::is_breaking) it (a new column after `SELECT *` does not).
    pub fn is_compatible(&self) -> bool {
        !self.differences.iter().any(QueryDifference::is_breaking)
    }

    /// The breaking differences.
    pub fn breaking(&self) -> impl Iterator<Item = &QueryDifference> {
        self.differences.iter().filter(|d| d.is_breaking())
    }
}

/// One line, as `health_check` repeats it.
impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let breaking = self.breaking().count();
        write!(
            f,
            "{breaking} of {} checked queries no longer match the schema {}",
            self.checked,
            self.schema.as_deref().unwrap_or("(search_path)")
        )?;
        let compatible = self.differences.len() - breaking;
        if compatible > 0 {
            write!(f, " ({compatible} more changed compatibly)")?;
        }
        Ok(())
    }
}

impl Database {
    /// Describes every query of `queries` on the live database, as this handle would run it (a
    /// tenant handle re-targets its module's `tsql!` queries to its schema), and compares what
    /// the server says with what sqlx recorded when the binary was built.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgdbm_core::checked::{CheckedQueries, RecordedQuery};
    /// // A service compiles them in with `pgdbm::checked_queries!()`; read at run time here.
    /// let queries = CheckedQueries::new(RecordedQuery::read_dir(".sqlx".as_ref())?);
    /// let report = db.verify_checked_queries(&queries).await?;
    /// if !report.is_compatible() {
    ///     for d in report.breaking() {
    ///         eprintln!("{}\n  {d}", d.query);
    ///     }
    ///     std::process::exit(1);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Describing prepares each statement and runs nothing. The work is spread over up to 4
    /// connections opened for it (never the pool's: their statement caches would answer with
    /// what a statement looked like before the schema changed). A report with breaking
    /// differences is also what [`health_check`](Self::health_check) warns about afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when a connection cannot be opened, [`Error::Query`] when a describe
    /// does not complete (the connection failed). A statement the server refuses is a
    /// difference in the report ([`DifferenceKind::Rejected`]), not an error.
    pub async fn verify_checked_queries(&self, queries: &CheckedQueries) -> Result<VerifyReport> {
        let started = Instant::now();
        let mut work: Vec<(usize, String)> = Vec::new();
        let mut skipped = 0;
        for (i, q) in queries.queries().iter().enumerate() {
            if !q.is_postgres() {
                skipped += 1;
                continue;
            }
            match for_handle(&q.query, self.schema(), self.tenant_of()) {
                Ok(None) => work.push((i, q.query.clone())),
                Ok(Some(retargeted)) => work.push((i, retargeted)),
                Err(_) => skipped += 1,
            }
        }
        let workers = self
            .pool_stats()
            .max_size
            .clamp(1, MAX_WORKERS)
            .min(work.len().max(1));
        let checked = work.len();
        let mut shares: Vec<Vec<(usize, String)>> = vec![Vec::new(); workers];
        for (n, item) in work.into_iter().enumerate() {
            shares[n % workers].push(item);
        }
        let recorded = queries.queries();
        let runs = shares
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|share| self.describe_share(recorded, share));
        let mut found: Vec<(usize, QueryDifference)> = Vec::new();
        for r in join_all(runs).await {
            found.extend(r?);
        }
        found.sort_by_key(|(i, _)| *i);
        let report = VerifyReport {
            schema: self.schema().map(str::to_string),
            checked,
            skipped,
            differences: found.into_iter().map(|(_, d)| d).collect(),
            elapsed: started.elapsed(),
        };
        let warning = (!report.is_compatible()).then(|| report.to_string());
        self.inner.pool.note_verification(self.schema(), warning);
        Ok(report)
    }

    /// Describes `share` (indices into `recorded`, with the SQL to describe) on a connection of
    /// its own.
    async fn describe_share(
        &self,
        recorded: &[RecordedQuery],
        share: Vec<(usize, String)>,
    ) -> Result<Vec<(usize, QueryDifference)>> {
        let mut conn = self.inner.pool.dedicated_connection().await?;
        let mut found = Vec::new();
        let mut failure = None;
        for (i, sql) in share {
            let q = &recorded[i];
            let kind = match describe(&mut conn, &sql).await {
                Ok(live) => {
                    let changes = compare(&q.describe, &live);
                    if changes.is_empty() {
                        continue;
                    }
                    DifferenceKind::Changed(changes)
                }
                Err(DescribeError::Rejected(r)) => DifferenceKind::Rejected(r),
                Err(DescribeError::Failed(e)) => {
                    failure = Some(Error::query(sql, e));
                    break;
                }
            };
            found.push((i, QueryDifference::new(q, kind)));
        }
        // Its prepared statements go with it.
        conn.close().await.ok();
        match failure {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }
}

//! What the server's backends are doing: statements waiting for another session's lock
//! ([`Database::blocking_queries`]) and statements running for long
//! ([`Database::long_running_queries`]), both from `pg_stat_activity` of the current database.

use std::time::Duration;

use super::{from_secs, ms, ms_opt};
use crate::runtime::database::Database;
use crate::runtime::error::Result;

/// A backend waiting for a lock, and one backend it waits for. A statement blocked by several
/// sessions appears once per blocker.
///
/// Sessions of other roles show `None` (user) and `<insufficient privilege>` (query) unless the
/// connecting role is a superuser or has `pg_read_all_stats`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct BlockingQuery {
    /// The waiting backend's process id.
    pub blocked_pid: i32,
    /// The waiting session's role.
    pub blocked_user: Option<String>,
    /// The statement that waits.
    pub blocked_query: String,
    /// How long the waiting statement has been running (since its `query_start`).
    /// JSON: `blocked_duration_ms`.
    #[serde(rename = "blocked_duration_ms", serialize_with = "ms")]
    pub blocked_duration: Duration,
    /// What it waits on, by class (`Lock` for a heavyweight lock).
    pub blocked_wait_event_type: Option<String>,
    /// What it waits on (`relation`, `transactionid`, `tuple`, …).
    pub blocked_wait_event: Option<String>,
    /// The process id of a backend holding (or queued ahead for) the lock.
    pub blocking_pid: i32,
    /// The blocking session's role.
    pub blocking_user: Option<String>,
    /// The blocking session's current or last statement (with state `idle in transaction`,
    /// the statement that took the lock may be an earlier one of its transaction).
    pub blocking_query: String,
    /// The blocking session's state: `active`, `idle in transaction`, …
    pub blocking_state: Option<String>,
    /// How long the blocking session's transaction has been open, when it is in one.
    /// JSON: `blocking_transaction_duration_ms`.
    #[serde(rename = "blocking_transaction_duration_ms", serialize_with = "ms_opt")]
    pub blocking_transaction_duration: Option<Duration>,
    /// The database (the handle's current database).
    pub database: String,
}

/// A statement (or open transaction) that has been running for longer than a threshold.
///
/// Sessions of other roles are listed only when the connecting role may see their state: a
/// superuser, or a role with `pg_read_all_stats`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct LongRunningQuery {
    /// The backend's process id.
    pub pid: i32,
    /// The session's role.
    pub user: Option<String>,
    /// The database (the handle's current database).
    pub database: String,
    /// The client's `application_name` (empty when it set none).
    pub application_name: String,
    /// `active`, `idle in transaction`, `idle in transaction (aborted)`, `fastpath function
    /// call` or `disabled`.
    pub state: String,
    /// The statement (for `idle in transaction`, the last one the transaction ran).
    pub query: String,
    /// How long since the statement started (`now() - query_start`). JSON: `duration_ms`.
    #[serde(rename = "duration_ms", serialize_with = "ms")]
    pub duration: Duration,
    /// What it waits on, by class (`Lock`, `IO`, `Client`, `Timeout` for `pg_sleep`, …), if
    /// it waits.
    pub wait_event_type: Option<String>,
    /// What it waits on, if it waits.
    pub wait_event: Option<String>,
    /// `client backend` for a client's session; also `autovacuum worker`, `parallel worker`, …
    pub backend_type: Option<String>,
    /// When the statement started, as PostgreSQL writes a `timestamptz` in the session's time
    /// zone (`2025-01-31 12:00:00.123456+00`).
    pub query_start: Option<String>,
}

const BLOCKING: &str = "SELECT blocked.pid,
       blocked.usename::text,
       coalesce(blocked.query, ''),
       coalesce(extract(epoch FROM now() - blocked.query_start), 0)::float8,
       blocked.wait_event_type,
       blocked.wait_event,
       blocker.pid,
       blocker.usename::text,
       coalesce(blocker.query, ''),
       blocker.state,
       extract(epoch FROM now() - blocker.xact_start)::float8,
       blocked.datname::text
FROM pg_stat_activity AS blocked
CROSS JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid)
JOIN pg_stat_activity AS blocker ON blocker.pid = b.pid
WHERE blocked.datname = current_database()
ORDER BY 4 DESC, blocked.pid, blocker.pid";

type BlockingRow = (
    i32,
    Option<String>,
    String,
    f64,
    Option<String>,
    Option<String>,
    i32,
    Option<String>,
    String,
    Option<String>,
    Option<f64>,
    String,
);

const LONG_RUNNING: &str = "SELECT pid,
       usename::text,
       datname::text,
       coalesce(application_name, ''),
       state,
       coalesce(query, ''),
       extract(epoch FROM now() - query_start)::float8,
       wait_event_type,
       wait_event,
       backend_type,
       query_start::text
FROM pg_stat_activity
WHERE datname = current_database()
  AND state <> 'idle'
  AND pid <> pg_backend_pid()
  AND now() - query_start > make_interval(secs => $1)
ORDER BY 7 DESC, pid";

type LongRunningRow = (
    i32,
    Option<String>,
    String,
    String,
    String,
    String,
    f64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Database {
    /// The statements of the current database that wait for a lock another session holds,
    /// with the session they wait for: one query over `pg_stat_activity` and
    /// `pg_blocking_pids()`, longest wait first. Empty when nothing waits.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// for b in db.blocking_queries().await? {
    ///     println!("{} waits {:?} for {} ({:?}): {}", b.blocked_pid, b.blocked_duration,
    ///              b.blocking_pid, b.blocking_state, b.blocking_query);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of [`fetch_all`](Database::fetch_all): the pool's checkout errors
    /// ([`Error::PoolTimeout`](crate::Error::PoolTimeout), …) and
    /// [`Error::Query`](crate::Error::Query) when the server rejects the query.
    pub async fn blocking_queries(&self) -> Result<Vec<BlockingQuery>> {
        let rows: Vec<BlockingRow> = self.fetch_all(BLOCKING, ()).await?;
        Ok(rows
            .into_iter()
            .map(|r| BlockingQuery {
                blocked_pid: r.0,
                blocked_user: r.1,
                blocked_query: r.2,
                blocked_duration: from_secs(r.3),
                blocked_wait_event_type: r.4,
                blocked_wait_event: r.5,
                blocking_pid: r.6,
                blocking_user: r.7,
                blocking_query: r.8,
                blocking_state: r.9,
                blocking_transaction_duration: r.10.map(from_secs),
                database: r.11,
            })
            .collect())
    }

    /// The statements of the current database that are not idle and started more than
    /// `threshold` ago (`now() - query_start`), longest first; sessions `idle in transaction`
    /// for that long are included, this handle's own backend is not. One query over
    /// `pg_stat_activity`, with the threshold bound as a parameter.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// use std::time::Duration;
    /// for q in db.long_running_queries(Duration::from_secs(30)).await? {
    ///     println!("{} {} {:?}: {}", q.pid, q.state, q.duration, q.query);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of [`fetch_all`](Database::fetch_all): the pool's checkout errors
    /// ([`Error::PoolTimeout`](crate::Error::PoolTimeout), …) and
    /// [`Error::Query`](crate::Error::Query) when the server rejects the query.
    pub async fn long_running_queries(&self, threshold: Duration) -> Result<Vec<LongRunningQuery>> {
        let rows: Vec<LongRunningRow> = self
            .fetch_all(LONG_RUNNING, (threshold.as_secs_f64(),))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| LongRunningQuery {
                pid: r.0,
                user: r.1,
                database: r.2,
                application_name: r.3,
                state: r.4,
                query: r.5,
                duration: from_secs(r.6),
                wait_event_type: r.7,
                wait_event: r.8,
                backend_type: r.9,
                query_start: r.10,
            })
            .collect())
    }
}
